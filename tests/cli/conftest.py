"""Shared fixtures for the command-line tests: a tiny trained digits run (seconds on one core)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

# A 1-block, 32-wide TiM on the digits: enough to exercise every code path, trained for 3 steps.
TINY_MODEL = ["model.patch_size=2", "model.hidden_size=32", "model.depth=1", "model.num_heads=2", "model.modulation_rank=8",
              "model.encoder_depth=1"]
TINY_TRAIN = ["train.steps=3", "train.batch_size=16", "train.checkpoint_every=3", "train.progress=false",
              "optim.warmup_steps=0", "sample.num=0"]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """Run ``tim <argv>`` in-process; returns (exit status, stdout, stderr)."""
    from tim.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse (--help, usage errors) exits instead of returning
            code = exit_.code
    return int(code or 0), out.getvalue(), err.getvalue()


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
