"""Learning curve of a long run: score every kept checkpoint's EMA weights, plot score vs training images.

    python scripts/learning_curve.py RUN --out docs/curves/scenes.json --plot docs/images/curve_scenes.png

Text runs (scenes) are scored with GenEval in miniature on the prompts of ``tim bench geneval``
(seen and held-out, from the same noise) at 1 and 8 steps, without guidance and with CFG 2; class
runs (digits) with the judge of ``tim demo`` (class accuracy and Frechet distance of 500 digits) at
1, 8 and 128 steps. Results are cached in ``--out`` per step, so a rerun scores only the new
checkpoints (the run may still be training). How the bundled models were chosen: docs/pretrained.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from tim.io import write_text

TEXT_STEPS, CLASS_STEPS = (1, 8), (1, 8, 128)
SEEN, HELDOUT, GUIDED = 16, 8, 2.0


def score_checkpoint(run_dir: Path, step: int) -> dict:
    """The scores of one checkpoint (see the module docstring)."""
    from tim.training import load_run

    model, cfg = load_run(run_dir, step=step)
    if getattr(model.config, "conditioning", "") == "text":
        from tim.experiments.geneval import score_model
        from tim.text import TextEncoder

        encoder = TextEncoder(cfg.data.text_encoder or "minilm", max_length=cfg.data.max_text_length)
        scores = score_model(
            model, encoder, TEXT_STEPS, SEEN, HELDOUT, scales=(1.0, GUIDED), log=lambda _: None
        )
        return {
            f"{split} cfg {float(scale):g} {steps} steps": rows[str(steps)]["overall"]
            for split, by_scale in scores.items()
            for scale, rows in by_scale.items()
            for steps in TEXT_STEPS
        } | {"images": step * cfg.train.batch_size}
    from tim.evaluation.digits import evaluate_digits
    from tim.generation import sample_classes
    from tim.training.config import build_path_from_config

    c: Any = model.config
    shape, path = (c.in_channels, c.input_size, c.input_size), build_path_from_config(cfg)
    row: dict = {"images": step * cfg.train.batch_size}
    for steps in CLASS_STEPS:
        item = sample_classes(model, path, shape, steps, class_ids=list(range(10)), per_class=50)
        result = evaluate_digits(item.samples, item.labels)
        row[f"accuracy {item.steps} steps"] = round(result["class_accuracy"], 4)
        row[f"frechet {item.steps} steps"] = round(result["frechet_distance"], 4)
    return row


def plot(curve: dict, path: Path, title: str) -> None:
    """Score vs training images, one line per metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = sorted(curve, key=int)
    images = [curve[s]["images"] / 1e6 for s in steps]
    metrics = [k for k in curve[steps[0]] if k != "images"]
    panels = list(dict.fromkeys(m.split(" ")[0] for m in metrics))  # in the order the metrics come
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4), squeeze=False)
    for axis, panel in zip(axes[0], panels, strict=True):
        for metric in [m for m in metrics if m.split(" ")[0] == panel]:
            axis.plot(images, [curve[s][metric] for s in steps], marker="o", markersize=3, label=metric)
        axis.set_xlabel("training images (millions)")
        axis.set_title(f"{title}: {panel}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    """Score the new checkpoints of RUN, update the cache, draw the plot."""
    from tim.training.checkpoint import list_checkpoints

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", metavar="RUN", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="JSON cache of the scores per step")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the curve")
    parser.add_argument("--every", type=int, default=1, help="score every k-th checkpoint (the last always)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    curve = json.loads(args.out.read_text()) if args.out.is_file() else {}
    paths = list_checkpoints(args.run_dir)
    chosen = [p for k, p in enumerate(paths) if k % args.every == args.every - 1 or p == paths[-1]]
    for path in chosen:
        step = int(path.name.split("_")[1])
        if str(step) in curve:
            continue
        started = time.perf_counter()
        curve[str(step)] = score_checkpoint(args.run_dir, step)
        print(f"step {step}: {curve[str(step)]} ({time.perf_counter() - started:.0f} s)", flush=True)
        write_text(
            args.out, json.dumps(dict(sorted(curve.items(), key=lambda kv: int(kv[0]))), indent=1) + "\n"
        )
    if args.plot is not None and curve:
        plot(curve, args.plot, args.title or args.run_dir.name)


if __name__ == "__main__":
    main()
