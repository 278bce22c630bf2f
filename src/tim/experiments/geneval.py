"""``tim bench geneval``: prompt following vs sampling steps for TiM, flow matching and MeanFlow.

The paper's Table 2 / Table 5 in miniature. Every method is trained on the synthetic scenes
(:mod:`tim.data.scenes`, captions encoded by the embedded MiniLM or ``text_encoder``) with the same network, data,
batch, optimizer, number of optimizer steps and seed (through :func:`tim.training.train`; only
the objective differs); each EMA model then samples a fixed prompt set from the same noise with
1, 2, 4 ... 128 steps on a uniform grid, without and with classifier-free guidance, on SEEN
(training) prompts and on HELD-OUT prompts (colour-shape pairs never drawn in training), and
:func:`tim.evaluation.geneval.score_images` scores every image against its prompt.

As in ``tim bench quality``, TiM and MeanFlow sample with the transition sampler and flow
matching with Euler steps of its velocity (each method's own sampler, one network call per step,
two with CFG). Trained runs are kept under ``out/runs`` keyed by a hash of their config, so a
rerun with the same settings only re-samples.
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tim.errors import TimError
from tim.evaluation.machine import machine_info
from tim.experiments import engine
from tim.io import write_text

METHODS = ("tim", "flow_matching", "meanflow")
DEVICES = ("cpu", "cuda")
STEP_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128)  # the GenEval-in-miniature grid
EVAL_NOISE_SEED = 20_000  # sampling noise seed offset: disjoint from every training stream
EVAL_PROMPT_SEED = 7  # which prompts of each split are evaluated (fixed, so every run sees the same)
# The network: the `scenes_t2i` preset's TiM-scenes as it is, 4x4 patches 128 wide (64 tokens per
# 32x32 scene; 2.2M parameters), and 12 MiniLM caption tokens (the longest scene caption has 10).
# Earlier this was 8x8 patches 192 wide (16 tokens, 4.4M parameters, ~1.6x cheaper per
# step); at an equal 1,500 steps the 4x4 network draws one clean, smooth object where the 8x8 one
# draws blocky fragments with speckle, and scores higher: docs/benchmarks.md, "Patch size".
SCENES_MODEL = {"preset": "TiM-scenes"}
TEXT_LENGTH = 12


@dataclass(frozen=True)
class GenevalConfig:
    """Settings of one GenEval benchmark (every method gets exactly the same ones).

    Attributes:
        methods: objectives (names of :func:`tim.objective.build_objective`).
        seed: training seed (also fixes the evaluation noise).
        train_steps: optimizer steps per run (the equal budget).
        batch_size: training batch.
        lr: AdamW learning rate (after a warm-up of min(100, steps/10) steps).
        ema_decay: EMA decay of the evaluated weights.
        num_images: training scenes rendered (``data.num_images``).
        step_counts: sampling step counts.
        per_category: evaluated prompts per category, seen split.
        heldout_per_category: evaluated prompts per category, held-out split (0 = skip it).
        guidance_scale: CFG scale of the guided evaluation; 1 = skip it.
        model: model preset + overrides (None = :data:`SCENES_MODEL`).
        objective_options: extra options for every objective (ablations).
        device: where training and sampling run ("cpu" or "cuda"); the sampling noise is drawn on
            the CPU, so every device starts from the same noise.
        text_encoder: ``"minilm"`` (the embedded default) or a local Hugging Face model folder
            (e.g. a half-precision copy of MiniLM carried to a GPU machine: benchmarks/gpu_geneval.sh).
        time_limit: minutes after which a run stops early with its checkpoint (0 = none): a safety
            net for a fixed time slot; the report's ``timings`` give the steps each method reached.
        train_precision: ``train.precision`` of every run, "fp32" or "bf16" (autocast).
    """

    methods: tuple[str, ...] = METHODS
    seed: int = 0
    train_steps: int = 1500
    batch_size: int = 32
    lr: float = 2e-3
    ema_decay: float = 0.999
    num_images: int = 20000
    step_counts: tuple[int, ...] = STEP_COUNTS
    per_category: int = 16
    heldout_per_category: int = 8
    guidance_scale: float = 2.0
    model: dict | None = field(default=None)
    objective_options: dict = field(default_factory=dict)
    device: str = "cpu"
    text_encoder: str = "minilm"
    time_limit: float = 0.0
    train_precision: str = "fp32"

    def __post_init__(self) -> None:
        if self.train_precision not in ("fp32", "bf16"):
            raise TimError(f"unknown train precision {self.train_precision!r}", "use fp32 or bf16")
        if self.device not in DEVICES:
            raise TimError(f"--device {self.device!r} is not one of {', '.join(DEVICES)}", "pass cpu or cuda")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise TimError("--device cuda was given but torch sees no CUDA GPU", "pass --device cpu")
        if not self.time_limit >= 0:
            raise TimError(
                f"--time-limit {self.time_limit} is negative or not a number",
                "pass minutes > 0, or 0 for none",
            )
        if not self.text_encoder:
            raise TimError("--text-encoder is empty", "pass minilm or a local Hugging Face model folder")
        unknown = sorted(set(self.methods) - set(METHODS))
        if unknown or not self.methods:
            raise TimError(f"unknown methods {unknown or '(none)'}", f"choose from {', '.join(METHODS)}")
        bounds = (
            ("--train-steps", self.train_steps, 2),
            ("--batch-size", self.batch_size, 2),
            ("--sampling-steps", min(self.step_counts, default=0), 1),
            ("--per-category", self.per_category, 1),
            ("--heldout-per-category", self.heldout_per_category, 0),
            ("--num-images", self.num_images, 1),
            ("--seed", self.seed, 0),
        )
        for name, value, least in bounds:
            if value < least:
                raise TimError(f"{name} {value} is below {least}", f"pass a value of at least {least}")
        if not self.guidance_scale >= 0:
            raise TimError(
                f"--cfg {self.guidance_scale} is negative or not a number", "pass a scale >= 0 (1 = none)"
            )

    @property
    def guidance_scales(self) -> tuple[float, ...]:
        """Scales evaluated: 1 (none) and ``guidance_scale`` unless it is 1."""
        return (1.0,) if self.guidance_scale == 1.0 else (1.0, self.guidance_scale)

    @property
    def splits(self) -> tuple[str, ...]:
        """The prompt splits scored: always ``seen``, plus ``heldout`` when held-out prompts are drawn."""
        return ("seen", "heldout") if self.heldout_per_category else ("seen",)


def eval_specs(split: str, per_category: int, seed: int = EVAL_PROMPT_SEED) -> list:
    """A fixed prompt set: ``per_category`` prompts of each category the split has ("seen" = train).

    Prompts are drawn without replacement while a category has enough, then cycled (the three
    single_object prompts appear several times, each with its own noise).
    """
    from tim.data.scenes import CATEGORIES, scene_specs

    split = "train" if split == "seen" else split
    rng = np.random.default_rng([seed, 0 if split == "train" else 1])
    chosen = []
    for category in CATEGORIES:
        specs = scene_specs(split, category)
        if specs:
            order = rng.permutation(len(specs))
            chosen += [specs[order[k % len(specs)]] for k in range(per_category)]
    return chosen


def run_config_dict(config: GenevalConfig, method: str) -> dict:
    """The :class:`tim.training.RunConfig` data of one run; only the objective varies across methods."""
    steps = config.train_steps
    return {
        "model": dict(config.model or SCENES_MODEL),
        "objective": {"name": method, **config.objective_options},
        "data": {
            "name": "scenes",
            "text_encoder": config.text_encoder,
            "max_text_length": TEXT_LENGTH,
            "num_images": config.num_images,
        },
        "optim": {"lr": config.lr, "warmup_steps": min(100, steps // 10)},
        "ema": {"decay": config.ema_decay},
        "train": {
            "steps": steps,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "device": config.device,
            "label_dropout": 0.1,
            **({"time_limit": config.time_limit} if config.time_limit else {}),
            **({"precision": config.train_precision} if config.train_precision != "fp32" else {}),
            "checkpoint_every": steps,
            "log_every": max(1, steps // 20),
            "progress": False,
            "keep_last": 1,
            "sample_every": 0,
        },
        "sample": {"steps": [1], "num": 0},
    }


def sampler_of(method: str) -> str:
    """Each method's own sampler: Euler on flow matching's velocity, transitions otherwise."""
    return "euler" if method == "flow_matching" else "transition"


def generate(
    model: torch.nn.Module,
    cond: dict,
    steps: int,
    noise: torch.Tensor,
    *,
    guidance_scale: float = 1.0,
    method: str = "transition",
    batch_size: int = 256,
) -> tuple[torch.Tensor, int]:
    """Samples of a text model for encoded prompts: ((N, C, H, W) in [-1, 1], NFE per image).

    Args:
        model: the network (its ``null_cond`` gives the CFG null prompt).
        cond: ``{"context": (N, M, D), "context_mask": (N, M)}`` (a :class:`tim.text.TextEncoder` output).
        steps: sampling steps (uniform grid on the linear path).
        noise: (N, C, H, W) starting noise.
        guidance_scale: CFG scale (1 = none).
        method: "transition" or "euler".
        batch_size: images per sampler call.
    """
    from tim.samplers import sample_batches

    result = sample_batches(
        model,
        noise,
        cond=cond,
        guidance_scale=guidance_scale,
        batch_size=batch_size,
        steps=steps,
        method=method,
    )
    return result.x, result.nfe


def score_steps(
    model: torch.nn.Module,
    encoder: Any,
    specs: Sequence,
    step_counts: Sequence[int],
    *,
    guidance_scale: float = 1.0,
    method: str = "transition",
    noise_seed: int = EVAL_NOISE_SEED,
    keep: Callable[[int, torch.Tensor], None] | None = None,
) -> dict[str, dict]:
    """GenEval scores of one model on ``specs`` at every step count, from the same noise.

    Returns:
        ``{str(steps): {"overall", <category>..., "nfe", "seconds"}}``.
    """
    from tim.evaluation.geneval import score_images

    device = next(model.parameters()).device
    cond = {key: value.to(device) for key, value in encoder([spec.caption for spec in specs]).items()}
    c: Any = model.config
    shape = (len(specs), c.in_channels, c.input_size, c.input_size)
    # Drawn on the CPU and moved: the same noise on every device.
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(noise_seed)).to(device)
    rows = {}
    for steps in step_counts:
        started = time.perf_counter()
        x, nfe = generate(model, cond, steps, noise, guidance_scale=guidance_scale, method=method)
        x = x.cpu()  # synchronises a GPU, so the time below is the sampling's
        seconds = time.perf_counter() - started
        if keep is not None:
            keep(steps, x)
        rows[str(steps)] = {key: round(value, 4) for key, value in score_images(x, specs).items()} | {
            "nfe": nfe,
            "seconds": round(seconds, 2),
        }
    return rows


def load_scene_model(run_dir: Path, device: str = "cpu") -> tuple[torch.nn.Module, Any]:
    """The EMA network of a scenes run (on ``device``) and the run's text encoder (on the CPU)."""
    from tim.text import TextEncoder

    model, cfg = engine.load_ema(run_dir)
    if getattr(model.config, "conditioning", None) != "text":
        raise TimError(f"{run_dir} is not a text-to-image run", "pass a run trained on data.name=scenes")
    encoder = TextEncoder(cfg.data.text_encoder or "minilm", max_length=cfg.data.max_text_length)
    return model.to(device).eval(), encoder


