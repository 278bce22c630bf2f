"""``tim demo {digits,t2i,latent}``: the demos of tim, end to end on a laptop CPU (docs/demos.md).

Parsing only: each demo is an :class:`tim.experiments.engine.Experiment` in
:mod:`tim.experiments.digits`, :mod:`tim.experiments.t2i` and :mod:`tim.experiments.latent`.
``tim demo`` without a demo name runs ``digits``; the shared options may come before or after the
name (``tim demo --quick t2i`` and ``tim demo t2i --quick`` are the same command).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tim.cli.parsing import HelpFormatter
from tim.cli.sample import parse_steps, prepare_output_dir
from tim.deprecation import moved_names
from tim.errors import TimError
from tim.experiments import DEMOS
from tim.experiments.engine import Options, idle_cores, torch_threads

__all__ = ["add_parser", "demo_options", "idle_cores", "run", "torch_threads", "with_default_demo"]

DEFAULT_DEMO = "digits"
HELP = {
    "digits": "train on the bundled 8x8 digits in minutes, then compare 1..128 sampling steps (the default)",
    "t2i": "text-to-image on synthetic scenes: train, then GenEval in miniature at 1..128 steps",
    "latent": "a small autoencoder + TiM in its latent space on synthetic scenes, 1..128 steps",
}
# Options that take a value (to find the first positional word of `tim demo ...`).
VALUE_OPTIONS = ("--out", "--steps", "--per-class", "--minutes", "--seed", "--threads")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim demo`` and its ``digits``, ``t2i`` and ``latent`` sub-commands."""
    parser = subparsers.add_parser(
        "demo",
        help="train on the bundled digits in minutes, then compare 1..128 sampling steps",
        description="The main job on the embedded default, no download: trains a class-conditional TiM on "
        "scikit-learn's 8x8 digits (<= 10 minutes on 2 CPU cores), samples it with 1, 2, 4 ... 128 "
        "steps and writes one grid per step count, a montage comparing them, a quality-vs-steps "
        "plot, metrics.json (class accuracy, Frechet and kernel distance per step count), "
        "report.md and the checkpoint. `tim demo t2i` and `tim demo latent` run the other demos. "
        "KEY=VALUE overrides change the training config (see configs/digits.yaml), e.g. "
        "train.time_limit=3 optim.lr=5e-4.",
        formatter_class=HelpFormatter,
    )
    _add_options(parser, None)
    demos = parser.add_subparsers(
        title="demos", dest="demo", metavar="{digits,t2i,latent}", parser_class=type(parser)
    )
    for name in DEMOS:
        sub = demos.add_parser(name, help=HELP[name], description=HELP[name], formatter_class=HelpFormatter)
        _add_options(sub, argparse.SUPPRESS)  # given before the name, an option keeps its value
        sub.add_argument(
            "overrides",
            nargs="*",
            metavar="KEY=VALUE",
            help="dotted training-config overrides"
            + (" (autoencoder.FIELD=VALUE: the autoencoder's settings)" if name == "latent" else ""),
        )
    parser.set_defaults(run=run, demo=DEFAULT_DEMO, overrides=[])
    return parser


def _add_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """The options shared by every demo (``default``: SUPPRESS on a demo's own parser)."""

    def value(fallback: Any) -> Any:
        return fallback if default is None else default

    parser.add_argument(
        "--out",
        default=value(None),
        metavar="DIR",
        help="output folder (must be new or empty; default: outputs/demo, "
        "outputs/demo_t2i for `tim demo t2i`, outputs/demo_latent for `tim demo latent`)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        default=value(False),
        help="reuse a non-empty --out: replace its files and train a fresh run/",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        default=value(False),
        help="about one minute in total (smoke test; blurry digits)",
    )
    parser.add_argument(
        "--steps",
        default=value(None),
        metavar="K,K,...",
        help="sampling step counts to compare (default: 1,2,4,8,16,32,64,128, or fewer with --quick)",
    )
    parser.add_argument(
        "--per-class",
        type=int,
        default=value(None),
        help="samples per class for the metrics (default: 50, or 10 with --quick, for the digits); "
        "for `tim demo t2i`: samples per prompt in each grid",
    )
    parser.add_argument(
        "--minutes",
        type=float,
        default=value(None),
        help="wall-time budget of the whole demo; training stops early enough to leave time for "
        "sampling and evaluation, as measured on this machine (default: 10, or 2 with --quick, for "
        "the digits; a train.time_limit=MIN override replaces this rule)",
    )
    parser.add_argument(
        "--seed", type=int, default=value(0), help="seed of training and of the sampling noise"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=value(None),
        help="CPU threads for torch (default: the idle cores, i.e. cores minus the 1-minute load "
        "average, at least 1)",
    )


