"""Crash-safe training checkpoints: safetensors + JSON, atomic, checksummed, last K kept.

Layout of a run directory::

    run_dir/
      config.json                    resolved RunConfig of the latest start
      checkpoints/step_00000500/     one directory per checkpoint
        model.safetensors  ema.safetensors  optimizer.safetensors  rng.safetensors
        state.json                   step, images seen, counters, data position, tensor layouts
        config.json                  the resolved config the checkpoint was written with
        manifest.json                size + sha256 of every file above (written last)

Writing (``save_checkpoint``): everything goes into ``checkpoints/.tmp-step_XXXXXXXX-<pid>``; each
file is flushed and fsynced, the manifest is written last, and the directory is renamed into place
(``os.replace`` is atomic on POSIX), then the parent directory is fsynced. A crash at any moment
leaves either the old set of checkpoints or the old set plus one complete new one; stale
temporaries are removed by the next run.

Reading (``load_latest``): checkpoints are tried newest first; one whose manifest is missing or
whose sizes/hashes disagree is reported by name and skipped, so resume falls back to the previous
good one. Nothing is ever unpickled: tensors are safetensors, everything else is JSON. Nested
states (optimizer, data position) are flattened by :func:`flatten_state` into a flat tensor dict
plus a JSON layout that records dict key types and tuples, so they round-trip exactly.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tim.errors import TimError, first_line
from tim.io import fsync_folder, write_bytes, write_json

CHECKPOINT_DIR = "checkpoints"
PREFIX = "step_"
MANIFEST = "manifest.json"
TENSOR_PARTS = ("model", "ema", "optimizer", "rng")
_HASH_CHUNK = 1 << 20  # 1 MiB reads keep memory flat while hashing multi-GB files


# ----------------------------------------------------------------------------------------------
# Nested state <-> (flat tensors, JSON layout)


def flatten_state(state: Any, prefix: str = "") -> tuple[dict[str, Tensor], Any]:
    """Split a nested state into a flat ``{key: tensor}`` dict and a JSON-able layout.

    Dicts whose keys are not all strings (the optimizer's integer parameter ids) are stored as
    ``{"__items__": [[key, value], ...]}`` so that key types survive; tuples as ``{"__tuple__": [...]}``;
    tensors and numpy arrays as ``{"__tensor__": key}`` / ``{"__ndarray__": key}``.

    Args:
        state: nested dicts/lists/tuples of tensors, numpy arrays and JSON scalars.
        prefix: key prefix for the tensors of this sub-tree.

    Returns:
        ``(tensors, layout)``; :func:`unflatten_state` inverts it.
    """
    tensors: dict[str, Tensor] = {}

    def store(key: str, value: Tensor) -> str:
        if key in tensors:
            raise ValueError(f"two entries of the state flatten to the same key {key!r}")
        tensors[key] = value
        return key

    def join(key: str, child: object) -> str:
        # A model state dict keeps its own parameter names ("blocks.0.weight") as tensor keys.
        return f"{key}/{child}" if key else str(child)

    def encode(obj: Any, key: str) -> Any:
        if isinstance(obj, Tensor):
            return {"__tensor__": store(key, obj.detach().cpu())}
        if isinstance(obj, np.ndarray):
            return {"__ndarray__": store(key, torch.from_numpy(np.ascontiguousarray(obj)))}
        if isinstance(obj, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: encode(v, join(key, k)) for k, v in obj.items()}
            return {"__items__": [[k, encode(v, join(key, k))] for k, v in obj.items()]}
        if isinstance(obj, tuple):
            return {"__tuple__": [encode(v, join(key, i)) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [encode(v, join(key, i)) for i, v in enumerate(obj)]
        if isinstance(obj, (np.integer, np.floating)):
            return obj.item()
        if obj is None or isinstance(obj, (bool, int, float, str)):
            return obj
        raise TypeError(f"cannot store {type(obj).__name__} at {key!r} in a checkpoint")

    layout = encode(state, prefix)
    return tensors, layout


def unflatten_state(tensors: dict[str, Tensor], layout: Any) -> Any:
    """Rebuild the nested state written by :func:`flatten_state`."""
    if isinstance(layout, list):
        return [unflatten_state(tensors, v) for v in layout]
    if not isinstance(layout, dict):
        return layout
    if "__tensor__" in layout:
        return tensors[layout["__tensor__"]]
    if "__ndarray__" in layout:
        return tensors[layout["__ndarray__"]].numpy()
    if "__tuple__" in layout:
        return tuple(unflatten_state(tensors, v) for v in layout["__tuple__"])
    if "__items__" in layout:
        return {k: unflatten_state(tensors, v) for k, v in layout["__items__"]}
    return {k: unflatten_state(tensors, v) for k, v in layout.items()}


# ----------------------------------------------------------------------------------------------
# Low-level durable writes


def _write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with :func:`tim.io.write_bytes` (fsynced; a file or link there is replaced).

    The bytes go to a fresh temporary created with ``O_EXCL`` (never through a planted link) and are
    renamed over ``path``, so a link at a predictable name is replaced, never written through.
    """
    write_bytes(path, data)


def _write_tensors(path: Path, tensors: dict[str, Tensor]) -> None:
    from safetensors.torch import save

    # safetensors refuses tensors that share memory (tied weights) or are not contiguous.
    seen: set[int] = set()
    clean = {}
    for key, value in tensors.items():
        value = value.detach().cpu().contiguous()
        pointer = value.untyped_storage().data_ptr() if value.numel() else -1
        clean[key] = value.clone() if pointer in seen else value
        seen.add(pointer)
    _write_bytes(path, save(clean))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` as JSON (indent 1, final newline) to ``path`` atomically (:func:`tim.io.write_json`)."""
    write_json(path, data, indent=1)


# ----------------------------------------------------------------------------------------------
# Checkpoints


@dataclass
class Checkpoint:
    """A loaded checkpoint.

    Attributes:
        path: its directory.
        step: optimizer steps done.
        parts: ``"model"``, ``"ema"``, ``"optimizer"``, ``"rng"`` -> nested state.
        state: the JSON state (counters, data position, ...).
        config: the resolved run config (plain data) it was written with.
    """

    path: Path
    step: int
    parts: dict[str, Any]
    state: dict[str, Any]
    config: dict[str, Any]


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where the checkpoints of a run live."""
    return Path(run_dir) / CHECKPOINT_DIR


def _step_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith(PREFIX) or not name[len(PREFIX) :].isdigit():
        return None
    return int(name[len(PREFIX) :])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Finished checkpoint directories of a run, oldest first (temporaries excluded)."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [(step, p) for p in root.iterdir() if p.is_dir() and (step := _step_of(p)) is not None]
    return [p for _, p in sorted(found)]


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    parts: dict[str, Any],
    state: dict[str, Any],
    config: dict[str, Any],
    *,
    keep_last: int,
) -> Path:
    """Write one checkpoint atomically and delete all but the newest ``keep_last``.

    Args:
        run_dir: the run directory.
        step: optimizer steps done (names the checkpoint).
        parts: ``"model"``, ``"ema"``, ``"optimizer"``, ``"rng"`` -> nested states of CPU tensors.
        state: JSON-able state (counters, data position).
        config: the resolved run config as plain data.
        keep_last: how many checkpoints to keep.

    Returns:
        The checkpoint directory.

    Raises:
        TimError: the disk is full or the directory is not writable (the previous checkpoints are
            left intact).
    """
    root = checkpoint_dir(run_dir)
    final = root / f"{PREFIX}{step:08d}"
    temporary = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        layouts = {}
        for name, part in parts.items():
            tensors, layouts[name] = flatten_state(part)
            _write_tensors(temporary / f"{name}.safetensors", tensors)
        _write_bytes(
            temporary / "state.json", json.dumps({"step": step, **state, "layouts": layouts}).encode()
        )
        _write_bytes(temporary / "config.json", (json.dumps(config, indent=2) + "\n").encode())
        files = sorted(p.name for p in temporary.iterdir())
        manifest = {
            "step": step,
            "files": {
                f: {"size": (temporary / f).stat().st_size, "sha256": sha256_file(temporary / f)}
                for f in files
            },
        }
        _write_bytes(temporary / MANIFEST, json.dumps(manifest, indent=1).encode())
        fsync_folder(temporary)
        if final.exists():  # the same step written again (e.g. a rerun after a crash during cleanup)
            _discard(final)
        os.replace(temporary, final)
        fsync_folder(root)
    except OSError as error:
        shutil.rmtree(temporary, ignore_errors=True)
        raise _disk_error(error, final) from None
    for old in list_checkpoints(run_dir)[:-keep_last]:
        _discard(old)
    return final


def _discard(path: Path) -> None:
    """Delete a checkpoint without ever exposing a half-deleted one under its real name.

    ``rmtree`` removes files one by one; a kill in between would leave a ``step_*`` directory with
    some files missing. Renaming it first (atomic) means a kill leaves only a ``.tmp-*`` directory,
    which the next run removes.
    """
    doomed = path.with_name(f".tmp-discard-{path.name}-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def _disk_error(error: OSError, target: Path) -> TimError:
    if error.errno == errno.ENOSPC:
        return TimError(
            f"the disk is full while writing checkpoint '{target}' (earlier checkpoints are intact)",
            "free disk space or lower train.keep_last, then rerun the same command to resume",
        )
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return TimError(
            f"cannot write checkpoint '{target}': {error.strerror}",
            "choose a writable run directory or fix its permissions",
        )
    return TimError(
        f"writing checkpoint '{target}' failed: {error.strerror or error}",
        "check the run directory's file system, then rerun the same command to resume",
    )


def verify_checkpoint(path: Path) -> str | None:
    """Return why a checkpoint is unusable, or None when its manifest matches every file."""
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        return "no manifest.json (the write did not finish)"
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return "manifest.json is not valid JSON"
    problem = _manifest_problem(manifest)
    if problem is not None:
        return f"manifest.json is malformed ({problem})"
    files = manifest["files"]
    for name in ("state.json", *[f"{p}.safetensors" for p in TENSOR_PARTS]):
        if name not in files:
            return f"manifest.json does not list {name}"
    for name, entry in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != entry["size"]:
            return f"{name} has {file.stat().st_size} bytes, the manifest says {entry['size']}"
        if sha256_file(file) != entry["sha256"]:
            return f"{name} does not match its sha256 checksum"
    return None


def _manifest_problem(manifest: Any) -> str | None:
    """Why a parsed manifest does not have the layout :func:`save_checkpoint` writes, or None."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        return "no 'files' object"
    for name, entry in manifest["files"].items():
        if not name or "/" in name or "\\" in name or name in (".", ".."):  # only files of this folder
            return f"file name {name!r}"
        if not isinstance(entry, dict):
            return f"entry of {name} is not an object"
        size, digest = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return f"size of {name} is {size!r}, not a byte count"
        if not isinstance(digest, str) or len(digest) != 64:
            return f"sha256 of {name} is {digest!r}, not a hex digest"
    return None


class UnusableCheckpoint(ValueError):
    """A checkpoint whose files match their manifest but do not hold what we write (the message says what)."""


_COUNTERS = ("images", "skipped", "bad_streak", "ema_updates")  # TrainState's counters besides the step


def _is_count(value: object, minimum: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def state_problem(state: Any, path: Path, parts: tuple[str, ...] = TENSOR_PARTS) -> str | None:
    """Why a parsed ``state.json`` does not have the layout :func:`save_checkpoint` writes, or None.

    Checked before anything in it is used: an object with the folder's step, non-negative integer
    counters, a ``data`` object when present (a data source's position), positive ``world_size`` and
    ``micro_batch``, and a ``layouts`` object with an entry for every tensor file read.
    """
    if not isinstance(state, dict):
        return f"state.json holds a JSON {type(state).__name__}, not an object"
    step = state.get("step")
    if not _is_count(step) or step != _step_of(path):
        return f"state.json says step {json.dumps(step)} in a folder named {path.name}"
    for key in _COUNTERS:
        if key in state and not _is_count(state[key]):
            return f"state.json has {key} = {json.dumps(state[key])[:40]}, not a non-negative integer"
    for key in ("world_size", "micro_batch"):
        if key in state and not _is_count(state[key], 1):
            return f"state.json has {key} = {json.dumps(state[key])[:40]}, not a positive integer"
    data = state.get("data", {})
    if not isinstance(data, dict):
        return f"state.json has data = {json.dumps(data)[:60]}, not an object (the data position)"
    layouts = state.get("layouts")
    if not isinstance(layouts, dict):
        return "state.json has no 'layouts' object"
    for name in parts:
        if not isinstance(layouts.get(name), (dict, list)):
            return f"state.json has no layout for {name}.safetensors"
    return None


def read_checkpoint(path: Path, parts: tuple[str, ...] = TENSOR_PARTS) -> Checkpoint:
    """Read a checkpoint directory (call :func:`verify_checkpoint` first).

    Args:
        path: the checkpoint directory.
        parts: which tensor files to load (e.g. only ``("ema",)`` for sampling).

    Returns:
        The :class:`Checkpoint`.

    Raises:
        UnusableCheckpoint: ``state.json`` or ``config.json`` does not have the layout we write.
    """
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    config = json.loads((path / "config.json").read_text())
    problem = state_problem(state, path, parts)
    if problem is None and not isinstance(config, dict):
        problem = f"config.json holds a JSON {type(config).__name__}, not an object"
    if problem is not None:
        raise UnusableCheckpoint(problem)
    layouts = state.pop("layouts")
    loaded = {name: unflatten_state(load_file(path / f"{name}.safetensors"), layouts[name]) for name in parts}
    return Checkpoint(path=path, step=state["step"], parts=loaded, state=state, config=config)


def load_latest(
    run_dir: str | Path,
    *,
    report: bool = True,
    parts: tuple[str, ...] = TENSOR_PARTS,
    check: Callable[[Checkpoint], str | None] | None = None,
) -> Checkpoint | None:
    """Load the newest checkpoint that passes verification; report and skip broken ones.

    Args:
        run_dir: the run directory.
        report: emit a warning naming each corrupt or partial checkpoint that is skipped.
        parts: which tensor files to load.
        check: says why a loaded checkpoint does not fit the caller (e.g. its optimizer state does
            not match the live optimizer), or None; one that does not fit is skipped like a corrupt one.

    Returns:
        The checkpoint, or None when the run has no usable checkpoint.
    """
    from safetensors import SafetensorError

    for path in reversed(list_checkpoints(run_dir)):
        problem = verify_checkpoint(path)
        if problem is None:
            try:
                checkpoint = read_checkpoint(path, parts)
                unfit = check(checkpoint) if check is not None else None
                if unfit is None:
                    return checkpoint
                problem = f"its contents do not fit this run: {unfit}"
            except UnusableCheckpoint as error:
                problem = f"its contents cannot be read: {error}"
            except (
                ValueError,
                KeyError,
                TypeError,
                IndexError,
                AttributeError,
                OSError,
                SafetensorError,
            ) as error:
                # The files match their manifest but do not hold what we write (edited by hand,
                # or by another version): as unusable as a corrupt one.
                problem = f"its contents cannot be read: {type(error).__name__}: {first_line(error)}"
        if report:
            warnings.warn(
                f"checkpoint '{path}' is unusable ({problem}); falling back to the previous one", stacklevel=2
            )
    return None


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete half-written checkpoint directories left by a killed run; returns what was removed."""
    root = checkpoint_dir(run_dir)
    stale = sorted(root.glob(".tmp-*")) if root.is_dir() else []
    for path in stale:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return stale


# What a run folder holds besides the lock (tim.training.rundir.RUN_OUTPUTS): folder or file.
RUN_ENTRIES = {
    CHECKPOINT_DIR: "folder",
    "samples": "folder",
    "pretrained": "folder",
    "tensorboard": "folder",
    "config.json": "file",
    "metrics.jsonl": "file",
    "metrics.csv": "file",
    "summary.json": "file",
}


def _entry_problem(run_dir: Path) -> TimError | None:
    """A run-folder entry of the wrong kind (``checkpoints`` a file, ``metrics.jsonl`` a folder), or None."""
    for name, kind in RUN_ENTRIES.items():
        path = run_dir / name
        if path.is_symlink() or not path.exists():
            continue  # links are refused where they are opened; a missing entry is created
        if path.is_dir() != (kind == "folder"):
            found = "a folder" if path.is_dir() else "a file"
            return TimError(
                f"'{path}' is {found}, but a run keeps its {name} there as a {kind}",
                f"move it out of the way ('mv {path} {path}.old') or choose another run directory",
            )
    return None


def reclaimable_bytes(run_dir: str | Path) -> tuple[int, int]:
    """``(bytes, count)`` of the run's existing checkpoints and temporaries, which pruning will delete.

    Pruning keeps the newest ``train.keep_last`` checkpoints after each save, so a continued run
    replaces every one that is there now; files are counted with ``lstat`` (links are not followed).
    """
    root = checkpoint_dir(run_dir)
    total, count = 0, 0
    if not root.is_dir() or root.is_symlink():
        return 0, 0
    for folder in root.iterdir():
        if folder.is_symlink() or not folder.is_dir():
            continue
        count += _step_of(folder) is not None
        for file in folder.iterdir():
            try:
                info = file.lstat()
            except OSError:
                continue
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total, count


def check_output_dir(run_dir: str | Path, needed_bytes: int, *, keep_last: int = 0) -> Path:
    """Fail early (before training) when the run directory is unusable or the disk too full.

    Args:
        run_dir: the run directory (created if missing).
        needed_bytes: space the run's checkpoints need, e.g. (keep_last + 1) checkpoints.
        keep_last: ``train.keep_last``. When given, the bytes of the run's own existing checkpoints
            count as free (pruning deletes them as new ones are written), but at least one
            checkpoint's share of ``needed_bytes`` must be free now: the next one is written before
            any old one is deleted.

    Returns:
        The run directory as a Path.

    Raises:
        TimError: the directory cannot be created or written, an entry of the run folder has the
            wrong kind (``checkpoints`` a file...), or free space is below what is needed.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise TimError(
            f"run directory '{run_dir}' exists and is a file", "choose a directory path for the run"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test-{os.getpid()}"
        _write_bytes(probe, b"ok")
        probe.unlink()
    except OSError as error:
        raise TimError(
            f"run directory '{run_dir}' is not writable ({error.strerror or error})",
            "choose a writable run directory or fix its permissions",
        ) from None
    wrong = _entry_problem(run_dir)
    if wrong is not None:
        raise wrong
    free = shutil.disk_usage(run_dir).free
    reclaim, count = reclaimable_bytes(run_dir) if keep_last > 0 else (0, 0)
    required = max(needed_bytes // (keep_last + 1), needed_bytes - reclaim) if keep_last > 0 else needed_bytes
    if free < required:
        counted = (
            f" (counting the {reclaim / 2**20:.1f} MiB its {count} old checkpoint(s) will free)"
            if count
            else ""
        )
        raise TimError(
            f"only {free / 2**20:.1f} MiB free at '{run_dir}' but checkpoints need about "
            f"{required / 2**20:.1f} MiB{counted}",
            "free disk space, lower train.keep_last or choose another run directory",
        )
    return run_dir
