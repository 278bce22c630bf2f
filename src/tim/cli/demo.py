"""``tim demo``: the main job on the embedded default, end to end on a laptop CPU.

1. Train a class-conditional TiM (preset ``TiM-digits``) on scikit-learn's bundled 8x8 digits
   (1,797 real images, 10 classes; no download) with the run preset ``digits``, stopping at
   ``train.time_limit`` minutes at the latest.
2. Sample the EMA model with 1, 2, 4, ..., 128 steps from the SAME noise, ``--per-class`` images
   per class.
3. Judge every step count with :func:`tim.evaluation.digits.evaluate_digits` (class accuracy of a
   classifier trained on the real digits; Fréchet and kernel distance in its feature space).
4. Write ``steps_<k>.png`` grids (rows = classes 0..9), ``montage.png`` (real digits next to every
   step count), ``quality_vs_steps.png``, ``metrics.json``, ``report.md`` and the run folder
   ``run/`` (checkpoints, config.json, training logs, ``run/pretrained``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from tim.cli.main import HelpFormatter
from tim.cli.sample import Generated, generate, parse_steps, prepare_output_dir
from tim.errors import TimError

DEMO_STEPS = "1,2,4,8,16,32,64,128"
GRID_COLUMNS = 10  # samples per class shown in each grid (rows = the 10 digit classes)
# Settings on top of the `digits` run preset (configs/digits.yaml), measured with this command on a
# busy 2-core machine (1 thread each, 4-minute budget, 1-step class accuracy / Frechet distance):
#   2x2 patches, batch 128: 17 steps in 0.75 min - far too slow per step (16 tokens per digit);
#   4x4 patches, batch 128: 197 steps in 1.9 min -> 0.23 / 19.2;
#   4x4 patches, batch  64: 419 steps in 2.9 min -> 0.85 / 5.8;
#   4x4 patches, batch  32: 523 steps in 1.6 min -> 0.83 / 6.2 (the most quality per minute).
# 4x4 patches (4 tokens per 8x8 digit) cost ~3x less CPU per step than 2x2 ones (0.26 vs 0.70
# CPU-s at batch 128). The full run (README) reached 96% 1-step accuracy after 1,631 steps; 6000
# steps need roughly 10 CPU-minutes, so on most machines the time budget, not the cap, ends training.
# The `digits` preset carries these choices (4x4 patches, batch 32, 6000 steps); the demo only turns
# off the periodic grids, since it samples at the end anyway.
DEMO_OVERRIDES = ["train.sample_every=0"]
# --quick: under a minute on 2 idle cores, two on a busy machine; for smoke tests (rough digits).
QUICK_OVERRIDES = ["train.steps=400", "optim.warmup_steps=40", "train.checkpoint_every=200", "sample.num=16"]
QUICK_STEPS = "1,2,4,8,16"
QUICK_PER_CLASS = 10
DEFAULT_PER_CLASS = 50
# `tim demo t2i` / `tim demo latent`: the other demos, each in its own module with
# ``run_demo(args, overrides) -> int`` (they share this parser's options; --out defaults per demo).
OTHER_DEMOS = {"t2i": "tim.cli.demo_t2i", "latent": "tim.cli.demo_latent"}
DEFAULT_OUT = "outputs/demo"


@dataclasses.dataclass(frozen=True)
class DemoDefaults:
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


DIGITS_DEFAULTS = DemoDefaults(
    DEFAULT_OUT, DEMO_STEPS, QUICK_STEPS, DEFAULT_PER_CLASS, QUICK_PER_CLASS, 10.0, 2.0
)


def demo_options(args: argparse.Namespace, defaults: DemoDefaults) -> tuple[list[int], int, float]:
    """Check the shared ``tim demo`` options and fill in ``defaults``; sets ``args.out`` if unset.

    Returns:
        (step counts, samples per class or prompt, minutes of the wall-time budget).
    """
    args.out = args.out or defaults.out
    steps_list = parse_steps(
        args.steps if args.steps is not None else (defaults.quick_steps if args.quick else defaults.steps)
    )
    count = (
        args.per_class
        if args.per_class is not None
        else (defaults.quick_count if args.quick else defaults.count)
    )
    minutes = (
        args.minutes
        if args.minutes is not None
        else (defaults.quick_minutes if args.quick else defaults.minutes)
    )
    if not minutes > 0:
        raise TimError(
            f"--minutes {args.minutes} is not positive",
            f"pass a time budget in minutes, e.g. --minutes {defaults.minutes:g}",
        )
    if count < defaults.min_count:
        raise TimError(
            f"--per-class {count} is < {defaults.min_count}",
            f"pass --per-class {defaults.min_count} or more ({defaults.count_reason})",
        )
    if args.threads is not None and args.threads < 1:
        raise TimError(f"--threads {args.threads} is < 1", "pass a positive thread count")
    return steps_list, count, minutes


@contextlib.contextmanager
def torch_threads(count: int | None):
    """Run the block with ``count`` torch threads (default: the idle cores), then restore the setting.

    In-process callers (tests, notebooks) get their own thread setting back.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(count or idle_cores())
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim demo``."""
    parser = subparsers.add_parser(
        "demo",
        help="train on the bundled digits in minutes, then compare 1..128 sampling steps",
        description="The main job on the embedded default, no download: trains a class-conditional TiM on "
        "scikit-learn's 8x8 digits (<= 10 minutes on 2 CPU cores), samples it with 1, 2, 4 ... 128 "
        "steps and writes one grid per step count, a montage comparing them, a quality-vs-steps "
        "plot, metrics.json (class accuracy, Frechet and kernel distance per step count), "
        "report.md and the checkpoint. KEY=VALUE overrides change the training config "
        "(see configs/digits.yaml), e.g. train.time_limit=3 optim.lr=5e-4.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"output folder (must be new or empty; default: {DEFAULT_OUT}, "
        "outputs/demo_t2i for `tim demo t2i`, outputs/demo_latent for `tim demo latent`)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="reuse a non-empty --out: replace its files and train a fresh run/",
    )
    parser.add_argument(
        "--quick", action="store_true", help="about one minute in total (smoke test; blurry digits)"
    )
    parser.add_argument(
        "--steps",
        default=None,
        metavar="K,K,...",
        help=f"sampling step counts to compare (default: {DEMO_STEPS}, or {QUICK_STEPS} with --quick)",
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=None,
        help=f"samples per class for the metrics (default: {DEFAULT_PER_CLASS}, "
        f"or {QUICK_PER_CLASS} with --quick); for `tim demo t2i`: samples per prompt in each grid",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=None,
        help="wall-time budget of the whole demo; training stops early enough to leave time for "
        "sampling and evaluation, as measured on this machine (default: 10, or 2 with --quick; "
        "a train.time_limit=MIN override replaces this rule)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of training and of the sampling noise")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (default: the idle cores, i.e. cores minus the 1-minute load "
        "average, at least 1)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="[t2i|latent] KEY=VALUE",
        help="optional first word `t2i` (text-to-image on synthetic scenes) or `latent` (a small "
        "autoencoder + TiM in its latent space) picks another demo; then dotted "
        "training-config overrides",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``tim demo`` (see :func:`add_parser` for the options)."""
    if args.overrides and args.overrides[0] in OTHER_DEMOS:
        import importlib

        module = importlib.import_module(OTHER_DEMOS[args.overrides[0]])
        return int(module.run_demo(args, args.overrides[1:]) or 0)
    steps_list, per_class, minutes = demo_options(args, DIGITS_DEFAULTS)
    with torch_threads(args.threads):
        return _run(args, steps_list, per_class, minutes)


