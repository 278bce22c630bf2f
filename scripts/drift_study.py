"""Drift study: does TiM's quality rise with every added sampling step? Budget sweep + sampler experiments.

Two stages, each writing JSON as results arrive (a killed job loses only the cell in progress):

``train``   one run per (dataset, method, seed) with a checkpoint every ``--every`` steps, all kept,
            so that one long run gives every training budget (the learning rate is constant after
            the warm-up, so the 2,000-step checkpoint of an 8,000-step run is the 2,000-step run).
            Same network, data, optimizer and EMA as ``tim bench quality``.
``sampler`` loads checkpoints and scores samples at 1, 2, 4 ... 128 steps under sampler variants
            (time grid shift, stochasticity rho, EMA vs raw weights),
            (spread over independent sample sets) and a real-data floor for each metric (real images scored exactly like samples).

Usage:
    python scripts/drift_study.py train --dataset digits --methods tim --steps 8000 --every 500
    python scripts/drift_study.py sampler --dataset digits --budgets 500,2000,8000 --variants base,rho0.2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tim.experiments.quality import QualityConfig, run_config_dict

ROOT = Path("outputs/drift")
STEP_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128)  # the grid


def write_json(path: Path, data: dict) -> None:
    """Write JSON atomically (temp name, then os.replace)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def run_dir(dataset: str, method: str, seed: int) -> Path:
    return ROOT / "runs" / f"{dataset}-{method}-seed{seed}"


def train_runs(args: argparse.Namespace) -> None:
    """Train each (method, seed) once for ``--steps`` steps, keeping a checkpoint every ``--every``."""
    from tim.training import config_from_dict, train

    config = QualityConfig(dataset=args.dataset, train_steps=args.steps)
    for seed in args.seeds:
        for method in args.methods:
            target = run_dir(args.dataset, method, seed)
            data = run_config_dict(config, method, seed)
            data["train"] |= {
                "checkpoint_every": args.every,
                "keep_last": args.steps // args.every + 1,
                "log_every": args.every,
            }
            if (target / "pretrained").is_dir():
                print(f"{target}: done already", flush=True)
                continue
            started = time.perf_counter()
            train(config_from_dict(data), target)
            print(f"{target}: {time.perf_counter() - started:.0f} s", flush=True)


def load_checkpoint(target: Path, step: int, which: str) -> torch.nn.Module:
    """The weights ``which`` ("ema" or "model") of checkpoint ``step`` of a run."""
    from tim.models import build_model
    from tim.training.checkpoint import checkpoint_dir, read_checkpoint
    from tim.training.config import config_from_dict, model_config
    from tim.training.state import _load_weights

    checkpoint = read_checkpoint(checkpoint_dir(target) / f"step_{step:08d}")
    model = build_model(model_config(config_from_dict(checkpoint.config)))
    _load_weights(model, checkpoint.parts[which], which, checkpoint.path)
    return model.eval()


def parse_variant(name: str) -> dict:
    """'base' | 'rho0.2' | 'shift0.5' | 'raw' | combinations joined by '+', e.g. 'raw+rho0.2'."""
    variant = {"stochasticity": 0.0, "shift": 1.0, "which": "ema"}
    for part in name.split("+"):
        if part == "base":
            continue
        if part == "raw":
            variant["which"] = "model"
        elif part.startswith("rho"):
            variant["stochasticity"] = float(part[3:])
        elif part.startswith("shift"):
            variant["shift"] = float(part[5:])
        else:
            raise SystemExit(f"error: unknown variant part {part!r}; use base, raw, rhoX, shiftX")
    return variant


def digits_scores(x: torch.Tensor, labels: torch.Tensor | None) -> dict:
    """FD (and its mean part), KID, class accuracy, diversity and a pixel-space energy distance.

    ``feature_spread`` = tr Cov(samples) / tr Cov(real) in the classifier's features: below 1 the
    samples are less diverse than the data, which also lowers the FD's finite-sample bias.
    """
    from tim.evaluation.digits import (
        _cached_classifier,
        _reference_features,
        digits_features,
        evaluate_digits,
        load_real_digits,
    )
    from tim.evaluation.metrics import energy_distance

    real, _ = load_real_digits()
    out = evaluate_digits(x, labels)
    features = digits_features(_cached_classifier(None)[0], x).numpy()
    reference = _reference_features(None, "all")[0].numpy()
    spread = np.trace(np.cov(features, rowvar=False)) / np.trace(np.cov(reference, rowvar=False))
    return {
        "frechet_distance": out["frechet_distance"],
        "fd_mean_part": float(((features.mean(0) - reference.mean(0)) ** 2).sum()),
        "fd_heldout": evaluate_digits(x, labels, reference="heldout")["frechet_distance"],
        "kid": out["kid"],
        "class_accuracy": out.get("class_accuracy"),
        "feature_spread": float(spread),
        "pixel_std": float(x.std()),
        "pixel_energy": energy_distance(x.reshape(len(x), -1), real.reshape(len(real), -1)),
    }


