"""Shared fixtures for the network tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs"


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    """The CI machine has 2 cores shared by several jobs."""
    torch.set_num_threads(1)


@pytest.fixture
def specs() -> Path:
    """The shared specification folder (reference tensors, released state-dict listings)."""
    if not SPECS.is_dir():
        pytest.fail(f"missing specification folder {SPECS}")
    return SPECS