def run_name(config: GenevalConfig, method: str) -> str:
    """The folder name of one trained run: method, seed and a hash of its whole run config.

    Two benchmarks with the same settings share a name, so a rerun re-samples instead of training.
    """
    return f"scenes-{method}-seed{config.seed}-{engine.run_digest(run_config_dict(config, method))}"


def train_or_reuse(
    config: GenevalConfig, method: str, runs_dir: Path, log: Callable[[str], None]
) -> tuple[Path, float]:
    """Train one method (or reuse a finished run with the identical config); returns (run_dir, seconds)."""
    run_dir = runs_dir / run_name(config, method)
    started = time.perf_counter()
    engine.train_or_reuse(
        run_config_dict(config, method),
        run_dir,
        announce=lambda: log(f"training {method} for {config.train_steps} steps -> {run_dir}"),
    )
    return run_dir, time.perf_counter() - started


def evaluate_method(config: GenevalConfig, method: str, run_dir: Path, log: Callable[[str], None]) -> dict:
    """``{split: {scale: {steps: scores}}}`` of one trained method."""
    model, encoder = load_scene_model(run_dir, config.device)
    return score_model(
        model,
        encoder,
        config.step_counts,
        config.per_category,
        config.heldout_per_category if "heldout" in config.splits else 0,
        scales=config.guidance_scales,
        method=sampler_of(method),
        noise_seed=EVAL_NOISE_SEED + config.seed,
        log=lambda line: log(f"{method} {line}"),
    )


