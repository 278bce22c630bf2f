"""GenEval in miniature: a deterministic object detector for the synthetic scenes and a prompt scorer.

GenEval (TiM paper, arXiv 2509.04394, Table 2) scores a text-to-image model by running an object detector on
its images and checking each image against its prompt's structured spec. Here the scenes of
:mod:`tim.data.scenes` are simple enough for an exact, training-free detector:

1. **Colour segmentation.** Each pixel is explained as ``alpha * colour`` for each palette colour
   (alpha = its coverage over the black background, so a blurred or soft edge keeps its colour);
   it takes the colour with the smallest residual if alpha >= 1/2 and the residual is within
   :data:`COLOR_TOLERANCE` (half the smallest palette-to-palette residual); otherwise background.
2. **Connected components** (8-connectivity) of each colour; a component is an object if its
   area is at least :data:`MIN_AREA_FRACTION` of the smallest legal object (a 7 px triangle) at
   that canvas size, so stray noise pixels and thin blur fringes are ignored.
3. **Shape classification.** The component's pixels are compared with the three ideal masks
   (:func:`tim.data.scenes.shape_mask`) drawn in its bounding box; the best intersection over
   union wins (a 7-12 px square, circle and triangle have fill ratios 1.0, ~0.79 and ~0.5).

Scoring rules, per category, as GenEval's (``spec.objects`` = the named (shape, colour) kinds;
an object "matches" a kind if its shape is the kind's and, when the kind names one, its colour):

* single_object / two_objects: every named kind is found at least once;
* counting: exactly ``count`` objects match the kind (GenEval's "exactly N" rule);
* colors: an object of the named shape is found and has the named colour;
* position: objects matching both kinds are found and their centroids satisfy the relation by
  at least :data:`RELATION_MARGIN_PX` px (scaled with the canvas; the renderer guarantees 4 px);
* color_attr: both kinds (shape + colour) are found.

Extra objects are not penalised except in counting, as in GenEval. ``overall`` is the mean of
the per-category scores (GenEval's overall), not of the images.

Validation (``tests/evaluation/test_geneval.py``): on the renderer's own
images the score is 1.000 overall and in every category at 24, 32 and 64 px, on both splits,
also after Gaussian noise (std 8 levels), a 3x3 box blur or a colour drift of up to 12 levels per
channel; with the prompts shuffled across the same images it falls to chance: 0.10-0.15 overall
(single_object ~0.55, since a random scene often holds that shape; position and color_attr ~0.0-0.04).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tim.data.scenes import CATEGORIES, COLORS, MIN_OBJECT_PX, SHAPES, SceneSpec, relation_holds, shape_mask
from tim.errors import TimError

COLOR_NAMES = tuple(COLORS)
_PALETTE = np.array(list(COLORS.values()), dtype=np.float64)  # (6, 3)
# A pixel is explained as alpha * palette colour + residual: alpha is the colour's coverage of
# the pixel over the black background (blur, anti-aliasing and generated soft edges scale a
# colour towards black), the residual is what the colour cannot explain.
MIN_COVERAGE = 0.5  # alpha >= 1/2: the pixel is more object than background (the half-coverage contour)
MAX_COVERAGE = 1.5  # alpha above this is no palette colour (e.g. a saturated blow-out)


def _residual(pixels: np.ndarray, palette: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, residual norm) of (..., 3) pixels against each of K palette colours: (..., K) each."""
    alpha = pixels @ palette.T / (palette**2).sum(-1)
    residual = np.linalg.norm(pixels[..., None, :] - alpha[..., None] * palette, axis=-1)
    return alpha, residual


def _palette_tolerance() -> float:
    """Half the smallest residual of one palette colour against another (~50 levels: blue vs purple)."""
    alpha, residual = _residual(_PALETTE, _PALETTE)
    return 0.5 * float(residual[~np.eye(len(_PALETTE), dtype=bool)].min())


# Within it, the nearest palette colour is unambiguous; a pixel farther from all is background.
COLOR_TOLERANCE = _palette_tolerance()
# An object needs at least this share of the area of the smallest legal object (a 7 px triangle:
# 31 px) at the canvas size; 0.4 keeps blurred, slightly shrunken shapes and drops noise specks.
MIN_AREA_FRACTION = 0.4
RELATION_MARGIN_PX = 2.0  # at 32 px: half the renderer's 4 px, as generated objects wobble


