"""Bounded, streaming, resumable sampling jobs behind ``tim sample``.

A job is "N samples for each step count k, from the same noise". It runs in batches of
``--batch-size`` samples and writes them as it goes, so memory never holds more than one batch and
one shard, whatever N is:

* ``steps_<k>.npz`` when one shard holds every sample, else ``steps_<k>-00000.npz``,
  ``steps_<k>-00001.npz`` ... (at most ``shard_size`` samples each, in sample order);
* ``steps_<k>/<i>.png``, one PNG per sample (``i`` = the global sample index), when asked;
* ``steps_<k>.png``, a grid of the first samples of each condition (one row each; a text model's rows are
  labelled with their prompts; images of 64 px or less enlarged 2-4x), once the step count is done;
* ``index.json``: the command's identity, and every finished shard (file, sample range, size).

``index.json`` is rewritten atomically after every shard, and every file is written to a temporary
name first and then renamed, so a job killed at any moment leaves only whole files. Rerunning the
same command resumes after the last finished shard; a rerun with other settings is refused.

Nothing read from ``index.json`` is trusted: every entry must have exactly the layout and the file
names this job writes (:func:`validate_index`), so a hand-edited or planted index can never make a
resume count, read, delete or rewrite a file outside ``--out``. Nor does a job go through symbolic
links: an index, shard, grid, per-sample PNG or ``steps_<k>/`` folder that is a link is refused
(:func:`refuse_links`) rather than followed, and the folder's ``.lock`` is opened with
``O_NOFOLLOW`` (:mod:`tim.training.lock`).

Noise: sample ``i`` starts from ``N(0, I)`` noise drawn on the CPU by its own generator seeded
with ``seed + i`` (the same rule as :class:`tim.pipeline.TiMPipeline`, so sample ``i`` of ``tim
sample --seed S`` is ``pipe(..., seed=S)``'s image ``i``); that generator then also draws the
sample's noise for stochastic steps. Nothing depends on the batch size, the shard size or the step
count: every step count starts from the same noise and a resumed job draws exactly the noise it
would have drawn.
"""

from __future__ import annotations

import errno
import json
import math
import os
import stat
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import numpy as np
import torch

from tim.errors import TimError
from tim.system import available_memory, create_temporary, format_bytes
from tim.training.lock import RunLock, refuse_link
from tim.training.preemption import deferred

INDEX_NAME = "index.json"
INDEX_FORMAT = "tim-sample-index/1"
SHARD_BYTES = 256 * 2**20  # default shard budget: float32 samples held before a shard is written
MAX_SHARD_SAMPLES = 1000  # and at most this many samples per shard (a 50,000-sample FID set = 50 files)
GRID_MAX_ROWS, GRID_MAX_COLS, GRID_MAX_PIXELS = 32, 16, 4096  # keep the preview grid a viewable size
GRID_MIN_TILE = 128  # tiles of <= 64 px are enlarged by 128 // side (nearest neighbour, at most 4x)
MEMORY_HEADROOM = 0.8  # use at most 80% of the free memory (allocator slack), as tim.pipeline.MEMORY_HEADROOM


# ------------------------------------------------------------------------------------------------
# What a backend (a run's network, or a TiMPipeline) must provide


@dataclass
class BatchOutput:
    """One generated batch, on the CPU.

    Attributes:
        samples: (n, C, H, W) images in the data range [-1, 1], NOT clipped (raw sampler or decoder
            output), or (n, D) vectors; float32.
        latents: (n, C_z, h, w) the sampler's latent output for latent models, else None; float32.
        nfe: network evaluations per sample for this step count.
    """

    samples: torch.Tensor
    latents: torch.Tensor | None
    nfe: int


class Backend(Protocol):
    """A network that turns noise into samples.

    Implemented by :class:`tim.cli.sample.PipelineBackend` and :class:`tim.cli.sample.VectorBackend`.
    """

    conditioning: str  # "class" | "text" | "none"
    num_classes: int  # 0 unless conditioning == "class"
    kind: str  # "image" | "vector"

    def noise_shape(self, height: int | None, width: int | None) -> tuple[int, ...]:
        """Shape of one sample's starting noise (model-input units)."""
        ...

    def fingerprint(self) -> str:
        """A short digest of the weights (a resumed job must use the same ones)."""
        ...

    def batch_bytes(self, batch_size: int, height: int | None, width: int | None, guided: bool) -> int:
        """Estimated peak bytes on the device for one batch (network passes, and the decoder)."""
        ...

    def generate(
        self,
        indices: range,
        *,
        seed: int,
        labels: torch.Tensor | None,
        prompts: list[str] | None,
        steps: int,
        height: int | None,
        width: int | None,
        options: dict[str, Any],
    ) -> BatchOutput:
        """Sample ``indices`` (noise seeded ``seed + i``, see :func:`sample_generators`) with ``steps`` steps."""
        ...


