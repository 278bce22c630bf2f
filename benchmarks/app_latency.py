"""`tim app` performance: start-up to page ready, per-request latency, responsiveness during a generation.

Usage (prints one JSON object; docs/benchmarks.md, "tim app"):

    .venv/bin/python benchmarks/app_latency.py --checkpoint outputs/demo/run [--repeats 5]

Measures, with Playwright driving Debian's chromium (headless) against a `tim app` subprocess on a
free 127.0.0.1 port:

- ``ready_s``: from starting the process to the first HTTP 200 of the page (Python start-up, torch and
  Gradio imports, model load, server start); ``page_load_s``: a browser's load until the Generate
  button is shown.
- ``latency``: for 1 and 8 steps, with one image and with the page's default request (4 images per
  class, every class): the server's own time (the page's summary line) and the user's (click ->
  the new image's summary shown), median and range over ``--repeats`` requests.
- ``while_busy``: while a long generation runs (128 steps, 16 images per class, every class),
  how long the page takes to load in a second tab, how long a plain HTTP GET of the page takes and
  how long the "random seed" button takes to show a new seed (it runs in the browser).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start(checkpoint: str, port: int) -> tuple[subprocess.Popen, float]:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False"}
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-m", "tim.cli.main", "app", "--checkpoint", checkpoint, "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    while time.perf_counter() - started < 180:
        if process.poll() is not None:
            raise SystemExit(f"tim app exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("tim app did not start within 180 s")


def _set(page, elem_id: str, value: float) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


_SEEDS = iter(range(1, 10**6))  # a new seed per request: the new image has a new file URL

DONE_JS = (
    "old => { const img = document.querySelector('#tim-output img');"
    " const t = document.querySelector('#tim-timing').innerText;"
    " return img && img.src !== old && !t.includes('processing') && / in [0-9.]+ s/.test(t); }"
)


def _image_src(page) -> str:
    return page.evaluate(
        "() => { const img = document.querySelector('#tim-output img'); return img ? img.src : ''; }"
    )


def _press_generate(page) -> tuple[str, float]:
    _set(page, "tim-seed", next(_SEEDS))
    old = _image_src(page)
    start = time.perf_counter()
    page.click("#tim-generate")
    return old, start


def _request(page, steps: int, per_class: int, label: str) -> tuple[float, float]:
    """One generation from the page: (server seconds from the summary line, click-to-shown seconds)."""
    _choose_class(page, label)
    _set(page, "tim-steps", steps)
    _set(page, "tim-num", per_class)
    old, start = _press_generate(page)
    page.wait_for_function(DONE_JS, arg=old, timeout=300_000)
    shown = time.perf_counter() - start
    text = page.inner_text("#tim-timing")
    assert f"{steps} step" in text, text
    return float(re.search(r" in ([0-9.]+) s", text).group(1)), shown


def _choose_class(page, label: str) -> None:
    page.locator("#tim-class input").click()
    page.get_by_role("option", name=label, exact=True).click()


def _stats(values: list[float]) -> dict:
    return {
        "median": round(statistics.median(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a digits run folder (tim demo / tim train)")
    parser.add_argument("--repeats", type=int, default=5, help="requests per setting")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    process, ready_s = _start(args.checkpoint, _free_port())
    url = f"http://127.0.0.1:{process.args[-1]}/"
    result: dict = {
        "checkpoint": args.checkpoint,
        "ready_s": round(ready_s, 2),
        "cpus": os.cpu_count(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS
            )
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            start = time.perf_counter()
            page.goto(url)
            page.wait_for_selector("#tim-generate")
            result["page_load_s"] = round(time.perf_counter() - start, 2)
            _request(page, 1, 1, "0")  # warm-up (first calls allocate)
            latency = {}
            for steps in (1, 8):
                for per_class, label, name in (
                    (1, "0", "1 image"),
                    (4, "every class (one row each)", "40 images"),
                ):
                    runs = [_request(page, steps, per_class, label) for _ in range(args.repeats)]
                    latency[f"{steps} step{'s' if steps > 1 else ''}, {name}"] = {
                        "server_s": _stats([r[0] for r in runs]),
                        "click_to_image_s": _stats([r[1] for r in runs]),
                    }
            result["latency"] = latency
            result["while_busy"] = _while_busy(browser, page, url)
            browser.close()
    finally:
        process.terminate()
        process.wait(timeout=30)
    result["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=2))


def _while_busy(browser, page, url: str) -> dict:
    """Start a long generation, then measure what a user does meanwhile."""
    _choose_class(page, "every class (one row each)")
    _set(page, "tim-steps", 128)
    _set(page, "tim-num", 16)
    old, started = _press_generate(page)
    time.sleep(1.0)  # the generation is running now
    gets = []
    for _ in range(5):
        start = time.perf_counter()
        with urllib.request.urlopen(url, timeout=30) as response:
            response.read()
        gets.append(time.perf_counter() - start)
    second = browser.new_page()
    start = time.perf_counter()
    second.goto(url)
    second.wait_for_selector("#tim-generate")
    second_load = time.perf_counter() - start
    seed = second.input_value("#tim-seed input")
    start = time.perf_counter()
    second.click("#tim-random")
    second.wait_for_function("old => document.querySelector('#tim-seed input').value !== old", arg=seed)
    seed_s = time.perf_counter() - start
    still_running = not page.evaluate(DONE_JS, old)
    page.wait_for_function(DONE_JS, arg=old, timeout=600_000)
    return {
        "generation": page.inner_text("#tim-timing"),
        "generation_click_to_image_s": round(time.perf_counter() - started, 2),
        "measured_while_running": bool(still_running),
        "http_get_s": _stats(gets),
        "second_tab_load_s": round(second_load, 2),
        "random_seed_button_s": round(seed_s, 3),
    }


if __name__ == "__main__":
    main()
