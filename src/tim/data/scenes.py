"""Synthetic compositional scenes with captions: the embedded text-to-image dataset.

Every image is a black canvas holding one to four flat-coloured shapes, and its caption says
what is there, in GenEval's six categories (arXiv 2509.04394, Table 2). The conventions below are
fixed (an external evaluator relies on them):

* RGB, ``size`` x ``size`` pixels (32 by default, any side >= 16), background (0, 0, 0);
* shapes ``circle``, ``square``, ``triangle`` (isosceles, apex up, base at the bottom), each
  filled with exactly one of six colours (:data:`COLORS`); no anti-aliasing, so every pixel is
  black or a palette colour;
* every object's bounding box is at least 7 px on each side (:func:`object_side_range`);
  objects never overlap and keep a gap of at least :data:`GAP_PX` px between their boxes;
* a position relation is only captioned when the two centroids (means of the object's pixel
  coordinates) differ by >= 4 px along the relation's axis, and by more along that axis than
  along the other one (so "left of" is never mostly "above").

Caption templates (``{shape}`` in SHAPES, ``{color}`` in COLORS, ``{number}`` one..four,
``{shape}s`` the plural, ``{relation}`` one of "left of", "right of", "above", "below"):

==============  ===========================================  ============================
category        template                                      example
==============  ===========================================  ============================
single_object   ``a {shape}``                                 a triangle
two_objects     ``a {shape} and a {shape2}`` (shapes differ)  a circle and a square
counting        ``{number} {color} {shape}s`` (or ``one {color} {shape}``)  two blue squares
colors          ``a {color} {shape}``                         a red circle
position        ``a {color} {shape} {relation} a {color2} {shape2}``  a green triangle left of a yellow circle
color_attr      ``a {color} {shape} and a {color2} {shape2}`` a purple square and a white circle
==============  ===========================================  ============================

In two-object prompts of ``position`` and ``color_attr`` the two shapes differ and the two
colours differ (as in GenEval's attribute-binding prompts). Colours not named by a caption
(``single_object``, ``two_objects``) are drawn at random. :func:`parse_caption` is the exact
inverse of these templates.

Held-out prompts (generalisation, not memorisation): the colour-shape pairs in
:data:`HELDOUT_PAIRS` never appear in a training image, neither named by a caption nor drawn as a
free colour. ``scene_specs("heldout")`` lists every prompt that names at least one of them
(categories counting, colors, position and color_attr); ``scene_specs("train")`` the others.

The renderer is numpy only and a pure function of its seed: thousands of images per second.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tim.errors import TimError

if TYPE_CHECKING:
    import torch

SHAPES = ("circle", "square", "triangle")
# The six palette colours and their fixed RGB values.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "white": (235, 235, 235),
}
BACKGROUND = (0, 0, 0)  # black background
CATEGORIES = ("single_object", "two_objects", "counting", "colors", "position", "color_attr")
RELATIONS = ("left of", "right of", "above", "below")
NUMBERS = ("one", "two", "three", "four")  # counting 1-4
SPLITS = ("train", "heldout")
# One held-out colour per shape, three different colours: every colour and every shape is still
# seen in training, only these combinations are not.
HELDOUT_PAIRS = frozenset({("circle", "blue"), ("square", "yellow"), ("triangle", "red")})

MIN_SIZE = 24  # smallest canvas on which random layouts of four >= 7 px objects with gaps are quick to find
MIN_OBJECT_PX = 7  # every bounding box >= 7 px
MIN_RELATION_PX = 4.0  # centroids >= 4 px apart along a captioned relation's axis
GAP_PX = 2  # empty pixels between two boxes, so objects of one colour never touch
_MAX_LAYOUT_TRIES = 1000  # rejection sampling of whole layouts (a 32 px layout needs < 2 on average)
_POSITION_TRIES = 50  # random positions tried per object before the layout starts again


@dataclass(frozen=True)
class SceneSpec:
    """A prompt in structured form: what a scene must contain.

    Attributes:
        category: one of :data:`CATEGORIES`.
        caption: the English prompt (the templates of the module docstring).
        objects: ``(shape, color or None)`` per distinct object kind named by the caption; one
            entry for single_object, colors and counting, two for the others. ``None`` = any colour.
        relation: for ``position``: "left of" | "right of" | "above" | "below" (object 0 relative
            to object 1); else None.
        count: how many objects of ``objects[0]`` (counting: 1-4; else 1 per object).
    """

    category: str
    caption: str
    objects: tuple[tuple[str, str | None], ...]
    relation: str | None = None
    count: int = 1

    @property
    def num_objects(self) -> int:
        """Objects in a rendered scene of this prompt."""
        return self.count if self.category == "counting" else len(self.objects)


@dataclass(frozen=True)
class PlacedObject:
    """One object of a rendered scene (pixel units; rows grow downwards).

    Attributes:
        shape, color: what it is.
        box: ``(top, left, side)``: the bounding box is rows [top, top + side), columns [left, left + side).
        centroid: ``(row, column)`` mean of its pixel centres' coordinates.
    """

    shape: str
    color: str
    box: tuple[int, int, int]
    centroid: tuple[float, float]


# ---------------------------------------------------------------------------------------------
# Captions


def _plural(shape: str) -> str:
    return shape + "s"


def make_caption(
    category: str, objects: tuple[tuple[str, str | None], ...], relation: str | None = None, count: int = 1
) -> str:
    """The caption of a prompt (the templates of the module docstring)."""
    if category == "single_object":
        return f"a {objects[0][0]}"
    if category == "two_objects":
        return f"a {objects[0][0]} and a {objects[1][0]}"
    if category == "counting":
        ((shape, color),) = objects
        noun = shape if count == 1 else _plural(shape)
        return f"{NUMBERS[count - 1]} {color} {noun}"
    if category == "colors":
        return f"a {objects[0][1]} {objects[0][0]}"
    (s0, c0), (s1, c1) = objects
    joiner = relation if category == "position" else "and"
    return f"a {c0} {s0} {joiner} a {c1} {s1}"


def make_spec(
    category: str, objects: tuple[tuple[str, str | None], ...], relation: str | None = None, count: int = 1
) -> SceneSpec:
    """A :class:`SceneSpec` with its caption filled in."""
    return SceneSpec(
        category, make_caption(category, objects, relation, count), tuple(objects), relation, count
    )


_SHAPE = "|".join(SHAPES)
_COLOR = "|".join(COLORS)
_PATTERNS = (
    ("single_object", re.compile(rf"a ({_SHAPE})")),
    ("two_objects", re.compile(rf"a ({_SHAPE}) and a ({_SHAPE})")),
    ("counting", re.compile(rf"({'|'.join(NUMBERS)}) ({_COLOR}) ({_SHAPE})(s?)")),
    ("colors", re.compile(rf"a ({_COLOR}) ({_SHAPE})")),
    ("position", re.compile(rf"a ({_COLOR}) ({_SHAPE}) ({'|'.join(RELATIONS)}) a ({_COLOR}) ({_SHAPE})")),
    ("color_attr", re.compile(rf"a ({_COLOR}) ({_SHAPE}) and a ({_COLOR}) ({_SHAPE})")),
)


def parse_caption(caption: str) -> SceneSpec:
    """The structured prompt of a scene caption: the exact inverse of :func:`make_caption`.

    Leading/trailing spaces, repeated spaces and letter case are forgiven; anything else that
    is not one of the templates is a :class:`TimError`.

    Args:
        caption: e.g. "two blue squares".

    Returns:
        The :class:`SceneSpec`; its ``caption`` is the canonical form.
    """
    text = " ".join(str(caption).lower().split())
    for category, pattern in _PATTERNS:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        g = match.groups()
        if category == "single_object":
            return make_spec(category, ((g[0], None),))
        if category == "two_objects" and g[0] != g[1]:
            return make_spec(category, ((g[0], None), (g[1], None)))
        if category == "counting":
            count = NUMBERS.index(g[0]) + 1
            if (count == 1) == (g[3] == ""):  # "one red circle", "two red circles"
                return make_spec(category, ((g[2], g[1]),), count=count)
        if category == "colors":
            return make_spec(category, ((g[1], g[0]),))
        if category == "position" and g[1] != g[4] and g[0] != g[3]:
            return make_spec(category, ((g[1], g[0]), (g[4], g[3])), relation=g[2])
        if category == "color_attr" and g[1] != g[3] and g[0] != g[2]:
            return make_spec(category, ((g[1], g[0]), (g[3], g[2])))
    raise TimError(
        f"{caption!r} is not a scene caption",
        "write one of the templates of tim.data.scenes, e.g. 'a red circle', 'two blue squares', "
        "'a green triangle left of a yellow circle', 'a purple square and a white circle' "
        "(two-object prompts name two different shapes and two different colours)",
    )


def is_heldout(spec: SceneSpec) -> bool:
    """Whether a prompt names a held-out colour-shape pair (:data:`HELDOUT_PAIRS`)."""
    return any(pair in HELDOUT_PAIRS for pair in spec.objects)


def _all_specs() -> list[SceneSpec]:
    specs = [make_spec("single_object", ((s, None),)) for s in SHAPES]
    specs += [make_spec("two_objects", ((a, None), (b, None))) for a in SHAPES for b in SHAPES if a != b]
    specs += [make_spec("counting", ((s, c),), count=n) for n in range(1, 5) for c in COLORS for s in SHAPES]
    specs += [make_spec("colors", ((s, c),)) for c in COLORS for s in SHAPES]
    pairs = [
        ((s0, c0), (s1, c1))
        for c0 in COLORS
        for s0 in SHAPES
        for c1 in COLORS
        for s1 in SHAPES
        if s0 != s1 and c0 != c1
    ]
    specs += [make_spec("position", pair, relation=rel) for rel in RELATIONS for pair in pairs]
    specs += [make_spec("color_attr", pair) for pair in pairs]
    return specs


_SPECS: dict[str, list[SceneSpec]] = {}


def scene_specs(split: str = "train", category: str | None = None) -> list[SceneSpec]:
    """Every prompt of a split (optionally of one category), in a fixed order.

    Sizes (categories in :data:`CATEGORIES` order): train 3 + 6 + 60 + 15 + 504 + 126 = 714 prompts,
    held-out 0 + 0 + 12 + 3 + 216 + 54 = 285.

    Args:
        split: "train" (no held-out colour-shape pair anywhere) or "heldout" (at least one).
        category: one of :data:`CATEGORIES`, or None for all.
    """
    _check_split(split)
    if category is not None and category not in CATEGORIES:
        raise TimError(f"unknown scene category {category!r}", f"use one of {', '.join(CATEGORIES)}")
    if not _SPECS:
        everything = _all_specs()
        for name in SPLITS:
            _SPECS[name] = [s for s in everything if is_heldout(s) == (name == "heldout")]
            for cat in CATEGORIES:
                _SPECS[f"{name}/{cat}"] = [s for s in _SPECS[name] if s.category == cat]
    return list(_SPECS[split if category is None else f"{split}/{category}"])


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise TimError(f"unknown scene split {split!r}", "use 'train' or 'heldout'")


# ---------------------------------------------------------------------------------------------
# Rendering


def shape_mask(shape: str, side: int) -> np.ndarray:
    """Boolean (side, side) mask of a shape filling its bounding box (pixel-centre sampling).

    circle: pixel centres within side/2 of the box centre; square: the whole box; triangle:
    apex up, base the bottom row, half-width growing linearly from the top row to side/2.
    """
    centres = (np.arange(side) + 0.5) / side  # pixel centres in box units (0, 1)
    v, u = centres[:, None], centres[None, :]
    if shape == "circle":
        return (u - 0.5) ** 2 + (v - 0.5) ** 2 <= 0.25 + 1e-9
    if shape == "square":
        return np.ones((side, side), dtype=bool)
    if shape == "triangle":
        return np.abs(u - 0.5) <= v / 2 + 0.5 / side  # 0.5/side: the apex row keeps its 1-2 centre pixels
    raise TimError(f"unknown shape {shape!r}", f"use one of {', '.join(SHAPES)}")


def object_side_range(size: int, num_objects: int) -> tuple[int, int]:
    """(smallest, largest) box side in pixels for a scene of ``num_objects`` on a ``size`` canvas.

    A quarter to three eighths of the canvas for 1-2 objects (8-12 px at 32), a little less for 3-4
    (8-10 px at 32), never below :data:`MIN_OBJECT_PX`.
    """
    high = max(MIN_OBJECT_PX, round((0.375 if num_objects <= 2 else 0.31) * size))
    return max(MIN_OBJECT_PX, min(round(0.25 * size), high)), high


def _centroid(shape: str, top: int, left: int, side: int) -> tuple[float, float]:
    rows, cols = np.nonzero(shape_mask(shape, side))
    return top + float(rows.mean()) + 0.5, left + float(cols.mean()) + 0.5


def _separated(box: tuple[int, int, int], others: list[PlacedObject]) -> bool:
    top, left, side = box
    for other in others:
        o_top, o_left, o_side = other.box
        if (
            top < o_top + o_side + GAP_PX
            and o_top < top + side + GAP_PX
            and left < o_left + o_side + GAP_PX
            and o_left < left + side + GAP_PX
        ):
            return False
    return True


def relation_holds(a: tuple[float, float], b: tuple[float, float], relation: str, margin: float) -> bool:
    """Whether centroid ``a`` (row, column) is ``relation`` of ``b`` by at least ``margin`` px."""
    d_row, d_col = b[0] - a[0], b[1] - a[1]  # > 0: a is above / left of b
    along = {"left of": d_col, "right of": -d_col, "above": d_row, "below": -d_row}[relation]
    return along >= margin


def _dominant(a: tuple[float, float], b: tuple[float, float], relation: str) -> bool:
    d_row, d_col = abs(b[0] - a[0]), abs(b[1] - a[1])
    return d_col > d_row if relation in ("left of", "right of") else d_row > d_col


def _free_colors(shape: str, split: str) -> list[str]:
    """Colours a caption leaves open: training images never show a held-out pair."""
    if split == "heldout":
        return list(COLORS)
    return [c for c in COLORS if (shape, c) not in HELDOUT_PAIRS]


def _object_kinds(spec: SceneSpec, rng: np.random.Generator, split: str) -> list[tuple[str, str]]:
    """(shape, colour) of every object to draw, free colours drawn from the split's palette."""
    kinds = []
    for shape, color in spec.objects:
        if color is None:
            options = _free_colors(shape, split)
            color = options[int(rng.integers(len(options)))]
        kinds.append((shape, color))
    return kinds * spec.count if spec.category == "counting" else kinds


