"""The Gradio page without a browser: it builds, queues one generation at a time, turns errors into messages."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tim import app
from tim.errors import TimError

ARGUMENTS = dict(
    label=0,
    prompt="",
    steps=1,
    compare=False,
    scale=1.0,
    low=0.0,
    high=1.0,
    rho=0.0,
    seed=3,
    num=2,
    height=8,
    width=8,
)


@pytest.fixture(scope="module")
def page(tiny_pipe, tmp_path_factory):
    pytest.importorskip("gradio", reason="Gradio is not installed (pip install 'transition-models[app]')")
    return app.build_page(tiny_pipe, source="tiny", output_dir=tmp_path_factory.mktemp("pngs"))


def _handler(page, name: str = "generate"):
    return next(f for f in page.fns.values() if f.api_name == name)


def test_generate_is_queued_one_at_a_time(page) -> None:
    generate = _handler(page)
    assert generate.queue and generate.concurrency_limit == 1
    randomize = next(f for f in page.fns.values() if f.fn is None)  # the seed button runs in the browser
    assert randomize.js and not randomize.queue
    toggle = next(
        f for f in page.fns.values() if f.fn is not None and f is not generate
    )  # compare greys out steps
    assert (
        not toggle.queue
        and toggle.fn(True)["interactive"] is False
        and toggle.fn(False)["interactive"] is True
    )


def test_handler_returns_image_summary_and_png(page) -> None:
    from PIL import Image

    image, summary, download = _handler(page).fn(*ARGUMENTS.values())
    assert image.dtype == np.uint8 and summary.startswith("2 images, 1 step")
    assert download["interactive"] and download["value"].endswith("tim_class0_1steps_seed3.png")
    png = np.asarray(Image.open(download["value"]).convert("RGB"))
    np.testing.assert_array_equal(png, image)


def test_bad_request_is_a_page_error_not_a_crash(page) -> None:
    import gradio as gr

    with pytest.raises(gr.Error, match="seed -3 is outside"):
        _handler(page).fn(*{**ARGUMENTS, "seed": -3}.values())
    image, _, _ = _handler(page).fn(*ARGUMENTS.values())  # and the next request still works
    assert image.size


def test_unexpected_failure_is_one_line_in_the_page(tiny_pipe, tmp_path, capsys) -> None:
    pytest.importorskip("gradio")
    import gradio as gr

    class Broken:
        def __getattr__(self, name):
            return getattr(tiny_pipe, name)

        def __call__(self, *args, **kwargs):
            raise RuntimeError("boom")

    page = app.build_page(Broken(), info=app.describe(tiny_pipe), output_dir=tmp_path)
    with pytest.raises(gr.Error, match=r"generation failed \(RuntimeError: boom\)"):
        _handler(page).fn(*ARGUMENTS.values())
    assert "Traceback" in capsys.readouterr().err  # the trace goes to the terminal, not the page


def test_missing_gradio_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "gradio", None)  # `import gradio` now raises ImportError
    with pytest.raises(TimError, match=r'pip install "transition-models\[app\]"'):
        app._gradio()


def test_text_model_page_shows_the_prompt_box(text_pipe, tmp_path) -> None:
    pytest.importorskip("gradio")
    import gradio as gr

    page = app.build_page(text_pipe, output_dir=tmp_path)
    boxes = {block.elem_id: block for block in page.blocks.values() if getattr(block, "elem_id", None)}
    assert isinstance(boxes["tim-prompt"], gr.Textbox) and boxes["tim-prompt"].visible
    assert not boxes["tim-class"].visible
    image, summary, _ = _handler(page).fn(
        *{**ARGUMENTS, "label": app.EVERY_CLASS, "prompt": "red\nblue"}.values()
    )
    assert summary.startswith("4 images")


def test_generated_images_stay_in_a_private_folder_removed_at_exit(tiny_pipe, monkeypatch) -> None:
    """The download PNGs and Gradio's cached copies live in one 0700 folder, which is removed at exit."""
    import atexit
    import os
    import shutil
    import stat
    from pathlib import Path

    pytest.importorskip("gradio", reason="Gradio is not installed (pip install 'transition-models[app]')")
    cleanups = []
    monkeypatch.setattr(atexit, "register", lambda fn, *args, **kwargs: cleanups.append((fn, args, kwargs)))
    monkeypatch.setattr(app.page, "_PRIVATE", [])  # the module that owns the folder
    monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    app._gradio()
    private = app.private_folder()
    assert stat.S_IMODE(private.stat().st_mode) == 0o700 and private.name.startswith("tim-app-")
    assert Path(os.environ["GRADIO_TEMP_DIR"]).parent == private
    page = app.build_page(tiny_pipe, source="tiny")  # no output_dir: the private folder
    image, _, download = _handler(page).fn(*ARGUMENTS.values())
    assert Path(download["value"]).is_relative_to(private)
    shown = next(c for c in page.blocks.values() if getattr(c, "elem_id", None) == "tim-output")
    cached = Path(shown.postprocess(image).path)  # what Gradio serves: its own copy of the image
    assert cached.is_file() and cached.is_relative_to(private), cached
    assert (shutil.rmtree, (private,), {"ignore_errors": True}) in cleanups
    for fn, args, kwargs in cleanups:  # what happens at exit
        fn(*args, **kwargs)
    assert not private.exists()


def test_a_gradio_temp_dir_set_by_the_user_is_kept(monkeypatch, tmp_path) -> None:
    import os

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "mine"))
    app._gradio()
    assert os.environ["GRADIO_TEMP_DIR"] == str(tmp_path / "mine")