def score_model(
    model: torch.nn.Module,
    encoder: Any,
    step_counts: Sequence[int],
    per_category: int,
    heldout_per_category: int,
    *,
    scales: Sequence[float] = (1.0,),
    method: str = "transition",
    noise_seed: int = EVAL_NOISE_SEED,
    log: Callable[[str], None] = print,
) -> dict:
    """``{split: {scale: {steps: scores}}}`` of a text model on the fixed prompt sets of :func:`eval_specs`.

    Seen prompts always; held-out ones when ``heldout_per_category > 0``; one table per CFG scale.
    """
    results: dict = {}
    splits = ("seen", "heldout") if heldout_per_category > 0 else ("seen",)
    for split in splits:
        specs = eval_specs(split, per_category if split == "seen" else heldout_per_category)
        results[split] = {}
        for scale in scales:
            rows = score_steps(
                model, encoder, specs, step_counts, guidance_scale=scale, method=method, noise_seed=noise_seed
            )
            results[split][str(float(scale))] = rows
            log(f"{split} cfg {scale:g}: " + " ".join(f"{k}:{v['overall']:.2f}" for k, v in rows.items()))
    return results


def check_targets(results: dict, config: GenevalConfig) -> list[dict]:
    """The GenEval-in-miniature targets on the seen prompts, for every guidance scale evaluated."""
    targets = []
    for scale in map(str, config.guidance_scales):
        curve = {
            int(k): v["overall"] for k, v in results.get("tim", {}).get("seen", {}).get(scale, {}).items()
        }
        if not curve:
            continue

        def row(name: str, value: float, threshold: float, met: bool, scale: str = scale) -> dict:
            return {
                "target": name,
                "guidance_scale": float(scale),
                "value": round(value, 4),
                "threshold": threshold,
                "met": bool(met),
            }

        if 1 in curve:
            targets.append(row("TiM >= 0.70 at 1 NFE", curve[1], 0.70, curve[1] >= 0.70))
        if 8 in curve:
            targets.append(row("TiM >= 0.80 at 8 steps", curve[8], 0.80, curve[8] >= 0.80))
        counts = sorted(curve)
        drop = max((curve[a] - curve[b] for a, b in itertools.pairwise(counts)), default=0.0)
        targets.append(row("TiM never falls by more than 0.02 as steps double", drop, 0.02, drop <= 0.02))
        for other in ("flow_matching", "meanflow"):
            theirs = results.get(other, {}).get("seen", {}).get(scale, {})
            if theirs:
                gap = min(curve[s] - theirs[str(s)]["overall"] for s in counts)
                targets.append(row(f"TiM >= {other} at every step count (min gap)", gap, 0.0, gap >= 0.0))
    return targets


