"""Pre-encoded latent shards (safetensors) and the optional image -> latent encoder step.

Shard format (``*.safetensors`` in one folder, read in sorted name order):

- tensor ``latents``: (N, C, H, W), the autoencoder's raw output (any float dtype);
- tensor ``labels``: (N,) int64 class ids (optional; all shards have it or none does);
- metadata (strings): ``format = "tim-latents-v1"``, ``scale``, ``shift``, ``autoencoder``,
  ``num_classes``, ``class_names`` (JSON list).

The source delivers x = (latent - shift) * scale (the diffusers convention ``scaling_factor`` /
``shift_factor``; decode with latent = x / scale + shift), recorded in :class:`DataInfo`. Shards of
different latent sizes are allowed and become resolution buckets with ``data.bucketed=true``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor

from tim.data.buckets import BucketedSource, Size
from tim.data.config import DataConfig, DataInfo
from tim.data.sources import TensorSource, stream_options
from tim.errors import TimError
from tim.io import write_safetensors

SHARD_FORMAT = "tim-latents-v1"
Encoder = Callable[[Tensor], Tensor]  # images (B, 3, H, W) in [-1, 1] -> raw latents (B, C, h, w)


def write_latent_shards(
    out_dir: str | Path,
    latents: Tensor | Sequence[Tensor],
    labels: Tensor | Sequence[int] | None,
    *,
    scale: float,
    shift: float = 0.0,
    autoencoder: str = "",
    class_names: Sequence[str] = (),
    shard_size: int = 4096,
) -> list[Path]:
    """Write latents (a batch, or a list of per-item (C, h, w) tensors of mixed sizes) as shards.

    Items are grouped by size; each shard holds one size and at most ``shard_size`` items.

    Returns:
        The written shard paths.
    """
    items = list(latents.unbind(0)) if isinstance(latents, Tensor) else list(latents)
    ids = None if labels is None else [int(v) for v in labels]
    if ids is not None and len(ids) != len(items):
        raise TimError(f"{len(items)} latents but {len(ids)} labels", "pass one label per latent")
    num_classes = len(class_names) or (max(ids) + 1 if ids else 0)
    metadata = {
        "format": SHARD_FORMAT,
        "scale": repr(float(scale)),
        "shift": repr(float(shift)),
        "autoencoder": autoencoder,
        "num_classes": str(num_classes),
        "class_names": json.dumps(list(class_names)),
    }
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(tuple(item.shape), []).append(index)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for shape in sorted(groups):
        members = groups[shape]
        for start in range(0, len(members), shard_size):
            chunk = members[start : start + shard_size]
            tensors = {"latents": torch.stack([items[i] for i in chunk]).contiguous()}
            if ids is not None:
                tensors["labels"] = torch.tensor([ids[i] for i in chunk], dtype=torch.int64)
            path = out_dir / f"shard-{len(paths):05d}.safetensors"
            write_safetensors(path, tensors, metadata=metadata)
            paths.append(path)
    return paths


def read_latent_shards(root: str | Path) -> tuple[dict[Size, tuple[Tensor, Tensor | None]], dict[str, str]]:
    """Load every shard under ``root`` and check that they agree.

    Returns:
        ({(h, w): (latents (n, C, h, w), labels (n,) or None)}, the shared metadata).
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    root = Path(root)
    if not root.is_dir():
        raise TimError(
            f"data.root={str(root)!r} is not a folder",
            "set data.root to the folder of latent *.safetensors shards",
        )
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise TimError(
            f"no *.safetensors latent shards in {str(root)!r}",
            "write them with tim.data.latents.encode_images_to_latents or write_latent_shards",
        )
    parts: dict[Size, list[tuple[Tensor, Tensor | None]]] = {}
    reference: dict[str, str] | None = None
    for file in files:
        try:
            with safe_open(str(file), framework="pt") as handle:
                metadata = dict(handle.metadata() or {})
            tensors = load_file(str(file))
        except (SafetensorError, OSError, ValueError) as error:
            raise TimError(
                f"latent shard {str(file)!r} is not a readable safetensors file ({error})",
                "rewrite or remove that shard",
            ) from error
        latents, labels = _check_shard(file, tensors, metadata)
        if reference is None:
            reference = metadata
        _check_agrees(file, metadata, reference, latents, labels, parts)
        parts.setdefault(tuple(latents.shape[-2:]), []).append((latents, labels))
    groups = {
        size: (
            torch.cat([x for x, _ in chunks]),
            None if chunks[0][1] is None else torch.cat([y for _, y in chunks]),
        )
        for size, chunks in parts.items()
    }
    return groups, reference or {}


