"""Progress bars: redrawn in place on a terminal, rarely when the output is a log file."""

from __future__ import annotations

import contextlib
import io

from tim.progress import LOG_INTERVAL_S, is_interactive, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def redraws(stream: io.StringIO) -> int:
    return stream.getvalue().count("\r")


def test_bar_off_a_terminal_redraws_rarely_and_ends_with_the_final_count() -> None:
    log = io.StringIO()
    bar = progress_bar(total=5000, desc="train", file=log, dynamic_ncols=True)
    assert bar.mininterval == LOG_INTERVAL_S and not bar.dynamic_ncols
    for _ in range(5000):
        bar.update(1)
    bar.close()
    assert redraws(log) <= 3, log.getvalue()  # the first draw, maybe one more, the final one
    assert "5000/5000" in log.getvalue()


def test_bar_on_a_terminal_keeps_tqdms_defaults() -> None:
    terminal = Terminal()
    assert is_interactive(terminal) and not is_interactive(io.StringIO())
    bar = progress_bar(range(3), file=terminal, mininterval=0)
    assert bar.mininterval == 0 and list(bar) == [0, 1, 2]


def test_training_bar_uses_the_helper_off_a_terminal() -> None:
    """Redirected stderr: a 3,000-step run leaves a handful of bar records, not thousands."""
    from tim.training.logging import Progress

    log = io.StringIO()
    with contextlib.redirect_stderr(log):
        progress = Progress(total=3000, initial=0, enabled=True)
        for step in range(3000):
            progress.update(0.5, images=step)
        progress.close()
    assert 1 <= redraws(log) <= 3, log.getvalue()
