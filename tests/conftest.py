"""Suite-wide test set-up.

pytest runs with ``--import-mode=importlib`` (pyproject.toml), which does not put test folders on
``sys.path``; shared helpers live in ``tests/helpers/`` and are importable as ``helpers.*`` because
this file adds ``tests/`` once, whatever the working directory or the way pytest is started.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

# A shell without job control starts background commands (`cmd &`, nohup in scripts, some CI
# runners) with SIGINT ignored, and every child inherits that: the Ctrl-C tests (preemption, tim
# app's shutdown) would then wait on a signal that never arrives. Give the suite, and the processes
# it starts, Python's normal Ctrl-C handling back.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def float64() -> Iterator[None]:
    """Make float64 the default dtype for one test (restored afterwards for other modules).

    Use per module with ``pytestmark = pytest.mark.usefixtures("float64")``.
    """
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


OPT_IN_SUITES = ("slow", "full", "gpu")  # registered in pyproject.toml; each is selected with -m NAME


@pytest.hookimpl(tryfirst=True)  # before -m deselects anything: every collected test is checked
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Refuse a test in two opt-in suites, so ``-m slow`` never picks a ``gpu`` or ``full`` test."""
    for item in items:
        marks = [name for name in OPT_IN_SUITES if item.get_closest_marker(name)]
        if len(marks) > 1:
            raise pytest.UsageError(
                f"{item.nodeid} is marked {' and '.join(marks)}; a test belongs to at most one of "
                f"{', '.join(OPT_IN_SUITES)} (move the extra mark or split the test)"
            )
