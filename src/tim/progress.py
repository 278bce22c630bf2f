"""Progress bars that do not flood logs: one helper for every tqdm bar of the library.

On a terminal a bar redraws itself in place several times a second. Redirected to a file (a batch
job's log, ``tim demo t2i > log.txt``) every redraw is another carriage-return record, thousands per
minute. Following tqdm's advice for non-interactive output, :func:`progress_bar` keeps the usual bar
on a terminal (and in notebooks, whose widget redraws in place) and otherwise redraws it at most
once every :data:`LOG_INTERVAL_S` seconds, without resizing to a terminal width that is not there.
The final state is always written when the bar closes.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

LOG_INTERVAL_S = 30.0  # seconds between redraws when the output is not a terminal


def is_interactive(stream: IO[str] | None = None) -> bool:
    """Whether ``stream`` (default stderr, where tqdm writes) is a terminal or a notebook widget."""
    from tqdm.auto import tqdm

    if any(cls.__module__ == "tqdm.notebook" for cls in tqdm.__mro__):
        return True
    stream = stream or sys.stderr
    try:
        return bool(stream.isatty())  # pyright: ignore[reportOptionalMemberAccess]  -- sys.stderr may be None
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def progress_bar(iterable: Iterable[Any] | None = None, **kwargs: Any) -> Any:
    """``tqdm.auto.tqdm(iterable, **kwargs)``, redrawn every :data:`LOG_INTERVAL_S` s off a terminal.

    Args:
        iterable: what to iterate over (or None and ``total=...`` for a bar updated by hand).
        **kwargs: tqdm options (``total``, ``desc``, ``unit``, ``file``...). Off a terminal
            ``mininterval`` and ``maxinterval`` default to :data:`LOG_INTERVAL_S` and
            ``dynamic_ncols`` is switched off.
    """
    from tqdm.auto import tqdm

    if not is_interactive(kwargs.get("file")):
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", max(LOG_INTERVAL_S, kwargs["mininterval"]))
        kwargs["dynamic_ncols"] = False
    return tqdm(iterable, **kwargs)
