"""Two CPU processes (torchrun, gloo) give the parameters of one process with the same global batch.

The reference is a single-process run with ``optim.accumulation=2``: its two micro-batches are
exactly the two ranks' rows (the data source splits each global batch by rows) and draw from the
same per-slot generators (``slot = rank * accumulation + micro``), and the loss is averaged the
same way (per-process mean, then the mean over processes / micro-batches = the global-batch mean).
Tolerance: 1e-6 absolute on weights, EMA and AdamW moments after 3 steps in float32 (measured on
torch 2.13 CPU: DDP 0.0, FSDP2 7e-9; the only difference is the summation order of the gradients).

Marked slow (30-70 s: torchrun starts two processes that each import torch): run it with
``pytest -m slow tests/training/test_distributed.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tim.training import load_config, train

WORKER = Path(__file__).with_name("distributed_worker.py")
pytestmark = pytest.mark.slow

TOLERANCE = 1e-6  # float32, 3 steps; see the module docstring
RUN = [
    "model.preset=TiM-digits",
    "model.hidden_size=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.modulation_rank=8",
    "data.name=digits",
    "train.batch_size=32",
    "train.steps=3",
    "train.checkpoint_every=3",
    "train.log_every=1",
    "train.progress=false",
    "train.device=cpu",
    "optim.lr=1e-3",
    "ema.decay=0.9",
    "sample.num=0",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("distributed")
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(out),
        *RUN,
    ]
    result = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    train(load_config(None, [*RUN, "optim.accumulation=2"]), out / "single")
    return out


def _max_diff(a: Path, b: Path, part: str) -> float:
    x, y = (
        load_file(a / "checkpoints/step_00000003" / part),
        load_file(b / "checkpoints/step_00000003" / part),
    )
    assert x.keys() == y.keys()
    return max((x[k].double() - y[k].double()).abs().max().item() for k in x)


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
@pytest.mark.parametrize("part", ["model.safetensors", "ema.safetensors", "optimizer.safetensors"])
def test_two_processes_equal_one_process(runs: Path, parallel: str, part: str) -> None:
    assert _max_diff(runs / parallel, runs / "single", part) <= TOLERANCE


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_logged_loss_is_the_global_batch_mean(runs: Path, parallel: str) -> None:
    def rows(run: Path) -> list[dict]:
        return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]

    for a, b in zip(rows(runs / parallel), rows(runs / "single"), strict=True):
        assert a["step"] == b["step"] and a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["mse"] == pytest.approx(b["mse"], rel=1e-6)


def test_dde_runs_on_fsdp2_shards_with_forward_passes_only(runs: Path) -> None:
    for rank in (0, 1):
        report = json.loads((runs / f"dde_rank{rank}.json").read_text())
        assert report["parameters_are_dtensors"] and report["max_abs"] > 1e-3
        assert report["max_abs_diff"] <= 1e-6 * report["max_abs"] + 1e-7


def test_fsdp_checkpoint_resumes_in_one_process(runs: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(runs / "fsdp", run)
    # Same global batch, now as 2 micro-batches of 16 rows in one process: the data position
    # (counted in global micro-batches) means other rows, which the resume reports.
    with pytest.warns(UserWarning, match="micro-batches of 32 rows, this run uses 16"):
        train(load_config(None, [*RUN, "train.steps=4", "optim.accumulation=2"]), run)
    weights = load_file(run / "checkpoints/step_00000004/model.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values())
