"""Suite-wide test set-up.

pytest runs with ``--import-mode=importlib`` (pyproject.toml), which does not put test folders on
``sys.path``; shared helpers live in ``tests/helpers/`` and are importable as ``helpers.*`` because
this file adds ``tests/`` once, whatever the working directory or the way pytest is started.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)


@pytest.fixture
def float64() -> Iterator[None]:
    """Make float64 the default dtype for one test (restored afterwards for other modules).

    Use per module with ``pytestmark = pytest.mark.usefixtures("float64")``.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
