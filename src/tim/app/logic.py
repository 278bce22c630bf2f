"""What the page does, without a browser: describe a pipeline, check a request, generate, name the PNG.

:func:`generate` is the pure function behind the page's button (the unit tests call it); the limits
of a request are the constants below, the guidance scale's is :data:`tim.samplers.MAX_GUIDANCE_SCALE`
(the one table of sampler limits); its sampler defaults are the ``DEFAULT_*`` beside that table. The
page's controls start at the model's recipe (:func:`describe`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tim.app.picture import tile
from tim.errors import TimError
from tim.samplers import (
    DEFAULT_GUIDANCE_INTERVAL,
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_STEPS,
    DEFAULT_STOCHASTICITY,
    MAX_GUIDANCE_SCALE,
)

MAX_STEPS = 128  # the steps slider runs 1-128 (the demo's largest step count)
COMPARE_STEPS = (1, 2, 4, 8, 16)  # the "compare" strip
MAX_IMAGES_PER_ROW = 16  # the "number of images" slider (per class / per prompt)
MAX_ROWS = 16  # classes or prompt lines in one request (digits: all 10 classes fit)
MAX_COMPARE_ROWS = 32  # compare mode draws one row per image: keeps the strip a readable height
MAX_SIDE_FACTOR = 4  # height/width up to 4x the model's default size per side
# Pixels per request, in units of default-size images: 160 = every digit class x 16 images at the
# default size; larger sizes allow proportionally fewer images (time and memory grow with the pixels).
MAX_REQUEST_IMAGES = 160
MAX_SEED = 2**32 - 1  # a 32-bit seed is plenty for a page and reads well in messages
EVERY_CLASS = -1  # drop-down value: one row per class
APP_EXTRA = 'pip install "transition-models[app]"'
# torch.OutOfMemoryError is new in torch 2.5; older versions raise torch.cuda.OutOfMemoryError
OUT_OF_MEMORY = (getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError), MemoryError)


# ----------------------------------------------------------------------------- what the page shows


@dataclass(frozen=True)
class ModelInfo:
    """What the page needs to know about a pipeline (derived once by :func:`describe`)."""

    conditioning: str  # "class" | "text" | "none"
    class_names: tuple[str, ...]  # one per class ("0", "1", ... when the recipe has none)
    height: int  # default output size in pixels
    width: int
    size_multiple: int  # output sizes must be multiples of this (patch size x autoencoder factor)
    max_height: int
    max_width: int
    steps: int  # the recipe's defaults, used as the controls' initial values
    guidance_scale: float
    guidance_interval: tuple[float, float]
    stochasticity: float

    @property
    def num_classes(self) -> int:
        """How many classes the model was trained on (0 for text or unconditional models)."""
        return len(self.class_names)

    def summary(self) -> str:
        """One line such as ``class-conditional (10 classes), 8x8 pixels``."""
        kind = {
            "class": f"class-conditional ({self.num_classes} classes)",
            "text": "text-to-image",
            "none": "unconditional",
        }[self.conditioning]
        return f"{kind}, {self.height}x{self.width} pixels by default"


def describe(pipe) -> ModelInfo:
    """Read the page's facts from a :class:`tim.generation.pipeline.TiMPipeline`.

    Args:
        pipe (tim.generation.pipeline.TiMPipeline): a loaded pipeline (``conditioning``, ``num_classes``, ``recipe``, ``model``,
            ``default_size``, ``size_multiple``).

    Returns:
        The :class:`ModelInfo` of that pipeline.
    """
    config = getattr(pipe.model, "config", None)
    if getattr(config, "patch_size", None) is None:
        raise TimError(
            "this checkpoint generates vectors (2-D toy data), not images",
            "use `tim sample` for vector models; `tim app` shows image models",
        )
    recipe = pipe.recipe
    names = tuple(str(name) for name in (recipe.class_names or ()))
    if pipe.conditioning == "class" and len(names) != pipe.num_classes:
        names = tuple(str(i) for i in range(pipe.num_classes))  # the recipe names none
    height, width = (int(side) for side in pipe.default_size)
    low, high = recipe.guidance_interval
    return ModelInfo(
        conditioning=pipe.conditioning,
        class_names=names if pipe.conditioning == "class" else (),
        height=height,
        width=width,
        size_multiple=int(pipe.size_multiple),
        max_height=MAX_SIDE_FACTOR * height,
        max_width=MAX_SIDE_FACTOR * width,
        steps=int(min(max(recipe.steps, 1), MAX_STEPS)),
        guidance_scale=float(recipe.guidance_scale),
        guidance_interval=(float(low), float(high)),
        stochasticity=float(recipe.stochasticity),
    )


@dataclass(frozen=True)
class Generation:
    """The result of one request."""

    image: np.ndarray  # (H, W, 3) uint8: the tiled grid exactly as the page shows it
    samples: torch.Tensor  # (S, N, C, h, w) float32 in [0, 1]: S step counts, N images each
    steps: tuple[int, ...]  # the S step counts (one column each in compare mode)
    row_titles: tuple[str, ...]  # the class names / prompts, one per row group
    seconds: float  # wall time of the whole request
    nfe: int  # network evaluations per image, summed over the step counts

    def summary(self) -> str:
        """One line for the page, e.g. ``40 images, 4 steps (NFE 4 per image) in 0.31 s``."""
        count = self.samples.shape[1]
        steps = (
            f"{self.steps[0]} step{'s' if self.steps[0] != 1 else ''}"
            if len(self.steps) == 1
            else "/".join(str(s) for s in self.steps) + " steps from the same noise"
        )
        return f"{count} image{'s' if count != 1 else ''}, {steps} (NFE {self.nfe} per image) in {self.seconds:.2f} s"


# ----------------------------------------------------------------------------- request checks


def _whole(name: str, value: object, low: int, high: int) -> int:
    """An integer in [low, high]; floats with a whole value (Gradio's numbers) are accepted."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TimError(
            f"{name} {value!r} is not a number", f"pass a whole number in [{low}, {high}]"
        ) from None
    if not math.isfinite(number) or number != int(number):
        raise TimError(f"{name} {value!r} is not a whole number", f"pass a whole number in [{low}, {high}]")
    if not low <= int(number) <= high:
        raise TimError(f"{name} {int(number)} is outside [{low}, {high}]", f"pass a value in [{low}, {high}]")
    return int(number)


