"""``tim bench quality``: sample quality vs number of sampling steps for TiM and two baselines.

TiM, flow matching and MeanFlow are trained with the same network, data, batch, optimizer,
number of optimizer steps and seeds (through :func:`tim.training.train`; only the objective
differs), then each EMA model is sampled from the same noise with 1, 2, 4 ... 128 steps on a
uniform grid, without and with classifier-free guidance, and scored:

* digits: Fréchet distance / KID in the shipped digits classifier's feature space and class
  accuracy (:func:`tim.evaluation.digits.evaluate_digits`);
* 2-D toys: energy distance / sliced Wasserstein against fresh true samples
  (:func:`tim.evaluation.toy.evaluate_toy`).

TiM and MeanFlow sample with the transition sampler (F(x, t_i, t_{i+1})); flow matching, which
only ever saw r = t, samples with Euler steps of its velocity F(x, t, t): both are the methods'
own samplers at one network evaluation per step. Trained runs are kept under ``out/runs`` (one
folder per method, seed and configuration hash), so rerunning with the same settings skips training.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from tim.data.config import TOY_NAMES
from tim.errors import TimError
from tim.evaluation.machine import machine_info
from tim.experiments import engine
from tim.io import write_text

METHODS = ("tim", "flow_matching", "meanflow")
STEP_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128)  # 1 to 128 steps, doubling (docs/benchmarks.md)
# Default digits network: the TiM-digits preset narrowed (width 64, depth 3) and with 4x4 patches
# (4 tokens instead of 16, ~3x cheaper on CPU) so that three methods x two seeds train and are
# scored within the ~20 min budget of the default run on the 2-core machine (docs/benchmarks.md).
DIGITS_MODEL = {
    "preset": "TiM-digits",
    "hidden_size": 64,
    "depth": 3,
    "num_heads": 4,
    "modulation_rank": 32,
    "patch_size": 4,
}
TOY_MODEL = {"preset": "MLP-toy", "hidden_size": 128, "depth": 3}
# Monotonicity target: each step count <= 1.02 x its value at half the steps (the step counts
# double), within the stated noise (docs/benchmarks.md, "Quality drift after 4 steps"). The first
# benchmark used 1.05.
MONOTONE_RATIO = 1.02
SAMPLE_NOISE_SEED = 10_000  # evaluation noise seed offset: disjoint from every training stream
# TiM's objective on 2-D toys: plain MSE, the recipe of the ``toy2d`` run preset. The image recipe's
# cosine direction term and per-sample 1/(sg(L_i) + c) normalisation assume L_i averages many
# latent pixels; on 2-D vectors they hurt badly (scripts/toy_2d_comparison.py, outputs/
# toy_2d_comparison/results.json: 1-step energy distance 0.118 with them vs 0.0067 without).
# The baselines keep their own recipes: flow matching is plain MSE already, and MeanFlow's
# adaptive weight 1/(sg(L) + 1e-3) is part of its published method (MeanFlowLoss).
TOY_TIM_OBJECTIVE = {"direction_loss": False, "adaptive": False}


@dataclass(frozen=True)
class QualityConfig:
    """Settings of one quality benchmark (every method gets exactly the same ones).

    Attributes:
        dataset: "digits" or a 2-D toy name ("checkerboard", "8gaussians", "moons", "spirals").
        methods: objectives to compare (names of :func:`tim.objective.build_objective`).
        seeds: training seeds; each also fixes the evaluation noise.
        train_steps: optimizer steps per run.
        batch_size: training batch.
        lr: AdamW learning rate (constant after a short warm-up).
        ema_decay: EMA decay of the evaluated weights.
        train_precision: ``train.precision`` of every run, "fp32" or "bf16" (autocast).
        step_counts: sampling step counts (uniform grid from t = 1 to 0).
        num_samples: samples per evaluation.
        guidance_scale: CFG scale of the guided evaluation (class-conditional data only); 1 = skip it.
        model: model preset + overrides (None = the dataset's default above).
        objective_options: extra constructor options for every objective (ablations), e.g.
            ``{"epsilon": 1e-3}``. On 2-D toys TiM starts from :data:`TOY_TIM_OBJECTIVE` (plain
            MSE); keys given here override it, e.g. ``{"direction_loss": True, "adaptive": True}``
            restores the image recipe.
    """

    dataset: str = "digits"
    methods: tuple[str, ...] = METHODS
    seeds: tuple[int, ...] = (0, 1)
    # 2,000 steps and 1,000 samples (docs/benchmarks.md "The budget sweep"): at 500 steps
    # the bench network is still in the regime where every method's metric rises after 4-8 steps
    # (TiM FD +22% from 4 to 128 steps), at 2,000 the rise is inside the seed spread; at 300
    # samples the set-to-set noise of the Frechet distance was as large as the effects measured.
    train_steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    ema_decay: float = 0.995
    train_precision: str = "fp32"
    step_counts: tuple[int, ...] = STEP_COUNTS
    num_samples: int = 1000
    guidance_scale: float = 1.5
    model: dict | None = field(default=None)
    objective_options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dataset != "digits" and self.dataset not in TOY_NAMES:
            raise TimError(
                f"unknown quality dataset {self.dataset!r}", f"use 'digits' or one of {', '.join(TOY_NAMES)}"
            )
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise TimError(f"unknown methods {unknown or '(none)'}", f"choose from {', '.join(METHODS)}")
        lower_bounds = (
            ("sampling step count (--sampling-steps)", min(self.step_counts, default=0), 1),
            ("number of seeds (--seeds)", len(self.seeds), 1),
            ("train_steps (--train-steps)", self.train_steps, 2),
            ("batch_size (--batch-size)", self.batch_size, 2),
            ("num_samples (--num-samples)", self.num_samples, 2),
        )
        for name, value, least in lower_bounds:
            if value < least:
                raise TimError(f"{name} = {value} is below {least}", f"pass a value of at least {least}")
        if self.train_precision not in ("fp32", "bf16"):
            raise TimError(f"unknown train precision {self.train_precision!r}", "use fp32 or bf16")
        if not self.guidance_scale >= 0:  # also catches NaN
            raise TimError(
                f"guidance_scale (--cfg) = {self.guidance_scale} is negative or not a number",
                "pass a guidance scale >= 0 (1 = no guidance)",
            )

    @property
    def is_toy(self) -> bool:
        """Whether the dataset is a 2-D toy (unconditional, no CFG evaluation)."""
        return self.dataset in TOY_NAMES

    @property
    def guidance_scales(self) -> tuple[float, ...]:
        """Scales evaluated: always 1 (none), plus ``guidance_scale`` for class-conditional data."""
        return (1.0,) if self.is_toy or self.guidance_scale == 1.0 else (1.0, self.guidance_scale)

    @property
    def metric(self) -> str:
        """The headline metric (lower is better)."""
        return "energy_distance" if self.is_toy else "frechet_distance"


def objective_dict(config: QualityConfig, method: str) -> dict:
    """The objective section of one run: the method's defaults, TiM's toy recipe on 2-D toys, then the user's options."""
    toy_recipe = TOY_TIM_OBJECTIVE if config.is_toy and method == "tim" else {}
    return {"name": method, **toy_recipe, **config.objective_options}


def run_config_dict(config: QualityConfig, method: str, seed: int) -> dict:
    """The :class:`tim.training.RunConfig` data of one run; only the objective and the seed vary."""
    model = config.model or (TOY_MODEL if config.is_toy else DIGITS_MODEL)
    steps = config.train_steps
    return {
        "model": dict(model),
        "objective": objective_dict(config, method),
        "data": {"name": config.dataset},
        "optim": {"lr": config.lr, "warmup_steps": min(100, steps // 10)},
        "ema": {"decay": config.ema_decay},
        "train": {
            "steps": steps,
            "batch_size": config.batch_size,
            "seed": seed,
            "device": "cpu",
            "precision": config.train_precision,
            "label_dropout": 0.0 if config.is_toy else 0.1,
            "checkpoint_every": steps,
            "log_every": max(1, steps // 10),
            "progress": False,
            "keep_last": 1,
        },
        "sample": {"steps": [1], "num": 16},
    }


def train_or_reuse(
    config: QualityConfig, method: str, seed: int, runs_dir: Path
) -> tuple[torch.nn.Module, float]:
    """Train one run (or reuse a finished one with the identical config); returns (EMA model, seconds)."""
    data = run_config_dict(config, method, seed)
    run_dir = runs_dir / f"{config.dataset}-{method}-seed{seed}-{engine.run_digest(data)}"
    started = time.perf_counter()
    engine.train_or_reuse(data, run_dir)
    model, _ = engine.load_ema(run_dir)
    return model, time.perf_counter() - started


def _labels(model: torch.nn.Module, config: QualityConfig) -> torch.Tensor | None:
    """Balanced class labels of the evaluated samples (None on the unconditional 2-D toys)."""
    if config.is_toy:
        return None
    network: Any = model
    return torch.arange(config.num_samples) % network.config.num_classes


def _score(config: QualityConfig, x: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """Metrics of one sample set; a non-finite sample set is recorded as such, never scored."""
    if not torch.isfinite(x).all():
        return {"non_finite": True}
    if config.is_toy:
        from tim.evaluation.toy import evaluate_toy

        return evaluate_toy(x, config.dataset)
    from tim.evaluation.digits import evaluate_digits

    return evaluate_digits(x, labels)


def evaluate_run(
    model: torch.nn.Module, config: QualityConfig, method: str, seed: int
) -> dict[str, dict[str, dict]]:
    """Scores of one trained model: ``{guidance_scale: {steps: metrics}}`` (string keys, JSON-ready)."""
    from tim.samplers import sample_batches

    shape = (2,) if config.is_toy else (1, 8, 8)
    noise = torch.randn(
        (config.num_samples, *shape), generator=torch.Generator().manual_seed(SAMPLE_NOISE_SEED + seed)
    )
    labels = _labels(model, config)
    cond = {} if labels is None else {"y": labels}
    sampler = "euler" if method == "flow_matching" else "transition"
    results: dict[str, dict[str, dict]] = {}
    for scale in config.guidance_scales:
        results[str(scale)] = {}
        for steps in config.step_counts:
            out = sample_batches(model, noise, cond=cond, guidance_scale=scale, steps=steps, method=sampler)
            results[str(scale)][str(steps)] = _score(config, out.x, labels) | {"nfe": out.nfe}
    return results


def summarise(values: list[float | None]) -> dict:
    """Mean, sample standard deviation, min and max over seeds (None = a non-finite run)."""
    finite = [value for value in values if value is not None]
    if not finite:
        return {"mean": None, "std": None, "min": None, "max": None, "values": values}
    std = float(np.std(finite, ddof=1)) if len(finite) > 1 else 0.0
    return {
        "mean": float(np.mean(finite)),
        "std": std,
        "min": min(finite),
        "max": max(finite),
        "values": values,
    }


def aggregate(per_seed: dict[str, list[dict]], config: QualityConfig, metrics: tuple[str, ...]) -> dict:
    """``{method: {scale: {steps: {metric: summary}}}}`` across seeds."""
    table: dict = {}
    for method, runs in per_seed.items():
        table[method] = {}
        for scale in map(str, config.guidance_scales):
            table[method][scale] = {}
            for steps in map(str, config.step_counts):
                cells = [run[scale][steps] for run in runs]
                table[method][scale][steps] = {
                    name: summarise([cell.get(name) for cell in cells]) for name in metrics
                }
    return table


def check_targets(table: dict, config: QualityConfig, scale: str = "1.0") -> list[dict]:
    """The quality targets of docs/benchmarks.md, evaluated on seed means of the headline metric (lower = better)."""

    def mean(method: str, steps: int) -> float | None:
        return table.get(method, {}).get(scale, {}).get(str(steps), {}).get(config.metric, {}).get("mean")

    def std_error(method: str, steps_a: int, steps_b: int) -> float:
        """Standard error of mean(b) - mean(a) over seeds (seeds treated as independent)."""
        cells = [
            table.get(method, {}).get(scale, {}).get(str(s), {}).get(config.metric, {})
            for s in (steps_a, steps_b)
        ]
        stds = [cell.get("std") or 0.0 for cell in cells]
        return float(np.hypot(stds[0], stds[1]) / np.sqrt(max(1, len(config.seeds))))

    counts = list(config.step_counts)
    results = []
    tim_1, fm_last = mean("tim", counts[0]), mean("flow_matching", counts[-1])
    if tim_1 is not None and fm_last is not None:
        results.append(
            {
                "target": f"TiM at {counts[0]} step <= 1.25 x flow matching at {counts[-1]} steps",
                "value": tim_1 / fm_last,
                "threshold": 1.25,
                "met": tim_1 <= 1.25 * fm_last,
            }
        )
    tim_curve = [mean("tim", steps) for steps in counts]
    if all(value is not None for value in tim_curve):
        curve = cast(list[float], tim_curve)
        ratios = [b / a for a, b in itertools.pairwise(curve)]
        noise = [std_error("tim", a, b) for a, b in itertools.pairwise(counts)]
        excess = [b - MONOTONE_RATIO * a for a, b in itertools.pairwise(curve)]
        results.append(
            {
                "target": f"TiM non-increasing in steps (each value <= {MONOTONE_RATIO} x the previous)",
                "value": max(ratios, default=1.0),
                "threshold": MONOTONE_RATIO,
                "met": max(ratios, default=1.0) <= MONOTONE_RATIO,
                # Met up to noise: every excess over the threshold within 2 standard errors of
                # the difference of the two seed means (0 with one seed: then exact).
                "met_within_noise": all(e <= 2 * n for e, n in zip(excess, noise, strict=True)),
            }
        )
    pairs = [(mean("tim", s), mean("meanflow", s)) for s in counts if s >= 8]
    if pairs and all(a is not None and b is not None for a, b in pairs):
        worst = max(a / b for a, b in cast(list[tuple[float, float]], pairs))
        results.append(
            {
                "target": "TiM better than MeanFlow at every step count >= 8",
                "value": worst,
                "threshold": 1.0,
                "met": worst < 1.0,
            }
        )
    return [result | {"metric": config.metric, "guidance_scale": float(scale)} for result in results]


def train_and_evaluate(
    config: QualityConfig, method: str, seed: int, runs_dir: Path, threads: int = 0
) -> tuple[dict, dict]:
    """One (method, seed) cell: train or reuse, then score; returns (scores, timing). Picklable for worker processes."""
    if threads > 0:
        torch.set_num_threads(threads)
    model, train_seconds = train_or_reuse(config, method, seed, runs_dir)
    started = time.perf_counter()
    scores = evaluate_run(model, config, method, seed)
    return scores, {
        "seed": seed,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - started,
    }


def _run_cells(
    config: QualityConfig, runs_dir: Path, jobs: int, log: Callable[[str], None]
) -> dict[tuple[str, int], tuple[dict, dict]]:
    """Every (method, seed) cell, sequentially or in ``jobs`` worker processes (one thread each)."""
    cells = [(config, method, seed, runs_dir) for method in config.methods for seed in config.seeds]
    results = engine.run_cells(
        train_and_evaluate,
        cells,
        jobs,
        done=lambda cell, result: log(f"{cell[1]} seed {cell[2]}: {result[1]}"),
    )
    return {(cell[1], cell[2]): result for cell, result in zip(cells, results, strict=True)}


def run_quality(
    config: QualityConfig,
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    runs_dir: str | Path | None = None,
    jobs: int = 1,
) -> dict:
    """Train, sample and score every (method, seed); write ``quality.json``, ``quality.md``, ``quality.png``.

    Args:
        config: the benchmark settings.
        out_dir: output folder (created).
        log: progress printer.
        runs_dir: where trained runs are kept and reused (default ``out_dir/runs``).
        jobs: worker processes for the (method, seed) cells (1 = in this process); results do
            not depend on it.

    Returns:
        The JSON report (also written to ``out_dir/quality.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cells = _run_cells(config, Path(runs_dir or out_dir / "runs"), jobs, log)
    per_seed = {method: [cells[(method, seed)][0] for seed in config.seeds] for method in config.methods}
    timings = {method: [cells[(method, seed)][1] for seed in config.seeds] for method in config.methods}
    metrics = (
        ("energy_distance", "sliced_wasserstein")
        if config.is_toy
        else ("frechet_distance", "kid", "class_accuracy")
    )
    table = aggregate(per_seed, config, metrics)
    first = per_seed[config.methods[0]][0]["1.0"][str(config.step_counts[0])]
    report = {
        "benchmark": "quality",
        "config": asdict(config) | {"model": config.model or (TOY_MODEL if config.is_toy else DIGITS_MODEL)},
        "objectives": {method: objective_dict(config, method) for method in config.methods},
        "metric": config.metric,
        "labels": {
            key: first.get(key)
            for key in ("feature_extractor", "reference_set", "num_samples", "num_reference")
        },
        "machine": machine_info(),
        "jobs": jobs,
        "results": table,
        "targets": [],
        "per_seed": per_seed,
        "timings": timings,
    }
    for scale in map(str, config.guidance_scales):
        report["targets"] += check_targets(table, config, scale)
    report["wall_seconds"] = time.perf_counter() - started
    write_json_report(out_dir / "quality.json", report)
    write_text(out_dir / "quality.md", markdown_report(report, config))
    plot_quality(report, config, out_dir / "quality.png")
    return report


def _cell(summary: dict, digits: int = 3) -> str:
    if summary.get("mean") is None:
        return "non-finite"
    return f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"


def _met(target: dict) -> str:
    """'yes' / 'no', plus the within-noise verdict where the target has one."""
    text = "yes" if target["met"] else "no"
    if "met_within_noise" in target and not target["met"]:
        text += f" ({'yes' if target['met_within_noise'] else 'no'} within noise)"
    return text


def markdown_report(report: dict, config: QualityConfig) -> str:
    """Markdown tables (one per metric): rows = method x guidance, columns = step counts; plus targets."""
    counts = [str(steps) for steps in config.step_counts]
    digits = 4 if config.is_toy else 3  # toy distances of good samples are ~1e-3: 3 decimals would hide them
    lines = [
        f"Labels: {report['labels']}",
        "",
        f"Objectives (options beyond each method's defaults): {report.get('objectives')}",
        "",
    ]
    for name in next(iter(next(iter(report["results"].values())).values()))[counts[0]]:
        lines += [
            f"**{name}** by number of sampling steps (mean ± std over seeds {list(config.seeds)})",
            "",
            "| method | CFG | " + " | ".join(counts) + " |",
            "|---|---|" + "---|" * len(counts),
        ]
        for method, by_scale in report["results"].items():
            for scale, row in by_scale.items():
                lines.append(
                    f"| {method} | {scale} | "
                    + " | ".join(_cell(row[c][name], digits) for c in counts)
                    + " |"
                )
        lines.append("")
    lines += ["| target | CFG | value | threshold | met |", "|---|---|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['guidance_scale']} | {t['value']:.3f} | {t['threshold']} | {_met(t)} |"
        for t in report["targets"]
    ]
    return "\n".join(lines) + "\n"


def plot_quality(report: dict, config: QualityConfig, path: Path) -> None:
    """Headline metric vs steps (log2 x axis; linear y, as unbiased distances can dip below 0), one line per method."""
    scales = list(map(str, config.guidance_scales))
    figure, axes = engine.subplots(len(scales), 5.5, 4)
    for axis, scale in zip(axes, scales, strict=True):
        for method, by_scale in report["results"].items():
            rows = [by_scale[scale][str(steps)][config.metric] for steps in config.step_counts]
            points = [
                (s, r["mean"], r["min"], r["max"])
                for s, r in zip(config.step_counts, rows, strict=True)
                if r["mean"] is not None
            ]
            if not points:
                continue
            steps, mean, low, high = map(np.array, zip(*points, strict=True))
            axis.plot(steps, mean, marker="o", label=method)
            axis.fill_between(steps, low, high, alpha=0.2)
        engine.log2_axis(
            axis,
            "sampling steps (= NFE without CFG)",
            f"{config.metric} (lower is better)",
            f"{config.dataset}, CFG {scale}, {len(config.seeds)} seeds (band = min..max)",
        )
    engine.save_figure(figure, path)


def run_budget_sweep(
    config: QualityConfig,
    budgets: tuple[int, ...],
    out_dir: str | Path,
    log: Callable[[str], None] = print,
    jobs: int = 1,
) -> dict:
    """:func:`run_quality` once per training budget (does the drift after 4 steps survive longer training?).

    Each budget writes its own report to ``out_dir/train_steps_N/``; trained runs are shared in
    ``out_dir/runs``. The combined ``quality_budgets.json`` is rewritten after every budget (a killed
    sweep keeps the finished ones), with ``quality_budgets.md`` and ``quality_budgets.png``.

    Args:
        config: settings shared by every budget (its ``train_steps`` is replaced).
        budgets: optimizer steps per run, e.g. ``(500, 2000, 8000)``.
        out_dir: output folder (created).
        log: progress printer.
        jobs: worker processes per budget (see :func:`run_quality`).

    Returns:
        ``{"budgets": {N: {"results", "targets", "wall_seconds"}}, "metric", "config"}``.
    """
    import dataclasses

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sweep: dict = {"benchmark": "quality_budgets", "metric": config.metric, "budgets": {}}
    configs = [dataclasses.replace(config, train_steps=budget) for budget in budgets]  # validates all first
    for budget, budget_config in zip(budgets, configs, strict=True):
        log(f"training budget {budget} steps")
        report = run_quality(budget_config, out_dir / f"train_steps_{budget}", log, out_dir / "runs", jobs)
        sweep["config"] = report["config"] | {"train_steps": list(budgets)}
        sweep["machine"] = report["machine"]
        sweep["budgets"][str(budget)] = {
            key: report[key] for key in ("results", "targets", "wall_seconds", "labels")
        }
        write_json_report(out_dir / "quality_budgets.json", sweep)
    write_text(out_dir / "quality_budgets.md", budgets_markdown(sweep, config))
    plot_budgets(sweep, config, out_dir / "quality_budgets.png")
    return sweep


def budgets_markdown(sweep: dict, config: QualityConfig) -> str:
    """One table per guidance scale: rows = method x budget, columns = step counts (mean ± std over seeds)."""
    counts = [str(steps) for steps in config.step_counts]
    digits = 4 if config.is_toy else 3
    lines = []
    for scale in map(str, config.guidance_scales):
        lines += [
            f"**{config.metric}**, CFG {scale}, by training budget and sampling steps "
            f"(mean ± std over seeds {list(config.seeds)})",
            "",
            "| method | train steps | " + " | ".join(counts) + " |",
            "|---|---|" + "---|" * len(counts),
        ]
        for method in config.methods:
            for budget, entry in sweep["budgets"].items():
                row = entry["results"][method][scale]
                cells = " | ".join(_cell(row[c][config.metric], digits) for c in counts)
                lines.append(f"| {method} | {budget} | {cells} |")
        lines.append("")
    lines += ["| train steps | target | CFG | value | threshold | met |", "|---|---|---|---|---|---|"]
    for budget, entry in sweep["budgets"].items():
        lines += [
            f"| {budget} | {t['target']} | {t['guidance_scale']} | {t['value']:.3f} | {t['threshold']} | "
            f"{_met(t)} |"
            for t in entry["targets"]
        ]
    return "\n".join(lines) + "\n"


def plot_budgets(sweep: dict, config: QualityConfig, path: Path) -> None:
    """Headline metric vs steps, one panel per method x guidance scale, one line per training budget."""
    panels = [(m, s) for s in map(str, config.guidance_scales) for m in config.methods]
    figure, axes = engine.subplots(len(panels), 4.2, 3.8)
    for axis, (method, scale) in zip(axes, panels, strict=True):
        for budget, entry in sweep["budgets"].items():
            rows = [entry["results"][method][scale][str(s)][config.metric] for s in config.step_counts]
            points = [
                (s, r["mean"], r["std"])
                for s, r in zip(config.step_counts, rows, strict=True)
                if r["mean"] is not None
            ]
            if points:
                steps, mean, std = map(np.array, zip(*points, strict=True))
                axis.errorbar(steps, mean, yerr=std, marker="o", capsize=2, label=f"{budget} train steps")
        engine.log2_axis(
            axis,
            "sampling steps",
            f"{config.metric} (lower is better)",
            f"{config.dataset}: {method}, CFG {scale}",
            legend_size=8,
        )
    engine.save_figure(figure, path)


def parse_int_list(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4); a malformed list is a TimError."""
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise TimError(f"{text!r} is not a comma-separated list of integers", "write e.g. 1,2,4,8") from None
    if not values or min(values) < 0:
        raise TimError(f"{text!r} must list non-negative integers", "write e.g. 1,2,4,8")
    return values


def write_json_report(path: Path, report: dict) -> None:
    """A benchmark's JSON report (indent 1, no final newline), written atomically with :mod:`tim.io`."""
    write_text(path, json.dumps(report, indent=1))
