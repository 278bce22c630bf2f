"""REPA ablation at digits scale: TiM with and without the representation-alignment term.

The published TiM trainers always add REPA against a frozen RADIO-v2.5-B (github.com/WZDTHU/TiM; the paper does not mention it);
no pretrained vision model can be downloaded here, so two small DINOv2-architecture encoders are
built offline (Hugging Face ``Dinov2Model``, 2 layers, width 64, 4x4 patches = one patch per TiM
token of the 8x8 digits, saved with ``save_pretrained``):

* ``random``: random initialisation (seed 0), i.e. a fixed random ViT feature map;
* ``trained``: the same network trained as a digit classifier (CLS token -> linear head, AdamW,
  all 1,797 scikit-learn digits, no augmentation) for ``--encoder-epochs`` epochs; its patch features stand in for a pretrained encoder's semantics.

Each variant trains the quality benchmark's network (``DIGITS_MODEL``: width 64, depth 3, 2x2
tokens) with the paper's recipe; REPA taps after block 1 of 3 (the published B/4 taps after 4 of
12), projector width 64 = the encoder width, weight 1.0 (published ``proj_coeff``). Scored by the
Fréchet distance in the digits classifier's features at 1, 8 and 50 steps, no CFG.

Usage:
    python scripts/repa_ablation.py --out /tmp/bench/repa [--train-steps 300] [--seeds 0] [--num-samples 300]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import torch

from tim.experiments.quality import DIGITS_MODEL, QualityConfig, evaluate_run, parse_int_list, run_config_dict

ENCODER_WIDTH = 64  # = model.z_dim


def build_encoder(folder: Path, epochs: int) -> Path:
    """Save the tiny DINOv2 (trained as a digit classifier when ``epochs > 0``) to ``folder``."""
    from transformers import Dinov2Config, Dinov2Model

    from tim.data.digits import digits_to_unit_range, load_digits_tensors

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=ENCODER_WIDTH,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        patch_size=4,
        image_size=8,
        num_channels=3,
    )
    encoder = Dinov2Model(config)
    if epochs:
        counts, labels = load_digits_tensors()
        images = digits_to_unit_range(counts).reshape(-1, 1, 8, 8)
        head = torch.nn.Linear(ENCODER_WIDTH, 10)
        optimizer = torch.optim.AdamW([*encoder.parameters(), *head.parameters()], lr=1e-3)
        generator = torch.Generator().manual_seed(0)
        for epoch in range(epochs):
            order = torch.randperm(len(images), generator=generator)
            correct = 0
            for batch in order.split(64):
                x = ((images[batch].expand(-1, 3, -1, -1) + 1) / 2 - 0.45) / 0.226  # ~ImageNet statistics
                logits = head(encoder(pixel_values=x).pooler_output)
                loss = torch.nn.functional.cross_entropy(logits, labels[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                correct += int((logits.argmax(1) == labels[batch]).sum())
            print(f"encoder epoch {epoch + 1}: train accuracy {correct / len(images):.3f}", file=sys.stderr)
    encoder.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--seeds", type=parse_int_list, default=(0,))
    parser.add_argument("--num-samples", type=int, default=300)
    parser.add_argument("--encoder-epochs", type=int, default=10)
    args = parser.parse_args()
    from tim.training import config_from_dict, load_run, train

    encoders = {
        "random": build_encoder(args.out / "encoder-random", 0),
        "trained": build_encoder(args.out / "encoder-trained", args.encoder_epochs),
    }
    variants = {
        "no REPA": ({"z_dim": 0}, ""),
        "REPA, random DINOv2": ({}, str(encoders["random"])),
        "REPA, digit-trained DINOv2": ({}, str(encoders["trained"])),
    }
    config = QualityConfig(
        methods=("tim",),
        seeds=args.seeds,
        train_steps=args.train_steps,
        batch_size=128,
        lr=2e-3,
        step_counts=(1, 8, 50),
        num_samples=args.num_samples,
        guidance_scale=1.0,
        model=DIGITS_MODEL | {"encoder_depth": 1, "z_dim": ENCODER_WIDTH, "projector_dim": 128},
    )
    results = {}
    for name, (model_change, encoder) in variants.items():
        for seed in args.seeds:
            data = run_config_dict(config, "tim", seed)
            data["model"] |= model_change
            data["repa"] = {"encoder": encoder}
            digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]
            run_dir = args.out / "runs" / f"seed{seed}-{digest}"
            started = time.perf_counter()
            if not (run_dir / "pretrained").is_dir():
                train(config_from_dict(data), run_dir)
            seconds = time.perf_counter() - started
            model, _ = load_run(run_dir, which="ema")
            scores = evaluate_run(model, config, "tim", seed)["1.0"]
            alignment = [
                json.loads(line).get("alignment")
                for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            ]
            results.setdefault(name, []).append(
                {
                    "seed": seed,
                    "train_seconds": round(seconds, 1),
                    "alignment_first_last": [alignment[0], alignment[-1]],
                    "frechet_distance": {s: scores[s]["frechet_distance"] for s in scores},
                }
            )
            print(f"{name} seed {seed}: {json.dumps(results[name][-1])}", file=sys.stderr)
    lines = [
        "| variant | seed | 1 step | 8 steps | 50 steps | alignment loss first -> last | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        for row in rows:
            fd = row["frechet_distance"]
            first, last = row["alignment_first_last"]
            align = "—" if first is None else f"{first:.3f} -> {last:.3f}"
            lines.append(
                f"| {name} | {row['seed']} | {fd['1']:.3f} | {fd['8']:.3f} | {fd['50']:.3f} | {align} | "
                f"{row['train_seconds']:.0f} |"
            )
    text = "\n".join(lines) + "\n"
    (args.out / "repa_ablation.md").write_text(text)
    (args.out / "repa_ablation.json").write_text(json.dumps(results, indent=1))
    print(text)


if __name__ == "__main__":
    main()
