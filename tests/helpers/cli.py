"""Run the ``tim`` command in-process, capturing what it prints (shared by the command-line tests)."""

from __future__ import annotations

import contextlib
import io


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
