"""Data: 2-D toys, sklearn digits, image folders, latent shards, synthetic shapes, resolution buckets.

A leaf of the package (imports torch and numpy; Pillow, scikit-learn and safetensors lazily).
Entry point: :func:`build_data_source` (docs/internals.md). Every source is deterministic in
(seed, step), resumable from plain-int state, and rank-aware (batch semantics in
:mod:`tim.data.sources`; resolution buckets in :mod:`tim.data.buckets`).
"""

from tim.data.buckets import BucketedSource, bucket_batch_size, round_down_size, tokens_per_item
from tim.data.build import build_data_source
from tim.data.config import BUCKETABLE, DATA_NAMES, TOY_NAMES, DataConfig, DataInfo
from tim.data.digits import digits_to_unit_range, load_digits_tensors
from tim.data.latents import (
    encode_images_to_latents,
    load_autoencoder,
    read_latent_shards,
    write_latent_shards,
)
from tim.data.shapes import SHAPE_NAMES, render_shapes, shape_sizes
from tim.data.sources import DataSource, TensorSource, derived_generator
from tim.data.toy import TOY_BOX, TOYS, ToySource, sample_toy

__all__ = [
    "BUCKETABLE",
    "DATA_NAMES",
    "SHAPE_NAMES",
    "TOYS",
    "TOY_BOX",
    "TOY_NAMES",
    "BucketedSource",
    "DataConfig",
    "DataInfo",
    "DataSource",
    "TensorSource",
    "ToySource",
    "bucket_batch_size",
    "build_data_source",
    "derived_generator",
    "digits_to_unit_range",
    "encode_images_to_latents",
    "load_autoencoder",
    "load_digits_tensors",
    "read_latent_shards",
    "render_shapes",
    "round_down_size",
    "sample_toy",
    "shape_sizes",
    "tokens_per_item",
    "write_latent_shards",
]