# ------------------------------------------------------------------------------------------------
# The job


@dataclass(frozen=True)
class Job:
    """Everything that decides the samples and the files of one ``tim sample`` call.

    Attributes:
        steps: step counts, in order.
        conditions: class ids or prompts (condition-major sample order); empty = unconditional.
        counts: samples per condition (one entry when unconditional).
        seed: noise seed.
        batch_size: samples per network batch.
        shard_size: samples per ``.npz`` shard.
        height, width: output size in pixels (None for vectors).
        options: sampler options (guidance_scale, guidance_interval, stochasticity).
        png: write one PNG per sample (images only).
        identity: what a resumed run must match (the options above plus checkpoint, weights, dtype).
    """

    steps: tuple[int, ...]
    conditions: tuple
    counts: tuple[int, ...]
    seed: int
    batch_size: int
    shard_size: int
    height: int | None
    width: int | None
    options: dict[str, Any]
    png: bool = True
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Samples per step count."""
        return sum(self.counts)

    @property
    def num_shards(self) -> int:
        """Shards per step count."""
        return -(-self.total // self.shard_size)

    def shard_range(self, shard: int) -> range:
        """Global sample indices of one shard."""
        return range(shard * self.shard_size, min(self.total, (shard + 1) * self.shard_size))

    def condition_of(self, indices: range) -> np.ndarray:
        """Condition number (position in ``conditions``) of each sample index, condition-major."""
        bounds = np.cumsum(self.counts)
        return np.searchsorted(bounds, np.arange(indices.start, indices.stop), side="right")

    def npz_name(self, steps: int, shard: int) -> str:
        """File name of one shard."""
        return f"steps_{steps:03d}.npz" if self.num_shards == 1 else f"steps_{steps:03d}-{shard:05d}.npz"

    def png_name(self, steps: int, index: int) -> str:
        """Relative path of one sample's PNG."""
        return f"steps_{steps:03d}/{index:0{max(6, len(str(self.total - 1)))}d}.png"


def split_count(total: int, num_conditions: int) -> tuple[int, ...]:
    """Spread ``total`` samples over conditions as evenly as possible (the first ones get the rest).

    Args:
        total: samples in all.
        num_conditions: classes or prompts (>= 1).

    Returns:
        Samples per condition, summing to ``total``.
    """
    base, rest = divmod(total, num_conditions)
    return tuple(base + (1 if i < rest else 0) for i in range(num_conditions))


