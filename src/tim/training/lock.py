"""One writer per run directory: an advisory ``flock`` held for the lifetime of a training run.

``RUN_DIR/.lock`` is opened and locked with ``fcntl.flock(LOCK_EX | LOCK_NB)``; the holder writes
its PID into it. A second trainer on the same directory fails at once with a one-line error naming
that PID, before it reads or changes anything. The operating system releases the lock when the
holder exits in any way (including ``kill -9``), so a crashed run never leaves a stale lock: the
file may stay behind, but an unlocked file means nobody holds it. Only the holder deletes stale
checkpoint temporaries (see ``tim.training.rundir.prepare_run_dir``), so a clean-up can never hit another
process's checkpoint in progress.

The lock file is opened with ``O_NOFOLLOW`` and must be a regular file: a ``.lock`` that is a
symbolic link (dangling or not) is refused with a one-line error instead of being followed, so a
planted link can never make the holder create or truncate a file elsewhere.

``flock`` is advisory (only processes that ask for it are excluded) and on network file systems
its strength depends on the server (Linux NFS emulates it with byte-range locks). Platforms
without ``fcntl`` (Windows) train without the lock, with a warning.
"""

from __future__ import annotations

import errno
import os
import stat
import warnings
from pathlib import Path
from types import TracebackType

from tim.errors import TimError

LOCK_NAME = ".lock"


def refuse_link(path: Path, what: str) -> None:
    """One-line TimError when ``path`` is a symbolic link (tim never reads or writes through one)."""
    if path.is_symlink():
        try:
            target = os.readlink(path)
        except OSError:  # removed in the meantime
            target = "?"
        raise TimError(
            f"{what} '{path}' is a symbolic link (to '{target}'), which tim does not follow",
            f"remove the link ('rm {path}') and rerun",
        )


def open_lock_file(path: Path) -> int:
    """Open (creating it) the lock file ``path`` for reading and writing, never through a symbolic link.

    ``O_NOFOLLOW`` makes the open itself fail on a link, so there is no window between a check and
    the open; ``O_NONBLOCK`` keeps a FIFO planted at ``path`` from hanging the open.

    Raises:
        TimError: ``path`` is a symbolic link, not a regular file, or cannot be opened.
    """
    refuse_link(path, "lock file")
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as error:
        if error.errno == errno.ELOOP:  # the link appeared after the check above
            refuse_link(path, "lock file")
        raise TimError(
            f"cannot open the lock file '{path}' ({error.strerror or error})",
            "make the folder writable, or remove what is in the way at that path",
        ) from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise TimError(f"lock file '{path}' is not a regular file", "remove it and rerun")
    os.set_blocking(fd, True)
    return fd


class RunLock:
    """The exclusive lock of a run directory (a context manager; :meth:`release` is idempotent).

    Args:
        run_dir: an existing run directory (or any folder one job writes, e.g. ``tim sample --out``).
        name: how the error names the folder (default: ``run directory '<run_dir>'``).
        holder: what kind of process holds it, for the error and the no-lock warning.

    Raises:
        TimError: another process holds the lock (its PID is named), or the lock path is a symbolic
            link or not a regular file.
    """

    def __init__(
        self, run_dir: str | Path, *, name: str | None = None, holder: str = "training process"
    ) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            warnings.warn(
                f"file locks are not available here: nothing stops a second {holder} on '{run_dir}'",
                stacklevel=2,
            )
            return
        fd = open_lock_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise TimError(
                f"{name or f'run directory {str(run_dir)!r}'} is in use by another {holder} (PID {pid})",
                "wait for it to finish or stop it, or pass another --out directory",
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Unlock (closing the descriptor drops the flock); the file stays, harmless when unlocked."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()
