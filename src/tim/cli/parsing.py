"""What every ``tim`` sub-command's parser shares: defaults shown in the help, errors as one line."""

from __future__ import annotations

import argparse
import sys

USAGE_ERROR = 2  # the argparse / POSIX convention for "wrong usage"


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default in its help line, unless it has none or already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        no_default = action.default is None or action.default is argparse.SUPPRESS or action.default is False
        if no_default or "default" in text or action.required:
            return text
        return f"{text} (default: %(default)s)"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one ``error: ...`` line with exit status 2 (no usage dump)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print ``error: <message>; <hint>`` on stderr and exit with the usage status."""
        hint = f"run `{self.prog} --help` to see the options"
        sys.stderr.write(f"error: {message}; {hint}\n")
        raise SystemExit(USAGE_ERROR)