def train_and_evaluate(
    config: GenevalConfig,
    method: str,
    runs_dir: Path,
    threads: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[dict, dict]:
    """One method: train or reuse, then score; returns (results, timings). Picklable for worker processes."""
    if threads > 0:
        torch.set_num_threads(threads)
    log = log or (
        lambda message: print(message, file=sys.stderr, flush=True)
    )  # stdout carries the JSON report
    run_dir, train_seconds = train_or_reuse(config, method, runs_dir, log)
    started = time.perf_counter()
    results = evaluate_method(config, method, run_dir, log)
    summary = run_dir / "summary.json"
    steps = json.loads(summary.read_text()).get("steps") if summary.is_file() else None
    return results, {
        "train_steps_reached": steps,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(time.perf_counter() - started, 1),
        "run_dir": str(run_dir),
    }


def run_geneval(
    config: GenevalConfig, out_dir: str | Path, *, log: Callable[[str], None] = print, jobs: int = 1
) -> dict:
    """Train, sample and score every method; write ``geneval.json``, ``geneval.md`` and ``geneval.png``.

    Args:
        config: the benchmark settings.
        out_dir: output folder (created); trained runs are kept in ``out_dir/runs``.
        log: progress printer.
        jobs: worker processes, one method each with one thread (1 = in this process); the
            results do not depend on it.

    Returns:
        The report (also written as ``out_dir/geneval.json``).
    """
    from tim.text import resolve_text_encoder

    resolve_text_encoder(config.text_encoder)  # a bad name or folder fails here, before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cells = engine.run_cells(
        train_and_evaluate,
        [(config, method, out_dir / "runs") for method in config.methods],
        jobs,
        serial={"log": log},
        done=(lambda cell, result: log(f"{cell[1]}: {result[1]}")) if jobs > 1 else None,
    )
    results = {method: cell[0] for method, cell in zip(config.methods, cells, strict=True)}
    timings = {method: cell[1] for method, cell in zip(config.methods, cells, strict=True)}
    report = {
        "benchmark": "geneval",
        "config": asdict(config),
        "model": config.model or SCENES_MODEL,
        "machine": machine_info()
        | ({"gpu": torch.cuda.get_device_name(0)} if config.device == "cuda" else {}),
        "results": results,
        "targets": check_targets(results, config),
        "timings": timings,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "prompts": {
            split: len(
                eval_specs(split, config.per_category if split == "seen" else config.heldout_per_category)
            )
            for split in config.splits
        },
    }
    write_text(out_dir / "geneval.json", json.dumps(report, indent=1))
    write_text(out_dir / "geneval.md", markdown_report(report, config))
    plot_geneval(report, config, out_dir / "geneval.png")
    return report


