"""Train the digits classifier whose features score generated digits; write it as a package asset.

Deterministic (fixed seed, one thread, deterministic kernels): running it again gives the same
weights. The real scikit-learn digits (1797 images) are split 80/20, stratified by class; the
model trains on the 80% with light augmentation (1-pixel shifts, intensity scaling, Gaussian
pixel noise) so that its features react smoothly to the imperfections of generated samples
instead of saturating, and its accuracy is measured on the untouched 20%.

Usage:
    python scripts/train_digits_classifier.py [--out src/tim/assets/digits_classifier.safetensors]
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch
from torch.nn import functional

from tim.evaluation.digits import (
    DigitsClassifier,
    DigitsClassifierConfig,
    default_asset_path,
    digits_features,
    load_real_digits,
    save_digits_classifier,
)
from tim.evaluation.metrics import frechet_distance, kernel_distance


def split_indices(labels: torch.Tensor, heldout_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Stratified train / held-out split of range(len(labels)), deterministic in ``seed``."""
    from sklearn.model_selection import train_test_split

    train, heldout = train_test_split(
        list(range(len(labels))), test_size=heldout_fraction, random_state=seed, stratify=labels.numpy()
    )
    return sorted(train), sorted(heldout)


def augment(x: torch.Tensor, generator: torch.Generator, noise_max: float) -> torch.Tensor:
    """Random 1-pixel shift (background -1 fills in), intensity scale in [0.8, 1.1], pixel noise."""
    n = len(x)
    padded = functional.pad(x, (1, 1, 1, 1), value=-1.0)  # (n, 1, 10, 10)
    dy = torch.randint(0, 3, (n,), generator=generator)
    dx = torch.randint(0, 3, (n,), generator=generator)
    rows = (dy[:, None] + torch.arange(8))[:, :, None].expand(n, 8, 8)
    cols = (dx[:, None] + torch.arange(8))[:, None, :].expand(n, 8, 8)
    shifted = padded[torch.arange(n)[:, None, None], 0, rows, cols].unsqueeze(1)  # (n, 1, 8, 8)
    scale = 0.8 + 0.3 * torch.rand(n, 1, 1, 1, generator=generator)
    noise_std = noise_max * torch.rand(n, 1, 1, 1, generator=generator)
    return -1.0 + (shifted + 1.0) * scale + noise_std * torch.randn(x.shape, generator=generator)


@torch.no_grad()
def accuracy(model: DigitsClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    return float((model(x).argmax(1) == y).double().mean())


def train(args: argparse.Namespace) -> tuple[DigitsClassifier, dict]:
    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    images, labels = load_real_digits()
    train_index, heldout_index = split_indices(labels, args.heldout_fraction, args.seed)
    x_train, y_train = images[train_index], labels[train_index]
    model = DigitsClassifier(DigitsClassifierConfig())
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, args.lr, total_steps=args.epochs * steps_per_epoch
    )
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        for batch in order.split(args.batch_size):
            x = augment(x_train[batch], generator, args.noise_max)
            loss = functional.cross_entropy(model(x), y_train[batch], label_smoothing=0.05)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        if (epoch + 1) % 10 == 0:
            model.eval()
            print(
                f"epoch {epoch + 1}: loss {loss.item():.4f}  held-out acc {accuracy(model, images[heldout_index], labels[heldout_index]):.4f}"
            )
    model.eval()
    return model, {"train_index": train_index, "heldout_index": heldout_index}


def sanity_numbers(model: DigitsClassifier, split: dict, seed: int) -> dict:
    """Reference points for reading the distances: real-vs-real floor and noise-vs-real ceiling.

    Compared against the training split, which is disjoint from the held-out images (an
    overlapping reference would bias the unbiased KID, whose cross term then contains k(x, x)).
    """
    images, labels = load_real_digits()
    heldout = images[split["heldout_index"]]
    generator = torch.Generator().manual_seed(seed)
    noisy = (heldout + 0.2 * torch.randn(heldout.shape, generator=generator)).clamp(-1, 1)
    uniform = 2 * torch.rand(heldout.shape, generator=generator) - 1
    train_features = digits_features(model, images[split["train_index"]])
    numbers = {}
    for name, x in {
        "heldout_real": heldout,
        "heldout_real_plus_noise_0.2": noisy,
        "uniform_noise": uniform,
    }.items():
        features = digits_features(model, x)
        numbers[name] = {
            "frechet_distance_vs_train_split": frechet_distance(features, train_features),
            "kid_vs_train_split": kernel_distance(features, train_features)[0],
            "num_samples": len(x),
        }
    numbers["heldout_accuracy_with_noise_0.2"] = accuracy(model, noisy, labels[split["heldout_index"]])
    return numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=default_asset_path())
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--noise-max", type=float, default=0.3, help="max std of the training pixel noise")
    parser.add_argument("--heldout-fraction", type=float, default=0.2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    model, split = train(args)
    images, labels = load_real_digits()
    heldout_accuracy = accuracy(model, images[split["heldout_index"]], labels[split["heldout_index"]])
    metadata = {
        "heldout_accuracy": heldout_accuracy,
        "train_accuracy": accuracy(model, images[split["train_index"]], labels[split["train_index"]]),
        "seed": args.seed,
        "split": {
            "dataset": "sklearn.datasets.load_digits (1797 images, pixels/8 - 1)",
            "method": f"sklearn train_test_split(test_size={args.heldout_fraction}, random_state={args.seed}, stratify=labels)",
            "num_train": len(split["train_index"]),
            "heldout_indices": split["heldout_index"],
        },
        "training": {
            key: getattr(args, key) for key in ("epochs", "batch_size", "lr", "weight_decay", "noise_max")
        },
        "sanity": sanity_numbers(model, split, args.seed),
        "torch_version": torch.__version__,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_digits_classifier(model, args.out, metadata)
    summary = {key: value for key, value in metadata.items() if key != "split"}
    print(json.dumps({"out": str(args.out), **summary}, indent=2))


if __name__ == "__main__":
    main()
