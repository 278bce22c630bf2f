"""User-facing errors.

Every mistake a user can make (a bad config key, a wrong checkpoint, an empty dataset...) raises
:class:`TimError` with a single line that names the problem and the fix. The command line prints
that line and exits with status 2 instead of showing a traceback.
"""

from __future__ import annotations


class TimError(ValueError):
    """A user error: one line saying what is wrong and how to fix it."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem if fix is None else f"{problem}; {fix}"
        if "\n" in message:
            raise AssertionError("TimError messages must be one line")
        super().__init__(message)