def _check_shard(
    file: Path, tensors: dict[str, Tensor], metadata: dict[str, str]
) -> tuple[Tensor, Tensor | None]:
    if metadata.get("format") != SHARD_FORMAT or "latents" not in tensors:
        raise TimError(
            f"{str(file)!r} is not a tim latent shard (needs tensor 'latents' and metadata format={SHARD_FORMAT})",
            "write shards with tim.data.latents.write_latent_shards",
        )
    latents, labels = tensors["latents"], tensors.get("labels")
    if latents.dim() != 4 or not latents.is_floating_point():
        raise TimError(
            f"{str(file)!r}: 'latents' has shape {tuple(latents.shape)} / dtype {latents.dtype}, expected float (N, C, H, W)",
            "rewrite the shard",
        )
    if labels is not None and (
        labels.shape != (len(latents),)
        or labels.is_floating_point()
        or (len(labels) and int(labels.min()) < 0)
    ):
        raise TimError(
            f"{str(file)!r}: 'labels' has shape {tuple(labels.shape)} / dtype {labels.dtype}, expected non-negative int ({len(latents)},)",
            "rewrite the shard",
        )
    if not torch.isfinite(latents).all():
        raise TimError(f"{str(file)!r}: 'latents' holds NaN or Inf", "re-encode that shard")
    return latents, labels


def _check_agrees(
    file: Path,
    metadata: dict[str, str],
    reference: dict[str, str],
    latents: Tensor,
    labels: Tensor | None,
    parts: dict[Size, list[tuple[Tensor, Tensor | None]]],
) -> None:
    for key in ("scale", "shift", "autoencoder", "num_classes"):
        if metadata.get(key) != reference.get(key):
            raise TimError(
                f"latent shards disagree on {key}: {str(file)!r} has {metadata.get(key)!r}, earlier shards {reference.get(key)!r}",
                "keep shards of one autoencoder and label set in one folder",
            )
    first = next((chunks[0] for chunks in parts.values()), None)
    if first is not None and first[0].shape[1] != latents.shape[1]:
        raise TimError(
            f"{str(file)!r} has {latents.shape[1]} latent channels, earlier shards {first[0].shape[1]}",
            "keep shards of one autoencoder in one folder",
        )
    if first is not None and (first[1] is None) != (labels is None):
        raise TimError(
            f"{str(file)!r} {'lacks' if labels is None else 'has'} labels unlike earlier shards",
            "label every shard or none",
        )
    num_classes = int(reference.get("num_classes", "0"))
    if labels is not None and len(labels) and num_classes and int(labels.max()) >= num_classes:
        raise TimError(
            f"{str(file)!r} has label {int(labels.max())} but num_classes={num_classes}",
            "rewrite the shards with the right class list",
        )


def build_latent_source(
    cfg: DataConfig, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0
) -> TensorSource | BucketedSource:
    """The "latents" source: x = (latent - shift) * scale, fixed size or bucketed."""
    groups, metadata = read_latent_shards(cfg.root)
    scale, shift = float(metadata["scale"]), float(metadata["shift"])
    num_classes = int(metadata.get("num_classes", "0")) if next(iter(groups.values()))[1] is not None else 0
    class_names = tuple(json.loads(metadata.get("class_names", "[]")))
    channels = next(iter(groups.values()))[0].shape[1]
    total = sum(len(x) for x, _ in groups.values())
    info = DataInfo(
        kind="image",
        shape=(channels, 0, 0),
        num_classes=num_classes,
        value_range=None,
        latent_scale=scale,
        latent_shift=shift,
        autoencoder=metadata.get("autoencoder", ""),
        class_names=class_names,
        num_items=total,
    )
    common = stream_options(
        cfg, rank=rank, world_size=world_size, seed=seed, value_scale=scale, value_offset=-shift * scale
    )
    if cfg.bucketed:
        return BucketedSource.from_config(groups, info, cfg, batch_size=batch_size, **common)
    if len(groups) > 1:
        raise TimError(
            f"latent shards under {cfg.root!r} have {len(groups)} sizes {sorted(groups)} but fixed-size training needs one",
            "set data.bucketed=true or keep one size per folder",
        )
    (((height, width), (x, y)),) = groups.items()
    if height % cfg.patch_multiple or width % cfg.patch_multiple:
        raise TimError(
            f"latents are {height}x{width}, not divisible by data.patch_multiple={cfg.patch_multiple}",
            "encode at a size whose latent is a multiple of the patch size",
        )
    info = DataInfo(
        kind="image",
        shape=(channels, height, width),
        num_classes=num_classes,
        value_range=None,
        latent_scale=scale,
        latent_shift=shift,
        autoencoder=info.autoencoder,
        class_names=class_names,
        num_items=total,
    )
    return TensorSource(x, y, info, batch_size=batch_size, **common)


