"""`tim app` in a real browser: Playwright drives Debian's chromium against a `tim app` subprocess.

Starts ``tim app`` on a free 127.0.0.1 port with the tiny pipeline (or ``$TIM_APP_CHECKPOINT``),
asks for a request that is too large (an error message in the page, the server keeps serving),
then 1 step and 4 steps (real, non-blank images of the right size that differ), downloads the PNG,
renders the 1/2/4/8/16 comparison and saves a screenshot (``$TIM_APP_SCREENSHOT`` too, if set; that
is how docs/images/app.png is made). Every request the page makes to anything but 127.0.0.1 fails
the test, and so does any outbound request of the server (its proxy variables point at a local
trap): the page must work with no network. Skipped, with the reason, without playwright or chromium.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from tim import app

CHROMIUM = os.environ.get("TIM_CHROMIUM", "/usr/bin/chromium")
# Headless chromium in a container: no sandbox (root), no GPU, and nothing that phones home.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
START_TIMEOUT_S = 90  # Gradio's import alone takes ~5 s on an idle 2-core machine; far more under load
REQUEST_TIMEOUT_MS = 60_000


def _chromium() -> str:
    pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    pytest.importorskip("gradio", reason="Gradio is not installed (pip install 'transition-models[app]')")
    found = shutil.which(CHROMIUM) or shutil.which("chromium")
    if not found:
        pytest.skip(
            f"no chromium browser at {CHROMIUM} or on PATH: apt-get install -y chromium "
            "(Playwright's own browser download needs the network)"
        )
    return found


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ProxyTrap:
    """A local 'proxy' that records every connection: the server's outbound HTTP(S) must never reach it."""

    def __init__(self) -> None:
        self.socket = socket.socket()
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen()
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:  # closed
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.socket.close()


