"""TiMMLP: the vector network shares the TiM interface and time embeddings."""

from __future__ import annotations

import pytest
import torch

from tim.errors import TimError
from tim.models import MLPConfig, TiMMLP, build_model
from tim.models.layers import TimestepEmbedder


def perturbed(model: TiMMLP) -> TiMMLP:
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def test_interface_zero_init_and_features() -> None:
    model = build_model("MLP-toy")
    x, t, r = torch.randn(5, 2), torch.rand(5), torch.zeros(5)
    out = model(x, t, r)
    assert out.shape == (5, 2) and out.abs().max() == 0
    assert model.forward_with_features(x, t, r)[1] is None
    assert model.sample_shape == (2,)
    assert isinstance(model.t_embedder, TimestepEmbedder) and isinstance(model.dt_embedder, TimestepEmbedder)
    nonzero = build_model("MLP-toy", zero_init_output=False)
    assert nonzero(x, t, r).abs().max() > 0


def test_class_conditioning_and_null() -> None:
    model = perturbed(build_model("MLP-toy", num_classes=3))
    x, t, r = torch.randn(4, 2), torch.rand(4), torch.zeros(4)
    y = torch.tensor([0, 1, 2, 0])
    assert not torch.allclose(model(x, t, r, y=y), model(x, t, r, **model.null_cond({"y": y})))
    assert model.null_cond({"y": y})["y"].tolist() == [3] * 4
    assert model.drop_cond({"y": y}, 1.0)["y"].tolist() == [3] * 4
    with pytest.raises(TimError, match="cond keys"):
        model(x, t, r)


def test_depends_on_interval_and_jvp_matches_finite_difference() -> None:
    model = perturbed(build_model("MLP-toy")).double()
    x, t = torch.randn(6, 2, dtype=torch.float64), torch.rand(6, dtype=torch.float64)
    r = 0.5 * t
    assert not torch.allclose(model(x, t, r), model(x, t, torch.zeros_like(r)))
    v = torch.randn_like(x)
    _, dF = torch.func.jvp(lambda x_t, s: model(x_t, s, r), (x, t), (v, torch.ones_like(t)))
    eps = 1e-6
    finite = (model(x + eps * v, t + eps, r) - model(x - eps * v, t - eps, r)) / (2 * eps)
    torch.testing.assert_close(dF, finite, atol=1e-7, rtol=1e-6)


def test_vanilla_time_embedding_and_errors() -> None:
    model = TiMMLP(MLPConfig(decoupled_time_embedding=False))
    assert model.dt_embedder is None
    with pytest.raises(TimError, match="x_t has shape"):
        model(torch.randn(3, 3), torch.rand(3), torch.rand(3))
    with pytest.raises(TimError, match="time inputs"):  # was a bare expand() RuntimeError
        model(torch.randn(3, 2), torch.rand(2), torch.rand(2))
    with pytest.raises(TimError, match="positive"):
        MLPConfig(dim=0)
