"""Graceful preemption: SIGTERM / SIGINT end the run after the current optimizer step.

SLURM, Kubernetes and spot instances send SIGTERM and then wait a grace period before SIGKILL;
Ctrl-C sends SIGINT. While :class:`StopRequest` is active the first such signal only sets a flag
(and writes one line to stderr); the loop finishes the optimizer step it is in, writes a checkpoint
and raises :class:`Preempted`, which ``tim train`` turns into one line and exit status
:data:`EXIT_PREEMPTED`. A second signal restores the previous handlers and re-sends itself, so it
aborts at once (SIGINT: ``KeyboardInterrupt``; SIGTERM: the default action, death by the signal).
The checkpoints on disk stay valid either way: they are written atomically.

Under torchrun every process reads the flag through one all-reduce per step
(:func:`tim.training.distributed.any_process`), so all ranks stop after the same step even when
the signal reaches them at different times.

Handlers can only be installed from the main thread; elsewhere (a training call in a worker
thread) the request is inert and the signals keep their previous behaviour. :class:`Preempted`
derives from ``KeyboardInterrupt``, so code written for Ctrl-C keeps working.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType, TracebackType
from typing import Any

# sysexits.h EX_TEMPFAIL: "temporary failure; the user is invited to retry" - rerunning resumes.
EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(KeyboardInterrupt):  # noqa: N818 - an outcome, not an error of the user
    """The run stopped early on a signal, after writing a checkpoint.

    A ``KeyboardInterrupt``: callers that do not know it (``tim demo``, benchmarks, notebooks)
    treat it as the Ctrl-C it usually is; ``except Exception`` does not swallow it.

    Attributes:
        signal_name: ``"SIGTERM"`` or ``"SIGINT"``.
        step: the optimizer step the checkpoint holds.
        checkpoint: the checkpoint directory (None on ranks other than 0).
    """

    def __init__(self, signal_name: str, step: int, checkpoint: Any) -> None:
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        where = f" in '{checkpoint}'" if checkpoint is not None else ""
        super().__init__(
            f"stopped on {signal_name} after step {step}; checkpoint saved{where}; "
            "rerun the same command to resume"
        )


class StopRequest:
    """Context manager that turns the first SIGTERM/SIGINT into a stop request.

    Attributes:
        signal_name: name of the first signal received, or None.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived in this process."""
        return self.signal_name is not None

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._restore()  # in-process callers get their own handlers back

    def _restore(self) -> None:
        for number, previous in self._previous.items():
            signal.signal(number, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, number: int, frame: FrameType | None) -> None:
        name = signal.Signals(number).name
        if self.requested:  # the second signal: behave as if we had never caught any
            self._restore()
            os.kill(os.getpid(), number)
            return
        self.signal_name = name
        # os.write: print() is not safe inside a signal handler (re-entrant buffered I/O). On a
        # terminal the progress bar's line has no newline yet: start a fresh line below it.
        lead = "\n" if os.isatty(2) else ""
        os.write(
            2,
            f"{lead}received {name}: stopping after the current step and saving a checkpoint "
            f"(send it again to abort at once)\n".encode(),
        )
