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

Not every phase is a training step. A phase whose work can be thrown away (setting up a run,
building a huge model, drawing sample grids, ``tim sample`` generating a batch) is
:meth:`StopRequest.interruptible`: there the first signal raises :class:`SignalStop` at once, and
the caller turns it into its one line and exit status 75. A phase that must not be cut in half
(writing a file, the training step itself) is :meth:`StopRequest.deferred`: the signal only sets the
flag, and a deferred block inside an interruptible phase raises :class:`SignalStop` when it ends.
Library code marks its phases with the module functions :func:`interruptible` and :func:`deferred`,
which act on the request of the command that is running (and do nothing when there is none).

Handlers can only be installed from the main thread; elsewhere (a training call in a worker
thread) the request is inert and the signals keep their previous behaviour. :class:`Preempted`
and :class:`SignalStop` derive from ``KeyboardInterrupt``, so code written for Ctrl-C keeps working.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType, TracebackType
from typing import Any

# sysexits.h EX_TEMPFAIL: "temporary failure; the user is invited to retry" - rerunning resumes.
EXIT_PREEMPTED = 75
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalStop(KeyboardInterrupt):  # noqa: N818 - an outcome, not an error of the user
    """A stop signal arrived during an interruptible phase: the phase was abandoned at once.

    Attributes:
        signal_name: ``"SIGTERM"`` or ``"SIGINT"``.
    """

    def __init__(self, signal_name: str) -> None:
        self.signal_name = signal_name
        super().__init__(f"stopped on {signal_name}")


class Preempted(KeyboardInterrupt):  # noqa: N818 - an outcome, not an error of the user
    """The run stopped early on a signal, after writing a checkpoint.

    A ``KeyboardInterrupt``: callers that do not know it (``tim demo``, benchmarks, notebooks)
    treat it as the Ctrl-C it usually is; ``except Exception`` does not swallow it.

    Attributes:
        signal_name: ``"SIGTERM"`` or ``"SIGINT"``.
        step: the optimizer step the checkpoint holds (None: stopped during set-up, before any step).
        checkpoint: the checkpoint directory (None on ranks other than 0, or when there is none).
        during: the phase that was stopped when it was not a training step (``"drawing the final
            sample grids"``), else None.
    """

    def __init__(
        self, signal_name: str, step: int | None, checkpoint: Any, during: str | None = None
    ) -> None:
        self.signal_name, self.step, self.checkpoint, self.during = signal_name, step, checkpoint, during
        where = f" in '{checkpoint}'" if checkpoint is not None else ""
        if step is None:
            kept = (
                f"its checkpoints{where} are unchanged"
                if checkpoint is not None
                else "no checkpoint was written"
            )
            message = (
                f"stopped on {signal_name} while setting up the run, before any training step; {kept}; "
                "rerun the same command to resume"
            )
        elif during is not None:
            message = (
                f"stopped on {signal_name} while {during} after step {step}; checkpoint saved{where}; "
                "rerun the same command to finish"
            )
        else:
            message = (
                f"stopped on {signal_name} after step {step}; checkpoint saved{where}; "
                "rerun the same command to resume"
            )
        super().__init__(message)


_ACTIVE: list[StopRequest] = []  # the requests whose handlers are installed, innermost last


def interruptible() -> contextlib.AbstractContextManager[None]:
    """:meth:`StopRequest.interruptible` of the running command's request (a no-op without one)."""
    return _ACTIVE[-1].interruptible() if _ACTIVE else contextlib.nullcontext()


def deferred(finishing: str = "the current file") -> contextlib.AbstractContextManager[None]:
    """:meth:`StopRequest.deferred` of the running command's request (a no-op without one)."""
    return _ACTIVE[-1].deferred(finishing) if _ACTIVE else contextlib.nullcontext()


class StopRequest:
    """Context manager that turns the first SIGTERM/SIGINT into a stop request.

    Args:
        immediate: start in an interruptible phase (``tim sample``: every phase may be abandoned);
            the default starts deferred (training: the loop checks :attr:`requested` after each step).

    Attributes:
        signal_name: name of the first signal received, or None.
    """

    def __init__(self, *, immediate: bool = False) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}
        self._immediate = immediate
        self._finishing = "the current step and saving a checkpoint"
        self._installed = False

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived in this process."""
        return self.signal_name is not None

    def check(self) -> None:
        """Raise :class:`SignalStop` when a stop signal has arrived."""
        if self.signal_name is not None:
            raise SignalStop(self.signal_name)

    @contextlib.contextmanager
    def interruptible(self) -> Iterator[None]:
        """A phase whose work may be abandoned: a signal (also one that came before) raises :class:`SignalStop`."""
        previous, self._immediate = self._immediate, True
        try:
            self.check()
            yield
        finally:
            self._immediate = previous

    @contextlib.contextmanager
    def deferred(self, finishing: str = "the current file") -> Iterator[None]:
        """A phase that must finish: a signal only sets the flag (the handler says it waits for ``finishing``).

        Inside an interruptible phase the stop happens when the block ends (:class:`SignalStop`).
        """
        previous, self._immediate = self._immediate, False
        previous_finishing, self._finishing = self._finishing, finishing
        try:
            yield
        finally:
            self._immediate, self._finishing = previous, previous_finishing
        if previous:
            self.check()

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for number in SIGNALS:
                self._previous[number] = signal.signal(number, self._handle)
            _ACTIVE.append(self)
            self._installed = True
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._restore()  # in-process callers get their own handlers back
        if self._installed and self in _ACTIVE:
            _ACTIVE.remove(self)
        self._installed = False

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
        if self._immediate:
            os.write(2, f"{lead}received {name}: stopping now (send it again to abort at once)\n".encode())
            raise SignalStop(name)
        os.write(
            2,
            f"{lead}received {name}: stopping after {self._finishing} (send it again to abort at once)\n".encode(),
        )
