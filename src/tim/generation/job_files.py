"""The folder of a ``tim sample`` job: its index, the checks before a resume trusts it, and writes.

Every file of a job goes through :func:`tim.io.atomic_write` (a temporary name, then a rename), with
a stop signal waiting for it (:func:`tim.training.preemption.deferred`) and any ``OSError`` turned
into :class:`WriteFailed`, which :func:`write_error` makes one line (disk full, permissions...).
``index.json`` is never trusted: :func:`validate_index` checks every entry against the job, and
:func:`refuse_links` refuses links at every name the job touches (see :mod:`tim.generation.job`).
"""

from __future__ import annotations

import errno
import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeGuard

from tim.errors import TimError
from tim.io import atomic_write, save_png
from tim.training.lock import RunLock, refuse_link
from tim.training.preemption import deferred

if TYPE_CHECKING:
    from tim.generation.job_spec import Job

INDEX_NAME = "index.json"
INDEX_FORMAT = "tim-sample-index/1"


# ------------------------------------------------------------------------------------------------
# Writes


@contextmanager
def writing(path: Path) -> Iterator[None]:
    """Around one file write of the job: a stop signal waits for it, an ``OSError`` is :class:`WriteFailed`.

    The write itself (:func:`tim.io.atomic_write`) removes its temporary on any failure, so a
    stopped or failed job never leaves a half-written file.
    """
    with deferred(f"writing {path.name}"):
        try:
            yield
        except WriteFailed:
            raise
        except OSError as error:
            raise WriteFailed(path, error) from None


def write_file(path: Path, write: Callable[[IO[bytes]], Any], *, sync: bool = True) -> None:
    """:func:`tim.io.atomic_write` under :func:`writing`.

    ``sync`` also fsyncs it (survives a power cut, not only a killed process); the per-sample PNGs
    skip that, as 50,000 fsyncs cost minutes and a resume re-creates any PNG that is missing or empty.
    """
    with writing(path):
        atomic_write(path, write, sync=sync)


def write_png(path: Path, pixels: Any, *, sync: bool = True) -> None:
    """:func:`tim.io.save_png` (one (H, W, C) uint8 image, C = 1 or 3) under :func:`writing`."""
    with writing(path):
        save_png(path, pixels, sync=sync)


class WriteFailed(OSError):
    """Writing a file of the job failed (disk full, permissions...): the OSError, and the file it was for."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(error.errno, error.strerror or str(error), str(path))
        self.path = path


def write_error(error: OSError, out: Path, index: dict | None) -> TimError:
    """The one line for a failed write in ``out``: what was written, what is kept, what to do."""
    path = error.path if isinstance(error, WriteFailed) else Path(error.filename or out)
    done = sum(len(record.get("shards", [])) for record in (index or {}).get("steps", {}).values())
    kept = f"the {done} finished shard(s) in {out} are kept" if done else f"nothing finished in {out} is lost"
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return TimError(
            f"the disk is full while writing '{path}' ({kept})",
            "free disk space, then rerun the same command to resume",
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TimError(
            f"cannot write '{path}' ({error.strerror}; {kept})",
            "make --out writable or pass another --out, then rerun the same command",
        )
    return TimError(
        f"writing '{path}' failed ({error.strerror or error}; {kept})",
        "remove what is in the way at that path or pass another --out, then rerun the same command to resume",
    )


# ------------------------------------------------------------------------------------------------
# The folder and its index


def check_writable_out(out: Path) -> None:
    """Refuse (one line, before the model loads) an ``--out`` that cannot be created or written.

    The folder itself when it exists, else the nearest folder above it that exists (it will be
    created there): it must be a folder we may write into and enter.
    """
    target = out
    while not target.exists() and target != target.parent:
        target = target.parent
    if target.exists() and not target.is_dir():
        raise TimError(
            f"--out {out} cannot be created ('{target}' is a file)", "pass a folder path with --out"
        )
    if not os.access(target, os.W_OK | os.X_OK):
        problem = (
            f"--out {out} is not writable"
            if target == out
            else f"--out {out} cannot be created: '{target}' is not writable"
        )
        raise TimError(
            f"{problem} (permission denied)",
            "pass a folder you may write to with --out, or fix its permissions",
        )


def check_job_dir(out: Path, overwrite: bool) -> None:
    """Refuse an ``--out`` that is a file, or a non-empty folder holding no job index (without --overwrite)."""
    if out.exists() and not out.is_dir():
        raise TimError(f"--out {out} exists and is a file", "pass a folder path with --out")
    if out.is_dir() and not overwrite and not (out / INDEX_NAME).is_file() and any(out.iterdir()):
        raise TimError(
            f"--out {out} already exists and is not empty (and holds no tim sample job to resume)",
            "pass another --out folder or add --overwrite to replace its files",
        )


def make_job_dir(out: Path) -> None:
    """Create ``out`` (one-line error when that is impossible)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TimError(f"cannot create --out {out} ({error.strerror})", "pass a writable folder") from None
    check_writable_out(out)