def with_default_demo(argv: Sequence[str]) -> list[str]:
    """``tim demo ...`` without a demo name is ``tim demo digits ...`` (``argv`` starts with ``demo``).

    The name is the first positional word after the options; ``tim demo --help`` stays the help.
    """
    argv = list(argv)
    skip = False
    for word in argv[1:]:
        if skip:
            skip = False
        elif word.startswith("-"):
            skip = word in VALUE_OPTIONS
        else:
            return argv if word in DEMOS else [argv[0], DEFAULT_DEMO, *argv[1:]]
    return argv if {"-h", "--help"} & set(argv) else [argv[0], DEFAULT_DEMO, *argv[1:]]


def experiment(name: str) -> Any:
    """The :class:`~tim.experiments.engine.Experiment` of ``tim demo <name>``."""
    return importlib.import_module(f"tim.experiments.{name}").EXPERIMENT


def demo_options(args: argparse.Namespace, defaults: Any) -> tuple[list[int], int, float]:
    """Check the shared ``tim demo`` options and fill in ``defaults``; sets ``args.out`` if unset.

    Returns:
        (step counts, samples per class or prompt, minutes of the wall-time budget).
    """
    args.out = args.out or defaults.out
    quick = args.quick
    steps_list = parse_steps(
        args.steps if args.steps is not None else (defaults.quick_steps if quick else defaults.steps)
    )
    count = (
        args.per_class if args.per_class is not None else (defaults.quick_count if quick else defaults.count)
    )
    minutes = (
        args.minutes if args.minutes is not None else (defaults.quick_minutes if quick else defaults.minutes)
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


def run(args: argparse.Namespace) -> int:
    """Run ``tim demo <name>`` (see :func:`add_parser` for the options)."""
    demo = experiment(args.demo)
    steps_list, count, minutes = demo_options(args, demo.defaults)
    options = Options(
        out=Path(args.out),
        overwrite=args.overwrite,
        quick=args.quick,
        steps=steps_list,
        count=count,
        minutes=minutes,
        seed=args.seed,
        overrides=list(args.overrides),
        command=command_of(args),
    )
    with torch_threads(args.threads):
        plan = demo.configure(options)  # every config is checked before anything is written
        prepare_output_dir(args.out, args.overwrite)
        return int(demo.run(options, plan) or 0)


def command_of(args: argparse.Namespace) -> str:
    """The command as recorded in metrics.json (the demo's own options, then its overrides)."""
    argv = ["--out", str(args.out)] + (["--quick"] if args.quick else [])
    overrides = list(args.overrides)
    if args.demo == DEFAULT_DEMO:  # `tim demo`: the seed before the budget
        for flag, value in (("--steps", args.steps), ("--per-class", args.per_class)):
            argv += [flag, str(value)] if value is not None else []
        argv += ["--seed", str(args.seed)] if args.seed else []
        argv += ["--minutes", f"{args.minutes:g}"] if args.minutes is not None else []
        argv += ["--threads", str(args.threads)] if args.threads is not None else []
        return "tim demo " + " ".join(argv + overrides)
    for flag, value in (
        ("--steps", args.steps),
        ("--per-class", args.per_class),
        ("--minutes", args.minutes),
        ("--threads", args.threads),
    ):
        if value is not None:
            text = f"{value:g}" if isinstance(value, float) and args.demo == "t2i" else str(value)
            argv += [flag, text]
    argv += ["--seed", str(args.seed)] if args.seed else []
    if args.demo == "latent":  # the autoencoder's overrides first
        from tim.experiments.latent import split_overrides

        overrides = [item for part in split_overrides(overrides) for item in part]
    return f"tim demo {args.demo} " + " ".join(argv + overrides)


# Names that moved to tim.experiments (deprecated here for one release).
__getattr__, _ = moved_names(
    __name__,
    ["tim.experiments.digits"],
    renamed={
        "DemoDefaults": ("tim.experiments.engine", "Defaults"),
        "DIGITS_DEFAULTS": ("tim.experiments.digits", "DEFAULTS"),
        "_fit_time_limit": ("tim.experiments.digits", "fit_time_limit"),
    },
)
