"""``tim demo digits`` (and plain ``tim demo``): the main job on the embedded default, on a laptop CPU.

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

import time
from pathlib import Path
from typing import Any

import torch

from tim.experiments import engine
from tim.experiments.engine import Options
from tim.generation.backends import Generated, sample_classes

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
DEFAULT_OUT = "outputs/demo"
DEFAULTS = engine.Defaults(
    DEFAULT_OUT, DEMO_STEPS, QUICK_STEPS, DEFAULT_PER_CLASS, QUICK_PER_CLASS, 10.0, 2.0
)


def configure(options: Options) -> Any:
    """The run config (preset ``digits`` + the demo's settings + the overrides), checked."""
    from tim.training import load_config

    overrides = DEMO_OVERRIDES + (QUICK_OVERRIDES if options.quick else []) + [f"train.seed={options.seed}"]
    return load_config("digits", overrides + list(options.overrides))


def run(options: Options, cfg: Any) -> int:
    """Train, sample every step count, judge, write the outputs (see the module docstring)."""
    out, run_dir = options.out, options.out / "run"
    if options.overwrite:
        engine.remove_previous(run_dir, ("config.json", "checkpoints"), "a training run")
    started = time.perf_counter()
    if not engine.time_limit_given(options.overrides):
        cfg = fit_time_limit(cfg, options.minutes, options.steps, options.count)
    train_info = _train(cfg, run_dir)
    print(
        f"sampling with {', '.join(map(str, options.steps))} steps, {options.count} images per class ...",
        flush=True,
    )
    sample_started = time.perf_counter()
    model, path, shape, classes = engine.load_class_run(run_dir)
    generated = engine.sweep(
        options.steps,
        lambda steps: sample_classes(
            model, path, shape, steps, class_ids=classes, per_class=options.count, seed=options.seed
        ),
    )
    sample_seconds = time.perf_counter() - sample_started
    metrics = _evaluate(generated)
    total_seconds = time.perf_counter() - started
    summary = {
        "command": options.command,
        "train": train_info,
        "sampling": {
            "path": type(path).__name__,
            "per_class": options.count,
            "classes": list(range(10)),
            "guidance_scale": 1.0,
            "noise_seed": options.seed,
            "seconds": round(sample_seconds, 1),
        },
        "quality_vs_steps": metrics["steps"],
        "real_digits_reference": metrics["real"],
        "wall_seconds": round(total_seconds, 1),
        "machine": engine.machine(),
    }
    engine.write_outputs(
        out,
        summary,
        lambda: _write_pictures(out, generated, metrics),
        render_report,
        print_table,
        "montage.png, quality_vs_steps.png, steps_*.png, metrics.json, report.md, run/",
        total_seconds,
    )
    return 0


def fit_time_limit(cfg: Any, minutes: float, steps_list: list[int], per_class: int) -> Any:
    """Set ``train.time_limit`` so that training + sampling + evaluation fit in ``minutes``.

    Sampling costs sum(steps) network calls on 10 * per_class images; one such call is timed here,
    on this machine under its current load, so the budget holds on slow or busy machines too.
    """
    model = engine.build_untrained(cfg).eval()
    shape = (10 * per_class, model.config.in_channels, model.config.input_size, model.config.input_size)
    x, t, y = torch.zeros(shape), torch.ones(shape[0]), torch.arange(shape[0]) % 10
    with torch.no_grad():
        call = engine.fastest(lambda: model(x, t, t, y=y), 3)
    # 50% margin: the sampler's own per-step work and load changes (measured once: 69 s, 54 s timed).
    sampling_minutes = 1.5 * call * sum(steps_list) / 60
    fixed_minutes = 0.5  # data and model set-up, evaluation, pictures (measured: ~25 s on a busy machine)
    return engine.fit_time_limit(
        cfg,
        minutes,
        sampling_minutes + fixed_minutes,
        lambda limit: (
            f"time budget {minutes:g} min: sampling needs ~{sampling_minutes:.1f} min here, so "
            f"training gets at most {limit:.1f} min"
        ),
    )


def _train(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """Train the demo model; returns what happened (steps, images, seconds, whether time ran out)."""
    from tim.training.loop import total_steps

    params = sum(p.numel() for p in engine.build_untrained(cfg).parameters())
    print(
        f"training {cfg.model.preset} ({params / 1e6:.2f}M parameters) on the bundled digits for up to "
        f"{total_steps(cfg)} steps or {cfg.train.time_limit:g} minutes ({torch.get_num_threads()} CPU thread(s))",
        flush=True,
    )
    summary, seconds = engine.train_run(cfg, run_dir)
    return engine.train_record(cfg, run_dir, params, summary, seconds)


def _evaluate(generated: list[Generated]) -> dict[str, Any]:
    """Digits metrics per step count, plus the same metrics for as many REAL digits (the floor)."""
    from tim.evaluation.digits import evaluate_digits, load_real_digits

    rows = {}
    for item in generated:
        result = evaluate_digits(item.samples, item.labels)
        rows[str(item.steps)] = {"nfe": item.nfe, **engine.rounded(result)}
    images, labels = load_real_digits()
    count = min(len(images), len(generated[0].samples))
    index = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:count]
    real = {"num_images": count, **engine.rounded(evaluate_digits(images[index], labels[index]))}
    return {"steps": rows, "real": real}


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
    steps, rows = [item.steps for item in generated], metrics["steps"]
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


def print_table(summary: dict[str, Any]) -> None:
    """The quality-vs-steps table on stdout."""
    print(f"{'steps':>6} {'accuracy':>9} {'Frechet':>9} {'KID':>8}")
    for steps, row in summary["quality_vs_steps"].items():
        print(f"{steps:>6} {row['class_accuracy']:9.3f} {row['frechet_distance']:9.3f} {row['kid']:8.4f}")
    real = summary["real_digits_reference"]
    print(f"{'real':>6} {real['class_accuracy']:9.3f} {real['frechet_distance']:9.3f} {real['kid']:8.4f}")


EXPERIMENT = engine.Experiment("digits", DEFAULTS, configure, run)
