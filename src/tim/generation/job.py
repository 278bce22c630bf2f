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
names this job writes (:func:`tim.generation.job_files.validate_index`), so a hand-edited or planted
index can never make a resume count, read, delete or rewrite a file outside ``--out``. Nor does a
job go through symbolic links: an index, shard, grid, per-sample PNG or ``steps_<k>/`` folder that
is a link is refused (:func:`tim.generation.job_files.refuse_links`) rather than followed, and the
folder's ``.lock`` is opened with ``O_NOFOLLOW`` (:mod:`tim.training.lock`).

Noise: sample ``i`` starts from ``N(0, I)`` noise drawn on the CPU by its own generator seeded
with ``seed + i`` (:func:`tim.samplers.seeded_noise`, the rule of :class:`tim.generation.TiMPipeline`,
so sample ``i`` of ``tim sample --seed S`` is ``pipe(..., seed=S)``'s image ``i``); that generator
then also draws the sample's noise for stochastic steps. Nothing depends on the batch size, the
shard size or the step count: every step count starts from the same noise and a resumed job draws
exactly the noise it would have drawn.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from tim.errors import TimError
from tim.generation.job_files import (
    INDEX_FORMAT,
    INDEX_NAME,
    JobLock,
    WriteFailed,
    _remove_temporaries,
    _shard_done,
    check_job_dir,
    check_writable_out,
    identity_differences,
    make_job_dir,
    read_index,
    refuse_links,
    start_index,
    validate_index,
    write_error,
    write_file,
    write_index,
    write_png,
)
from tim.generation.memory import MEMORY_HEADROOM, check_memory, host_bytes
from tim.io import to_uint8
from tim.system import create_temporary
from tim.training.preemption import deferred

__all__ = [
    "INDEX_FORMAT",
    "INDEX_NAME",
    "MEMORY_HEADROOM",
    "Backend",
    "BatchOutput",
    "Job",
    "JobLock",
    "JobResult",
    "WriteFailed",
    "check_job_dir",
    "check_memory",
    "check_writable_out",
    "default_shard_size",
    "grid_layout",
    "host_bytes",
    "identity_differences",
    "make_job_dir",
    "read_index",
    "refuse_links",
    "run_job",
    "split_count",
    "start_index",
    "validate_index",
    "write_error",
    "write_grid",
    "write_index",
]

SHARD_BYTES = 256 * 2**20  # default shard budget: float32 samples held before a shard is written
MAX_SHARD_SAMPLES = 1000  # and at most this many samples per shard (a 50,000-sample FID set = 50 files)
GRID_MAX_ROWS, GRID_MAX_COLS, GRID_MAX_PIXELS = 32, 16, 4096  # keep the preview grid a viewable size
GRID_MIN_TILE = 128  # tiles of <= 64 px are enlarged by 128 // side (nearest neighbour, at most 4x)


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

    Implemented by :class:`tim.generation.backends.PipelineBackend` and :class:`tim.generation.backends.VectorBackend`.
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
        """Sample ``indices`` (noise seeded ``seed + i``, see :func:`tim.samplers.seeded_noise`) with ``steps`` steps."""
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
            write_png(out / job.png_name(steps, indices.start + row), pixels, sync=False)
    name = job.npz_name(steps, shard)
    arrays: dict[str, Any] = _npz_arrays(
        job, indices, samples, torch.cat(latents).numpy() if latents else None
    )
    write_file(out / name, lambda file: np.savez(file, **arrays))
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
    write_png(out / name, canvas)
    return name
