"""Small-scale ablations of TiM on the digits, mirroring paper Tables 4, 10, 11 and 12.

Each variant trains TiM (same network, data, batch, optimizer, steps and seeds as every other
variant; only the ablated knob differs) and is scored by the Fréchet distance in the digits
classifier's feature space at 1, 8 and 50 sampling steps (the paper's NFE 1 / 8 / 50), without
CFG. Runs are shared between tables (the default TiM recipe is trained once) and reused when the
script is rerun with the same settings.

    Table 4   method and architecture: flow matching (SiT) vs TiM; decoupled time embedding
              (De-TE) and interval-aware attention (IA-Attn) on/off; time weighting on/off
    Table 10  DDE epsilon sweep 1e-4 ... 5e-2
    Table 11  share of r = t rows (diffusion share) and of r = 0 rows (consistency share)
    Table 12  time weighting function

Not a test: the full default run trains ~19 small models (about 2-3 min each on a quiet
2-core CPU). Use ``--tables`` and ``--train-steps`` to fit your budget.

Usage:
    python scripts/ablations.py --out runs/ablations [--tables 10,12] [--train-steps 600] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tim.experiments.quality import (
    DIGITS_MODEL,
    QualityConfig,
    parse_int_list,
    run_quality,
)

# (table, variant name, method, objective options, model overrides)
VARIANTS = [
    ("4", "a: flow matching (SiT baseline)", "flow_matching", {}, {}),
    (
        "4",
        "b: TiM, no De-TE, no IA-Attn, constant weight",
        "tim",
        {"time_function": "constant"},
        {"decoupled_time_embedding": False, "interval_attention": False},
    ),
    ("4", "c: + De-TE", "tim", {"time_function": "constant"}, {"interval_attention": False}),
    (
        "4",
        "d: + IA-Attn (no De-TE)",
        "tim",
        {"time_function": "constant"},
        {"decoupled_time_embedding": False},
    ),
    ("4", "e: + De-TE + IA-Attn", "tim", {"time_function": "constant"}, {}),
    ("4", "f: + time weighting (full TiM)", "tim", {}, {}),
    *[("10", f"epsilon = {eps:g}", "tim", {"epsilon": eps}, {}) for eps in (1e-4, 1e-3, 5e-3, 1e-2, 5e-2)],
    *[
        ("11", f"r = t share {share:g}", "tim", {"diffusion_share": share}, {})
        for share in (0.0, 0.25, 0.5, 0.75)
    ],
    *[
        ("11", f"r = 0 share {share:g}", "tim", {"consistency_share": share}, {})
        for share in (0.0, 0.1, 0.25)
    ],
    *[
        ("12", f"weight {function}", "tim", {"time_function": function}, {})
        for function in ("constant", "sqrt", "reciprocal", "square", "soft_min_snr")
    ],
]
DEFAULTS = {
    "epsilon": 5e-3,
    "diffusion_share": 0.5,
    "consistency_share": 0.1,
    "time_function": "sqrt",
}  # paper's recipe


def canonical_options(options: dict) -> dict:
    """Drop options equal to the paper's default, so identical recipes share one trained run."""
    return {key: value for key, value in options.items() if DEFAULTS.get(key) != value}


def run_variant(args: argparse.Namespace, method: str, options: dict, overrides: dict) -> dict:
    """Train (or reuse) and score one variant; returns ``{steps: {"mean", "std"}}`` of the Fréchet distance."""
    config = QualityConfig(
        methods=(method,),
        seeds=args.seeds,
        train_steps=args.train_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        step_counts=args.steps,
        num_samples=args.num_samples,
        guidance_scale=1.0,
        model=DIGITS_MODEL | overrides,
        objective_options=canonical_options(options),
    )
    name = "-".join([method, *(f"{k}={v}" for k, v in sorted({**options, **overrides}.items()))])
    report = run_quality(
        config, args.out / name, log=lambda m: print(m, file=sys.stderr), runs_dir=args.out / "runs"
    )
    row = report["results"][method]["1.0"]
    return {steps: {k: row[steps]["frechet_distance"][k] for k in ("mean", "std")} for steps in row}


def markdown(results: dict, steps: tuple[int, ...]) -> str:
    """One Markdown table per paper table: rows = variants, columns = FD at each step count."""
    lines = []
    for table in sorted({table for table, _ in results}, key=int):
        lines += [
            f"Paper Table {table} at digits scale (Fréchet distance, mean ± std over seeds; lower is better)",
            "",
            "| variant | " + " | ".join(f"{s} steps" for s in steps) + " |",
            "|---|" + "---|" * len(steps),
        ]
        for (row_table, name), row in results.items():
            if row_table == table:
                lines.append(
                    f"| {name} | "
                    + " | ".join(f"{row[str(s)]['mean']:.3f} ± {row[str(s)]['std']:.3f}" for s in steps)
                    + " |"
                )
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="output folder (trained runs are reused from OUT/runs)"
    )
    parser.add_argument("--tables", default="4,10,11,12", help="comma-separated paper tables to run")
    parser.add_argument("--seeds", type=parse_int_list, default=(0,), help="comma-separated training seeds")
    parser.add_argument("--train-steps", type=int, default=600, help="optimizer steps per variant")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--steps", type=parse_int_list, default=(1, 8, 50), help="sampling step counts")
    parser.add_argument("--num-samples", type=int, default=500)
    args = parser.parse_args()
    tables = set(args.tables.split(","))
    results = {}
    for table, name, method, options, overrides in VARIANTS:
        if table in tables:
            results[(table, name)] = run_variant(args, method, options, overrides)
            print(f"table {table} | {name}: {json.dumps(results[(table, name)])}", file=sys.stderr)
    text = markdown(results, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ablations.md").write_text(text)
    (args.out / "ablations.json").write_text(
        json.dumps(
            [{"table": t, "variant": n, "frechet_distance": r} for (t, n), r in results.items()], indent=1
        )
    )
    print(text)


if __name__ == "__main__":
    main()