def _place(
    kinds: list[tuple[str, str]], low: int, high: int, size: int, generator: np.random.Generator
) -> list[PlacedObject] | None:
    """One random layout attempt: each object gets up to _POSITION_TRIES positions, else None."""
    placed: list[PlacedObject] = []
    for shape, color in kinds:
        side = int(generator.integers(low, high + 1))
        for _ in range(_POSITION_TRIES):
            top, left = (int(v) for v in generator.integers(0, size - side + 1, size=2))
            if _separated((top, left, side), placed):
                placed.append(
                    PlacedObject(shape, color, (top, left, side), _centroid(shape, top, left, side))
                )
                break
        else:
            return None
    return placed


def layout_scene(
    spec: SceneSpec, *, size: int = 32, generator: np.random.Generator, split: str = "train"
) -> list[PlacedObject]:
    """Where every object of a scene goes (rejection sampling of sides and positions).

    Args:
        spec: the prompt.
        size: canvas side in pixels (>= :data:`MIN_SIZE`).
        generator: numpy Generator; the layout is a pure function of its state.
        split: which palette free colours come from ("train" avoids :data:`HELDOUT_PAIRS`).

    Returns:
        One :class:`PlacedObject` per object, in the order of ``spec.objects``.
    """
    if not isinstance(size, (int, np.integer)) or size < MIN_SIZE:
        raise TimError(f"scene size {size!r} is too small", f"use a side of at least {MIN_SIZE} px, e.g. 32")
    _check_split(split)
    kinds = _object_kinds(spec, generator, split)
    low, high = object_side_range(int(size), len(kinds))
    margin = MIN_RELATION_PX * max(1.0, size / 32)  # 4 px at 32; scaled up on larger canvases
    for _ in range(_MAX_LAYOUT_TRIES):
        placed = _place(kinds, low, high, size, generator)
        if placed is not None and (
            spec.relation is None
            or (
                relation_holds(placed[0].centroid, placed[1].centroid, spec.relation, margin)
                and _dominant(placed[0].centroid, placed[1].centroid, spec.relation)
            )
        ):
            return placed
    raise TimError(
        f"could not lay out {spec.caption!r} on a {size} px canvas", f"use a canvas of at least {MIN_SIZE} px"
    )


