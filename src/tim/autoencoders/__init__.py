"""Image autoencoders for latent TiM: diffusers ``AutoencoderKL`` (SD-VAE) and ``AutoencoderDC`` (DC-AE).

The paper's class-to-image checkpoints work in the latent space of the SD-VAE (f8, 4 channels) and
its 512-pixel and text-to-image checkpoints in that of DC-AE (f32, 32 channels) (the published code, github.com/WZDTHU/TiM).
:class:`Autoencoder` wraps either one, loaded from a LOCAL ``save_pretrained`` folder (never a
download), behind one interface:

- ``encode(images in [-1, 1]) -> raw latents`` (KL: the posterior mean, deterministic);
- ``decode(raw latents) -> images in [-1, 1]``, in overlapping tiles above a size threshold so that
  a 4096x4096 image fits in memory, refused with a one-line error when even that will not fit;
- ``normalize`` / ``denormalize``: raw latents <-> what TiM sees, ``x = (latent - shift) * scale``
  (the diffusers ``scaling_factor`` / ``shift_factor`` convention, as tim.data.latents stores it).

Tiling is diffusers' own (``enable_tiling`` on both classes: overlapping tiles, linear blending of
the overlaps); this module only picks the tile size, decides when to tile and checks memory first.

diffusers is imported lazily (extra ``[latent]``); importing this module costs nothing.

Modules: :mod:`tim.autoencoders.model` (the :class:`Autoencoder` wrapper, loading, tiled decoding and
its memory plan) and :mod:`tim.autoencoders.training` (training the small default AutoencoderKL).
"""

from tim.autoencoders.model import (
    ARCHITECTURES,
    DC_TILE_OVERLAP_PIXELS,
    DECODE_FIXED_BYTES,
    HALF_DTYPES,
    INSTALL_HINT,
    KINDS,
    KL_TILE_OVERLAP,
    MEMORY_MARGIN,
    PEAK_PER_WIDEST,
    TILE_SIZE,
    TILE_THRESHOLD_PIXELS,
    USABLE_SHARE,
    Autoencoder,
    available_bytes,
    check_latent_channels,
    read_autoencoder_config,
    spatial_factor,
)
from tim.autoencoders.training import (
    TRAIN_SAVED_PER_PIXEL,
    TrainSettings,
    check_train_settings,
    check_training_memory,
    psnr,
    small_kl_config,
    train_autoencoder,
    training_memory_bytes,
)

__all__ = [
    "ARCHITECTURES",
    "Autoencoder",
    "TrainSettings",
    "psnr",
    "small_kl_config",
    "train_autoencoder",
    "check_train_settings",
    "available_bytes",
    "check_latent_channels",
    "read_autoencoder_config",
    "spatial_factor",
    "KINDS",
    "TILE_SIZE",
    "TILE_THRESHOLD_PIXELS",
    # the rest of the package's public names (tim.autoencoders.X worked for them before the split)
    "DC_TILE_OVERLAP_PIXELS",
    "DECODE_FIXED_BYTES",
    "HALF_DTYPES",
    "INSTALL_HINT",
    "KL_TILE_OVERLAP",
    "MEMORY_MARGIN",
    "PEAK_PER_WIDEST",
    "TRAIN_SAVED_PER_PIXEL",
    "USABLE_SHARE",
    "check_training_memory",
    "training_memory_bytes",
]
