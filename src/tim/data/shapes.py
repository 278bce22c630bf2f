"""A synthetic multi-aspect dataset: coloured shapes rendered by our code at many sizes.

Each image is a flat background with one filled shape (circle, square, triangle or plus sign;
the label) of a random colour, drawn at 4x supersampling and box-filtered (anti-aliased). The
shape's size follows the canvas's SHORT side, so a 3:1 canvas shows an undistorted shape with
room around it: a model trained on mixed sizes must learn "one shape somewhere on a background",
not a fixed layout. Used by the bucketing tests and scripts/native_resolution_demo.py.
"""

from __future__ import annotations

import numpy as np

from tim.data.buckets import BucketedSource, Size, group_by_size
from tim.data.config import DataConfig, DataInfo
from tim.data.sources import TensorSource, stream_options
from tim.errors import TimError

SHAPE_NAMES = ("circle", "square", "triangle", "plus")
SUPERSAMPLE = 4  # render at 4x and average 4x4 blocks: anti-aliased edges
SHAPES_DATASET_SEED = 20250904  # fixed, so every run renders the same dataset (TiM's arXiv date)
DEFAULT_SHAPES_SIZE = 16  # fixed-size shapes when data.image_size = 0
# Large, high-contrast shapes: a small model learns them in minutes (scripts/native_resolution_demo.py
# measured 0.44..0.8 spans on 0.2-apart grey levels: more faint, tiny shapes and blurrier samples).
SHAPE_SPAN = (0.6, 0.9)  # range of the shape's size as a fraction of the canvas's short side
BACKGROUND = (0.0, 0.15)  # range of the background level per channel (fraction of full scale)
FOREGROUND = (0.85, 1.0)  # range of the shape's level per channel: >= 0.7 above the background


def shape_mask(label: int, dy: np.ndarray, dx: np.ndarray, half: float) -> np.ndarray:
    """Inside-test for shape ``label`` centred at offset 0 with half-size ``half`` (pixels)."""
    if label == 0:
        return dx**2 + dy**2 <= half**2
    if label == 1:
        return (np.abs(dx) <= 0.85 * half) & (np.abs(dy) <= 0.85 * half)  # 0.85: about the disk's area
    if label == 2:
        return (np.abs(dy) <= half) & (np.abs(dx) <= (dy + half) / 2)  # apex up, base 2 * half wide
    arm = half / 3
    return ((np.abs(dx) <= half) & (np.abs(dy) <= arm)) | ((np.abs(dy) <= half) & (np.abs(dx) <= arm))


def render_shape(size: Size, label: int, rng: np.random.Generator, channels: int = 3) -> np.ndarray:
    """One image of shape ``label`` on a (H, W) canvas, uint8 of shape (channels, H, W)."""
    height, width = size
    short = min(height, width)
    half = rng.uniform(*SHAPE_SPAN) * short / 2
    cy = rng.uniform(half, height - half)
    cx = rng.uniform(half, width - half)
    ys = (np.arange(height * SUPERSAMPLE) + 0.5) / SUPERSAMPLE - cy
    xs = (np.arange(width * SUPERSAMPLE) + 0.5) / SUPERSAMPLE - cx
    mask = shape_mask(label, ys[:, None], xs[None, :], half).astype(np.float64)
    coverage = mask.reshape(height, SUPERSAMPLE, width, SUPERSAMPLE).mean(axis=(1, 3))
    background = rng.uniform(*BACKGROUND, size=channels)
    foreground = rng.uniform(*FOREGROUND, size=channels)
    image = background[:, None, None] + (foreground - background)[:, None, None] * coverage[None]
    return np.round(image * 255).astype(np.uint8)


def shape_sizes(min_side: int, max_side: int, multiple: int, max_aspect: float) -> list[Size]:
    """Every (H, W) with sides multiples of ``multiple`` in [min_side, max_side] and aspect <= max_aspect."""
    sides = [s for s in range(multiple, max_side + 1, multiple) if s >= min_side]
    return [(h, w) for h in sides for w in sides if max(h, w) <= max_aspect * min(h, w)]


def render_shapes(
    sizes: list[Size], n: int, seed: int = SHAPES_DATASET_SEED, channels: int = 3
) -> list[tuple[np.ndarray, int]]:
    """``n`` (image, label) pairs; sizes uniform over ``sizes``, labels uniform over the 4 shapes.

    Returns:
        List of (uint8 array (channels, H, W), label).
    """
    rng = np.random.default_rng(seed)
    items = []
    for _ in range(n):
        size = sizes[int(rng.integers(len(sizes)))]
        label = int(rng.integers(len(SHAPE_NAMES)))
        items.append((render_shape(size, label, rng, channels), label))
    return items


def build_shapes_source(
    cfg: DataConfig, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0
) -> TensorSource | BucketedSource:
    """The "shapes" source: fixed-size squares, or mixed sizes in resolution buckets (``cfg.bucketed``)."""
    info = DataInfo(
        kind="image",
        shape=(cfg.channels, 0, 0),
        num_classes=len(SHAPE_NAMES),
        class_names=SHAPE_NAMES,
        num_items=cfg.num_images,
    )
    # uint8 -> [-1, 1]: x * 2/255 - 1.
    common = stream_options(
        cfg, rank=rank, world_size=world_size, seed=seed, value_scale=2.0 / 255.0, value_offset=-1.0
    )
    if cfg.bucketed:
        sizes = shape_sizes(cfg.min_side, cfg.max_side, cfg.patch_multiple, cfg.max_aspect)
        if not sizes:
            raise TimError(
                f"no multiple of data.patch_multiple={cfg.patch_multiple} lies in [data.min_side={cfg.min_side}, data.max_side={cfg.max_side}]",
                "widen the side range or lower patch_multiple",
            )
        groups = group_by_size(render_shapes(sizes, cfg.num_images, channels=cfg.channels))
        return BucketedSource.from_config(groups, info, cfg, batch_size=batch_size, **common)
    side = cfg.image_size or DEFAULT_SHAPES_SIZE
    ((x, y),) = group_by_size(render_shapes([(side, side)], cfg.num_images, channels=cfg.channels)).values()
    info = DataInfo(
        kind="image",
        shape=(cfg.channels, side, side),
        num_classes=len(SHAPE_NAMES),
        class_names=SHAPE_NAMES,
        num_items=cfg.num_images,
    )
    return TensorSource(x, y, info, batch_size=batch_size, **common)