def toy_scores(x: torch.Tensor, name: str) -> dict:
    from tim.evaluation.toy import evaluate_toy

    out = evaluate_toy(x, name)
    return {"energy_distance": out["energy_distance"], "sliced_wasserstein": out["sliced_wasserstein"]}


def score_set(dataset: str, x: torch.Tensor, labels, replicates: int) -> dict:
    """Metrics of ``replicates`` disjoint equal sets of ``x`` (independent noise): per set, mean, std.

    A bootstrap with replacement is not used: duplicated rows bias the unbiased U-statistics
    (energy distance, KID) and shrink the covariance of the FD.
    """
    if not torch.isfinite(x).all():
        return {"non_finite": True}
    sets = []
    for rows in torch.arange(len(x)).chunk(replicates):
        part = None if labels is None else labels[rows]
        sets.append(digits_scores(x[rows], part) if dataset == "digits" else toy_scores(x[rows], dataset))
    summary = {}
    for name in sets[0]:
        values = [s[name] for s in sets if s[name] is not None]
        if values:
            summary[name] = float(np.mean(values))
            summary[name + "_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
            summary[name + "_sets"] = values
    return summary


def real_floor(dataset: str, n: int, replicates: int) -> dict:
    """Real data scored like samples: ``replicates`` disjoint sets of n real digits (shuffled; they
    are part of the reference, so the floor is optimistic) or of n fresh toy points."""
    if dataset == "digits":
        from tim.evaluation.digits import load_real_digits

        real, real_labels = load_real_digits()
        replicates = min(replicates, len(real) // n)
        rows = torch.randperm(len(real), generator=torch.Generator().manual_seed(777))[: n * replicates]
        return score_set(dataset, real[rows], real_labels[rows], replicates)
    from tim.data.toy import sample_toy

    points = sample_toy(dataset, n * replicates, torch.Generator().manual_seed(777))
    return score_set(dataset, points, None, replicates)


def sampler_study(args: argparse.Namespace) -> None:
    """Score every (budget, variant, step count) of the saved runs; JSON rewritten after each cell."""
    from tim.samplers import sample

    out_path = ROOT / f"sampler_{args.dataset}_{args.tag}.json"
    report = json.loads(out_path.read_text()) if out_path.exists() else {"cells": {}}
    report |= {"args": vars(args), "num_samples": args.num_samples}
    if "real_floor" not in report:
        report["real_floor"] = real_floor(args.dataset, args.num_samples, args.replicates)
        write_json(out_path, report)
    shape = (2,) if args.dataset != "digits" else (1, 8, 8)
    for seed in args.seeds:
        total = args.num_samples * args.replicates
        noise = torch.randn((total, *shape), generator=torch.Generator().manual_seed(10_000 + seed))
        for method in args.methods:
            target = run_dir(args.dataset, method, seed) if args.run is None else Path(args.run)
            for budget in args.budgets:
                for name in args.variants:
                    key = f"{method}|seed{seed}|{budget}|{name}"
                    if key in report["cells"]:
                        continue
                    variant = parse_variant(name)
                    model = load_checkpoint(target, budget, variant["which"])
                    if args.dataset == "digits":
                        labels = torch.arange(total) % model.config.num_classes
                        cond = {"y": labels}
                    else:
                        labels, cond = None, {}
                    row = {}
                    for steps in args.step_counts:
                        result = sample(
                            model,
                            noise,
                            steps=steps,
                            cond=cond,
                            stochasticity=variant["stochasticity"],
                            shift=variant["shift"],
                            method="euler" if method == "flow_matching" else "transition",
                            generator=torch.Generator().manual_seed(20_000 + seed),
                        )
                        row[str(steps)] = score_set(args.dataset, result.x, labels, args.replicates)
                    report["cells"][key] = row
                    write_json(out_path, report)
                    metric = "frechet_distance" if args.dataset == "digits" else "energy_distance"
                    print(key, " ".join(f"{row[s].get(metric, float('nan')):.4f}" for s in row), flush=True)


def table(args: argparse.Namespace) -> None:
    """Print a markdown table of ``--metric`` (mean ± std over replicate sets) for every cell of a result file."""
    report = json.loads((ROOT / f"sampler_{args.dataset}_{args.tag}.json").read_text())
    metric = args.metric or ("frechet_distance" if args.dataset == "digits" else "energy_distance")
    counts = None
    floor = report["real_floor"]
    print(
        f"real-data floor: {floor[metric]:.4f} ± {floor[metric + '_std']:.4f} ({report['num_samples']} per set)"
    )
    for key, row in report["cells"].items():
        counts = counts or list(row)
        if key == next(iter(report["cells"])):
            print(
                "| run | seed | checkpoint | variant | " + " | ".join(counts) + " | worst ratio | Δ per set |"
            )
            print("|---|---|---|---|" + "---|" * (len(counts) + 2))
        values = [row[c].get(metric) for c in counts]
        cells = [
            "non-finite" if v is None else f"{v:.4f} ± {row[c][metric + '_std']:.4f}"
            for c, v in zip(counts, values, strict=True)
        ]
        ratios = [b / a for a, b in zip(values, values[1:], strict=False) if a and b and a > 0]
        first, last = row.get(args.delta_from, {}), row[counts[-1]]
        delta = [
            b - a
            for a, b in zip(first.get(metric + "_sets", []), last.get(metric + "_sets", []), strict=True)
        ]
        print(
            f"| {' | '.join(key.split('|'))} | "
            + " | ".join(cells)
            + f" | {max(ratios, default=0):.3f} | {', '.join(f'{d:+.4f}' for d in delta)} |"
        )


PANELS = (  # (dataset, metric, title)
    ("digits", "frechet_distance", "digits: FD, classifier features (all 1797 real)"),
    ("digits", "pixel_energy", "digits: energy distance in pixel space"),
    ("checkerboard", "energy_distance", "checkerboard: energy distance"),
)


def plot(args: argparse.Namespace) -> None:
    """Metric vs sampling steps, one line per (run, checkpoint) of the base sampler; band = real-data floor."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axes = plt.subplots(1, len(PANELS), figsize=(5.2 * len(PANELS), 4.0), squeeze=False)
    for axis, (dataset, metric, title) in zip(axes[0], PANELS, strict=True):
        for path in sorted(ROOT.glob(f"sampler_{dataset}_*.json")):
            report = json.loads(path.read_text())
            for key, row in report["cells"].items():
                method, seed, budget, variant = key.split("|")
                if variant != "base" or metric not in row["1"]:
                    continue
                label = args.labels.get(f"{path.stem}|{budget}", f"{budget} train steps")
                steps = np.array([int(s) for s in row])
                mean = np.array([row[s][metric] for s in row])
                std = np.array([row[s][metric + "_std"] for s in row])
                axis.errorbar(steps, mean, yerr=std, marker="o", capsize=2, label=label)
            floor = report["real_floor"]
            low, high = floor[metric] - floor[metric + "_std"], floor[metric] + floor[metric + "_std"]
            axis.axhspan(low, high, color="grey", alpha=0.15)
        axis.axhspan(np.nan, np.nan, color="grey", alpha=0.15, label="real data (mean ± std)")
        axis.set_xscale("log", base=2)
        axis.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%d"))
        axis.set_xlabel("sampling steps (uniform grid, no CFG)")
        axis.set_ylabel(f"{metric} (lower is better)")
        axis.set_title(title, fontsize=10)
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    tmp = Path(args.out + ".tmp.png")
    figure.savefig(tmp, dpi=110)
    os.replace(tmp, args.out)
    plt.close(figure)


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("stage", choices=("train", "sampler", "table", "plot"))
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--methods", type=lambda s: s.split(","), default=["tim"])
    parser.add_argument("--seeds", type=int_list, default=[0])
    parser.add_argument("--steps", type=int, default=8000, help="train: optimizer steps of each run")
    parser.add_argument("--every", type=int, default=500, help="train: steps between kept checkpoints")
    parser.add_argument("--budgets", type=int_list, default=[500, 2000, 8000], help="sampler: checkpoints")
    parser.add_argument("--variants", type=lambda s: s.split(","), default=["base"])
    parser.add_argument("--step-counts", type=int_list, default=list(STEP_COUNTS))
    parser.add_argument("--num-samples", type=int, default=500, help="samples per replicate set")
    parser.add_argument("--replicates", type=int, default=3, help="independent sample sets per cell")
    parser.add_argument("--run", default=None, help="sampler: an explicit run directory (e.g. the demo's)")
    parser.add_argument("--tag", default="main")
    parser.add_argument("--metric", default=None, help="table: the metric to print")
    parser.add_argument("--delta-from", default="4", help="table: Δ per set = last step count minus this one")
    parser.add_argument("--out", default="docs/images/drift_budgets.png", help="plot: the PNG to write")
    parser.add_argument(
        "--labels",
        type=json.loads,
        default={},
        help='plot: legend labels, JSON {"sampler_digits_demo|6000": "..."}',
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--root", default=str(ROOT), help="where runs and results live")
    args = parser.parse_args(argv)
    globals()["ROOT"] = Path(args.root)
    torch.set_num_threads(args.threads)
    ROOT.mkdir(parents=True, exist_ok=True)
    {"train": train_runs, "sampler": sampler_study, "table": table, "plot": plot}[args.stage](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