def draw_scene(objects: list[PlacedObject], size: int) -> np.ndarray:
    """Paint placed objects on a black canvas: uint8 (size, size, 3)."""
    image = np.zeros((size, size, 3), dtype=np.uint8)
    for obj in objects:
        top, left, side = obj.box
        window = image[top : top + side, left : left + side]
        window[shape_mask(obj.shape, side)] = COLORS[obj.color]
    return image


def render_scene(
    spec: SceneSpec, *, size: int = 32, generator: np.random.Generator, split: str = "train"
) -> np.ndarray:
    """One image of a prompt: uint8 (size, size, 3), black background (see :func:`layout_scene`)."""
    return draw_scene(layout_scene(spec, size=size, generator=generator, split=split), size)


def sample_spec(rng: np.random.Generator, split: str = "train") -> SceneSpec:
    """A random prompt: a category uniformly (among those the split has), then a prompt uniformly in it."""
    scene_specs(split)  # fills the cache
    by_category = [specs for c in CATEGORIES if (specs := _SPECS[f"{split}/{c}"])]
    specs = by_category[int(rng.integers(len(by_category)))]
    return specs[int(rng.integers(len(specs)))]


def render_scenes(
    num_images: int, *, seed: int = 0, size: int = 32, split: str = "train"
) -> tuple[np.ndarray, list[str], list[SceneSpec]]:
    """A dataset of scenes: a pure function of ``(num_images, seed, size, split)``.

    Image ``k`` draws its prompt (:func:`sample_spec`: a category uniformly among those the split
    has, then a prompt uniformly in it) and its layout from its own generator ``(seed, split, k)``,
    so the first ``n`` images do not depend on ``num_images``.

    Returns:
        ``(images, captions, specs)``: uint8 (N, size, size, 3), N captions, N :class:`SceneSpec`.
    """
    if num_images < 1:
        raise TimError(f"num_images={num_images} must be >= 1", "ask for at least one scene")
    if seed < 0:
        raise TimError(f"seed={seed} must be >= 0", "use a non-negative seed")
    _check_split(split)
    images, specs = [], []
    for k in range(num_images):
        rng = np.random.default_rng([seed, SPLITS.index(split), k])
        specs.append(sample_spec(rng, split))
        images.append(render_scene(specs[-1], size=size, generator=rng, split=split))
    return np.stack(images), [spec.caption for spec in specs], specs


def scene_tensor(num: int, *, seed: int, size: int) -> torch.Tensor:
    """``num`` random scenes of every category as a float tensor (N, 3, size, size) in [-1, 1].

    The images the autoencoder trains and is scored on (``tim autoencoder``, ``tim demo latent``).
    """
    import torch

    images, _, _ = render_scenes(num, seed=seed, size=size)
    array = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    return torch.from_numpy(array).float() * (2 / 255) - 1
