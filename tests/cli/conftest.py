"""Shared fixtures for the command-line tests: a tiny trained digits run (seconds on one core)."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers.cli import run_cli

# A 1-block, 32-wide TiM on the digits: enough to exercise every code path, trained for 3 steps.
TINY_MODEL = [
    "model.patch_size=2",
    "model.hidden_size=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.modulation_rank=8",
    "model.encoder_depth=1",
]
TINY_TRAIN = [
    "train.steps=3",
    "train.batch_size=16",
    "train.checkpoint_every=3",
    "train.progress=false",
    "optim.warmup_steps=0",
    "sample.num=0",
]


@pytest.fixture(name="run_cli")
def run_cli_fixture():
    """The in-process ``tim`` runner, as a fixture."""
    return run_cli


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder written by ``tim train`` with the tiny model."""
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    code, _, err = run_cli(["train", "--config", "digits", "--out", str(run_dir), *TINY_MODEL, *TINY_TRAIN])
    assert code == 0, err
    return run_dir
