"""Synthetic scenes: issue 10's fixed conventions, captions and their inverse, determinism, held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from tim.data import scenes
from tim.data.scenes import (
    CATEGORIES,
    COLORS,
    HELDOUT_PAIRS,
    SHAPES,
    layout_scene,
    make_spec,
    parse_caption,
    render_scene,
    render_scenes,
    scene_specs,
    shape_mask,
)
from tim.errors import TimError

ISSUE_COLORS = {
    "red": (220, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "white": (235, 235, 235),
}


def test_palette_shapes_and_categories_are_the_issues():
    assert COLORS == ISSUE_COLORS
    assert SHAPES == ("circle", "square", "triangle")
    assert CATEGORIES == ("single_object", "two_objects", "counting", "colors", "position", "color_attr")


@pytest.mark.parametrize(
    "caption, category",
    [
        ("a red circle", "colors"),
        ("two blue squares", "counting"),
        ("one white triangle", "counting"),
        ("a green triangle left of a yellow circle", "position"),
        ("a purple square and a white circle", "color_attr"),
        ("a circle and a square", "two_objects"),
        ("a triangle", "single_object"),
    ],
)
def test_issue_examples_parse(caption, category):
    spec = parse_caption(caption)
    assert spec.category == category and spec.caption == caption


def test_caption_round_trip_for_every_prompt():
    every = scene_specs("train") + scene_specs("heldout")
    assert len({s.caption for s in every}) == len(every)  # captions are unique
    for spec in every:
        assert parse_caption(spec.caption) == spec
    assert parse_caption("  Two  Blue SQUARES ") == parse_caption("two blue squares")


@pytest.mark.parametrize(
    "bad",
    [
        "a red dog",
        "two blue square",
        "one blue squares",
        "a circle and a circle",
        "a red circle left of a red square",
        "a red circle and a blue circle",
        "",
        "five red circles",
    ],
)
def test_non_captions_are_one_line_errors(bad):
    with pytest.raises(TimError, match="not a scene caption") as info:
        parse_caption(bad)
    assert "\n" not in str(info.value)


def test_held_out_split_is_disjoint_and_never_drawn_in_training():
    train, held = scene_specs("train"), scene_specs("heldout")
    assert not {s.caption for s in train} & {s.caption for s in held}
    assert all(not any(pair in HELDOUT_PAIRS for pair in s.objects) for s in train)
    assert all(any(pair in HELDOUT_PAIRS for pair in s.objects) for s in held)
    assert {s.category for s in held} == {"counting", "colors", "position", "color_attr"}
    # free colours too: no training image shows a held-out colour-shape pair
    rng = np.random.default_rng(0)
    for spec in scene_specs("train", "single_object") + scene_specs("train", "two_objects"):
        for _ in range(40):
            for obj in layout_scene(spec, generator=rng):
                assert (obj.shape, obj.color) not in HELDOUT_PAIRS


def _boxes_overlap(a, b):
    (t0, l0, s0), (t1, l1, s1) = a, b
    return t0 < t1 + s1 and t1 < t0 + s0 and l0 < l1 + s1 and l1 < l0 + s0


@pytest.mark.parametrize("size", [32, 64, 24])
def test_layout_conventions(size):
    rng = np.random.default_rng(size)
    specs = scene_specs("train") + scene_specs("heldout")
    for index in rng.choice(len(specs), 300, replace=False):
        spec = specs[index]
        objects = layout_scene(spec, size=size, generator=rng)
        assert len(objects) == spec.num_objects
        for k, obj in enumerate(objects):
            top, left, side = obj.box
            assert side >= 7 and 0 <= top and top + side <= size and 0 <= left and left + side <= size
            assert all(not _boxes_overlap(obj.box, other.box) for other in objects[k + 1 :])
        if spec.relation is not None:
            (r0, c0), (r1, c1) = objects[0].centroid, objects[1].centroid
            along = {"left of": c1 - c0, "right of": c0 - c1, "above": r1 - r0, "below": r0 - r1}[
                spec.relation
            ]
            assert along >= 4.0
        kinds = [(o.shape, o.color) for o in objects]
        for shape, color in spec.objects:
            assert any(s == shape and (color is None or c == color) for s, c in kinds)


def test_rendered_pixels_are_black_or_the_palette_and_match_the_layout():
    spec = parse_caption("a green triangle left of a yellow circle")
    image = render_scene(spec, generator=np.random.default_rng(3))
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    objects = layout_scene(spec, generator=np.random.default_rng(3))
    colours = {tuple(p) for p in image.reshape(-1, 3)}
    assert colours == {(0, 0, 0), COLORS["green"], COLORS["yellow"]}
    for obj in objects:
        top, left, side = obj.box
        window = np.all(image[top : top + side, left : left + side] == COLORS[obj.color], axis=-1)
        assert np.array_equal(window, shape_mask(obj.shape, side))
        rows, cols = np.nonzero(window)  # the bounding box is tight
        assert rows.min() == 0 and cols.min() == 0 and rows.max() == side - 1 and cols.max() == side - 1


def test_triangle_points_up_and_fill_ratios_differ():
    for side in (7, 8, 12, 20):
        tri = shape_mask("triangle", side)
        assert tri[0].sum() <= 2 and tri[-1].all()  # apex at the top, base at the bottom
        fills = [shape_mask(s, side).mean() for s in SHAPES]
        assert fills[2] < fills[0] < fills[1] == 1.0


def test_render_scenes_is_a_pure_function_of_the_seed():
    a, caps_a, specs_a = render_scenes(40, seed=5)
    b, caps_b, _ = render_scenes(40, seed=5)
    c, caps_c, _ = render_scenes(10, seed=5)
    d, caps_d, _ = render_scenes(40, seed=6)
    assert np.array_equal(a, b) and caps_a == caps_b
    assert np.array_equal(a[:10], c) and caps_a[:10] == caps_c  # a prefix does not depend on the count
    assert not np.array_equal(a, d) and caps_a != caps_d
    assert [s.caption for s in specs_a] == caps_a
    assert len({s.category for s in specs_a}) == len(CATEGORIES)  # all categories drawn


def test_held_out_rendering_and_other_sizes():
    images, captions, specs = render_scenes(20, seed=1, size=48, split="heldout")
    assert images.shape == (20, 48, 48, 3)
    assert all(scenes.is_heldout(s) for s in specs)


def test_rendering_is_fast():
    import time

    started = time.perf_counter()
    render_scenes(1000, seed=0)
    assert time.perf_counter() - started < 10  # ~0.3 s on an idle core; generous for a loaded machine


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: render_scenes(0), "num_images"),
        (lambda: render_scenes(4, seed=-1), "seed"),
        (lambda: render_scenes(4, size=12), "too small"),
        (lambda: render_scenes(4, split="test"), "split"),
        (lambda: scene_specs(category="animals"), "category"),
    ],
)
def test_bad_arguments(call, match):
    with pytest.raises(TimError, match=match):
        call()


def test_make_spec_matches_parse():
    spec = make_spec("counting", (("square", "blue"),), count=2)
    assert spec.caption == "two blue squares" and spec.num_objects == 2
