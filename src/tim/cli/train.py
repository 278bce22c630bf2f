"""``tim train --config FILE [key=value ...]``: train (or resume) a run.

The config file (YAML/JSON, or a preset name such as ``digits``) maps strictly onto
:class:`tim.training.RunConfig`; dotted overrides such as ``optim.lr=3e-4`` are applied on top.
Running the same command again resumes from the latest good checkpoint in ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tim.cli.main import HelpFormatter


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim train``."""
    parser = subparsers.add_parser(
        "train", help="train (or resume) a TiM run from a config file",
        description="Train a Transition Model. The config maps strictly onto tim.training.RunConfig (unknown or "
                    "mistyped keys are errors); KEY=VALUE overrides use dotted keys, e.g. optim.lr=3e-4 "
                    "train.steps=500 sample.steps=1,2,4. Rerunning the same command resumes from the latest "
                    "good checkpoint. Multi-GPU: torchrun --nproc_per_node=N -m tim.cli.main train ...",
        formatter_class=HelpFormatter)
    parser.add_argument("--config", required=True, metavar="FILE",
                        help="YAML/JSON config file (e.g. configs/digits.yaml) or a preset name (digits, toy2d)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="run folder for checkpoints, logs and samples (default: runs/<config name>)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``tim train`` (see :func:`add_parser` for the options)."""
    from tim.training import load_config, train

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    run_dir = train(cfg, out)
    print(f"run folder: {run_dir} (sample with: tim sample --checkpoint {run_dir} --steps 1,2,4 --out DIR)")
    return 0
