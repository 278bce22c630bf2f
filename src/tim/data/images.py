"""Image folders: one class per sub-folder (or unlabelled images directly in the root).

Images are decoded once with Pillow and kept in memory as uint8 (fine for the small folders this
path is meant for; large datasets go through latent shards, :mod:`tim.data.latents`).

- Fixed size (``image_size > 0``): ADM centre crop (box-downsample while the short side is at
  least twice the target, bicubic resize of the short side to the target, centre crop).
- Native size (``image_size == 0``, not bucketed): every image must already have the same size.
- Bucketed: each image is resized to its own size rounded down to ``patch_multiple``
  (arXiv 2509.04394, App. C.2: 1025x513 -> 1024x512), after an optional ``max_pixels`` cap that keeps the aspect.

Decoding keeps what an image shows (:func:`decode_to_8bit`): 16-bit grey is scaled to 8 bits,
palette, CMYK and YCbCr images become RGB, and alpha is composited over black.

Unreadable files are skipped, counted and reported in one warning; the build fails only when their
share exceeds ``max_bad_fraction``. Wrong colour channel counts (grey images for an RGB run, colour
images for a grey one) and mixed sizes are errors, never fixed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tim.data.buckets import BucketedSource, Size, group_by_size, round_down_size
from tim.data.config import DataConfig, DataInfo
from tim.data.sources import TensorSource, stream_options
from tim.errors import TimError, first_line

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
# Pillow modes by colour channels (alpha is not a colour channel: it is composited, see below).
GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N")
COLOUR_MODES = ("RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "P", "PA")
# Kept for callers that ask how many colour channels a mode decodes to.
MODE_CHANNELS = {**dict.fromkeys(GREY_MODES, 1), **dict.fromkeys(COLOUR_MODES, 3)}
_SIXTEEN_BIT = 257  # 65535 / 255: 16-bit -> 8-bit keeps the full range (white stays white, grey stays grey)


@dataclass
class FolderScan:
    """Files found under a root, with their labels."""

    files: list[Path]
    labels: list[int]
    class_names: tuple[str, ...]


@dataclass
class LoadedImages:
    """Decoded images (uint8 (C, H, W) arrays) and what was skipped."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)  # (file, reason)