def default_shard_size(sample_numel: int) -> int:
    """Samples per shard: as many float32 samples as fit in SHARD_BYTES, at most MAX_SHARD_SAMPLES."""
    return max(1, min(MAX_SHARD_SAMPLES, SHARD_BYTES // max(1, 4 * sample_numel)))


def sample_generators(
    indices: range, shape: Sequence[int], seed: int
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """The starting noise of samples ``indices`` and their generators (seeded ``seed + i``).

    Returns:
        ``(noise (n, *shape) float32 on the CPU, one generator per sample)``; each generator has
        drawn its sample's noise and continues from there (stochastic steps draw from it).
    """
    generators = [torch.Generator().manual_seed(seed + index) for index in indices]
    noise = (
        torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])
        if generators
        else torch.empty((0, *shape))
    )
    return noise, generators


# ------------------------------------------------------------------------------------------------
# Memory


def host_bytes(job: Job, backend: Backend) -> int:
    """Bytes held on the host: the current shard (float32 samples + latents) and one batch in flight.

    The batch: its float32 noise, the decoded float32 images and their uint8 copies for the PNGs
    (the network's own working set is :meth:`Backend.batch_bytes`).
    """
    latent_numel = math.prod(backend.noise_shape(job.height, job.width))
    pixels = math.prod((3, job.height, job.width)) if job.height else latent_numel
    shard = job.shard_size * 4 * (pixels + latent_numel)
    return shard + job.batch_size * (4 * latent_numel + 4 * pixels + pixels)


def check_memory(job: Job, backend: Backend, device: torch.device) -> int:
    """Refuse (one-line TimError) a job whose batch or shard will not fit; returns the estimate.

    Args:
        job: the job.
        backend: gives the per-batch device estimate.
        device: where the network runs.

    Returns:
        Estimated peak bytes on ``device`` (host bytes included when that is the CPU).
    """
    guided = job.options.get("guidance_scale", 1.0) != 1.0
    batch = backend.batch_bytes(job.batch_size, job.height, job.width, guided)
    host = host_bytes(job, backend)
    needed = batch + host if device.type == "cpu" else batch
    free, source = available_memory(device)
    size = f"{job.height}x{job.width}" if job.height else "vector"
    if needed > MEMORY_HEADROOM * free:
        single = backend.batch_bytes(1, job.height, job.width, guided)
        hint = (
            f"lower --batch-size (a batch of 1 needs about {format_bytes(single)})"
            if single + (host if device.type == "cpu" else 0) <= MEMORY_HEADROOM * free
            else "lower --height/--width or use a device with more memory"
        )
        raise TimError(
            f"sampling {job.batch_size} {size} samples per batch needs about {format_bytes(needed)} "
            f"but only {format_bytes(free)} is available ({source})",
            hint,
        )
    if device.type != "cpu":
        host_free, host_source = available_memory(torch.device("cpu"))
        if host > MEMORY_HEADROOM * host_free:
            raise TimError(
                f"holding a shard of {job.shard_size} {size} samples needs about {format_bytes(host)} "
                f"but only {format_bytes(host_free)} is available ({host_source})",
                "lower --shard-size",
            )
    return needed


# ------------------------------------------------------------------------------------------------
# Files


def atomic_write(path: Path, write: Callable[[Any], None], *, sync: bool = True) -> None:
    """Write a file through ``write(file_object)`` to a temporary name, then rename it into place.

    ``sync`` also fsyncs it first (survives a power cut, not only a killed process); the per-sample
    PNGs skip that, as 50,000 fsyncs cost minutes and a resume re-creates any PNG that is missing
    or empty. A stop signal waits for the file (:func:`tim.training.preemption.deferred`), so no
    temporary is ever left behind; a failed write removes its temporary and raises :class:`WriteFailed`.
    """
    with deferred(f"writing {path.name}"):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temporary = create_temporary(
                path.parent, f".{path.name}.", ".tmp"
            )  # umask's mode, not 0600
        except OSError as error:
            raise WriteFailed(path, error) from None
        try:
            with os.fdopen(handle, "wb") as file:
                write(file)
                if sync:
                    file.flush()
                    os.fsync(file.fileno())
            os.replace(temporary, path)
        except BaseException as error:
            temporary.unlink(missing_ok=True)
            if isinstance(error, OSError):
                raise WriteFailed(path, error) from None
            raise


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


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) images in [-1, 1] (clipped here) -> (n, H, W, C) uint8, as in the PNGs."""
    pixels = np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return pixels.transpose(0, 2, 3, 1)


def save_png(path: Path, pixels: np.ndarray, *, sync: bool = True) -> None:
    """Save one (H, W, C) uint8 image (C = 1 or 3) atomically."""
    from tim.viz import _pil

    image_cls, _, _ = _pil()
    image = image_cls.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels)
    atomic_write(path, lambda file: image.save(file, format="PNG"), sync=sync)


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
    atomic_write(out / INDEX_NAME, lambda file: file.write(json.dumps(index, indent=1).encode()))


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


# ------------------------------------------------------------------------------------------------
# Running


@dataclass
class JobResult:
    """What :func:`run_job` did."""

    index: dict
    generated: int  # samples generated by this call (0 when resuming a finished job)
    resumed: int  # shards found finished and skipped


def run_job(
    backend: Backend,
    job: Job,
    out: Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    device: torch.device | None = None,
) -> JobResult:
    """Run (or resume) a sampling job into ``out``.

    Args:
        backend: the network (see :class:`Backend`).
        job: what to generate.
        out: output folder (created; see the module docstring for its files).
        overwrite: ignore a previous job's index in ``out`` and start again.
        progress: show a progress bar (tqdm, with ETA) over batches on stderr.
        device: device of the network, for the memory check (default CPU).

    Returns:
        The final index and counts.
    """
    check_job_dir(out, overwrite)
    check_memory(job, backend, device or torch.device("cpu"))
    make_job_dir(out)
    with JobLock(out):
        refuse_links(out, job)  # before anything in out is read, deleted or written
        index = start_index(out, job, overwrite)
        _remove_temporaries(out)  # of a killed earlier run; only the lock holder may do this
        try:
            return _run_locked(backend, job, out, index, progress)
        except OSError as error:  # disk full, permissions changed, something in the way: one line
            raise write_error(error, out, index) from None


def _run_locked(backend: Backend, job: Job, out: Path, index: dict, progress: bool) -> JobResult:
    """The body of :func:`run_job`, under the folder's lock: skip finished shards, run the rest, grids."""
    todo = []
    resumed = 0
    for steps in job.steps:
        record = index["steps"][str(steps)]
        done = {entry["shard"] for entry in record["shards"] if _shard_done(out, job, steps, entry)}
        record["shards"] = [entry for entry in record["shards"] if entry["shard"] in done]
        resumed += len(done)
        todo += [(steps, shard) for shard in range(job.num_shards) if shard not in done]
    write_index(out, index)
    bar = _progress_bar(job, todo, progress)
    generated = 0
    try:
        for steps, shard in todo:
            generated += _run_shard(backend, job, out, index, steps, shard, bar)
            write_index(out, index)
        for steps in job.steps:
            record = index["steps"][str(steps)]
            if record["grid"] is None or not (out / record["grid"]).exists():
                record["grid"] = write_grid(out, job, steps, backend.kind)
        index["complete"] = True
        write_index(out, index)
    finally:
        if bar is not None:
            bar.close()
    return JobResult(index, generated, resumed)


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


