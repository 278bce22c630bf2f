"""FID Inception-v3: layout, shapes and strict loading, with random weights (the real ones cannot be downloaded here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tim.errors import TimError
from tim.evaluation.inception import (
    BasicConv2d,
    FIDInceptionV3,
    compute_fid,
    inception_features,
    load_fid_inception,
    load_reference_stats,
)


@pytest.fixture(scope="module")
def model() -> FIDInceptionV3:
    torch.manual_seed(0)
    return FIDInceptionV3().eval()


def test_layout_matches_inception_v3(model) -> None:
    # torchvision's Inception-v3 (without the auxiliary head) has 94 conv+BN units.
    assert sum(isinstance(m, BasicConv2d) for m in model.modules()) == 94
    state = model.state_dict()
    assert state["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert state["Mixed_6e.branch7x7dbl_1.conv.weight"].shape == (192, 768, 1, 1)
    assert state["fc.weight"].shape == (1008, 2048)  # pytorch-fid's 1008-way classifier


def test_pool_features_shape_without_and_with_resize(model) -> None:
    with torch.no_grad():
        assert model(torch.rand(2, 3, 75, 75) * 2 - 1, resize_to=None).shape == (2, 2048)
        grey = torch.rand(1, 1, 8, 8) * 2 - 1  # digits-like: repeated to RGB, resized to 299
        features = model(grey)
    assert features.shape == (1, 2048) and torch.isfinite(features).all()


def test_strict_round_trip_and_rejection(model, tmp_path) -> None:
    from safetensors.torch import save_file

    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file(state, str(tmp_path / "inception.safetensors"))
    torch.save(state, tmp_path / "inception.pth")
    x = torch.rand(2, 3, 75, 75) * 2 - 1
    with torch.no_grad():
        expected = model(x, resize_to=None)
        for name in ("inception.safetensors", "inception.pth"):
            assert torch.equal(load_fid_inception(tmp_path / name)(x, resize_to=None), expected)
    del state["Mixed_5b.branch1x1.conv.weight"]
    save_file(state, str(tmp_path / "broken.safetensors"))
    with pytest.raises(TimError, match="does not match"):
        load_fid_inception(tmp_path / "broken.safetensors")
    with pytest.raises(TimError, match="not found"):
        load_fid_inception(tmp_path / "missing.pth")


def test_reference_stats_npz_is_read_without_pickle(tmp_path) -> None:
    np.savez(tmp_path / "ref.npz", mu=np.zeros(3), sigma=np.eye(3))
    stats = load_reference_stats(tmp_path / "ref.npz")
    assert stats.mu.shape == (3,) and np.array_equal(stats.sigma, np.eye(3))
    np.savez(tmp_path / "bad.npz", mean=np.zeros(3))
    with pytest.raises(TimError, match="mu"):
        load_reference_stats(tmp_path / "bad.npz")


@pytest.mark.slow
def test_fid_of_a_set_with_itself_is_zero(model, tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({k: v for k, v in model.state_dict().items()}, str(tmp_path / "w.safetensors"))
    images = torch.rand(6, 1, 8, 8) * 2 - 1
    result = compute_fid(images, images, tmp_path / "w.safetensors", batch_size=3)
    assert abs(result["fid"]) < 1e-6 * max(
        1.0, np.trace(np.cov(inception_features(model, images), rowvar=False))
    )
    assert result["num_samples"] == 6 and "Inception" in result["feature_extractor"]
