"""THE experiment engine: what every demo and comparison of tim does, written once.

An experiment trains one or several runs within a budget (a wall-time budget for the demos, an
equal number of optimizer steps for the comparisons), samples every run with 1, 2, 4 ... 128 steps
from the same noise (one model, any number of steps: arXiv 2509.04394, Sec. 3; sampling by Alg. 2), scores
every step count with a judge and writes ``metrics.json`` (or the comparison's JSON), ``report.md``,
pictures and a printed table. The pieces below are those steps; :class:`Experiment` ties them for
the demos (``tim demo digits|t2i|latent``), and :mod:`tim.experiments.quality` /
:mod:`tim.experiments.geneval` use the same pieces for ``tim bench quality`` / ``tim bench geneval``
(docs/benchmarks.md). Samples are drawn by :func:`tim.samplers.sample_batches`, files are written
by :mod:`tim.io`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from tim.errors import TimError
from tim.io import atomic_write, write_json, write_text


@dataclasses.dataclass(frozen=True)
class Defaults:
    """What one demo uses when an option shared by every ``tim demo`` is not given."""

    out: str
    steps: str  # sampling step counts compared
    quick_steps: str
    count: int  # --per-class: samples per class (or per prompt) for the metrics/grids
    quick_count: int
    minutes: float  # wall-time budget of the whole demo
    quick_minutes: float
    min_count: int = 2
    count_reason: str = "metrics need several samples"


@dataclasses.dataclass(frozen=True)
class Options:
    """One demo run, as the command line gave it (checked and completed by :mod:`tim.cli.demo`)."""

    out: Path  # the output folder, already created (new or --overwrite)
    overwrite: bool
    quick: bool
    steps: list[int]  # sampling step counts compared
    count: int  # samples per class (or per prompt in each grid)
    minutes: float  # wall-time budget of the whole demo
    seed: int  # training seed and sampling noise seed
    overrides: list[str]  # KEY=VALUE training-config overrides
    command: str  # the command, recorded in metrics.json


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A demo: its defaults, how to check its configs and how to run it.

    ``configure(options)`` validates every config before anything is written (``tim demo`` then
    creates the output folder); ``run(options, plan)`` trains, sweeps, scores and writes, and
    returns the exit status.
    """

    name: str
    defaults: Defaults
    configure: Callable[[Any], Any]
    run: Callable[[Options, Any], int]


# ------------------------------------------------------------------------------------------------ budget


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Run the block with ``count`` torch threads (default: the idle cores), then restore the setting.

    In-process callers (tests, notebooks) get their own thread setting back.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count or idle_cores())
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def idle_cores() -> int:
    """Cores not busy with other work: cores minus the 1-minute load average, at least 1.

    More threads than free cores makes small-matrix torch code slower, not faster (measured on a
    shared 2-core machine: 2 threads took 1.5x the wall time of 1 thread while it was busy).
    """
    cores = os.cpu_count() or 1
    if not hasattr(os, "getloadavg"):  # Windows
        return cores
    return max(1, min(cores, round(cores - os.getloadavg()[0])))


def time_limit_given(overrides: Sequence[str]) -> bool:
    """Whether a ``train.time_limit=MIN`` override replaces the budget rule."""
    return any(item.startswith("train.time_limit=") for item in overrides)


def fastest(function: Callable[[], Any], repeats: int, warm_up: bool = True) -> float:
    """Seconds of the fastest of ``repeats`` calls (ignores spikes of other work on the machine).

    The warm-up call (first calls allocate) is not timed.
    """
    if warm_up:
        function()
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        timings.append(time.perf_counter() - started)
    return min(timings)


def fit_time_limit(cfg: Any, minutes: float, needed: float, message: Callable[[float], str]) -> Any:
    """``cfg`` with ``train.time_limit`` set so that training + ``needed`` minutes fit in ``minutes``.

    Args:
        cfg: the run config.
        minutes: what is left of the budget.
        needed: minutes of everything but training (sampling, scoring, pictures), as timed here.
        message: the line printed for the limit (in minutes).
    """
    limit = max(0.1, minutes - needed)
    print(message(limit), flush=True)
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, time_limit=round(limit, 2)))


# ------------------------------------------------------------------------------------------------ runs


def build_untrained(cfg: Any) -> Any:
    """The run's network, freshly initialised: to count its parameters and time one call."""
    from tim.models import build_model
    from tim.training.config import model_config

    return build_model(model_config(cfg))