def read_index(out: Path) -> dict | None:
    """The job index of ``out`` (None when there is none); a damaged one is a one-line error.

    Only the envelope is checked here (a JSON object of our format with a ``command`` and ``steps``
    object); :func:`validate_index` checks the rest against the job that resumes it.
    """
    path = out / INDEX_NAME
    refuse_link(path, "sampling job index")
    if not path.exists():
        return None
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        index = None
    if (
        not isinstance(index, dict)
        or index.get("format") != INDEX_FORMAT
        or not isinstance(index.get("steps"), dict)
        or not isinstance(index.get("command", {}), dict)
    ):
        raise TimError(
            f"{path} is not a readable tim sample index",
            "pass another --out folder, or --overwrite to start that job again",
        )
    return index


def _index_error(path: Path, key: str, problem: str) -> TimError:
    return TimError(
        f"{path} is not a valid tim sample index ({key} {problem})",
        "rerun the command with --overwrite to start that job again, or pass another --out folder",
    )


def _shown(value: object) -> str:
    """A value read from the index, written as JSON (``null``, ``"0"``), as the user sees it in the file."""
    return json.dumps(value)[:80]


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_index(path: Path, index: dict, job: Job) -> None:
    """Check a saved index (of this job's identity) entry by entry before a resume trusts any of it.

    Every step count of ``job`` has a record ``{"nfe": int | null, "shards": [...], "grid": name |
    null}``; every shard entry is ``{"shard", "start", "stop", "npz", "bytes", "png"}`` with a shard
    number of this job (each at most once), its exact sample range, and exactly the file name this
    job writes for it (:meth:`Job.npz_name`); the grid is ``steps_<k>.png``. So every name a resume
    stats, reads, deletes or rewrites is a plain file name inside ``--out``: no ``/``, no ``..``,
    never absolute.

    Args:
        path: the index file (for the error).
        index: its parsed content (a JSON object with a ``steps`` object, see :func:`read_index`).
        job: the job that resumes it.

    Raises:
        TimError: one line naming the file and the first bad key.
    """
    steps_records = index["steps"]
    wanted = {str(k): k for k in job.steps}
    for key in steps_records:
        if key not in wanted:
            raise _index_error(path, f"steps.{key}", "is not a step count of this job")
    for key, steps in wanted.items():
        where = f"steps.{key}"
        record = steps_records.get(key)
        if not isinstance(record, dict):
            raise _index_error(path, where, "is missing" if record is None else "is not an object")
        if record.get("nfe") is not None and not _is_int(record.get("nfe")):
            raise _index_error(path, f"{where}.nfe", f"= {_shown(record.get('nfe'))} is not an integer")
        grid = record.get("grid")
        if grid is not None and grid != f"steps_{steps:03d}.png":
            raise _index_error(path, f"{where}.grid", f'= {_shown(grid)} is not "steps_{steps:03d}.png"')
        shards = record.get("shards")
        if not isinstance(shards, list):
            raise _index_error(path, f"{where}.shards", f"= {_shown(shards)} is not a list")
        seen: set[int] = set()
        for position, entry in enumerate(shards):
            _validate_shard(path, f"{where}.shards[{position}]", entry, job, steps, seen)


def _validate_shard(path: Path, where: str, entry: object, job: Job, steps: int, seen: set[int]) -> None:
    """One shard entry of :func:`validate_index`."""
    if not isinstance(entry, dict):
        raise _index_error(path, where, "is not an object")
    shard = entry.get("shard")
    if not _is_int(shard) or not 0 <= shard < job.num_shards:
        raise _index_error(
            path, f"{where}.shard", f"= {_shown(shard)} is not a shard number in [0, {job.num_shards - 1}]"
        )
    if shard in seen:
        raise _index_error(path, f"{where}.shard", f"= {shard} appears twice")
    seen.add(shard)
    indices = job.shard_range(shard)
    expected = {"start": indices.start, "stop": indices.stop, "npz": job.npz_name(steps, shard)}
    for key, value in expected.items():
        if type(entry.get(key)) is not type(value) or entry.get(key) != value:
            raise _index_error(path, f"{where}.{key}", f"= {_shown(entry.get(key))} is not {_shown(value)}")
    size = entry.get("bytes")
    if not _is_int(size) or size < 0:
        raise _index_error(path, f"{where}.bytes", f"= {_shown(size)} is not a file size in bytes")
    if not isinstance(entry.get("png"), bool):
        raise _index_error(path, f"{where}.png", f"= {_shown(entry.get('png'))} is not true or false")


