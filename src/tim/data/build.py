"""``build_data_source``: one entry point from a :class:`DataConfig` to a batch stream."""

from __future__ import annotations

from tim.data.config import TOY_NAMES, DataConfig, DataInfo
from tim.data.digits import DIGITS_MAX, load_digits_tensors
from tim.data.sources import DataSource, TensorSource
from tim.data.toy import ToySource


def build_data_source(
    cfg: DataConfig, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0
) -> DataSource:
    """Build the data source described by ``cfg`` for one rank.

    Args:
        cfg: the ``data:`` section of the run config.
        batch_size: the GLOBAL batch (all ranks together). Fixed-size sources give each rank
            ``batch_size // world_size`` disjoint rows; bucketed sources use it only to derive a
            token budget when ``cfg.token_budget == 0`` (see :class:`DataConfig`).
        rank: this process's rank in ``[0, world_size)``.
        world_size: number of data-parallel processes.
        seed: the stream is a pure function of (seed, step).

    Returns:
        A :class:`DataSource` (``info``, ``next_batch``, ``state_dict``, ``load_state_dict``).
    """
    if cfg.name in TOY_NAMES:
        return ToySource(cfg.name, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed)
    if cfg.name == "digits":
        return _digits_source(batch_size=batch_size, rank=rank, world_size=world_size, seed=seed)
    if cfg.name == "scenes":
        from tim.data.captions import build_scenes_source

        return build_scenes_source(cfg, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed)
    if cfg.name == "image_folder" and cfg.text_encoder:
        from tim.data.captions import build_captioned_folder_source

        return build_captioned_folder_source(
            cfg, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed
        )
    if cfg.name == "image_folder":
        from tim.data.images import build_image_folder_source

        return build_image_folder_source(
            cfg, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed
        )
    if cfg.name == "latents":
        from tim.data.latents import build_latent_source

        return build_latent_source(cfg, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed)
    from tim.data.shapes import build_shapes_source

    return build_shapes_source(cfg, batch_size=batch_size, rank=rank, world_size=world_size, seed=seed)


def _digits_source(*, batch_size: int, rank: int, world_size: int, seed: int) -> TensorSource:
    counts, labels = load_digits_tensors()
    info = DataInfo(
        kind="image",
        shape=(1, 8, 8),
        num_classes=10,
        class_names=tuple(str(k) for k in range(10)),
        num_items=len(counts),
    )
    # x = count * 2/16 - 1 maps 0..16 onto [-1, 1] (tim.data.digits).
    return TensorSource(
        counts,
        labels,
        info,
        batch_size=batch_size,
        rank=rank,
        world_size=world_size,
        seed=seed,
        value_scale=2.0 / DIGITS_MAX,
        value_offset=-1.0,
    )