def load_autoencoder(path: str | Path, device: str = "cpu") -> tuple[Encoder, float, float, str]:
    """Load a diffusers ``AutoencoderKL`` or ``AutoencoderDC`` from a LOCAL folder (no download).

    A thin layer over :class:`tim.autoencoders.Autoencoder` (the class is read from the folder's
    ``config.json``; KL latents are the posterior mean, deterministic).

    Returns:
        (encoder callable, scale = config.scaling_factor, shift = config.shift_factor or 0, name).
    """
    from tim.autoencoders import Autoencoder

    autoencoder = Autoencoder.from_pretrained(path, device=device)

    def encode(images: Tensor) -> Tensor:
        return autoencoder.encode(images.to(autoencoder.device)).cpu()

    return encode, autoencoder.scaling_factor, autoencoder.shift_factor, Path(path).name


def encode_images_to_latents(
    cfg: DataConfig,
    out_dir: str | Path,
    *,
    autoencoder: str | Path = "",
    encoder: Encoder | None = None,
    scale: float | None = None,
    shift: float | None = None,
    batch_size: int = 16,
    device: str = "cpu",
    shard_size: int = 4096,
) -> list[Path]:
    """Encode an image folder into latent shards (the optional pre-encoding step).

    Args:
        cfg: an "image_folder" config; ``image_size`` (fixed) or ``bucketed`` (native sizes,
            rounded down to ``patch_multiple`` = autoencoder factor x patch size) decides the sizes.
        out_dir: folder for ``shard-*.safetensors``.
        autoencoder: local diffusers autoencoder folder (used when ``encoder`` is None).
        encoder: any callable images (B, 3, H, W) in [-1, 1] -> raw latents; for tests or custom models.
        scale: latent normalisation to record (x = (latent - shift) * scale); default the autoencoder
            config's value (1 for a bare encoder).
        shift: as ``scale``; default the config's value (0 for a bare encoder).
        batch_size: images per encoder call (one size per call).
        device: where the diffusers autoencoder runs.
        shard_size: items per shard.

    Returns:
        The written shard paths.
    """
    from tim.data.images import images_to_unit_range, load_image_items

    if cfg.name != "image_folder":
        raise TimError(
            f"encode_images_to_latents needs data.name='image_folder', got {cfg.name!r}",
            "pass the image folder's data config",
        )
    name = "custom encoder"
    if encoder is None:
        encoder, auto_scale, auto_shift, name = load_autoencoder(autoencoder, device)
        scale, shift = auto_scale if scale is None else scale, auto_shift if shift is None else shift
    loaded, class_names = load_image_items(cfg)
    latents: list[Tensor] = []
    by_size: dict[Size, list[int]] = {}
    for index, image in enumerate(loaded.images):
        by_size.setdefault(image.shape[1:], []).append(index)
    order = [i for size in sorted(by_size) for i in by_size[size]]
    for size in sorted(by_size):
        members = by_size[size]
        for start in range(0, len(members), batch_size):
            batch = torch.stack(
                [images_to_unit_range(loaded.images[i]) for i in members[start : start + batch_size]]
            )
            latents += list(encoder(batch).unbind(0))
    labels = [loaded.labels[i] for i in order] if class_names else None
    return write_latent_shards(
        out_dir,
        latents,
        labels,
        scale=1.0 if scale is None else scale,
        shift=0.0 if shift is None else shift,
        autoencoder=str(name),
        class_names=class_names,
        shard_size=shard_size,
    )
