"""The app's pure generate() (no browser): determinism, step counts, the compare strip, bad requests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from tim import app
from tim.errors import TimError


def test_same_seed_same_image_other_seed_differs(tiny_pipe) -> None:
    first = app.generate(tiny_pipe, label=3, steps=2, seed=7, num_images=3)
    again = app.generate(tiny_pipe, label=3, steps=2, seed=7, num_images=3)
    other = app.generate(tiny_pipe, label=3, steps=2, seed=8, num_images=3)
    np.testing.assert_array_equal(first.image, again.image)
    assert not np.array_equal(first.image, other.image)


def test_one_and_eight_steps_differ(tiny_pipe) -> None:
    one = app.generate(tiny_pipe, steps=1, num_images=2)
    eight = app.generate(tiny_pipe, steps=8, num_images=2)
    assert (one.nfe, eight.nfe) == (1, 8)
    assert one.image.shape == eight.image.shape
    assert (one.samples - eight.samples).abs().mean() > 0.01  # not a rounding difference
    assert "1 step (NFE 1" in one.summary() and "8 steps (NFE 8" in eight.summary()


def test_every_class_is_one_row_per_class_with_names(tiny_pipe) -> None:
    result = app.generate(tiny_pipe, label=None, steps=1, num_images=2)
    assert result.samples.shape == (1, 20, 1, 8, 8)
    assert result.row_titles == tuple(f"digit {i}" for i in range(10))
    assert result.image.dtype == np.uint8 and result.image.ndim == 3 and result.image.shape[2] == 3
    assert result.image.std() > 20  # real content, not a blank canvas


def test_compare_strip_uses_the_same_noise_for_every_step_count(tiny_pipe) -> None:
    strip = app.generate(tiny_pipe, label=5, compare=True, seed=4, num_images=2)
    assert strip.steps == app.COMPARE_STEPS and strip.samples.shape == (5, 2, 1, 8, 8)
    assert strip.nfe == sum(app.COMPARE_STEPS)
    direct = app.generate(tiny_pipe, label=5, steps=4, seed=4, num_images=2)
    torch.testing.assert_close(strip.samples[app.COMPARE_STEPS.index(4)], direct.samples[0])
    # one row per image, one column per step count; the columns are titled above the tiles
    tile = 8 * app.display_scale(8, 8)
    assert strip.image.shape[0] > 2 * tile and strip.image.shape[1] > 5 * tile
    assert "1/2/4/8/16 steps" in strip.summary()


def test_small_images_are_upscaled_nearest_neighbour(tiny_pipe) -> None:
    scale = app.display_scale(8, 8)
    assert scale * 8 >= app.MIN_TILE_SIDE and app.display_scale(256, 256) == 1
    result = app.generate(tiny_pipe, label=0, steps=1, num_images=1)
    pixels = (result.samples[0, 0, 0] * 255).round().to(torch.uint8).numpy()
    block = np.kron(pixels, np.ones((scale, scale), np.uint8))  # each pixel an s x s block
    found = any(
        np.array_equal(result.image[y : y + 8 * scale, x : x + 8 * scale, 0], block)
        for y in range(0, 12)
        for x in range(0, 12)
    )
    assert found, "the tile is not the 8x8 sample repeated in blocks"


def test_other_sizes(tiny_pipe) -> None:
    result = app.generate(tiny_pipe, label=1, steps=1, num_images=1, height=12, width=6)
    assert result.samples.shape[-2:] == (12, 6)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"steps": 0}, "steps 0 is outside [1, 128]"),
        ({"steps": 129}, "steps 129 is outside [1, 128]"),
        ({"steps": 2.5}, "steps 2.5 is not a whole number"),
        ({"steps": "many"}, "steps 'many' is not a number"),
        ({"num_images": 0}, "number of images 0 is outside"),
        ({"seed": -1}, "seed -1 is outside"),
        ({"guidance_scale": float("nan")}, "guidance scale nan is outside"),
        ({"guidance_interval": (0.8, 0.2)}, "has its start after its end"),
        ({"stochasticity": 2.0}, "stochasticity 2.0 is outside [0, 1]"),
        ({"height": 7}, "height 7 is not a multiple of 2"),
        ({"width": 64}, "width 64 is outside [2, 32]"),
        ({"label": 10}, "class 10 is outside [0, 9]"),
        ({"prompt": "a cat"}, "a prompt was given but the model is class-conditional"),
        ({"label": None, "num_images": 16, "height": 32, "width": 32}, "are more than one request may draw"),
        ({"label": None, "num_images": 4, "compare": True}, "compare mode draws one row per image"),
    ],
)
def test_bad_requests_are_one_line_errors(tiny_pipe, options: dict, message: str) -> None:
    request = {"label": 0, "steps": 1, "num_images": 1, **options}
    with pytest.raises(TimError) as error:
        app.generate(tiny_pipe, **request)
    assert message in str(error.value) and "\n" not in str(error.value)
    assert ";" in str(error.value)  # problem; fix


class _OutOfMemory:
    """The tiny pipeline, except that generating runs out of memory."""

    def __init__(self, pipe) -> None:
        self._pipe = pipe

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)

    def __call__(self, *args, **kwargs):
        raise MemoryError


def test_running_out_of_memory_is_a_message(tiny_pipe) -> None:
    with pytest.raises(TimError, match="not enough memory for 8x8 images"):
        app.generate(_OutOfMemory(tiny_pipe), label=0, steps=1)


def test_save_png_is_atomic_and_lossless(tiny_pipe, tmp_path) -> None:
    from PIL import Image

    result = app.generate(tiny_pipe, label=2, steps=1, num_images=2)
    path = app.save_png(result.image, tmp_path / "grid.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # no temporary left behind
    np.testing.assert_array_equal(np.asarray(Image.open(path).convert("RGB")), result.image)
    assert app.download_name(app.describe(tiny_pipe), result, 7, 2) == "tim_class2_1steps_seed7.png"


def test_describe_reads_the_pipeline(tiny_pipe) -> None:
    info = app.describe(tiny_pipe)
    assert (info.conditioning, info.num_classes, info.height, info.width) == ("class", 10, 8, 8)
    assert (info.size_multiple, info.max_height, info.steps) == (2, 32, 4)
    assert info.class_names[3] == "digit 3"


def test_text_model_one_row_per_prompt_line(text_pipe) -> None:
    result = app.generate(text_pipe, prompt="red circle\n\n  blue square ", steps=1, num_images=3)
    assert result.row_titles == ("red circle", "blue square") and result.samples.shape == (1, 6, 1, 8, 8)
    assert not torch.equal(result.samples[0, 0], result.samples[0, 3])  # the prompt changes the image
    assert app.describe(text_pipe).summary().startswith("text-to-image")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"prompt": "  \n "}, "the prompt is empty"),
        ({"prompt": "x", "label": 3}, "a class (3) was given but the model is not class-conditional"),
        ({"prompt": "\n".join("abcdefghijklmnopq")}, "17 prompt lines are more than 16"),
    ],
)
def test_text_model_bad_requests(text_pipe, options: dict, message: str) -> None:
    with pytest.raises(TimError) as error:
        app.generate(text_pipe, steps=1, num_images=1, **options)
    assert message in str(error.value)


def test_every_class_is_refused_for_many_classes(tiny_pipe) -> None:
    info = dataclasses.replace(app.describe(tiny_pipe), class_names=tuple(str(i) for i in range(1000)))
    with pytest.raises(TimError, match="one row per class needs 1000 rows, more than 16; pick one class"):
        app.generate(tiny_pipe, label=None, info=info)
