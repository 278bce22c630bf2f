"""Shared helpers for the training tests: a tiny, fast run configuration."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from tim.training import RunConfig, load_config

# A 2-D toy run with a 2-block, 32-wide TiMMLP: a few milliseconds per step on one CPU thread.
TINY = [
    "model.preset=MLP-toy",
    "model.hidden_size=32",
    "model.depth=2",
    "data.name=checkerboard",
    "train.batch_size=32",
    "train.steps=6",
    "train.label_dropout=0",
    "train.checkpoint_every=3",
    "train.log_every=1",
    "train.progress=false",
    "train.device=cpu",
    "optim.lr=1e-3",
    "ema.decay=0.9",
    "sample.steps=1,2",
    "sample.num=0",
]


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    # Bit-identical comparisons need the same reduction order in every run of a test.
    torch.set_num_threads(1)


@pytest.fixture
def tiny_config() -> Callable[..., RunConfig]:
    """``tiny_config("train.steps=4", ...)``: the tiny run with extra overrides."""
    return lambda *overrides: load_config(None, TINY + list(overrides))