def _run(args: argparse.Namespace, steps_list: list[int], per_class: int, minutes: float) -> int:
    """The demo proper, after the arguments are checked and the threads are set."""
    from tim.training import load_config

    overrides = DEMO_OVERRIDES + (QUICK_OVERRIDES if args.quick else []) + [f"train.seed={args.seed}"]
    cfg = load_config("digits", overrides + list(args.overrides))  # validated before anything is written
    out = prepare_output_dir(args.out, args.overwrite)
    run_dir = out / "run"
    if args.overwrite and run_dir.exists():
        _remove_previous_run(run_dir)

    started = time.perf_counter()
    if not any(item.startswith("train.time_limit=") for item in args.overrides):
        cfg = _fit_time_limit(cfg, minutes, steps_list, per_class)
    train_info = _train(cfg, run_dir)
    print(
        f"sampling with {', '.join(map(str, steps_list))} steps, {per_class} images per class ...", flush=True
    )
    sample_started = time.perf_counter()
    generated, path = _sample(run_dir, steps_list, per_class, args.seed)
    sample_seconds = time.perf_counter() - sample_started
    metrics = _evaluate(generated)
    total_seconds = time.perf_counter() - started

    summary = {
        "command": "tim demo " + " ".join(_argv_of(args)),
        "train": train_info,
        "sampling": {
            "path": type(path).__name__,
            "per_class": per_class,
            "classes": list(range(10)),
            "guidance_scale": 1.0,
            "noise_seed": args.seed,
            "seconds": round(sample_seconds, 1),
        },
        "quality_vs_steps": metrics["steps"],
        "real_digits_reference": metrics["real"],
        "wall_seconds": round(total_seconds, 1),
        "machine": {
            "cpu_threads": torch.get_num_threads(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n")
    _write_pictures(out, generated, metrics)
    (out / "report.md").write_text(render_report(summary))
    _print_table(summary)
    print(
        f"wrote {out}/: montage.png, quality_vs_steps.png, steps_*.png, metrics.json, report.md, run/ "
        f"({total_seconds / 60:.1f} min)"
    )
    return 0


def idle_cores() -> int:
    """Cores not busy with other work: cores minus the 1-minute load average, at least 1.

    More threads than free cores makes small-matrix torch code slower, not faster (measured on a
    shared 2-core machine: 2 threads took 1.5x the wall time of 1 thread while it was busy).
    """
    cores = os.cpu_count() or 1
    if not hasattr(os, "getloadavg"):  # Windows
        return cores
    return max(1, min(cores, round(cores - os.getloadavg()[0])))


def _fit_time_limit(cfg: Any, minutes: float, steps_list: list[int], per_class: int) -> Any:
    """Set ``train.time_limit`` so that training + sampling + evaluation fit in ``minutes``.

    Sampling costs sum(steps) network calls on 10 * per_class images; one such call is timed here,
    on this machine under its current load, so the budget holds on slow or busy machines too.
    """
    model = _model_for_count(cfg).eval()
    shape = (10 * per_class, model.config.in_channels, model.config.input_size, model.config.input_size)
    x, t, y = torch.zeros(shape), torch.ones(shape[0]), torch.arange(shape[0]) % 10
    timings = []
    with torch.no_grad():
        model(x, t, t, y=y)  # warm-up: first calls allocate
        for _ in range(3):  # the fastest of 3 ignores spikes of other work on the machine
            started = time.perf_counter()
            model(x, t, t, y=y)
            timings.append(time.perf_counter() - started)
    call = min(timings)
    # 50% margin: the sampler's own per-step work and load changes (measured once: 69 s, 54 s timed).
    sampling_minutes = 1.5 * call * sum(steps_list) / 60
    fixed_minutes = 0.5  # data and model set-up, evaluation, pictures (measured: ~25 s on a busy machine)
    limit = max(0.1, minutes - sampling_minutes - fixed_minutes)
    print(
        f"time budget {minutes:g} min: sampling needs ~{sampling_minutes:.1f} min here, so training gets "
        f"at most {limit:.1f} min",
        flush=True,
    )
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, time_limit=round(limit, 2)))


def _argv_of(args: argparse.Namespace) -> list[str]:
    """The demo's own options, for the record in metrics.json."""
    argv = ["--out", str(args.out)] + (["--quick"] if args.quick else [])
    if args.steps is not None:
        argv += ["--steps", args.steps]
    if args.per_class is not None:
        argv += ["--per-class", str(args.per_class)]
    if args.seed:
        argv += ["--seed", str(args.seed)]
    if args.minutes is not None:
        argv += ["--minutes", f"{args.minutes:g}"]
    if args.threads is not None:
        argv += ["--threads", str(args.threads)]
    return argv + list(args.overrides)


def _remove_previous_run(run_dir: Path) -> None:
    """--overwrite: delete the previous demo's run folder, but only if it is one."""
    if not ((run_dir / "config.json").exists() or (run_dir / "checkpoints").exists()):
        raise TimError(
            f"{run_dir} exists but is not a training run, so --overwrite will not delete it",
            "move it away or pass another --out",
        )
    shutil.rmtree(run_dir)


def _train(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Train the demo model; returns what happened (steps, images, seconds, whether time ran out)."""
    from tim.training import train
    from tim.training.loop import total_steps

    params = sum(p.numel() for p in _model_for_count(cfg).parameters())
    print(
        f"training {cfg.model.preset} ({params / 1e6:.2f}M parameters) on the bundled digits for up to "
        f"{total_steps(cfg)} steps or {cfg.train.time_limit:g} minutes ({torch.get_num_threads()} CPU thread(s))",
        flush=True,
    )
    started = time.perf_counter()
    train(cfg, run_dir)
    seconds = time.perf_counter() - started
    summary = (
        json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").exists() else {}
    )
    steps = int(summary.get("steps", 0))
    return {
        "model": cfg.model.preset,
        "parameters": params,
        "steps": steps,
        "planned_steps": total_steps(cfg),
        "images_seen": int(summary.get("images", 0)),
        "batch_size": cfg.train.batch_size,
        "lr": cfg.optim.lr,
        "ema_decay": cfg.ema.decay,
        "time_limit_minutes": cfg.train.time_limit,
        "stopped_by_time_limit": steps < total_steps(cfg),
        "seconds": round(seconds, 1),
        "run_dir": str(run_dir),
    }


def _model_for_count(cfg: Any) -> torch.nn.Module:
    from tim.models import build_model
    from tim.training.config import model_config

    return build_model(model_config(cfg))


def _sample(run_dir: Path, steps_list: list[int], per_class: int, seed: int) -> tuple[list[Generated], Any]:
    """EMA samples for every step count, ``per_class`` per digit class, same noise for all counts."""
    from tim.cli.sample import load_for_sampling

    model, info = load_for_sampling(run_dir, weights="ema")
    generated = []
    for steps in steps_list:  # one call per count (same seed, so same noise) to report progress
        started = time.perf_counter()
        generated += generate(
            model,
            info.path,
            info.data_shape,
            [steps],
            class_ids=list(range(info.num_classes)),
            per_class=per_class,
            seed=seed,
        )
        print(f"  {steps:4d} steps: {time.perf_counter() - started:6.1f} s", flush=True)
    return generated, info.path


def _evaluate(generated: list[Generated]) -> dict[str, Any]:
    """Digits metrics per step count, plus the same metrics for as many REAL digits (the floor)."""
    from tim.evaluation.digits import evaluate_digits, load_real_digits

    rows = {}
    for item in generated:
        result = evaluate_digits(item.samples, item.labels)
        rows[str(item.steps)] = {"nfe": item.nfe, **_rounded(result)}
    images, labels = load_real_digits()
    count = min(len(images), len(generated[0].samples))
    index = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
    real = {"num_images": count, **_rounded(evaluate_digits(images[index], labels[index]))}
    return {"steps": rows, "real": real}


def _rounded(result: dict[str, Any]) -> dict[str, Any]:
    return {key: round(value, 5) if isinstance(value, float) else value for key, value in result.items()}


def _write_pictures(out: Path, generated: list[Generated], metrics: dict[str, Any]) -> None:
    """Grids per step count, the montage (real digits + every step count) and the quality plot."""
    from tim import viz
    from tim.evaluation.digits import load_real_digits

    panels, captions = [], []
    images, labels = load_real_digits()
    real = torch.cat([images[labels == digit][:GRID_COLUMNS] for digit in range(10)])
    panels.append(viz.grid_array(real, nrow=GRID_COLUMNS, scale=3))
    captions.append("real digits")
    for item in generated:
        grid = _grid_images(item)
        viz.save_grid(grid, out / f"steps_{item.steps:03d}.png", nrow=GRID_COLUMNS, scale=4)
        panels.append(viz.grid_array(grid, nrow=GRID_COLUMNS, scale=3))
        accuracy = metrics["steps"][str(item.steps)].get("class_accuracy")
        captions.append(
            f"{item.steps} step{'s' if item.steps > 1 else ''}"
            + (f" (acc {accuracy:.0%})" if accuracy is not None else "")
        )
    viz.montage(
        panels,
        captions,
        out / "montage.png",
        ncol=3 if len(panels) > 4 else len(panels),
        title="TiM on 8x8 digits: one model, any number of steps (rows = classes 0-9; same noise in every panel)",
    )
    steps = [item.steps for item in generated]
    rows = metrics["steps"]
    viz.line_plot(
        steps,
        {
            "class accuracy": [rows[str(k)]["class_accuracy"] for k in steps],
            "Frechet distance": [rows[str(k)]["frechet_distance"] for k in steps],
        },
        out / "quality_vs_steps.png",
        xlabel="sampling steps (NFE)",
        ylabels={
            "class accuracy": "accuracy (higher is better)",
            "Frechet distance": "FD in classifier features (lower is better)",
        },
        title="Quality vs sampling steps (dashed: real digits)",
        reference={
            "class accuracy": metrics["real"]["class_accuracy"],
            "Frechet distance": metrics["real"]["frechet_distance"],
        },
    )


def _grid_images(item: Generated) -> torch.Tensor:
    """The first GRID_COLUMNS samples of each class, class-major (one grid row per class)."""
    per_class = len(item.samples) // len(item.labels.unique())
    columns = min(GRID_COLUMNS, per_class)
    index = [c * per_class + j for c in range(len(item.labels.unique())) for j in range(columns)]
    return item.samples[index]


def render_report(summary: dict[str, Any]) -> str:
    """A short Markdown report of a demo run (written as report.md).

    Args:
        summary: the contents of metrics.json.

    Returns:
        Markdown text.
    """
    train, rows, real = summary["train"], summary["quality_vs_steps"], summary["real_digits_reference"]
    lines = [
        "# TiM demo: one model, any number of sampling steps",
        "",
        (
            f"Command: `{summary['command']}` ({summary['wall_seconds'] / 60:.1f} min wall time, "
            f"{summary['machine']['cpu_threads']} CPU thread(s))."
        ),
        "",
        (
            f"Trained `{train['model']}` ({train['parameters'] / 1e6:.2f}M parameters) on scikit-learn's 1,797 8x8 "
            f"digits for {train['steps']} steps ({train['images_seen']:,} images, batch {train['batch_size']}, "
            f"lr {train['lr']:g}, EMA {train['ema_decay']:g}) in {train['seconds'] / 60:.1f} min"
            + (" (stopped by the time limit)." if train["stopped_by_time_limit"] else ".")
        ),
        "",
        (
            f"Samples: {summary['sampling']['per_class']} per class from the EMA weights, the same noise for every "
            "step count, no guidance. Metrics from `tim.evaluation.digits.evaluate_digits` (a classifier trained on "
            "the real digits; distances in its penultimate features, against all 1,797 real digits)."
        ),
        "",
        "| steps (NFE) | class accuracy | Frechet distance | KID |",
        "|---:|---:|---:|---:|",
    ]
    for steps, row in rows.items():
        lines.append(
            f"| {steps} | {row['class_accuracy']:.3f} | {row['frechet_distance']:.3f} | {row['kid']:.4f} |"
        )
    lines.append(
        f"| real digits ({real['num_images']}) | {real['class_accuracy']:.3f} | "
        f"{real['frechet_distance']:.3f} | {real['kid']:.4f} |"
    )
    files = (
        "Files: `steps_<k>.png` (rows = classes 0-9), `metrics.json`, `run/` (checkpoints, config.json, "
        "metrics.jsonl, `pretrained/`). Sample again with "
        f"`tim sample --checkpoint {train['run_dir']} --steps 1,4 --out DIR`."
    )
    lines += ["", "![montage](montage.png)", "", "![quality vs steps](quality_vs_steps.png)", "", files, ""]
    return "\n".join(lines)


def _print_table(summary: dict[str, Any]) -> None:
    print(f"{'steps':>6} {'accuracy':>9} {'Frechet':>9} {'KID':>8}")
    for steps, row in summary["quality_vs_steps"].items():
        print(f"{steps:>6} {row['class_accuracy']:9.3f} {row['frechet_distance']:9.3f} {row['kid']:8.4f}")
    real = summary["real_digits_reference"]
    print(f"{'real':>6} {real['class_accuracy']:9.3f} {real['frechet_distance']:9.3f} {real['kid']:8.4f}")
