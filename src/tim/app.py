"""``tim app``: a local web page to generate with any number of steps (Gradio, extra ``[app]``).

TiM's point, one network for 1 ... 128 steps with quality rising, is best seen side by side: pick a
class or type a prompt, move the steps slider, or tick "compare" to render the SAME noise with 1, 2,
4, 8 and 16 steps. The page is a thin shell around :func:`generate`, a pure function (no browser, no
Gradio) that checks a request, runs the pipeline and tiles the images; it is what the unit tests call.

Serving rules: the model is loaded once; generations run one at a time (a queue); every
bad request (a :class:`tim.errors.TimError`, a size or steps limit, running out of memory) becomes a
message in the page, never a crashed server; the page binds 127.0.0.1 unless told otherwise and never
reaches the network (analytics off, no share links, fonts served locally). What it generates stays
private: the PNGs offered for download and Gradio's own copies of the images (``GRADIO_TEMP_DIR``,
unless the user set it) live in one folder of mode 0700 (:func:`private_folder`), removed at exit.

Layer: only ``tim.cli.app`` imports this module; it builds on :mod:`tim.pipeline`.
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tim.errors import TimError
from tim.system import create_temporary

MAX_STEPS = 128  # the steps slider runs 1-128 (the demo's largest step count)
COMPARE_STEPS = (1, 2, 4, 8, 16)  # the "compare" strip
MAX_IMAGES_PER_ROW = 16  # the "number of images" slider (per class / per prompt)
MAX_ROWS = 16  # classes or prompt lines in one request (digits: all 10 classes fit)
MAX_COMPARE_ROWS = 32  # compare mode draws one row per image: keeps the strip a readable height
MAX_SIDE_FACTOR = 4  # height/width up to 4x the model's default size per side
# Pixels per request, in units of default-size images: 160 = every digit class x 16 images at the
# default size; larger sizes allow proportionally fewer images (time and memory grow with the pixels).
MAX_REQUEST_IMAGES = 160
MIN_TILE_SIDE = 80  # small images (8x8 digits) are upscaled, nearest-neighbour, to at least this many pixels
MAX_GUIDANCE_SCALE = 30.0  # as `tim sample --cfg`
MAX_SEED = 2**32 - 1  # a 32-bit seed is plenty for a page and reads well in messages
BACKGROUND = 224  # grey of the gaps: white and black tiles both keep a visible edge
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
    """Read the page's facts from a :class:`tim.pipeline.TiMPipeline`.

    Args:
        pipe (tim.pipeline.TiMPipeline): a loaded pipeline (``conditioning``, ``num_classes``, ``recipe``, ``model``,
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
    steps: int = 4,
    compare: bool = False,
    guidance_scale: float = 1.0,
    guidance_interval: Sequence[float] = (0.0, 1.0),
    stochasticity: float = 0.0,
    seed: int = 0,
    num_images: int = 4,
    height: int | None = None,
    width: int | None = None,
    info: ModelInfo | None = None,
) -> Generation:
    """Check one request, run the pipeline and tile the images (what the page's button does).

    Args:
        pipe (tim.pipeline.TiMPipeline): the pipeline to run.
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


# ----------------------------------------------------------------------------- the picture


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
    """Write a uint8 (H, W, 3) image as PNG without ever leaving a half-written file.

    Args:
        image: the picture.
        path: destination; written to a temporary name in the same folder, then renamed.

    Returns:
        ``path``.
    """
    from PIL import Image

    path = Path(path)
    handle, temporary = create_temporary(path.parent, f".{path.name}.", ".png.tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            Image.fromarray(image).save(file, format="PNG")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def download_name(info: ModelInfo, generation: Generation, seed: int, label: int | None) -> str:
    """A file name that says what the PNG holds, e.g. ``tim_class3_4steps_seed7.png``."""
    if info.conditioning == "class":
        what = "allclasses" if label is None or label == EVERY_CLASS else f"class{int(label)}"
    else:
        what = "text" if info.conditioning == "text" else "uncond"
    steps = "compare" if len(generation.steps) > 1 else f"{generation.steps[0]}steps"
    return f"tim_{what}_{steps}_seed{seed}.png"


# ----------------------------------------------------------------------------- the page


_PRIVATE: list[Path] = []  # this process's private folder, once created


def private_folder() -> Path:
    """This process's private folder (mode 0700, ``tim-app-*`` in the temporary folder), removed at exit.

    Everything the page generates goes here: the PNGs offered for download and, unless the user set
    ``GRADIO_TEMP_DIR``, Gradio's cache of the images it serves. Gradio's default cache is a shared
    folder (``/tmp/gradio``) whose files other users can read and which outlives the app.
    """
    if not _PRIVATE:
        folder = Path(tempfile.mkdtemp(prefix="tim-app-"))  # 0700: only this user may enter
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        _PRIVATE.append(folder)
    return _PRIVATE[0]


def _gradio():
    # No network, ever: analytics and its version check off before Gradio is first imported.
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    # Gradio's cache of served images: our private folder, unless the user chose one. Set before
    # Gradio is imported (some of its modules read it then); components read it when built.
    if not os.environ.get("GRADIO_TEMP_DIR"):
        os.environ["GRADIO_TEMP_DIR"] = str(private_folder() / "gradio")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gradio
    except ImportError as error:
        raise TimError("Gradio is not installed (needed by `tim app`)", APP_EXTRA) from error
    return gradio


CSS = """
#tim-output img { image-rendering: pixelated; image-rendering: crisp-edges; }
#tim-seed-row { align-items: end; }
"""

# A seed from the browser's own random numbers: the button needs no server round trip, so it
# answers at once even while a generation is running.
RANDOM_SEED_JS = "() => Math.floor(Math.random() * 2147483647)"


def build_page(
    pipe, *, source: str = "", info: ModelInfo | None = None, output_dir: str | Path | None = None
):
    """Build the Gradio page around a loaded pipeline (not launched).

    Args:
        pipe (tim.pipeline.TiMPipeline): loaded once and shared by every request.
        source: what was loaded (shown in the page header).
        info: :func:`describe` of ``pipe`` (computed when not given).
        output_dir: where the downloadable PNGs go (default: a new temporary folder).

    Returns:
        page (gradio.Blocks): the page, with a queue that runs one generation at a time.
    """
    gr = _gradio()
    info = describe(pipe) if info is None else info
    temporary = output_dir is None  # then removed again by serve_until_interrupted
    output_dir = Path(tempfile.mkdtemp(prefix="png-", dir=private_folder()) if temporary else output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    def on_generate(label, prompt, steps, compare, scale, low, high, rho, seed, num, height, width):
        try:
            generation = generate(
                pipe,
                label=label,
                prompt=prompt,
                steps=steps,
                compare=compare,
                guidance_scale=scale,
                guidance_interval=(low, high),
                stochasticity=rho,
                seed=seed,
                num_images=num,
                height=height,
                width=width,
                info=info,
            )
            name = download_name(info, generation, int(seed), label)
            png = save_png(generation.image, output_dir / name)
        except TimError as error:
            raise gr.Error(str(error), print_exception=False) from None
        except Exception as error:  # a bug: keep serving, say what happened in one line, log the trace
            traceback.print_exc(file=sys.stderr)
            raise gr.Error(
                f"generation failed ({type(error).__name__}: {error}); see the terminal running `tim app`",
                print_exception=False,
            ) from None
        return generation.image, generation.summary(), gr.update(value=str(png), interactive=True)

    with gr.Blocks(title="TiM: any-step generation", analytics_enabled=False) as page:
        gr.Markdown(
            f"## Transition Model: one network, 1 to {MAX_STEPS} steps\n"
            f"`{source or 'model'}`: {info.summary()}. Move the steps slider, or compare "
            f"{'/'.join(map(str, COMPARE_STEPS))} steps on the same noise."
        )
        with gr.Row():
            with gr.Column(scale=2, min_width=280):
                label, prompt = _condition_controls(gr, info)
                steps = gr.Slider(
                    1,
                    MAX_STEPS,
                    value=info.steps,
                    step=1,
                    label="steps",
                    info="network evaluations per image (2 per step with guidance)",
                    elem_id="tim-steps",
                )
                compare = gr.Checkbox(
                    False,
                    label="compare " + "/".join(map(str, COMPARE_STEPS)) + " steps",
                    info="one column per step count, from the same noise",
                    elem_id="tim-compare",
                )
                num = gr.Slider(
                    1,
                    MAX_IMAGES_PER_ROW,
                    value=4,
                    step=1,
                    label="images per class"
                    if info.conditioning == "class"
                    else "images per prompt"
                    if info.conditioning == "text"
                    else "images",
                    elem_id="tim-num",
                )
                with gr.Row(elem_id="tim-seed-row"):
                    seed = gr.Number(0, label="seed", precision=0, minimum=0, scale=3, elem_id="tim-seed")
                    randomize = gr.Button("random seed", scale=1, size="md", elem_id="tim-random")
                scale, low, high, rho = _sampler_controls(gr, info)
                height, width = _size_controls(gr, info)
                run = gr.Button("Generate", variant="primary", elem_id="tim-generate")
            with gr.Column(scale=3):
                image = gr.Image(
                    label="samples",
                    type="numpy",
                    format="png",
                    interactive=False,
                    buttons=["fullscreen"],
                    elem_id="tim-output",
                )
                timing = gr.Markdown("Press **Generate**.", elem_id="tim-timing")
                download = gr.DownloadButton("Download PNG", interactive=False, elem_id="tim-download")
        inputs = [label, prompt, steps, compare, scale, low, high, rho, seed, num, height, width]
        run.click(
            on_generate,
            inputs,
            [image, timing, download],
            api_name="generate",
            concurrency_id="generate",
            concurrency_limit=1,
        )
        randomize.click(None, None, seed, js=RANDOM_SEED_JS)
        # The comparison fixes its own step counts: grey out the slider meanwhile. Outside the queue,
        # so it answers at once even while a generation runs.
        compare.change(
            lambda on: gr.update(interactive=not on),
            compare,
            steps,
            queue=False,
            show_progress="hidden",
            api_visibility="private",
        )
    # Queue: one generation at a time (the CPU is the bottleneck); more waiting requests are refused.
    page.queue(default_concurrency_limit=1, max_size=32)
    page.tim_png_dir = output_dir if temporary else None
    return page


def _condition_controls(gr, info: ModelInfo):
    """The class drop-down (class models) or the prompt box (text models); the other is hidden."""
    if info.conditioning == "class":
        choices = [("every class (one row each)", EVERY_CLASS)] if info.num_classes <= MAX_ROWS else []
        choices += [
            (name if name == str(i) else f"{i}: {name}", i) for i, name in enumerate(info.class_names)
        ]
        label = gr.Dropdown(choices, value=choices[0][1], label="class", elem_id="tim-class")
    else:
        label = gr.Dropdown([("-", EVERY_CLASS)], value=EVERY_CLASS, visible=False, elem_id="tim-class")
    prompt = gr.Textbox(
        "",
        label="prompt (one per line)",
        lines=2,
        visible=info.conditioning == "text",
        placeholder="a red circle above a blue square",
        elem_id="tim-prompt",
    )
    return label, prompt


def _sampler_controls(gr, info: ModelInfo):
    """Guidance scale, guidance interval and stochasticity, in a closed accordion."""
    guided = info.conditioning != "none"
    with gr.Accordion("guidance and sampler", open=False):
        scale = gr.Slider(
            0.0,
            8.0,
            value=info.guidance_scale,
            step=0.1,
            label="guidance scale (CFG)",
            info="1 = no guidance; the paper uses 2.5-3 with an interval",
            interactive=guided,
            elem_id="tim-cfg",
        )
        low = gr.Slider(
            0.0,
            1.0,
            value=info.guidance_interval[0],
            step=0.05,
            label="guide from t =",
            interactive=guided,
            elem_id="tim-interval-low",
        )
        high = gr.Slider(
            0.0,
            1.0,
            value=info.guidance_interval[1],
            step=0.05,
            label="guide up to t =",
            info="guidance only inside this noise interval (t = 1 is pure noise)",
            interactive=guided,
            elem_id="tim-interval-high",
        )
        rho = gr.Slider(
            0.0,
            1.0,
            value=info.stochasticity,
            step=0.05,
            label="stochasticity (rho)",
            info="0 = deterministic; the paper uses 0.2 for many steps",
            elem_id="tim-rho",
        )
    return scale, low, high, rho


def _size_controls(gr, info: ModelInfo):
    """Height and width sliders in multiples of the model's patch (x autoencoder) size."""
    m = info.size_multiple
    with gr.Accordion(f"size (multiples of {m} px; trained at {info.height}x{info.width})", open=False):
        height = gr.Slider(
            m, info.max_height, value=info.height, step=m, label="height", elem_id="tim-height"
        )
        width = gr.Slider(m, info.max_width, value=info.width, step=m, label="width", elem_id="tim-width")
    return height, width


def launch(page, *, host: str = "127.0.0.1", port: int = 7860) -> str:
    """Start serving the page in the background (returns once the server answers).

    Args:
        page (gradio.Blocks): from :func:`build_page`.
        host: interface to bind (127.0.0.1 = this machine only).
        port: TCP port.

    Returns:
        The page's URL.
    """
    page.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        quiet=True,
        prevent_thread_lock=True,
        ssr_mode=False,
        mcp_server=False,
        show_error=True,
        css=CSS,
    )
    return f"http://{host}:{port}/"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def serve_until_interrupted(page) -> None:
    """Block until Ctrl-C or SIGTERM, then close the server (Gradio's own wait prints a multi-line notice)."""
    import signal

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # `kill`, docker stop, systemd: the same clean stop
    try:
        while page.is_running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        page.close(verbose=False)
        if getattr(page, "tim_png_dir", None) is not None:  # the PNGs offered for download
            shutil.rmtree(page.tim_png_dir, ignore_errors=True)