def scan_image_folder(root: str | Path) -> FolderScan:
    """Find images: ``root/<class>/**/*.png`` (labelled) or ``root/*.png`` (unlabelled).

    Hidden files and folders and files with non-image suffixes are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise TimError(
            f"data.root={str(root)!r} is not a folder",
            "set data.root to a folder of images (one sub-folder per class)",
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes:
        pairs = [(f, k) for k, name in enumerate(classes) for f in _image_files(root / name)]
    else:
        pairs = [(f, 0) for f in _image_files(root, recursive=False)]
    if not pairs:
        raise TimError(
            f"no images ({', '.join(IMAGE_SUFFIXES[:4])} ...) found under {str(root)!r}",
            "put images in one sub-folder per class (or directly in the folder when unlabelled)",
        )
    return FolderScan(files=[f for f, _ in pairs], labels=[k for _, k in pairs], class_names=tuple(classes))


def _image_files(folder: Path, recursive: bool = True) -> list[Path]:
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(
        p
        for p in candidates
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


def adm_center_crop(image: Any, size: int) -> Any:
    """ADM / guided-diffusion centre crop of a PIL image to ``size`` x ``size``.

    Box-halve while the short side is >= 2 size (cheap, alias-free), bicubic-resize the short side
    to ``size``, then crop the centre.
    """
    from PIL import Image

    while min(image.size) >= 2 * size:
        image = image.resize(tuple(s // 2 for s in image.size), resample=Image.Resampling.BOX)
    scale = size / min(image.size)
    image = image.resize(tuple(round(s * scale) for s in image.size), resample=Image.Resampling.BICUBIC)
    left, top = (image.size[0] - size) // 2, (image.size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def native_resize(image: Any, multiple: int, max_pixels: int) -> Any | None:
    """Resize a PIL image to its own size rounded down to ``multiple`` (arXiv 2509.04394, App. C.2); None if too small.

    With ``max_pixels > 0`` a larger image is first scaled down (aspect kept) to at most that many pixels.
    """
    from PIL import Image

    width, height = image.size
    if max_pixels and width * height > max_pixels:
        scale = math.sqrt(max_pixels / (width * height))
        width, height = max(1, int(width * scale)), max(1, int(height * scale))
    height, width = round_down_size(height, width, multiple)
    if height == 0 or width == 0:
        return None
    if (width, height) == image.size:
        return image
    return image.resize((width, height), resample=Image.Resampling.BICUBIC)


def load_images(scan: FolderScan, cfg: DataConfig) -> LoadedImages:
    """Decode every file; skip unreadable ones; raise on wrong channel counts (one error for all)."""
    from PIL import Image

    loaded, wrong_channels = LoadedImages(), []
    for file, label in zip(scan.files, scan.labels, strict=True):
        try:
            with Image.open(file) as opened:
                opened.load()
                mode = opened.mode
                image = decode_to_8bit(opened)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
            loaded.skipped.append((file, f"{type(error).__name__}: {first_line(error)}"))
            continue
        channels = 1 if image.mode == "L" else 3
        if channels == 3 and cfg.channels == 1 and _is_grey(image):
            image, channels = image.convert("L"), 1  # R = G = B everywhere: nothing is lost
        if channels != cfg.channels:
            wrong_channels.append((file, mode, channels))
            continue
        image = _resize(image, cfg)
        if image is None:
            loaded.skipped.append((file, f"smaller than data.patch_multiple={cfg.patch_multiple}"))
            continue
        array = np.array(image, dtype=np.uint8)  # a writable copy
        loaded.images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
        loaded.labels.append(label)
        loaded.files.append(file)
    if wrong_channels:
        file, mode, channels = wrong_channels[0]
        want = "grey (mode L)" if cfg.channels == 1 else "RGB"
        raise TimError(
            f"{len(wrong_channels)} image(s) have a channel count other than data.channels={cfg.channels}, e.g. {str(file)!r} is mode {mode} ({channels} colour channel{'s' if channels > 1 else ''})",
            f"convert them to {want} or set data.channels to match",
        )
    return loaded


def decode_to_8bit(image: Any) -> Any:
    """A decoded PIL image as 8-bit grey ("L") or RGB, keeping what it shows.

    * 16-bit grey (``I;16*``, and ``I`` holding 0..65535, as 16-bit PNG/TIFF/PGM decode) is scaled
      by 255/65535 (Pillow's own ``convert("L")`` clips it, so a 16-bit image became all white);
      32-bit integer pixels outside 0..65535 and float images (``F``) have no defined range and
      are refused (the file is skipped and named).
    * Palette images become RGB, or RGBA when the palette has transparency; CMYK and YCbCr
      become RGB (Pillow's conversions, no ICC colour management).
    * Alpha is composited over black (pixel x alpha / 255), the convention of premultiplied
      alpha: fully transparent pixels become black, opaque ones keep their colour.

    Raises:
        ValueError: a mode whose pixel range or colours cannot be read without guessing.
    """
    from PIL import Image

    mode = image.mode
    if mode in ("I", "I;16", "I;16L", "I;16B", "I;16N"):
        pixels = np.asarray(image, dtype=np.int64)
        if pixels.size and (pixels.min() < 0 or pixels.max() > 65535):
            raise ValueError(
                f"mode {mode} pixels span {pixels.min()}..{pixels.max()}, outside the 16-bit range"
            )
        scaled = (pixels * 255 + 65535 // 2) // 65535  # round(p / 257), exact integer arithmetic
        return Image.fromarray(scaled.astype(np.uint8))  # 2-D uint8 -> mode L
    if mode == "F":
        raise ValueError("mode F (32-bit float) pixels have no defined range; save the image as 8- or 16-bit")
    if mode in ("P", "PA"):
        transparent = mode == "PA" or "transparency" in image.info or image.palette.mode == "RGBA"
        image = image.convert("RGBA" if transparent else "RGB")
        if image.mode == "RGB":
            return image
    elif mode in ("1", "L", "RGB"):
        return image.convert("L" if mode == "1" else mode)
    elif mode in ("La", "RGBa"):  # premultiplied already: dropping alpha is the composite over black
        return image.convert("L" if mode == "La" else "RGB")
    elif mode in ("CMYK", "YCbCr", "RGBX"):
        return image.convert("RGB")
    elif mode not in ("LA", "RGBA"):
        raise ValueError(f"mode {mode} is not a grey or RGB image")
    return _over_black(image)


def _over_black(image: Any) -> Any:
    """LA / RGBA -> L / RGB composited over black: round(x * alpha / 255)."""
    from PIL import Image

    pixels = np.asarray(image, dtype=np.uint32)
    colour, alpha = pixels[..., :-1], pixels[..., -1:]
    out = ((colour * alpha + 127) // 255).astype(np.uint8)
    return Image.fromarray(out[..., 0] if image.mode == "LA" else out)  # uint8 (H, W) -> L, (H, W, 3) -> RGB


def _is_grey(image: Any) -> bool:
    pixels = np.asarray(image)
    return bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())


def _resize(image: Any, cfg: DataConfig) -> Any | None:
    if cfg.bucketed:
        return native_resize(image, cfg.patch_multiple, cfg.max_pixels)
    if cfg.image_size:
        return adm_center_crop(image, cfg.image_size)
    return image


def check_skipped(loaded: LoadedImages, total: int, cfg: DataConfig) -> None:
    """Report skipped files in one warning; raise when their share exceeds ``max_bad_fraction``."""
    if not loaded.skipped:
        return
    file, reason = loaded.skipped[0]
    summary = f"{len(loaded.skipped)} of {total} images under {cfg.root!r} were skipped, e.g. {str(file)!r} ({reason})"
    if len(loaded.skipped) > cfg.max_bad_fraction * total:
        raise TimError(
            f"{summary}, more than data.max_bad_fraction={cfg.max_bad_fraction}",
            "remove or repair those files, or raise data.max_bad_fraction",
        )
    warnings.warn(summary, stacklevel=3)


def load_image_items(cfg: DataConfig) -> tuple[LoadedImages, tuple[str, ...]]:
    """Scan, decode and resize an image folder; report skipped files (raise if too many).

    Returns:
        (the loaded images, class names; empty when unlabelled).
    """
    scan = scan_image_folder(cfg.root)
    loaded = load_images(scan, cfg)
    check_skipped(loaded, len(scan.files), cfg)
    if not loaded.images:
        raise TimError(
            f"none of the {len(scan.files)} images under {cfg.root!r} could be used",
            "check that the files are valid images",
        )
    return loaded, scan.class_names


def build_image_folder_source(
    cfg: DataConfig, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0
) -> TensorSource | BucketedSource:
    """The "image_folder" source (see module docstring)."""
    loaded, class_names = load_image_items(cfg)
    num_classes = len(class_names)
    groups = {
        size: (x, y if num_classes else None)
        for size, (x, y) in group_by_size(list(zip(loaded.images, loaded.labels, strict=True))).items()
    }
    info = DataInfo(
        kind="image",
        shape=(cfg.channels, 0, 0),
        num_classes=num_classes,
        class_names=class_names,
        num_items=len(loaded.images),
    )
    # uint8 -> [-1, 1]: x * 2/255 - 1.
    common = stream_options(
        cfg, rank=rank, world_size=world_size, seed=seed, value_scale=2.0 / 255.0, value_offset=-1.0
    )
    if cfg.bucketed:
        source = BucketedSource.from_config(groups, info, cfg, batch_size=batch_size, **common)
    else:
        check_one_size(groups, loaded, cfg)
        (((height, width), (x, y)),) = groups.items()
        info = DataInfo(
            kind="image",
            shape=(cfg.channels, height, width),
            num_classes=num_classes,
            class_names=class_names,
            num_items=len(x),
        )
        source = TensorSource(x, y, info, batch_size=batch_size, **common)
    source.skipped_files = [(str(f), reason) for f, reason in loaded.skipped]
    return source


def check_one_size(groups: dict[Size, Any], loaded: LoadedImages, cfg: DataConfig) -> None:
    """Mixed sizes where one size is required: name two files of different sizes and the fixes."""
    if len(groups) == 1:
        return
    first, second = sorted(groups)[:2]
    example = {first: "", second: ""}
    for file, image in zip(loaded.files, loaded.images, strict=True):
        if image.shape[1:] in example and not example[image.shape[1:]]:
            example[image.shape[1:]] = f"{file} is {image.shape[1]}x{image.shape[2]}"
    raise TimError(
        f"images under {cfg.root!r} have {len(groups)} different sizes ({example[first]}, {example[second]}) but data.image_size=0 needs one size",
        "set data.image_size to centre-crop and resize them, or data.bucketed=true to train at native sizes",
    )


def images_to_unit_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [-1, 1]: x = 2 p / 255 - 1. Any shape."""
    return torch.as_tensor(images).to(torch.float32) * (2.0 / 255.0) - 1.0
