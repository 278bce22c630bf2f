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
import math
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


DERIVATIVE_PRECISIONS = ("fp32", "tf32", "mixed", "bf16")  # objective.derivative_precision modes


def test_fsdp_bf16_trains_with_every_derivative_precision(tmp_path: Path) -> None:
    """FSDP2 on 2 CPU processes (gloo) with bf16 autocast, once per DDE precision mode, with float32
    and with bfloat16 gathered weights (``train.fsdp_param_dtype``, FSDP2's MixedPrecisionPolicy).

    Each run (3 steps) must log a finite loss at every step, and the two ranks must end with the
    same weights: each rank all-gathers its sharded model and EMA after training (the worker's
    ``--precision-modes``), and both equal the checkpoint rank 0 wrote. On the CPU ``tf32`` matmuls
    are plain float32, so that run equals the ``fp32`` one.
    """
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        "--precision-modes",
        str(tmp_path),
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
    final: dict[str, dict[str, torch.Tensor]] = {}
    for mode in [*DERIVATIVE_PRECISIONS, *(f"{mode}-bf16params" for mode in DERIVATIVE_PRECISIONS)]:
        rows = [json.loads(line) for line in (tmp_path / mode / "metrics.jsonl").read_text().splitlines()]
        losses = [row["loss"] for row in rows if "loss" in row]
        assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses), (mode, rows)
        rank0, rank1 = (load_file(tmp_path / f"{mode}_rank{rank}.safetensors") for rank in (0, 1))
        assert rank0.keys() == rank1.keys() and any(key.startswith("ema.") for key in rank0), mode
        for key, value in rank0.items():
            assert torch.isfinite(value).all(), (mode, key)
            assert torch.equal(value, rank1[key]), f"{mode}: ranks disagree on {key}"
        for part in ("model", "ema"):
            saved = load_file(tmp_path / mode / "checkpoints/step_00000003" / f"{part}.safetensors")
            assert saved.keys() == {
                key.removeprefix(f"{part}.") for key in rank0 if key.startswith(f"{part}.")
            }
            for key, value in saved.items():
                assert torch.equal(value, rank1[f"{part}.{key}"]), (
                    f"{mode}: checkpoint differs on {part}.{key}"
                )
        final[mode] = rank0
    # the mode reaches the DDE passes: bf16 derivatives give other weights than fp32 ones
    assert any(not torch.equal(final["fp32"][key], final["bf16"][key]) for key in final["fp32"])
    # and the parameter policy reaches the passes: bf16 weights give other weights than float32 ones
    assert any(not torch.equal(final["fp32"][key], final["fp32-bf16params"][key]) for key in final["fp32"])
