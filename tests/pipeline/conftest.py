"""Fixtures for the pipeline tests: tiny networks, a stand-in autoencoder, a tiny trained run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.pipeline import PixelShuffleAutoencoder


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    """The CI machine has 2 cores shared by several jobs."""
    torch.set_num_threads(1)


@pytest.fixture
def fake_autoencoder() -> PixelShuffleAutoencoder:
    return PixelShuffleAutoencoder()


TINY_MODEL = [
    "model.patch_size=2",
    "model.hidden_size=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.modulation_rank=8",
    "model.encoder_depth=1",
]
TINY_TRAIN = [
    "train.steps=2",
    "train.batch_size=16",
    "train.checkpoint_every=2",
    "train.progress=false",
    "optim.warmup_steps=0",
    "sample.num=0",
    "sample.steps=[1,3]",
    "sample.guidance_scale=1.5",
]


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder trained for 2 steps on the digits with a 1-block TiM (a second on one core)."""
    from tim.training import load_config, train

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("pipeline") / "run"
    train(load_config("digits", TINY_MODEL + TINY_TRAIN), run_dir)
    return run_dir