@dataclass(frozen=True)
class Detection:
    """One detected object (pixel units, rows grow downwards).

    Attributes:
        shape: best-matching shape of :data:`tim.data.scenes.SHAPES`.
        color: palette colour name.
        area: pixels in the component.
        box: ``(top, left, bottom, right)``, bottom/right exclusive.
        centroid: ``(row, column)`` of the pixel centres' mean.
        iou: intersection over union with the ideal mask of ``shape`` in its box (shape confidence).
    """

    shape: str
    color: str
    area: int
    box: tuple[int, int, int, int]
    centroid: tuple[float, float]
    iou: float


def min_area(size: int) -> float:
    """Smallest component area counted as an object on a ``size`` x ``size`` canvas."""
    smallest = float(shape_mask("triangle", MIN_OBJECT_PX).sum())  # 31 px
    return MIN_AREA_FRACTION * smallest * max(1.0, (size / 32) ** 2)


def color_labels(image: np.ndarray) -> np.ndarray:
    """(H, W) int: 0 = background, k = 1..6 the k-th palette colour.

    A pixel takes the palette colour with the smallest residual among those whose coverage alpha
    is in [MIN_COVERAGE, MAX_COVERAGE], if that residual is within :data:`COLOR_TOLERANCE`.
    """
    alpha, residual = _residual(image.astype(np.float64), _PALETTE)
    residual = np.where((alpha >= MIN_COVERAGE) & (alpha <= MAX_COVERAGE), residual, np.inf)
    best = residual.argmin(-1)
    return np.where(residual.min(-1) <= COLOR_TOLERANCE, best + 1, 0)


def connected_components(labels: np.ndarray) -> np.ndarray:
    """(H, W) int component ids (0 = background): 8-connected pixels with the same non-zero label.

    Vectorised minimum-propagation: every foreground pixel starts with its own id and repeatedly
    takes the smallest id among same-labelled neighbours until nothing changes (iterations ~
    the largest object's diameter, a dozen at 32 px).
    """
    height, width = labels.shape
    ids = np.where(labels > 0, np.arange(1, height * width + 1).reshape(height, width), 0)
    big = height * width + 1
    padded_labels = np.pad(labels, 1)
    shifts = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]
    same = [padded_labels[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width] == labels for dy, dx in shifts]
    while True:
        padded = np.pad(np.where(ids > 0, ids, big), 1, constant_values=big)
        best = ids.copy()
        for (dy, dx), match in zip(shifts, same, strict=True):
            neighbour = padded[1 + dy : 1 + dy + height, 1 + dx : 1 + dx + width]
            best = np.where(match & (labels > 0), np.minimum(best, neighbour), best)
        if np.array_equal(best, ids):
            return ids
        ids = best


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """(shape, IoU) of a component's boolean mask cropped to its bounding box.

    The ideal masks are drawn in the box's size (non-square boxes: drawn square at the mean side
    and resized by nearest neighbour), so the comparison is scale-free.
    """
    height, width = mask.shape
    side = max(1, round((height + width) / 2))
    rows = np.minimum((np.arange(height) + 0.5) * side / height, side - 1).astype(int)
    cols = np.minimum((np.arange(width) + 0.5) * side / width, side - 1).astype(int)
    best = ("square", -1.0)
    for shape in SHAPES:
        ideal = shape_mask(shape, side)[rows][:, cols]
        iou = float((ideal & mask).sum() / max(1, (ideal | mask).sum()))
        if iou > best[1]:
            best = (shape, iou)
    return best


