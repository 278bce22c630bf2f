"""Toy distances: zero-ish for the true law, large for a wrong one, and growing with the error."""

from __future__ import annotations

import pytest
import torch

from tim.data.toy import sample_toy
from tim.errors import TimError
from tim.evaluation.toy import evaluate_toy


def test_true_samples_score_better_than_gaussian_and_scaled() -> None:
    true = sample_toy("8gaussians", 1000, torch.Generator().manual_seed(0))
    gaussian = torch.randn(1000, 2, generator=torch.Generator().manual_seed(1))
    good = evaluate_toy(true, "8gaussians", num_reference=1000)
    slightly_off = evaluate_toy(1.1 * true, "8gaussians", num_reference=1000)
    bad = evaluate_toy(gaussian, "8gaussians", num_reference=1000)
    assert good["energy_distance"] < slightly_off["energy_distance"] < bad["energy_distance"]
    assert good["sliced_wasserstein"] < slightly_off["sliced_wasserstein"] < bad["sliced_wasserstein"]
    assert abs(good["energy_distance"]) < 1e-2
    assert good["num_samples"] == 1000 and "8gaussians" in good["reference_set"]


def test_bad_shape_and_unknown_toy_raise() -> None:
    with pytest.raises(TimError, match="shape"):
        evaluate_toy(torch.zeros(10, 3), "moons")
    with pytest.raises(TimError, match="unknown"):
        evaluate_toy(torch.zeros(10, 2), "circles")
