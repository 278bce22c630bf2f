"""The shipped digits classifier and evaluate_digits, checked on real and corrupted digits."""

from __future__ import annotations

import pytest
import torch

from tim.errors import TimError
from tim.evaluation.digits import (
    DigitsClassifier,
    DigitsClassifierConfig,
    evaluate_digits,
    load_digits_classifier,
    load_real_digits,
    save_digits_classifier,
)


@pytest.fixture(scope="module")
def real() -> tuple[torch.Tensor, torch.Tensor]:
    return load_real_digits()


def test_real_digits_are_in_minus_one_one(real) -> None:
    images, labels = real
    assert images.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert images.min() == -1.0 and images.max() == 1.0


def test_shipped_classifier_heldout_accuracy(real) -> None:
    model, metadata = load_digits_classifier()
    images, labels = real
    heldout = torch.tensor(metadata["split"]["heldout_indices"])
    assert len(heldout) == 360 and len(set(heldout.tolist())) == 360
    with torch.no_grad():
        accuracy = (model(images[heldout]).argmax(1) == labels[heldout]).double().mean().item()
    assert accuracy >= 0.97
    assert accuracy == pytest.approx(metadata["heldout_accuracy"], abs=1e-6)


def test_distances_order_real_noisy_and_random_digits(real) -> None:
    images, labels = real
    generator = torch.Generator().manual_seed(0)
    clean = evaluate_digits(images, labels, reference="heldout")
    noisy = evaluate_digits(
        images + 0.5 * torch.randn(images.shape, generator=generator), labels, reference="heldout"
    )
    random = evaluate_digits(
        2 * torch.rand(images.shape, generator=generator) - 1, labels, reference="heldout"
    )
    assert clean["frechet_distance"] < noisy["frechet_distance"] < random["frechet_distance"]
    assert clean["kid"] < noisy["kid"] < random["kid"]
    assert clean["class_accuracy"] > 0.98 and random["class_accuracy"] < 0.3
    assert clean["num_samples"] == 1797 and clean["num_reference"] == 360
    assert "held-out" in clean["reference_set"] and "classifier" in clean["feature_extractor"]


def test_wrong_labels_give_chance_accuracy_and_no_labels_no_accuracy(real) -> None:
    images, labels = real
    shuffled = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(1))]
    assert evaluate_digits(images, shuffled)["class_accuracy"] < 0.2
    assert "class_accuracy" not in evaluate_digits(images[:100])


def test_bad_samples_raise(real) -> None:
    images, _ = real
    with pytest.raises(TimError, match="shape"):
        evaluate_digits(images[:10, 0])
    bad = images[:10].clone()
    bad[3, 0, 2, 2] = float("inf")
    with pytest.raises(TimError, match="NaN or Inf"):
        evaluate_digits(bad)
    with pytest.raises(TimError, match="reference"):
        evaluate_digits(images[:10], reference="train")


def test_save_load_round_trip_is_strict(tmp_path) -> None:
    torch.manual_seed(0)
    model = DigitsClassifier(DigitsClassifierConfig(width=4, feature_dim=8))
    path = tmp_path / "clf.safetensors"
    save_digits_classifier(model, path, {"heldout_accuracy": 0.5, "seed": 3})
    loaded, metadata = load_digits_classifier(path)
    x = torch.randn(5, 1, 8, 8)
    assert torch.equal(loaded(x), model.eval()(x))
    assert metadata["seed"] == 3 and metadata["config"]["feature_dim"] == 8
    with pytest.raises(TimError, match="not found"):
        load_digits_classifier(tmp_path / "missing.safetensors")