def load_ema(run_dir: Path, device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """A trained run's EMA network in eval mode on ``device`` and its config: what experiments sample."""
    from tim.training import load_run

    if not Path(run_dir).is_dir():
        raise TimError(f"{run_dir} is not a folder", "pass the run folder written by `tim train`")
    model, cfg = load_run(run_dir, which="ema", device=device)
    return model.eval(), cfg


def load_class_run(run_dir: Path) -> tuple[Any, Any, tuple[int, ...], list[int]]:
    """The EMA network of a class-conditional run, its path, sample shape and class ids.

    A thin view of :func:`tim.generation.load_for_sampling` (THE loader of a run to sample from).
    """
    from tim.generation import load_for_sampling

    model, info = load_for_sampling(run_dir)
    return model, info.path, tuple(info.data_shape), list(range(info.num_classes))


def remove_previous(folder: Path, markers: Sequence[str], what: str) -> None:
    """--overwrite: delete the previous demo's ``folder``, but only if it holds one of ``markers``.

    With no markers, the folder must hold nothing but ``.safetensors`` files (latent shards).
    """
    if not folder.exists():
        return
    ours = (
        any((folder / m).exists() for m in markers)
        if markers
        else all(p.suffix == ".safetensors" for p in folder.iterdir())
    )
    if not ours:
        raise TimError(
            f"{folder} exists but is not {what}, so --overwrite will not delete it",
            "move it away or pass another --out",
        )
    shutil.rmtree(folder)


def train_run(cfg: Any, run_dir: Path, **data: Any) -> tuple[dict[str, Any], float]:
    """Train ``cfg`` into ``run_dir``; returns (the run's summary.json or {}, seconds)."""
    from tim.training import train

    started = time.perf_counter()
    train(cfg, run_dir, **data)
    seconds = time.perf_counter() - started
    summary = run_dir / "summary.json"
    return (json.loads(summary.read_text()) if summary.exists() else {}), seconds


def train_record(
    cfg: Any,
    run_dir: Path,
    parameters: int,
    summary: dict[str, Any],
    seconds: float,
    model: dict[str, Any] | None = None,
    recipe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """What happened in training (metrics.json ``train``): steps, images, seconds, time limit hit.

    ``model`` entries follow the preset name, ``recipe`` entries the EMA decay.
    """
    from tim.training.loop import total_steps

    steps = int(summary.get("steps", 0))
    return {
        "model": cfg.model.preset,
        **(model or {}),
        "parameters": parameters,
        "steps": steps,
        "planned_steps": total_steps(cfg),
        "images_seen": int(summary.get("images", 0)),
        "batch_size": cfg.train.batch_size,
        "lr": cfg.optim.lr,
        "ema_decay": cfg.ema.decay,
        **(recipe or {}),
        "time_limit_minutes": cfg.train.time_limit,
        "stopped_by_time_limit": steps < total_steps(cfg),
        "seconds": round(seconds, 1),
        "run_dir": str(run_dir),
    }


def run_digest(data: dict[str, Any]) -> str:
    """A short hash of a run config: two comparisons with the same settings share their runs."""
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


def train_or_reuse(data: dict[str, Any], run_dir: Path, announce: Callable[[], None] | None = None) -> bool:
    """Train the run config ``data`` into ``run_dir`` unless a finished run is there; True if trained."""
    from tim.training import config_from_dict, train

    if (run_dir / "pretrained").is_dir():
        return False
    if announce is not None:
        announce()
    train(config_from_dict(data), run_dir)
    return True


def run_cells(
    function: Callable[..., Any],
    cells: Sequence[tuple],
    jobs: int,
    *,
    serial: dict[str, Any] | None = None,
    done: Callable[[tuple, Any], None] | None = None,
) -> list[Any]:
    """``function(*cell)`` for every cell, here (with ``serial`` keywords) or in worker processes.

    With ``jobs > 1`` every cell runs in a spawned worker with one thread (``threads=1``); results
    do not depend on it. ``done(cell, result)`` is called as each result arrives, in cell order.

    Returns:
        The results, in the order of ``cells``.
    """
    results = []
    if jobs <= 1:
        for cell in cells:
            results.append(function(*cell, **(serial or {})))
            if done is not None:
                done(cell, results[-1])
        return results
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(min(jobs, len(cells)), mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(function, *cell, threads=1) for cell in cells]
        for cell, future in zip(cells, futures, strict=True):
            results.append(future.result())
            if done is not None:
                done(cell, results[-1])
    return results


# ------------------------------------------------------------------------------------------------ sweep


def sweep(steps_list: Sequence[int], one: Callable[[int], Any]) -> list[Any]:
    """``one(steps)`` for every step count, printing the seconds each took."""
    results = []
    for steps in steps_list:  # one call per count (same seed, so same noise) to report progress
        started = time.perf_counter()
        results.append(one(steps))
        print(f"  {steps:4d} steps: {time.perf_counter() - started:6.1f} s", flush=True)
    return results


def rounded(result: dict[str, Any], digits: int = 5) -> dict[str, Any]:
    """Floats rounded for metrics.json; everything else as it is."""
    return {key: round(value, digits) if isinstance(value, float) else value for key, value in result.items()}


# ------------------------------------------------------------------------------------------------ output


def machine() -> dict[str, Any]:
    """metrics.json ``machine``: the threads and versions the demo ran with."""
    return {
        "cpu_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_outputs(
    out: Path,
    summary: dict[str, Any],
    pictures: Callable[[], None],
    report: Callable[[dict[str, Any]], str],
    table: Callable[[dict[str, Any]], None],
    files: str,
    seconds: float,
) -> None:
    """metrics.json, the pictures, report.md and the printed table of a demo; then where they are."""
    write_json(out / "metrics.json", summary)
    pictures()
    write_text(out / "report.md", report(summary))
    table(summary)
    print(f"wrote {out}/: {files} ({seconds / 60:.1f} min)")


def log2_axis(axis: Any, xlabel: str, ylabel: str, title: str, *, legend_size: int | None = None) -> None:
    """A quality-vs-steps panel: log2 step axis labelled 1, 2, 4 ..., grid, legend."""
    import matplotlib.ticker

    axis.set_xscale("log", base=2)
    axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%d"))  # 1, 2, 4 ... not 2^k
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    axis.legend(**({"fontsize": legend_size} if legend_size else {}))


def subplots(panels: int, width: float, height: float) -> tuple[Any, Any]:
    """A matplotlib figure (file-only Agg backend) with one row of ``panels`` axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    return figure, axes[0]


def save_figure(figure: Any, path: Path, dpi: int = 110) -> None:
    """Lay out, write as PNG with :func:`tim.io.atomic_write` and close a matplotlib figure."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=dpi))
    plt.close(figure)
