"""Sample quality on the 8x8 scikit-learn digits, measured in a small classifier's feature space.

The classifier is trained by ``scripts/train_digits_classifier.py`` on a held-out split of the real
digits and shipped as ``tim/assets/digits_classifier.safetensors`` (its accuracy, split and seed are
stored in the file's metadata), so evaluation needs no download. Its penultimate layer plays the
role Inception's pool features play in FID.

Pixel convention: the raw digits hold integers 0..16; images enter as ``x = pixels / 8 - 1`` in
[-1, 1] (docs/internals.md: images live in [-1, 1]), shape (N, 1, 8, 8).
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from tim.data.digits import digits_to_unit_range, load_digits_tensors
from tim.errors import TimError
from tim.evaluation.metrics import frechet_distance, kernel_distance

ASSET_NAME = "digits_classifier.safetensors"
METADATA_KEY = "tim_metadata"  # safetensors metadata holds str -> str; the JSON lives under this key
NUM_DIGITS = 1797  # size of sklearn's load_digits() (the UCI test set of optdigits)
DIGITS_HEIGHT = DIGITS_WIDTH = 8


@dataclass(frozen=True)
class DigitsClassifierConfig:
    """Shape of the digits classifier.

    Attributes:
        width: channels of the first two convolutions (the third has twice as many).
        feature_dim: size of the penultimate (feature) layer used for the distances.
        num_classes: number of digit classes.
    """

    width: int = 32
    feature_dim: int = 64
    num_classes: int = 10


class DigitsClassifier(nn.Module):
    """Small CNN for (N, 1, 8, 8) digits in [-1, 1]; ``features`` is its penultimate layer."""

    def __init__(self, config: DigitsClassifierConfig = DigitsClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        width = config.width
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.GELU(),  # (N, w, 8, 8)
            nn.Conv2d(width, width, 3, padding=1),
            nn.GELU(),  # (N, w, 8, 8)
            nn.AvgPool2d(2),  # (N, w, 4, 4)
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.GELU(),  # (N, 2w, 4, 4)
            nn.AvgPool2d(2),  # (N, 2w, 2, 2)
            nn.Flatten(),  # (N, 8w)
            nn.Linear(8 * width, config.feature_dim),
            nn.GELU(),  # (N, feature_dim)
        )
        self.head = nn.Linear(config.feature_dim, config.num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, shape (N, feature_dim), of images x of shape (N, 1, 8, 8)."""
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits, shape (N, num_classes)."""
        return self.head(self.features(x))


def load_real_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """All 1797 real digits as (images (N, 1, 8, 8) float32 in [-1, 1], labels (N,) int64).

    The same pixels the trainer sees (:mod:`tim.data.digits`), so the reference is the training data.
    """
    counts, labels = load_digits_tensors()
    return digits_to_unit_range(counts), labels


def default_asset_path() -> Path:
    """Location of the shipped classifier weights inside the installed package."""
    return Path(str(resources.files("tim") / "assets" / ASSET_NAME))


def save_digits_classifier(model: DigitsClassifier, path: str | Path, metadata: dict) -> None:
    """Write weights + config + ``metadata`` (accuracy, split, seed ...) to one safetensors file."""
    from tim.io import write_safetensors  # safetensors (an optional extra) is imported lazily there

    payload = {"config": asdict(model.config), **metadata}
    tensors = {name: value.detach().contiguous() for name, value in model.state_dict().items()}
    write_safetensors(path, tensors, metadata={METADATA_KEY: json.dumps(payload, sort_keys=True)})


def load_digits_classifier(path: str | Path | None = None) -> tuple[DigitsClassifier, dict]:
    """Load the classifier (strict key/shape check) and its metadata; ``None`` means the shipped asset.

    Returns:
        (model in eval mode, metadata dict incl. "config", "heldout_accuracy", "sha256").
    """
    from safetensors import safe_open  # lazy: safetensors is an optional extra

    path = Path(path) if path is not None else default_asset_path()
    if not path.is_file():
        raise TimError(
            f"digits classifier weights not found at {path}", "run scripts/train_digits_classifier.py"
        )
    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads((handle.metadata() or {}).get(METADATA_KEY, "{}"))
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118 - safe_open is not a dict
    if "config" not in metadata:
        raise TimError(
            f"{path} has no '{METADATA_KEY}' config metadata",
            "re-create it with scripts/train_digits_classifier.py",
        )
    model = DigitsClassifier(DigitsClassifierConfig(**metadata["config"]))
    model.load_state_dict(tensors, strict=True)
    metadata["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return model.eval().requires_grad_(False), metadata


@functools.lru_cache(maxsize=4)
def _cached_classifier(path: str | None) -> tuple[DigitsClassifier, dict]:
    return load_digits_classifier(path)


@torch.no_grad()
def digits_features(model: DigitsClassifier, images: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    """Penultimate features of ``images`` (N, 1, 8, 8) as float64 (N, feature_dim), on CPU."""
    chunks = [model.features(chunk.to(torch.float32)) for chunk in images.split(batch_size)]
    return torch.cat(chunks).to(torch.float64)


@functools.lru_cache(maxsize=4)
def _reference_features(path: str | None, reference: str) -> tuple[torch.Tensor, str]:
    """Features of the real reference set, computed once per process (in-memory cache)."""
    model, metadata = _cached_classifier(path)
    images, _ = load_real_digits()
    if reference == "all":
        return digits_features(model, images), f"sklearn digits, all {len(images)} real images"
    if reference == "heldout":
        index = torch.tensor(metadata["split"]["heldout_indices"])
        return digits_features(model, images[index]), f"sklearn digits, {len(index)} held-out real images"
    raise TimError(f"unknown reference set {reference!r}", "use 'all' or 'heldout'")


def _check_samples(samples: torch.Tensor, labels: torch.Tensor | None) -> None:
    if samples.ndim != 4 or tuple(samples.shape[1:]) != (1, DIGITS_HEIGHT, DIGITS_WIDTH) or len(samples) < 2:
        raise TimError(f"digits samples have shape {tuple(samples.shape)}", "pass (N, 1, 8, 8) with N >= 2")
    if not torch.isfinite(samples).all():
        raise TimError("digits samples contain NaN or Inf", "check the model or sampler that produced them")
    if labels is not None and tuple(labels.shape) != (len(samples),):
        raise TimError(
            f"labels have shape {tuple(labels.shape)}",
            f"pass one class index per sample, shape ({len(samples)},)",
        )


def evaluate_digits(
    samples: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    reference: str = "all",
    classifier_path: str | Path | None = None,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    seed: int = 0,
) -> dict:
    """Fréchet distance, unbiased KID and (with labels) class accuracy of generated digits.

    Samples are evaluated exactly as given (no clipping), so a sampler that overshoots [-1, 1] is
    penalised rather than hidden. The Fréchet distance is biased upwards for small N: compare
    numbers only at equal ``num_samples``.

    Args:
        samples: generated images, shape (N, 1, 8, 8), values nominally in [-1, 1].
        labels: the class each sample was conditioned on, shape (N,), or None (unconditional).
        reference: "all" (the 1797 real digits) or "heldout" (the classifier's held-out split).
        classifier_path: weights file; None means the shipped asset.
        kid_subset_size: KID rows per subset (see :func:`kernel_distance`); the default uses all
            rows once (the digits sets are small enough).
        kid_subsets: number of KID subsets.
        seed: seeds the KID subset draws.

    Returns:
        {"frechet_distance", "kid", "kid_std", "kid_protocol", ["class_accuracy"], "num_samples",
            "num_reference", "feature_extractor", "reference_set"}.
    """
    samples = samples.detach().cpu()
    _check_samples(samples, labels)
    path_key = None if classifier_path is None else str(classifier_path)
    model, metadata = _cached_classifier(path_key)
    reference_features, reference_name = _reference_features(path_key, reference)
    features = digits_features(model, samples)
    kid, kid_std = kernel_distance(
        features, reference_features, subset_size=kid_subset_size, num_subsets=kid_subsets, seed=seed
    )
    result = {
        "frechet_distance": frechet_distance(features, reference_features),
        "kid": kid,
        "kid_std": kid_std,
        "kid_protocol": "unbiased MMD^2, kernel (a.b/d + 1)^3, "
        + ("all rows" if kid_subset_size is None else f"{kid_subsets} subsets of {kid_subset_size}"),
        "num_samples": len(samples),
        "num_reference": len(reference_features),
        "feature_extractor": (
            f"tim digits classifier ({model.config.feature_dim}-d penultimate, "
            f"held-out acc {metadata.get('heldout_accuracy', float('nan')):.4f}, sha256 {metadata['sha256'][:12]})"
        ),
        "reference_set": reference_name,
    }
    if labels is not None:
        with torch.no_grad():
            predicted = model.head(features.to(torch.float32)).argmax(dim=1)
        result["class_accuracy"] = float((predicted == labels.cpu()).to(torch.float64).mean())
    return result