def _real(name: str, value: object, low: float, high: float) -> float:
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise TimError(f"{name} {value!r} is not a number", f"pass a number in [{low:g}, {high:g}]") from None
    if not (math.isfinite(number) and low <= number <= high):
        raise TimError(
            f"{name} {value!r} is outside [{low:g}, {high:g}]", f"pass a number in [{low:g}, {high:g}]"
        )
    return number


def _rows(info: ModelInfo, label: int | None, prompt: str | None) -> tuple[dict, tuple[str, ...]]:
    """The pipeline's conditioning arguments and one title per row group."""
    if info.conditioning == "class":
        if prompt:
            raise TimError("a prompt was given but the model is class-conditional", "pick a class instead")
        if label is None or label == EVERY_CLASS:
            if info.num_classes > MAX_ROWS:
                raise TimError(
                    f"one row per class needs {info.num_classes} rows, more than {MAX_ROWS}", "pick one class"
                )
            ids = list(range(info.num_classes))
        else:
            ids = [_whole("class", label, 0, info.num_classes - 1)]
        return {"class_labels": ids}, tuple(info.class_names[i] for i in ids)
    if label is not None and label != EVERY_CLASS:
        raise TimError(
            f"a class ({label}) was given but the model is not class-conditional", "drop the class"
        )
    if info.conditioning == "text":
        lines = [line.strip() for line in (prompt or "").splitlines() if line.strip()]
        if not lines:
            raise TimError("the prompt is empty", "type what to draw (one prompt per line)")
        if len(lines) > MAX_ROWS:
            raise TimError(
                f"{len(lines)} prompt lines are more than {MAX_ROWS}", f"use at most {MAX_ROWS} lines"
            )
        return {"prompt": lines}, tuple(lines)
    if prompt:
        raise TimError("a prompt was given but the model is unconditional", "leave the prompt empty")
    return {}, ("",)


def _size(info: ModelInfo, name: str, value: int | None, default: int, maximum: int) -> int:
    if value is None:
        return default
    size = _whole(name, value, info.size_multiple, maximum)
    if size % info.size_multiple:
        raise TimError(
            f"{name} {size} is not a multiple of {info.size_multiple} (patch size x autoencoder factor)",
            f"pass a multiple of {info.size_multiple}",
        )
    return size


# ----------------------------------------------------------------------------- generation


