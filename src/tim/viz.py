"""Pictures of samples and metrics: image grids, a labelled montage, 2-D scatter and line plots.

Pillow and matplotlib are optional (the ``[train]`` extra) and are imported inside the functions
that use them; matplotlib always runs on the file-only ``Agg`` backend, so nothing needs a display.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tim.errors import TimError
from tim.io import atomic_write


def _pil():
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise TimError("Pillow is not installed", "pip install 'transition-models[train]'") from error
    return Image, ImageDraw, ImageFont


def _pyplot():
    try:
        import matplotlib
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise TimError("matplotlib is not installed", "pip install 'transition-models[train]'") from error
    matplotlib.use("Agg")  # file output only: works on machines without a display
    import matplotlib.pyplot as plt

    return plt


def grid_array(images: torch.Tensor | np.ndarray, nrow: int, scale: int = 1, padding: int = 1) -> np.ndarray:
    """Tile images into one uint8 picture.

    Args:
        images: shape (N, C, H, W) with C in {1, 3}, values in [-1, 1] (clipped for display only).
        nrow: images per row of the grid.
        scale: integer nearest-neighbour upsampling factor (8x8 digits are tiny).
        padding: pixels of white between tiles, before scaling.

    Returns:
        uint8 array of shape (rows * (H + padding) + padding, nrow * (W + padding) + padding, 3)
        times ``scale`` on both axes.
    """
    array = images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if array.ndim != 4 or array.shape[1] not in (1, 3):
        raise TimError(
            f"images must have shape (N, C, H, W) with C = 1 or 3, got {array.shape}",
            "pass image batches, not vectors",
        )
    if not np.isfinite(array).all():
        raise TimError("images contain NaN or Inf", "check the model and sampler outputs")
    if nrow < 1 or scale < 1:
        raise TimError(
            f"nrow and scale must be >= 1, got nrow={nrow}, scale={scale}", "pass positive integers"
        )
    n, c, h, w = array.shape
    pixels = np.round((np.clip(array, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    pixels = np.repeat(pixels, 3 // c, axis=1).transpose(0, 2, 3, 1)  # (N, H, W, 3)
    rows = -(-n // nrow)
    canvas = np.full((rows * (h + padding) + padding, nrow * (w + padding) + padding, 3), 255, np.uint8)
    for i in range(n):
        top, left = padding + (i // nrow) * (h + padding), padding + (i % nrow) * (w + padding)
        canvas[top : top + h, left : left + w] = pixels[i]
    return canvas.repeat(scale, axis=0).repeat(scale, axis=1)


def label_rows(grid: np.ndarray, labels: Sequence[str], max_chars: int = 48) -> np.ndarray:
    """Put a white column with one text per row band on the left of a uint8 grid (H, W, 3).

    The grid's height is split into ``len(labels)`` equal bands (the rows of :func:`grid_array`);
    each label is written on one line at its band's middle (white space runs, newlines included,
    become one space), cut to ``max_chars`` (>= 4) characters ("..." marks a cut).
    """
    if not labels or grid.ndim != 3:
        raise TimError(
            f"label_rows needs an (H, W, 3) grid and at least one label, got {grid.shape} and {len(labels)}",
            "pass grid_array's output and one label per row",
        )
    image_cls, draw_module, font_module = _pil()
    font = font_module.load_default()
    max_chars = max(4, max_chars)
    texts = [" ".join(t.split()) for t in labels]  # one line each (a prompt may hold a newline)
    texts = [t if len(t) <= max_chars else t[: max_chars - 3] + "..." for t in texts]
    measure = draw_module.Draw(image_cls.new("RGB", (1, 1)))
    width = 8 + max(int(measure.textlength(t, font=font)) for t in texts)
    canvas = image_cls.new("RGB", (width + grid.shape[1], grid.shape[0]), "white")
    canvas.paste(image_cls.fromarray(grid), (width, 0))
    draw = draw_module.Draw(canvas)
    band = grid.shape[0] / len(texts)
    for k, text in enumerate(texts):
        draw.text((4, int((k + 0.5) * band) - 6), text, fill="black", font=font)
    return np.asarray(canvas)


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int = 8, scale: int = 4) -> Path:
    """Save a batch of images in [-1, 1] as one PNG grid.

    Args:
        images: shape (N, C, H, W), C in {1, 3}, values in [-1, 1].
        path: output PNG file; parent folders are created.
        nrow: images per row.
        scale: nearest-neighbour upsampling factor.

    Returns:
        The written path.
    """
    image_cls, _, _ = _pil()
    return _save_image(image_cls.fromarray(grid_array(images, nrow, scale)), path)


def montage(
    panels: Sequence[np.ndarray],
    labels: Sequence[str],
    path: str | Path,
    title: str | None = None,
    ncol: int | None = None,
    gap: int = 12,
) -> Path:
    """Lay out several uint8 pictures in a table, each with a caption above it.

    Args:
        panels: uint8 arrays (H_i, W_i, 3), e.g. from :func:`grid_array`.
        labels: one caption per panel (e.g. "1 step").
        path: output PNG file.
        title: optional line of text above everything.
        ncol: panels per row (default: all in one row).
        gap: white pixels between panels.

    Returns:
        The written path.
    """
    if len(panels) != len(labels) or not panels:
        raise TimError(
            f"montage needs one label per panel, got {len(panels)} panels and {len(labels)} labels",
            "pass matching, non-empty lists",
        )
    image_cls, draw_module, font_module = _pil()
    font = font_module.load_default()
    ncol = len(panels) if ncol is None else max(1, min(ncol, len(panels)))
    caption, header = 16, 20 if title else 0
    cell_h = max(p.shape[0] for p in panels) + caption + gap
    cell_w = max(p.shape[1] for p in panels) + gap
    rows = -(-len(panels) // ncol)
    canvas = image_cls.new("RGB", (ncol * cell_w + gap, header + rows * cell_h), "white")
    draw = draw_module.Draw(canvas)
    if title:
        draw.text((gap, 4), title, fill="black", font=font)
    for i, (panel, label) in enumerate(zip(panels, labels, strict=True)):
        left, top = gap + (i % ncol) * cell_w, header + (i // ncol) * cell_h
        draw.text((left, top + 2), label, fill="black", font=font)
        canvas.paste(image_cls.fromarray(panel), (left, top + caption))
    return _save_image(canvas, path)


def _save_image(image: Any, path: str | Path) -> Path:
    """Save a PIL image with :func:`tim.io.atomic_write`, in the format its extension names (PNG for ``.png``)."""
    image_cls, _, _ = _pil()
    path = Path(path)
    file_format = image_cls.registered_extensions().get(path.suffix.lower())
    return atomic_write(path, lambda file: image.save(file, format=file_format))


def scatter(
    points: Mapping[str, torch.Tensor | np.ndarray],
    path: str | Path,
    title: str | None = None,
    limit: float | None = None,
) -> Path:
    """Scatter plot of 2-D point clouds, one panel per entry (e.g. data vs 1-step vs 8-step samples).

    Args:
        points: name -> array of shape (N, 2).
        path: output PNG file.
        title: optional figure title.
        limit: if given, every panel shows [-limit, limit] on both axes.

    Returns:
        The written path.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(points), figsize=(3 * len(points), 3.2), squeeze=False)
    for axis, (name, cloud) in zip(axes[0], points.items(), strict=True):
        cloud = cloud.detach().cpu().numpy() if isinstance(cloud, torch.Tensor) else np.asarray(cloud)
        axis.scatter(cloud[:, 0], cloud[:, 1], s=1, alpha=0.5)
        axis.set_title(name)
        axis.set_aspect("equal")
        if limit is not None:
            axis.set_xlim(-limit, limit)
            axis.set_ylim(-limit, limit)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)


