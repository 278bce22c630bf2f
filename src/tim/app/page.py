"""The Gradio page: its controls and their element ids, the private folder, launching and serving.

Built by :func:`build_page` around :func:`tim.app.logic.generate`; Gradio is imported lazily
(``_gradio``), with the network switched off first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from tim.app.logic import (
    APP_EXTRA,
    COMPARE_STEPS,
    EVERY_CLASS,
    MAX_IMAGES_PER_ROW,
    MAX_ROWS,
    MAX_STEPS,
    ModelInfo,
    describe,
    download_name,
    generate,
)
from tim.app.picture import save_png
from tim.errors import TimError

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
        pipe (tim.generation.pipeline.TiMPipeline): loaded once and shared by every request.
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
    on_generate = _generate_handler(gr, pipe, info, output_dir)

    with gr.Blocks(title="TiM: any-step generation", analytics_enabled=False) as page:
        gr.Markdown(
            f"## Transition Model: one network, 1 to {MAX_STEPS} steps\n"
            f"`{source or 'model'}`: {info.summary()}. Move the steps slider, or compare "
            f"{'/'.join(map(str, COMPARE_STEPS))} steps on the same noise."
        )
        with gr.Row():
            with gr.Column(scale=2, min_width=280):
                label, prompt = _condition_controls(gr, info)
                steps, compare, num, seed, randomize = _request_controls(gr, info)
                scale, low, high, rho = _sampler_controls(gr, info)
                height, width = _size_controls(gr, info)
                run = gr.Button("Generate", variant="primary", elem_id="tim-generate")
            with gr.Column(scale=3):
                image, timing, download = _output_panel(gr)
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


def _generate_handler(gr, pipe, info: ModelInfo, output_dir: Path):
    """The Generate button's handler: :func:`generate`, the PNG for download, errors as page messages."""

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

    return on_generate


def _request_controls(gr, info: ModelInfo):
    """The steps slider, the compare box, the number of images and the seed with its random button."""
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
    return steps, compare, num, seed, randomize


def _output_panel(gr):
    """The picture, the timing line and the download button."""
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
    return image, timing, download


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