def generate(
    pipe,
    *,
    label: int | None = None,
    prompt: str | None = None,
    steps: int = DEFAULT_STEPS,
    compare: bool = False,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    guidance_interval: Sequence[float] = DEFAULT_GUIDANCE_INTERVAL,
    stochasticity: float = DEFAULT_STOCHASTICITY,
    seed: int = 0,
    num_images: int = 4,
    height: int | None = None,
    width: int | None = None,
    info: ModelInfo | None = None,
) -> Generation:
    """Check one request, run the pipeline and tile the images (what the page's button does).

    Args:
        pipe (tim.generation.pipeline.TiMPipeline): the pipeline to run.
        label: a class id, or None / ``EVERY_CLASS`` for one row per class (class models only).
        prompt: text models: what to draw, one prompt per line (each line is a row).
        steps: sampling steps, 1 ... ``MAX_STEPS`` (ignored when ``compare``).
        compare: sample the same noise with every count of ``COMPARE_STEPS`` (one column each).
        guidance_scale: classifier-free guidance scale (1 = none, conditional models only).
        guidance_interval: guide only for ``low <= t <= high`` (fractions of t_max).
        stochasticity: rho of the stochastic transition sampler, 0 ... 1 (0 = deterministic).
        seed: seeds the noise: same seed and settings -> the same images.
        num_images: images per class / prompt (1 ... ``MAX_IMAGES_PER_ROW``).
        height: output height in pixels (default: the model's), a multiple of ``info.size_multiple``.
        width: output width in pixels.
        info: :func:`describe` of ``pipe`` (computed when not given).

    Returns:
        A :class:`Generation`; ``image`` is the grid, ``samples`` the raw images.
    """
    info = describe(pipe) if info is None else info
    cond, titles = _rows(info, label, prompt)
    steps_list = COMPARE_STEPS if compare else (_whole("steps", steps, 1, MAX_STEPS),)
    per_row = _whole("number of images", num_images, 1, MAX_IMAGES_PER_ROW)
    scale = _real("guidance scale", guidance_scale, 0.0, MAX_GUIDANCE_SCALE)
    if scale != 1.0 and info.conditioning == "none":
        raise TimError(f"guidance scale {scale:g} needs a conditional model", "set the guidance scale to 1")
    low, high = (_real("guidance interval", value, 0.0, 1.0) for value in guidance_interval)
    if low > high:
        raise TimError(
            f"guidance interval ({low:g}, {high:g}) has its start after its end", "pass low <= high"
        )
    rho = _real("stochasticity", stochasticity, 0.0, 1.0)
    seed = _whole("seed", seed, 0, MAX_SEED)
    h = _size(info, "height", height, info.height, info.max_height)
    w = _size(info, "width", width, info.width, info.max_width)
    count = per_row * len(titles)
    _check_budget(info, count, h, w, compare)

    start = time.perf_counter()
    batches, nfe = [], 0
    for k in steps_list:  # the same seed for every step count -> the same noise
        output = _call(
            pipe,
            cond,
            num_images=per_row,
            steps=k,
            height=h,
            width=w,
            guidance_scale=scale,
            guidance_interval=(low, high),
            stochasticity=rho,
            seed=seed,
        )
        batches.append(output)
        nfe += _nfe(output)
    samples = torch.stack([_images(output, count, h, w) for output in batches])  # (S, N, C, h, w)
    image = tile(samples, per_row=per_row, compare=compare, steps=steps_list, row_titles=titles)
    return Generation(image, samples, tuple(steps_list), titles, time.perf_counter() - start, nfe)


def _check_budget(info: ModelInfo, count: int, height: int, width: int, compare: bool) -> None:
    """Refuse requests that would take too long or too much memory (a message, not a crash)."""
    budget = MAX_REQUEST_IMAGES * info.height * info.width
    if count * height * width > budget:
        most = max(1, budget // (height * width))
        raise TimError(
            f"{count} images of {height}x{width} are more than one request may draw ({most} at that size)",
            "ask for fewer images or a smaller size",
        )
    if compare and count > MAX_COMPARE_ROWS:
        raise TimError(
            f"compare mode draws one row per image and {count} rows are more than {MAX_COMPARE_ROWS}",
            "pick one class or fewer images",
        )


def _call(pipe, cond: dict, **options):
    """Run the pipeline once; running out of memory becomes a one-line error."""
    try:
        return pipe(**cond, num_images_per_prompt=options.pop("num_images"), output_type="pt", **options)
    except OUT_OF_MEMORY:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise TimError(
            f"not enough memory for {options['height']}x{options['width']} images at this count",
            "ask for fewer images or a smaller size",
        ) from None


def _nfe(output) -> int:
    return int(getattr(output, "nfe", 0) or 0)


def _images(output, count: int, height: int, width: int) -> torch.Tensor:
    """The pipeline's ``pt`` output as (N, C, h, w) float32 in [0, 1], checked."""
    images = output.images
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[0] != count:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise RuntimeError(f"the pipeline returned {shape}, expected {count} images (N, C, H, W)")
    if tuple(images.shape[2:]) != (height, width):
        raise RuntimeError(
            f"the pipeline returned {tuple(images.shape[2:])} images, asked for {(height, width)}"
        )
    images = images.detach().float().cpu()
    if not torch.isfinite(images).all():
        raise TimError("the model produced NaN or Inf", "check the checkpoint, or lower the guidance scale")
    return images.clamp(0.0, 1.0)


def download_name(info: ModelInfo, generation: Generation, seed: int, label: int | None) -> str:
    """A file name that says what the PNG holds, e.g. ``tim_class3_4steps_seed7.png``."""
    if info.conditioning == "class":
        what = "allclasses" if label is None or label == EVERY_CLASS else f"class{int(label)}"
    else:
        what = "text" if info.conditioning == "text" else "uncond"
    steps = "compare" if len(generation.steps) > 1 else f"{generation.steps[0]}steps"
    return f"tim_{what}_{steps}_seed{seed}.png"
