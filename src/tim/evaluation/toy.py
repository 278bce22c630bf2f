"""Sample quality on the 2-D toy distributions: distances to fresh samples of the true law."""

from __future__ import annotations

import torch

from tim.data.toy import sample_toy
from tim.errors import TimError
from tim.evaluation.metrics import energy_distance, sliced_wasserstein


def evaluate_toy(
    samples: torch.Tensor,
    name: str,
    *,
    num_reference: int = 2000,
    seed: int = 12345,
    num_projections: int = 256,
) -> dict:
    """Energy distance and sliced Wasserstein-2 between ``samples`` and fresh draws of toy ``name``.

    The reference is drawn with its own seed, independent of the training batches, so a model
    that memorised its training points gains nothing. Both distances are noisy at small N: quote
    ``num_samples`` with them.

    Args:
        samples: generated points, shape (N, 2), N >= 2.
        name: one of :data:`tim.data.toy.TOYS`.
        num_reference: number of fresh true samples.
        seed: seed of the reference draw (and of the projection directions).
        num_projections: directions for the sliced Wasserstein distance.

    Returns:
        {"energy_distance", "sliced_wasserstein", "num_samples", "num_reference",
            "feature_extractor", "reference_set"}.
    """
    if samples.ndim != 2 or samples.shape[1] != 2:
        raise TimError(f"toy samples have shape {tuple(samples.shape)}", "pass (N, 2) points")
    reference = sample_toy(name, num_reference, torch.Generator().manual_seed(seed))
    return {
        "energy_distance": energy_distance(samples, reference),
        "sliced_wasserstein": sliced_wasserstein(
            samples, reference, num_projections=num_projections, seed=seed
        ),
        "num_samples": len(samples),
        "num_reference": num_reference,
        "feature_extractor": "raw 2-D coordinates",
        "reference_set": f"{num_reference} fresh samples of toy '{name}' (seed {seed})",
    }