def detect_objects(image: np.ndarray) -> list[Detection]:
    """Every object in a scene image.

    Args:
        image: uint8 (H, W, 3) RGB (a float array is read as 0..255 values).

    Returns:
        The detections, ordered by component id (top-left first).
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise TimError(f"a scene image has shape {image.shape}", "pass an (H, W, 3) RGB array")
    labels = color_labels(image)
    ids = connected_components(labels)
    threshold = min_area(max(image.shape[:2]))
    found = []
    for component in np.unique(ids[ids > 0]):
        mask = ids == component
        area = int(mask.sum())
        if area < threshold:
            continue
        rows, cols = np.nonzero(mask)
        top, left, bottom, right = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
        shape, iou = classify_shape(mask[top:bottom, left:right])
        color = COLOR_NAMES[int(labels[rows[0], cols[0]]) - 1]
        found.append(
            Detection(
                shape,
                color,
                area,
                (int(top), int(left), int(bottom), int(right)),
                (float(rows.mean()) + 0.5, float(cols.mean()) + 0.5),
                iou,
            )
        )
    return found


def _matches(det: Detection, kind: tuple[str, str | None]) -> bool:
    shape, color = kind
    return det.shape == shape and (color is None or det.color == color)


def score_detections(detections: Sequence[Detection], spec: SceneSpec, size: int = 32) -> bool:
    """Whether detections satisfy a prompt (the rules of the module docstring)."""
    kinds = spec.objects
    if spec.category == "counting":
        return sum(_matches(d, kinds[0]) for d in detections) == spec.count
    if spec.category == "position":
        margin = RELATION_MARGIN_PX * max(1.0, size / 32)
        firsts = [d for d in detections if _matches(d, kinds[0])]
        seconds = [d for d in detections if _matches(d, kinds[1])]
        return any(
            relation_holds(a.centroid, b.centroid, spec.relation, margin)
            for a in firsts
            for b in seconds
            if a is not b
        )
    # single_object, two_objects, colors, color_attr: every named kind at least once. For colors
    # GenEval checks the colour of the detected object of that class: the same test here.
    return all(any(_matches(d, kind) for d in detections) for kind in kinds)


def score_image(image: np.ndarray, spec: SceneSpec) -> bool:
    """Whether one image (uint8 (H, W, 3)) follows its prompt's spec."""
    return score_detections(detect_objects(image), spec, size=max(np.asarray(image).shape[:2]))


def to_uint8_images(x) -> np.ndarray:
    """Model output -> images for the detector.

    Args:
        x (torch.Tensor | numpy.ndarray): (N, 3, H, W) in [-1, 1] (what the samplers return), or
            uint8 (N, H, W, 3).

    Returns:
        uint8 (N, H, W, 3).
    """
    array = x.detach().cpu().float().numpy() if hasattr(x, "detach") else np.asarray(x)
    if array.dtype == np.uint8:
        if array.ndim != 4 or array.shape[-1] != 3:
            raise TimError(f"uint8 images have shape {array.shape}", "pass (N, H, W, 3) RGB images")
        return array
    if array.ndim != 4 or array.shape[1] != 3:
        raise TimError(f"images have shape {array.shape}", "pass (N, 3, H, W) RGB images in [-1, 1]")
    array = np.nan_to_num(array, nan=-1.0)  # a NaN pixel counts as background, never as a colour
    return np.round((np.clip(array, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8).transpose(0, 2, 3, 1)


def score_images(images, specs: Sequence[SceneSpec], *, per_image: bool = False) -> dict:
    """GenEval-style scores of a set of images against their prompts.

    Args:
        images (torch.Tensor | numpy.ndarray): uint8 (N, H, W, 3), or (N, 3, H, W) in [-1, 1] (see
            :func:`to_uint8_images`).
        specs: N prompts (:class:`tim.data.scenes.SceneSpec`).
        per_image: also return ``"correct"``: the list of N booleans.

    Returns:
        ``{"overall": mean of the category scores, "<category>": share of that category's images
        that follow their prompt, ...}`` for the categories present (in CATEGORIES order).
    """
    images = to_uint8_images(images)
    if len(images) != len(specs):
        raise TimError(f"{len(images)} images but {len(specs)} prompts", "pass one prompt per image")
    if len(images) == 0:
        raise TimError("no images to score", "pass at least one image")
    correct = [score_image(image, spec) for image, spec in zip(images, specs, strict=True)]
    result: dict = {}
    for category in CATEGORIES:
        marks = [ok for ok, spec in zip(correct, specs, strict=True) if spec.category == category]
        if marks:
            result[category] = float(np.mean(marks))
    result = {"overall": float(np.mean(list(result.values()))), **result}
    if per_image:
        result["correct"] = correct
    return result
