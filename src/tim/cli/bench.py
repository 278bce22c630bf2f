"""``tim bench quality``, ``tim bench cost`` and ``tim bench geneval``: the benchmarks of docs/benchmarks.md.

Parsing only: the comparisons are :mod:`tim.experiments.quality` and :mod:`tim.experiments.geneval`,
the cost measurement :mod:`tim.evaluation.cost`. Each prints their JSON report to stdout (progress goes to stderr) and write it, with a Markdown
table (and for quality a plot), into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from tim.errors import TimError
from tim.io import write_text


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim bench`` with its ``quality`` and ``cost`` subcommands."""
    parser = subparsers.add_parser(
        "bench",
        help="quality-vs-steps and training-cost benchmarks",
        description="Benchmarks of TiM against flow matching and MeanFlow.",
    )
    commands = parser.add_subparsers(
        title="benchmarks", dest="bench_command", metavar="<benchmark>", parser_class=type(parser)
    )
    commands.required = True
    _add_quality(commands)
    _add_cost(commands)
    _add_geneval(commands)
    parser.set_defaults(run=run)
    return parser


def _add_geneval(commands: argparse._SubParsersAction) -> None:
    from tim.experiments.geneval import METHODS, GenevalConfig

    default = GenevalConfig()
    parser = commands.add_parser(
        "geneval",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="text-to-image on synthetic scenes: GenEval in miniature at 1..128 steps for TiM, flow matching, MeanFlow",
        description="Train every method on the synthetic scenes (captions by the embedded MiniLM) with the same network, "
        "data, batch, optimizer and steps, then score each at every step count with GenEval in miniature "
        "(overall and per category), without and with CFG, on seen and held-out prompts. Writes "
        "geneval.json, geneval.md and geneval.png to --out; trained runs are reused from --out/runs.",
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated objectives")
    parser.add_argument(
        "--seed", type=int, default=default.seed, help="training seed (also the evaluation noise)"
    )
    parser.add_argument(
        "--train-steps", type=int, default=default.train_steps, help="optimizer steps per method"
    )
    parser.add_argument("--batch-size", type=int, default=default.batch_size, help="training batch")
    parser.add_argument("--lr", type=float, default=default.lr, help="AdamW learning rate")
    parser.add_argument(
        "--ema-decay", type=float, default=default.ema_decay, help="EMA decay of the evaluated weights"
    )
    parser.add_argument("--num-images", type=int, default=default.num_images, help="training scenes rendered")
    parser.add_argument(
        "--sampling-steps",
        default=",".join(map(str, default.step_counts)),
        help="comma-separated step counts",
    )
    parser.add_argument(
        "--per-category", type=int, default=default.per_category, help="seen prompts per category"
    )
    parser.add_argument(
        "--heldout-per-category",
        type=int,
        default=default.heldout_per_category,
        help="held-out prompts per category (0 = skip the held-out split)",
    )
    parser.add_argument(
        "--cfg",
        type=float,
        default=default.guidance_scale,
        help="CFG scale of the guided evaluation (1 = skip it)",
    )
    _add_geneval_setup(parser, default)


def _add_geneval_setup(parser: argparse.ArgumentParser, default: Any) -> None:
    """``tim bench geneval``: the network, objective, device, text encoder and process options."""
    parser.add_argument(
        "--model-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model config field on top of the scenes network, repeatable, e.g. --model-override depth=6",
    )
    parser.add_argument(
        "--objective-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="objective option for every method, repeatable",
    )
    parser.add_argument(
        "--device",
        default=default.device,
        help="cpu or cuda: where every method trains and samples (the sampling noise is drawn on the CPU)",
    )
    parser.add_argument(
        "--text-encoder",
        default=default.text_encoder,
        metavar="NAME_OR_FOLDER",
        help="minilm (the embedded all-MiniLM-L6-v2) or a local Hugging Face model folder",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=default.time_limit,
        metavar="MINUTES",
        help="stop each run's training after this many minutes, with its checkpoint (0 = none); the report "
        "gives the steps each method reached",
    )
    parser.add_argument(
        "--train-precision",
        choices=("fp32", "bf16"),
        default=default.train_precision,
        help="train.precision of every run (bf16 = autocast)",
    )
    parser.add_argument(
        "--jobs", type=int, default=1, help="worker processes, one method each with one thread"
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(run=run)


def _add_quality(commands: argparse._SubParsersAction) -> None:
    from tim.experiments.quality import METHODS, QualityConfig

    defaults = QualityConfig()

    parser = commands.add_parser(
        "quality",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="train TiM, flow matching and MeanFlow alike; score each at 1..128 sampling steps",
        description="Train every method with the same network, data, batch, optimizer, steps and seeds, then "
        "score samples at each step count (uniform grid; without and with CFG). Writes quality.json, "
        "quality.md and quality.png to --out; trained runs are reused from --out/runs.",
    )
    parser.add_argument(
        "--dataset", default="digits", help="digits, or a 2-D toy: checkerboard, 8gaussians, moons, spirals"
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated objectives")
    parser.add_argument("--seeds", default="0,1", help="comma-separated training seeds")
    parser.add_argument(
        "--train-steps",
        default=str(defaults.train_steps),
        help="optimizer steps per run; a comma-separated list (e.g. 500,2000,8000) sweeps the training "
        "budget: one report per budget in --out/train_steps_N plus quality_budgets.json/.md/.png",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="training batch")
    parser.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    parser.add_argument("--ema-decay", type=float, default=0.995, help="EMA decay of the evaluated weights")
    parser.add_argument(
        "--train-precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="train.precision of every run (bf16 = autocast)",
    )
    parser.add_argument(
        "--sampling-steps", default="1,2,4,8,16,32,64,128", help="comma-separated step counts"
    )
    parser.add_argument(
        "--num-samples", type=int, default=defaults.num_samples, help="samples per evaluation"
    )
    parser.add_argument(
        "--cfg", type=float, default=1.5, help="CFG scale of the guided evaluation (1 = skip it)"
    )
    parser.add_argument(
        "--model", default=None, help="model preset (default: a narrowed TiM-digits / MLP-toy)"
    )
    parser.add_argument(
        "--model-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model config field, repeatable, e.g. --model-override hidden_size=128",
    )
    parser.add_argument(
        "--objective-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="objective option for every method, repeatable, e.g. --objective-option epsilon=0.001; "
        "on 2-D toys TiM defaults to plain MSE (direction_loss=false, adaptive=false), "
        "which these override",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--jobs", type=int, default=1, help="worker processes for the (method, seed) runs, one thread each"
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.set_defaults(run=run)


def _add_cost(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "cost",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        help="training-step time/memory of flow matching, TiM-DDE, TiM-JVP; sampling time; FLOPs",
        description="Measure, side by side in one run, the training step of flow matching, TiM with DDE and TiM with "
        "JVP on the same network and batch; sampling time per image vs steps; FLOPs and achieved FLOP/s "
        "against a measured matmul peak. Prints JSON; writes cost.json and cost.md to --out.",
    )
    parser.add_argument("--model", default="TiM-digits", help="model preset")
    parser.add_argument(
        "--model-override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model config field, repeatable, e.g. --model-override z_dim=0",
    )
    parser.add_argument("--batch-size", type=int, default=128, help="training batch")
    parser.add_argument("--timed-steps", type=int, default=10, help="timed training steps per objective")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps per objective first")
    parser.add_argument(
        "--sampling-steps", default="1,2,4,8,16,32,64,128", help="comma-separated step counts"
    )
    parser.add_argument("--sampling-batch", type=int, default=32, help="images per sampling call")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="autocast precision")
    parser.add_argument(
        "--derivative-precision",
        default="auto",
        help="comma-separated DDE precision modes (auto, fp32, tf32, mixed, bf16): tim_dde runs the "
        "first (auto: mixed under --precision bf16, else fp32), each further one adds a tim_dde_<mode> variant",
    )
    parser.add_argument(
        "--attention", default="sdpa", help="comma-separated attention backends, e.g. sdpa,flash"
    )
    parser.add_argument("--matmul-size", type=int, default=1024, help="side of the reference matmul")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--out", default=None, metavar="DIR", help="output folder (optional)")
    parser.set_defaults(run=run)


def parse_overrides(
    items: list[str], flag: str = "--model-override", example: str = "hidden_size=64"
) -> dict:
    """``["hidden_size=64", "qk_norm=false"]`` -> ``{"hidden_size": 64, "qk_norm": False}`` (JSON-typed values)."""
    overrides = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise TimError(f"{flag} {item!r} is not KEY=VALUE", f"write e.g. {flag} {example}")
        try:
            overrides[key] = json.loads(raw.lower() if raw.lower() in ("true", "false") else raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _threads(count: int) -> None:
    import torch

    if count > 0:
        torch.set_num_threads(count)


def run_quality_command(args: argparse.Namespace) -> dict:
    """``tim bench quality``: build the config from flags, run, write files; returns the report."""
    from tim.experiments.quality import QualityConfig, parse_int_list, run_budget_sweep, run_quality

    budgets = parse_int_list(str(args.train_steps))
    model = None
    if args.model or args.model_override:
        default = "MLP-toy" if args.dataset != "digits" else "TiM-digits"
        model = {"preset": args.model or default, **parse_overrides(args.model_override)}
    config = QualityConfig(
        dataset=args.dataset,
        methods=tuple(m for m in args.methods.split(",") if m),
        seeds=parse_int_list(args.seeds),
        train_steps=budgets[0],
        batch_size=args.batch_size,
        lr=args.lr,
        ema_decay=args.ema_decay,
        train_precision=args.train_precision,
        step_counts=parse_int_list(args.sampling_steps),
        num_samples=args.num_samples,
        guidance_scale=args.cfg,
        model=model,
        objective_options=parse_overrides(args.objective_option, "--objective-option", "epsilon=0.001"),
    )
    if len(budgets) > 1:
        sweep = run_budget_sweep(config, budgets, args.out, log=_log, jobs=args.jobs)
        sweep["command"] = "tim " + " ".join(sys.argv[1:])
        write_text(Path(args.out, "quality_budgets.json"), json.dumps(sweep, indent=1))
        return sweep
    report = run_quality(config, args.out, log=_log, jobs=args.jobs)
    report["command"] = "tim " + " ".join(sys.argv[1:])
    write_text(Path(args.out, "quality.json"), json.dumps(report, indent=1))
    return report


def run_cost_command(args: argparse.Namespace) -> dict:
    """``tim bench cost``: build the config from flags, run, optionally write files; returns the report."""
    from tim.evaluation.cost import CostConfig, markdown_cost, run_cost
    from tim.experiments.quality import parse_int_list

    config = CostConfig(
        model=args.model,
        model_overrides=parse_overrides(args.model_override),
        batch_size=args.batch_size,
        timed_steps=args.timed_steps,
        warmup_steps=args.warmup_steps,
        sampling_steps=parse_int_list(args.sampling_steps),
        sampling_batch=args.sampling_batch,
        device=args.device,
        precision=args.precision,
        derivative_precisions=tuple(m for m in args.derivative_precision.split(",") if m),
        attention_backends=tuple(b for b in args.attention.split(",") if b),
        matmul_size=args.matmul_size,
    )
    report = run_cost(config, log=_log)
    report["command"] = "tim " + " ".join(sys.argv[1:])
    if args.out:
        write_text(Path(args.out, "cost.json"), json.dumps(report, indent=1))
        write_text(Path(args.out, "cost.md"), markdown_cost(report))
    return report


def run_geneval_command(args: argparse.Namespace) -> dict:
    """``tim bench geneval``: build the config from flags, run, write files; returns the report."""
    from tim.experiments.geneval import SCENES_MODEL, GenevalConfig, markdown_report, run_geneval
    from tim.experiments.quality import parse_int_list

    model = (
        {**SCENES_MODEL, **parse_overrides(args.model_override, example="depth=6")}
        if args.model_override
        else None
    )
    config = GenevalConfig(
        methods=tuple(m for m in args.methods.split(",") if m),
        seed=args.seed,
        train_steps=args.train_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        ema_decay=args.ema_decay,
        num_images=args.num_images,
        step_counts=parse_int_list(args.sampling_steps),
        per_category=args.per_category,
        heldout_per_category=args.heldout_per_category,
        guidance_scale=args.cfg,
        model=model,
        objective_options=parse_overrides(args.objective_option, "--objective-option", "epsilon=0.001"),
        device=args.device,
        text_encoder=args.text_encoder,
        time_limit=args.time_limit,
        train_precision=args.train_precision,
    )
    report = run_geneval(config, args.out, log=_log, jobs=args.jobs)
    report["command"] = "tim " + " ".join(sys.argv[1:])
    write_text(Path(args.out, "geneval.json"), json.dumps(report, indent=1))
    print(markdown_report(report, config), file=sys.stderr)
    return report


def check_out_dir(out: str | None) -> None:
    """``--out`` must be a folder or a path where one can be made: one line otherwise, before any work."""
    if out is None:
        return
    path = Path(out)
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                where = f"--out {out!r} is" if parent == path else f"{str(parent)!r} in --out {out!r} is"
                raise TimError(
                    f"{where} a file, not a folder", "pass a folder path (it is created if needed)"
                )
            break


def run(args: argparse.Namespace) -> int:
    """Run the chosen benchmark and print its JSON report; returns the exit status."""
    check_out_dir(args.out)
    _threads(args.threads)
    commands = {"quality": run_quality_command, "cost": run_cost_command, "geneval": run_geneval_command}
    report = commands[args.bench_command](args)
    summary = {key: value for key, value in report.items() if key != "per_seed"}
    print(json.dumps(summary, indent=1))
    return 0
