"""The page's picture: images tiled into a grid with titles, and the PNG offered for download."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tim import io as tim_io

MIN_TILE_SIDE = 80  # small images (8x8 digits) are upscaled, nearest-neighbour, to at least this many pixels
BACKGROUND = 224  # grey of the gaps: white and black tiles both keep a visible edge


def display_scale(height: int, width: int) -> int:
    """Integer nearest-neighbour factor that makes a tile at least ``MIN_TILE_SIDE`` pixels on its long side."""
    return max(1, math.ceil(MIN_TILE_SIDE / max(height, width)))


def tile(
    samples: torch.Tensor,
    *,
    per_row: int,
    compare: bool,
    steps: Sequence[int],
    row_titles: Sequence[str] = (),
) -> np.ndarray:
    """Tile images into the page's grid.

    Normal mode: one row per class / prompt with ``per_row`` images (wrapped at 4 for a single row
    group). Compare mode: one row per image, one column per step count, titled "1 step", "2 steps" ...

    Args:
        samples: shape (S, N, C, h, w), values in [0, 1]; S = len(steps).
        per_row: images per class / prompt.
        compare: lay out step counts as columns.
        steps: the step count of each of the S batches.
        row_titles: one title per class / prompt (drawn on the left when there are several).

    Returns:
        uint8 array (H, W, 3).
    """
    s, n, c, h, w = samples.shape
    pixels = (samples * 255.0).round().to(torch.uint8).numpy()  # (S, N, C, h, w)
    pixels = np.repeat(pixels, 3 // c, axis=2).transpose(0, 1, 3, 4, 2)  # (S, N, h, w, 3)
    if compare:
        grid = [[pixels[j, i] for j in range(s)] for i in range(n)]  # rows: images; columns: steps
        column_titles = [f"{k} step{'s' if k != 1 else ''}" for k in steps]
        titles = [row_titles[i // per_row] if i % per_row == 0 else "" for i in range(n)]
    else:
        columns = per_row if len(row_titles) > 1 else min(per_row, 4)  # a squarish grid fills the image panel
        flat = [pixels[0, i] for i in range(n)]
        grid = [flat[i : i + columns] for i in range(0, n, columns)]
        column_titles = []
        titles = [
            row_titles[(i * columns) // per_row] if (i * columns) % per_row == 0 else ""
            for i in range(len(grid))
        ]
    if len(row_titles) < 2 or not any(titles):
        titles = []
    return _canvas(grid, display_scale(h, w), column_titles, titles)


def _canvas(
    grid: list[list[np.ndarray]], scale: int, column_titles: Sequence[str], row_titles: Sequence[str]
) -> np.ndarray:
    """Draw tiles (each (h, w, 3) uint8) on a light grey canvas with gaps and optional titles."""
    h, w = grid[0][0].shape[:2]
    tile_h, tile_w = h * scale, w * scale
    gap = max(2, min(tile_h, tile_w) // 16)
    font_size = 14
    top = font_size + 2 * gap if column_titles else 0
    left = _text_width(row_titles, font_size) + 2 * gap if row_titles else 0
    rows, cols = len(grid), max(len(row) for row in grid)
    canvas = np.full(
        (top + rows * (tile_h + gap) + gap, left + cols * (tile_w + gap) + gap, 3), BACKGROUND, np.uint8
    )
    for i, row in enumerate(grid):
        for j, image in enumerate(row):
            y, x = top + gap + i * (tile_h + gap), left + gap + j * (tile_w + gap)
            canvas[y : y + tile_h, x : x + tile_w] = image.repeat(scale, axis=0).repeat(scale, axis=1)
    if not column_titles and not row_titles:
        return canvas
    labels = [
        (left + gap + j * (tile_w + gap) + tile_w / 2, gap + font_size / 2, text)
        for j, text in enumerate(column_titles)
    ]
    labels += [
        (left / 2, top + gap + i * (tile_h + gap) + tile_h / 2, text) for i, text in enumerate(row_titles)
    ]
    return _draw_labels(canvas, labels, font_size)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1 ships a scalable default font
    except (TypeError, OSError):  # older Pillow or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _text_width(texts: Sequence[str], size: int) -> int:
    font = _font(size)
    return int(max((font.getlength(_short(text)) for text in texts), default=0))


def _short(text: str, limit: int = 28) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _draw_labels(canvas: np.ndarray, labels: Sequence[tuple[float, float, str]], size: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    picture = Image.fromarray(canvas)
    draw, font = ImageDraw.Draw(picture), _font(size)
    for x, y, text in labels:
        draw.text((x, y), _short(text), fill=(40, 40, 40), font=font, anchor="mm")
    return np.asarray(picture).copy()


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W, 3) image as PNG without ever leaving a half-written file (:func:`tim.io.save_png`).

    Args:
        image: the picture.
        path: destination; written to a temporary name in the same folder, then renamed.

    Returns:
        ``path``.
    """
    return tim_io.save_png(path, image)