def line_plot(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    path: str | Path,
    *,
    xlabel: str,
    ylabels: Mapping[str, str] | None = None,
    title: str | None = None,
    log_x: bool = True,
    reference: Mapping[str, float] | None = None,
) -> Path:
    """Line plots sharing one x axis, one panel per series (e.g. accuracy and Frechet distance vs steps).

    Args:
        x: the shared x values (e.g. step counts).
        series: panel name -> y values, same length as ``x``.
        path: output PNG file.
        xlabel: x axis label.
        ylabels: optional y axis label per series name (default: the name).
        title: optional figure title.
        log_x: log-2 x axis (step counts double).
        reference: optional series name -> y value drawn as a dashed horizontal line (e.g. real data).

    Returns:
        The written path.
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(series), figsize=(4 * len(series), 3.2), squeeze=False)
    for axis, (name, values) in zip(axes[0], series.items(), strict=True):
        axis.plot(list(x), list(values), marker="o")
        if reference and name in reference:
            axis.axhline(reference[name], color="gray", linestyle="--", linewidth=1)
        if log_x:
            axis.set_xscale("log", base=2)
        axis.set_xticks(list(x))
        axis.set_xticklabels([str(v) for v in x])
        axis.set_xlabel(xlabel)
        axis.set_ylabel((ylabels or {}).get(name, name))
        axis.set_title(name)
        axis.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path)


def _save_figure(fig, path: str | Path) -> Path:
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.tight_layout()
    try:  # into the temporary's handle: the format is the one the extension names, as savefig(path) does
        atomic_write(path, lambda file: fig.savefig(file, dpi=100, format=path.suffix[1:] or None))
    finally:
        plt.close(fig)
    return path