def _budget_lines(report: dict, config: GenevalConfig) -> list[str]:
    """The training steps each method reached, and a warning when a time limit made them unequal."""
    reached = {m: t.get("train_steps_reached") for m, t in report.get("timings", {}).items()}
    text = ", ".join(f"{m} {n if n is not None else '?'}" for m, n in reached.items())
    lines = [f"Training steps reached (of {config.train_steps}): {text}"]
    if any(n != config.train_steps for n in reached.values()):
        lines.append(
            "**Unequal or shortened training budgets** (--time-limit): compare the methods with that in mind."
        )
    return lines


def markdown_report(report: dict, config: GenevalConfig) -> str:
    """Tables: overall score per (method, split, CFG) x step count; per-category at 1 and 8 steps; targets."""
    from tim.data.scenes import CATEGORIES

    counts = [str(s) for s in config.step_counts]
    lines = [f"Machine: {report['machine']}", "", *_budget_lines(report, config), ""]
    lines += [
        "**GenEval overall** by number of sampling steps",
        "",
        "| method | prompts | CFG | " + " | ".join(counts) + " |",
        "|---|---|---|" + "---|" * len(counts),
    ]
    for method, by_split in report["results"].items():
        for split, by_scale in by_split.items():
            for scale, rows in by_scale.items():
                lines.append(
                    f"| {method} | {split} | {scale} | "
                    + " | ".join(f"{rows[c]['overall']:.3f}" for c in counts)
                    + " |"
                )
    for steps in [c for c in ("1", "8") if c in counts]:
        lines += [
            "",
            f"**Per category at {steps} step{'s' if steps != '1' else ''}**",
            "",
            "| method | prompts | CFG | overall | " + " | ".join(CATEGORIES) + " |",
            "|---|---|---|---|" + "---|" * len(CATEGORIES),
        ]
        for method, by_split in report["results"].items():
            for split, by_scale in by_split.items():
                for scale, rows in by_scale.items():
                    row = rows[steps]
                    cells = [f"{row[c]:.2f}" if c in row else "-" for c in CATEGORIES]
                    lines.append(
                        f"| {method} | {split} | {scale} | {row['overall']:.3f} | " + " | ".join(cells) + " |"
                    )
    lines += ["", "| target (seen prompts) | CFG | value | threshold | met |", "|---|---|---|---|---|"]
    lines += [
        f"| {t['target']} | {t['guidance_scale']:g} | {t['value']:.3f} | {t['threshold']} | {'yes' if t['met'] else 'no'} |"
        for t in report["targets"]
    ]
    return "\n".join(lines) + "\n"


def plot_geneval(report: dict, config: GenevalConfig, path: Path) -> None:
    """Overall score vs steps (log2 x axis), one panel per (split, CFG), one line per method."""
    panels = [(split, str(scale)) for split in config.splits for scale in config.guidance_scales]
    figure, axes = engine.subplots(len(panels), 4.6, 3.8)
    for axis, (split, scale) in zip(axes, panels, strict=True):
        for method, by_split in report["results"].items():
            rows = by_split[split][scale]
            axis.plot(
                config.step_counts,
                [rows[str(s)]["overall"] for s in config.step_counts],
                marker="o",
                label=method,
            )
        axis.set_ylim(0, 1)
        engine.log2_axis(
            axis, "sampling steps", "GenEval overall (higher is better)", f"{split} prompts, CFG {scale}"
        )
    engine.save_figure(figure, path)
