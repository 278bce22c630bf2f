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

Modules: :mod:`tim.app.logic` (describe a pipeline, check a request, :func:`generate`),
:mod:`tim.app.picture` (the tiled grid, the PNG) and :mod:`tim.app.page` (the Gradio page, launching,
serving). Every name is also importable from ``tim.app``.

Layer: only ``tim.cli.app`` imports this package; it builds on :mod:`tim.generation`.
"""

from tim.app.logic import (
    APP_EXTRA,
    COMPARE_STEPS,
    EVERY_CLASS,
    MAX_COMPARE_ROWS,
    MAX_GUIDANCE_SCALE,
    MAX_IMAGES_PER_ROW,
    MAX_REQUEST_IMAGES,
    MAX_ROWS,
    MAX_SEED,
    MAX_SIDE_FACTOR,
    MAX_STEPS,
    OUT_OF_MEMORY,
    Generation,
    ModelInfo,
    describe,
    download_name,
    generate,
)
from tim.app.page import (
    CSS,
    RANDOM_SEED_JS,
    build_page,
    launch,
    private_folder,
    serve_until_interrupted,
)
from tim.app.page import _gradio as _gradio  # the lazy Gradio import: tim.cli.app calls it first
from tim.app.picture import BACKGROUND, MIN_TILE_SIDE, display_scale, save_png, tile

__all__ = [
    "APP_EXTRA",
    "BACKGROUND",
    "COMPARE_STEPS",
    "CSS",
    "EVERY_CLASS",
    "MAX_COMPARE_ROWS",
    "MAX_GUIDANCE_SCALE",
    "MAX_IMAGES_PER_ROW",
    "MAX_REQUEST_IMAGES",
    "MAX_ROWS",
    "MAX_SEED",
    "MAX_SIDE_FACTOR",
    "MAX_STEPS",
    "MIN_TILE_SIDE",
    "OUT_OF_MEMORY",
    "RANDOM_SEED_JS",
    "Generation",
    "ModelInfo",
    "build_page",
    "describe",
    "display_scale",
    "download_name",
    "generate",
    "launch",
    "private_folder",
    "save_png",
    "serve_until_interrupted",
    "tile",
]
