"""``tim train --config FILE [key=value ...]``: train (or resume) a run.

The config file (YAML/JSON, or a preset name such as ``digits``) maps strictly onto
:class:`tim.training.RunConfig`; dotted overrides such as ``optim.lr=3e-4`` are applied on top.
Running the same command again resumes from the latest good checkpoint in ``--out``.
SIGTERM or Ctrl-C stops after the current optimizer step with a checkpoint, or at once during
set-up and sample grids, with exit status 75 (``tim.training.preemption.EXIT_PREEMPTED``); a second
signal aborts at once.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tim.cli.parsing import HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim train``."""
    parser = subparsers.add_parser(
        "train",
        help="train (or resume) a TiM run from a config file",
        description="Train a Transition Model. The config maps strictly onto tim.training.RunConfig (unknown or "
        "mistyped keys are errors); KEY=VALUE overrides use dotted keys, e.g. optim.lr=3e-4 "
        "train.steps=500 sample.steps=1,2,4. Rerunning the same command resumes from the latest "
        "good checkpoint. Multi-GPU: torchrun --nproc_per_node=N -m tim.cli.main train ...",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--config",
        required=True,
        metavar="FILE",
        help="YAML/JSON config file (e.g. configs/digits.yaml) or a preset name (digits, toy2d)",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="run folder for checkpoints, logs and samples (default: runs/<config name>)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        help="start again from step 0 in a run folder that already holds a run; its checkpoints, "
        "metrics and samples are moved to DIR/previous-<time>/ (nothing is deleted)",
    )
    parser.add_argument(
        "--allow-config-change",
        action="store_true",
        help="resume although the config differs from the run's saved one in settings that change "
        "training (data, seed, optimizer, batch...); length, logging, checkpoint and sample "
        "settings may always change",
    )
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``tim train`` (see :func:`add_parser` for the options)."""
    from tim.training import load_config, train
    from tim.training.preemption import EXIT_PREEMPTED, Preempted

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    try:
        run_dir = train(cfg, out, restart=args.restart, allow_config_change=args.allow_config_change)
    except Preempted as stopped:  # SIGTERM/SIGINT: the checkpoints on disk are whole; not a user error
        sys.stderr.write(f"{stopped}\n")
        return EXIT_PREEMPTED
    prompt = " --prompt TEXT" if cfg.data.text_encoder else ""  # text runs sample from prompts
    print(
        f"run folder: {run_dir} (sample with: tim sample --checkpoint {run_dir} --steps 1,2,4{prompt} --out DIR)"
    )
    return 0