def refuse_links(out: Path, job: Job) -> None:
    """Refuse (one-line TimError) a job whose files or folders in ``out`` are symbolic links.

    A job reads, deletes and writes only the index, its shards, its grids and its ``steps_<k>/``
    folders (the per-sample PNGs are checked as a resume looks at them, ``_non_empty``);
    a link at any of those names could point the job at files outside ``out``, so none is followed.
    """
    names = [INDEX_NAME]
    folders = []
    for steps in job.steps:
        names += [f"steps_{steps:03d}", f"steps_{steps:03d}.png"]
        names += [job.npz_name(steps, shard) for shard in range(job.num_shards)]
        folders += [f"steps_{steps:03d}"] if job.png else []
    for name in names:
        path = out / name
        refuse_link(path, "--out entry")
        if path.exists() and path.is_dir() != (name in folders):
            found, wanted = ("a folder", "file") if path.is_dir() else ("a file", "folder")
            raise TimError(
                f"--out entry '{path}' is {found}, but tim sample writes a {wanted} there",
                f"move it out of the way ('mv {path} {path}.old') or pass another --out",
            )


def write_index(out: Path, index: dict) -> None:
    """Rewrite ``index.json`` atomically."""
    write_file(out / INDEX_NAME, lambda file: file.write(json.dumps(index, indent=1).encode()))


def identity_differences(saved: dict, wanted: dict) -> list[str]:
    """``["seed 0 -> 1", ...]``: every identity field that differs between two jobs."""
    keys = sorted(set(saved) | set(wanted))
    return [
        f"{key} {saved.get(key)!r} -> {wanted.get(key)!r}"
        for key in keys
        if saved.get(key) != wanted.get(key)
    ]


def start_index(out: Path, job: Job, overwrite: bool) -> dict:
    """The index to continue from: the saved one when it is this job's, else a fresh one.

    Raises:
        TimError: ``out`` holds a job with other settings (and no ``--overwrite``).
    """
    saved = None if overwrite else read_index(out)
    if saved is not None:
        differences = identity_differences(saved.get("command", {}), job.identity)
        if differences:
            shown = "; ".join(differences[:4]) + (
                f" (+{len(differences) - 4} more)" if len(differences) > 4 else ""
            )
            raise TimError(
                f"--out {out} holds a sampling job with other settings ({shown})",
                "rerun the original command to resume it, or pass another --out or --overwrite",
            )
        validate_index(out / INDEX_NAME, saved, job)
        return saved
    return {
        "format": INDEX_FORMAT,
        "command": job.identity,
        "total": job.total,
        "shard_size": job.shard_size,
        "conditions": list(job.conditions),
        "counts": list(job.counts),
        "complete": False,
        "steps": {str(k): {"nfe": None, "shards": [], "grid": None} for k in job.steps},
    }


def _non_empty(path: Path) -> bool:
    """``path`` is a non-empty regular file (a symbolic link is refused, never followed)."""
    try:
        info = path.lstat()
    except OSError:
        return False
    if stat.S_ISLNK(info.st_mode):
        refuse_link(path, "--out entry")
    return stat.S_ISREG(info.st_mode) and info.st_size > 0


def _shard_done(out: Path, job: Job, steps: int, entry: dict) -> bool:
    """A shard recorded in the (validated) index counts as done when its files are all still there, whole."""
    try:
        info = (out / entry["npz"]).lstat()
    except OSError:
        return False
    if not stat.S_ISREG(info.st_mode) or info.st_size != entry["bytes"]:
        return False
    return not entry["png"] or all(
        _non_empty(out / job.png_name(steps, i)) for i in range(entry["start"], entry["stop"])
    )


def JobLock(out: Path) -> RunLock:  # noqa: N802 - used like the class it returns
    """One ``tim sample`` per output folder: the run-directory lock (``out/.lock``) of training.

    The operating system drops the lock when the holder exits in any way (also ``kill -9``), so a
    killed job never blocks its own resume.
    """
    return RunLock(out, name=f"--out {out}", holder="tim sample process")


def _remove_temporaries(out: Path) -> None:
    """Delete the half-written ``.<name>.*.tmp`` files a killed job may have left (not through links)."""
    folders = [path for path in out.glob("steps_*") if path.is_dir() and not path.is_symlink()]
    for folder in [out, *folders]:
        for pattern in (".*.tmp", ".*.tmp.png"):
            for temporary in folder.glob(pattern):
                temporary.unlink(missing_ok=True)
