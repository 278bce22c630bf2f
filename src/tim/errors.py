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


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty.

    Library exceptions (safetensors, zipfile, OSError...) sometimes carry an empty or multi-line
    message; a TimError built from one must still be a single, non-empty line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