class Server:
    """``tim app`` as a subprocess; its output is collected for failure messages.

    Python HTTP clients (httpx, requests, urllib) honour the proxy variables, so any request of the
    server to a non-local address lands in ``trap`` instead of the network.
    """

    def __init__(self, checkpoint: Path | None, port: int, trap: ProxyTrap) -> None:
        env = {
            **os.environ,
            "GRADIO_ANALYTICS_ENABLED": "False",
            "PYTHONUNBUFFERED": "1",
            **{
                name: trap.url
                for name in (
                    "HTTP_PROXY",
                    "HTTPS_PROXY",
                    "ALL_PROXY",
                    "http_proxy",
                    "https_proxy",
                    "all_proxy",
                )
            },
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tim.cli.main",
                "app",
                *(["--checkpoint", str(checkpoint)] if checkpoint is not None else []),
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.url, self.output = f"http://127.0.0.1:{port}/", []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.process.stdout:
            self.output.append(line)

    def wait_ready(self) -> float:
        """Seconds from process start until the page answers HTTP 200."""
        deadline = self.started + START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"tim app exited with {self.process.returncode}:\n{''.join(self.output)}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.2)
        pytest.fail(f"tim app did not answer within {START_TIMEOUT_S} s:\n{''.join(self.output)}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGINT)  # what Ctrl-C sends: the command closes the server itself
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()


def _set_number(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def _generate(page, expect: str) -> np.ndarray:
    """Press Generate, wait for the summary line containing ``expect``; the shown image as RGB uint8."""
    from PIL import Image

    page.click("#tim-generate")
    page.wait_for_function(
        "text => document.querySelector('#tim-timing').innerText.includes(text)",
        arg=expect,
        timeout=REQUEST_TIMEOUT_MS,
    )
    source = page.get_attribute("#tim-output img", "src")
    response = page.request.get(source)
    assert response.ok, f"the image {source} did not load ({response.status})"
    return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"))


def _expected_shape(info: app.ModelInfo, per_row: int) -> tuple[int, ...]:
    import torch

    blank = torch.zeros(1, per_row * info.num_classes, 1, info.height, info.width)
    return app.tile(blank, per_row=per_row, compare=False, steps=[1], row_titles=info.class_names).shape


def _non_blank(image: np.ndarray) -> bool:
    content = image[(image != app.BACKGROUND).any(axis=-1)]  # pixels that are not the grey gaps
    return content.size > 0.3 * image[..., 0].size and content.std() > 10


def test_page_in_chromium(tiny_pipeline_dir: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from tim.generation import TiMPipeline

    chromium = _chromium()
    checkpoint = Path(os.environ.get("TIM_APP_CHECKPOINT", tiny_pipeline_dir))
    info = app.describe(TiMPipeline.load(checkpoint))
    assert info.conditioning == "class", "the browser test drives the class drop-down"
    trap = ProxyTrap()
    server = Server(checkpoint, _free_port(), trap)
    try:
        ready_s = server.wait_ready()
        external: list[str] = []
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000}, accept_downloads=True)
            page.route(
                lambda url: not url.startswith(("http://127.0.0.1", "data:", "blob:")),
                lambda route: (external.append(route.request.url), route.abort()),
            )
            page.goto(server.url)
            page.wait_for_selector("#tim-generate")

            # A request beyond the size budget: a message in the page, and the server keeps serving.
            page.get_by_text("size (multiples").click()
            _set_number(page, "tim-height", info.max_height)
            _set_number(page, "tim-width", info.max_width)
            _set_number(page, "tim-num", app.MAX_IMAGES_PER_ROW)
            page.click("#tim-generate")
            page.get_by_text("more than one request may draw").first.wait_for(timeout=REQUEST_TIMEOUT_MS)
            page.locator(".toast-close").first.click()  # dismiss the message (it would cover the screenshot)
            _set_number(page, "tim-height", info.height)
            _set_number(page, "tim-width", info.width)

            # 1 step, then 4 steps: same noise (seed), real images of the right size, and different.
            _set_number(page, "tim-num", 2)
            _set_number(page, "tim-steps", 1)
            one = _generate(page, "1 step (NFE 1 per image)")
            _set_number(page, "tim-steps", 4)
            four = _generate(page, "4 steps (NFE 4 per image)")
            assert one.shape == four.shape == _expected_shape(info, per_row=2)
            assert _non_blank(one) and _non_blank(four)
            assert np.abs(one.astype(int) - four.astype(int)).mean() > 1.0, (
                "1 and 4 steps gave the same picture"
            )

            # The download is exactly the shown picture, as a PNG.
            from PIL import Image

            with page.expect_download() as download:
                page.click("#tim-download")
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            assert saved.name == "tim_allclasses_4steps_seed0.png"
            np.testing.assert_array_equal(np.asarray(Image.open(saved).convert("RGB")), four)

            # The comparison strip (the screenshot of the README): one image per class, 1/2/4/8/16 steps.
            page.get_by_text("size (multiples").click()  # fold the size controls away again
            page.locator("#tim-compare input[type=checkbox]").check()
            _set_number(page, "tim-num", 1)
            strip = _generate(page, "1/2/4/8/16 steps from the same noise")
            assert strip.shape[1] > one.shape[1] and _non_blank(strip)
            page.wait_for_timeout(300)  # let the image finish painting before the screenshot
            page.screenshot(path=str(tmp_path / "app.png"), full_page=True)
            browser.close()
        assert not external, f"the page tried to reach the network: {external[:5]}"
        if os.environ.get("TIM_APP_SCREENSHOT"):
            shutil.copyfile(tmp_path / "app.png", os.environ["TIM_APP_SCREENSHOT"])
        print(f"tim app: page ready {ready_s:.1f} s after start")
    finally:
        code = server.stop()
        trap.close()
    assert code == 0, f"tim app did not stop cleanly on Ctrl-C ({code}):\n{''.join(server.output)}"
    assert trap.connections == 0, "the server tried to reach the network (through the proxy variables)"


def test_app_without_checkpoint_opens_the_bundled_scenes_model(tmp_path: Path) -> None:
    """`tim app` with no argument: the bundled text-to-image model, a prompt, 1 and 8 steps."""
    from playwright.sync_api import sync_playwright

    from tim.pretrained import available

    chromium = _chromium()
    assert "scenes" in available(), "the package ships bundled:scenes"
    trap = ProxyTrap()
    server = Server(None, _free_port(), trap)
    try:
        server.wait_ready()
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.route(
                lambda url: not url.startswith(("http://127.0.0.1", "data:", "blob:")),
                lambda route: route.abort(),
            )
            page.goto(server.url)
            page.wait_for_selector("#tim-generate")
            page.locator("#tim-prompt textarea").fill("two red circles")
            _set_number(page, "tim-num", 4)
            _set_number(page, "tim-steps", 1)
            one = _generate(page, "1 step (NFE")
            _set_number(page, "tim-steps", 8)
            eight = _generate(page, "8 steps (NFE")
            assert _non_blank(one) and _non_blank(eight) and one.shape == eight.shape
            red = (eight[..., 0] > 150) & (eight[..., 1] < 80) & (eight[..., 2] < 80)
            assert red.mean() > 0.01, "a prompt asking for red circles drew no red"
            page.screenshot(path=str(tmp_path / "app_scenes.png"), full_page=True)
            browser.close()
        if os.environ.get("TIM_APP_SCENES_SCREENSHOT"):
            shutil.copyfile(tmp_path / "app_scenes.png", os.environ["TIM_APP_SCENES_SCREENSHOT"])
    finally:
        code = server.stop()
        trap.close()
    assert code == 0, f"tim app did not stop cleanly on Ctrl-C ({code}):\n{''.join(server.output)}"
    assert trap.connections == 0, "the server tried to reach the network (through the proxy variables)"
    assert "serving bundled:scenes" in "".join(server.output)