def _progress_bar(job: Job, todo: list[tuple[int, int]], enabled: bool):  # noqa: ANN202 - tqdm or None
    if not enabled or not todo:
        return None
    from tim.progress import progress_bar

    batches = sum(-(-len(job.shard_range(shard)) // job.batch_size) for _, shard in todo)
    return progress_bar(total=batches, unit="batch", desc="sample", dynamic_ncols=True)


def _run_shard(backend: Backend, job: Job, out: Path, index: dict, steps: int, shard: int, bar) -> int:  # noqa: ANN001
    """Generate one shard with ``steps`` steps, write its files, record it in ``index``."""
    indices = job.shard_range(shard)
    chunks, latents, nfe = [], [], 0
    for start in range(indices.start, indices.stop, job.batch_size):
        batch = range(start, min(indices.stop, start + job.batch_size))
        labels, prompts = _conditions(job, batch)
        output = backend.generate(
            batch,
            seed=job.seed,
            labels=labels,
            prompts=prompts,
            steps=steps,
            height=job.height,
            width=job.width,
            options=job.options,
        )
        if not torch.isfinite(output.samples).all():
            raise TimError(
                f"sampling with {steps} steps produced NaN or Inf (samples {batch.start}-{batch.stop - 1}; "
                f"{len(index['steps'][str(steps)]['shards'])} finished shards are kept)",
                "check the checkpoint (was training stable?), the guidance scale and the stochasticity",
            )
        chunks.append(output.samples.float().cpu())
        if output.latents is not None:
            latents.append(output.latents.float().cpu())
        nfe = output.nfe
        if bar is not None:
            bar.set_postfix(steps=steps, refresh=False)
            bar.update(1)
    samples = torch.cat(chunks).numpy()
    if job.png and backend.kind == "image":
        for row, pixels in enumerate(to_uint8(samples)):
            save_png(out / job.png_name(steps, indices.start + row), pixels, sync=False)
    name = job.npz_name(steps, shard)
    arrays = _npz_arrays(job, indices, samples, torch.cat(latents).numpy() if latents else None)
    atomic_write(out / name, lambda file: np.savez(file, **arrays))
    record = index["steps"][str(steps)]
    record["nfe"] = nfe
    record["shards"].append(
        {
            "shard": shard,
            "start": indices.start,
            "stop": indices.stop,
            "npz": name,
            "bytes": (out / name).stat().st_size,
            "png": job.png and backend.kind == "image",
        }
    )
    record["shards"].sort(key=lambda entry: entry["shard"])
    return len(indices)


def _conditions(job: Job, batch: range) -> tuple[torch.Tensor | None, list[str] | None]:
    """Class labels (LongTensor) or prompts of a batch; (None, None) when unconditional."""
    if not job.conditions:
        return None, None
    which = job.condition_of(batch)
    if isinstance(job.conditions[0], str):
        return None, [job.conditions[i] for i in which]
    return torch.tensor([job.conditions[i] for i in which], dtype=torch.long), None


def _npz_arrays(
    job: Job, indices: range, samples: np.ndarray, latents: np.ndarray | None
) -> dict[str, np.ndarray]:
    """The arrays of one shard: samples, labels, index (+ prompts, latents)."""
    which = job.condition_of(indices)
    text = bool(job.conditions) and isinstance(job.conditions[0], str)
    if job.conditions and not text:
        labels = np.asarray(job.conditions, dtype=np.int64)[which]
    else:
        labels = np.full(len(indices), -1, dtype=np.int64)
    arrays = {
        "samples": samples.astype(np.float32),
        "labels": labels,
        "index": np.arange(indices.start, indices.stop, dtype=np.int64),
    }
    if text:
        arrays["prompts"] = np.asarray([job.conditions[i] for i in which], dtype=str)
    if latents is not None:
        arrays["latents"] = latents.astype(np.float32)
    return arrays


# ------------------------------------------------------------------------------------------------
# Preview grid


def grid_layout(job: Job, kind: str) -> tuple[list[int], int]:
    """Sample indices of the preview grid (-1 = empty tile) and its number of columns.

    Rows are conditions (up to GRID_MAX_ROWS), columns their first samples (up to GRID_MAX_COLS),
    both fewer when the images are large (at most GRID_MAX_PIXELS pixels per side).
    """
    side = max(job.height or 1, job.width or 1)
    fit = max(1, GRID_MAX_PIXELS // side) if kind == "image" else GRID_MAX_COLS * GRID_MAX_ROWS
    starts = np.concatenate([[0], np.cumsum(job.counts)[:-1]])
    if job.conditions:
        cols = min(max(job.counts), GRID_MAX_COLS, fit)
        rows = min(len(job.counts), GRID_MAX_ROWS, fit)
        layout = [int(starts[c] + j) if j < job.counts[c] else -1 for c in range(rows) for j in range(cols)]
        return layout, cols
    cols = min(job.total, GRID_MAX_COLS, fit)
    rows = min(-(-job.total // cols), GRID_MAX_ROWS, fit)
    return [i for i in range(rows * cols) if i < job.total], cols


def write_grid(out: Path, job: Job, steps: int, kind: str) -> str:
    """Write ``steps_<k>.png`` from the finished shards (read one at a time); returns its name."""
    layout, cols = grid_layout(job, kind)
    wanted = sorted(i for i in layout if i >= 0)
    if kind != "image":
        wanted = list(range(min(job.total, 20_000)))  # a scatter plot of the first points
    picked: dict[int, np.ndarray] = {}
    for shard in range(job.num_shards):
        indices = job.shard_range(shard)
        rows = [i for i in wanted if indices.start <= i < indices.stop]
        if rows:
            with np.load(out / job.npz_name(steps, shard)) as data:
                samples = data["samples"]
                picked.update({i: samples[i - indices.start] for i in rows})
    name = f"steps_{steps:03d}.png"
    if kind != "image":
        from tim import viz

        points = np.stack([picked[i] for i in wanted])
        with deferred(f"writing {name}"):  # a stop signal waits for the plot: no temporary is left
            handle, temporary = create_temporary(out, f".{name}.", ".tmp.png")
            os.close(handle)  # a fresh file of ours (never a planted link), which the plot overwrites
            try:
                viz.scatter({f"{steps} steps": points}, temporary)
                os.replace(temporary, out / name)
            except BaseException as error:
                temporary.unlink(missing_ok=True)
                if isinstance(error, OSError):
                    raise WriteFailed(out / name, error) from None
                raise
        return name
    from tim import viz

    blank = np.ones_like(next(iter(picked.values())))  # white, like the grid padding
    tiles = np.stack([picked[i] if i >= 0 else blank for i in layout])
    side = max(tiles.shape[-2:])
    canvas = viz.grid_array(tiles, cols, scale=max(1, min(4, GRID_MIN_TILE // side)))
    if job.conditions and isinstance(job.conditions[0], str):  # prompts: each row says what it asked for
        canvas = viz.label_rows(canvas, list(job.conditions[: len(layout) // cols]))
    save_png(out / name, canvas)
    return name
