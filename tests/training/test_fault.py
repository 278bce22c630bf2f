"""Fault test (issue 6): kill -9 a CPU training run at random points, resume, compare bitwise.

A tiny run that writes a checkpoint after every step (so kills land inside checkpoint writes as
well as inside training steps) is started in a subprocess and killed with SIGKILL after a random
delay at least ``KILLS`` times; after every kill each finished checkpoint must pass its manifest
check (size + sha256) — a killed writer leaves only a ``.tmp-*`` directory, removed on the next
start. Rerunning the same command until it finishes must then reproduce the uninterrupted run's
loss trajectory (every logged step) and final model, EMA and optimizer state bit for bit.

Marked slow (~1-2 min; every restart imports torch). Run it with
``pytest -m slow tests/training/test_fault.py`` (or ``make``/CI jobs that pass ``-m slow``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tim.training.checkpoint import checkpoint_dir, list_checkpoints, verify_checkpoint

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("fault_worker.py")
KILLS = 6
# Long enough that a quiet machine cannot finish the run before the sixth kill (40 was, in 2026-12).
STEPS = 120
RUN = [
    "model.preset=MLP-toy",
    "model.hidden_size=64",
    "model.depth=2",
    "data.name=checkerboard",
    "train.batch_size=64",
    f"train.steps={STEPS}",
    "train.label_dropout=0",
    "train.checkpoint_every=1",
    "train.keep_last=2",
    "train.log_every=1",
    "train.progress=false",
    "train.device=cpu",
    "optim.lr=1e-3",
    "ema.decay=0.99",
    "sample.num=0",
]


def _start(run_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(run_dir), *RUN],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run_to_end(run_dir: Path) -> None:
    process = _start(run_dir)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows]


def _logged_steps(run_dir: Path) -> int:
    path = run_dir / "metrics.jsonl"
    return path.read_text().count("\n") if path.is_file() else 0


def _wait_for_training(process: subprocess.Popen, run_dir: Path, logged_before: int) -> None:
    """Return once this incarnation has logged a step (so the kill lands inside the loop)."""
    deadline = time.monotonic() + 120
    while _logged_steps(run_dir) <= logged_before and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)


def _progress(run_dir: Path) -> int:
    found = list_checkpoints(run_dir)
    return int(found[-1].name.split("_")[1]) if found else 0


def test_kill_9_never_breaks_the_run_and_resume_is_exact(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    _run_to_end(reference)
    run, rng, kills, during_write = tmp_path / "killed", random.Random(0), 0, 0
    while kills < KILLS:
        logged_before = _logged_steps(run)
        process = _start(run)
        assert process.stdout.readline().strip() == "ready"
        _wait_for_training(process, run, logged_before)
        time.sleep(rng.uniform(0.0, 0.6))  # checkpoints take ~0.1-0.3 s here (fsync): kills hit both phases
        if process.poll() is not None:  # finished before the kill: start over from scratch
            break
        process.send_signal(signal.SIGKILL)
        process.wait()
        kills += 1
        during_write += any(checkpoint_dir(run).glob(".tmp-*"))
        for path in list_checkpoints(run):  # every finished checkpoint is intact
            assert verify_checkpoint(path) is None, path
    assert kills >= KILLS, "the run finished before it could be killed often enough; raise train.steps"
    assert 0 < _progress(run) < STEPS
    _run_to_end(run)
    assert _losses(run) == _losses(reference)
    for part in ("model", "ema", "optimizer"):
        a = load_file(list_checkpoints(run)[-1] / f"{part}.safetensors")
        b = load_file(list_checkpoints(reference)[-1] / f"{part}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), part
    print(f"{kills} kills, {during_write} inside a checkpoint write")
