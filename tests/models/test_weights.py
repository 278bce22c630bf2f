"""save_pretrained / from_pretrained: config.json + model.safetensors, bit-identical and strict."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tim.errors import TimError
from tim.models import TIM_PRESETS, TiM, build_model, from_pretrained, save_pretrained


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def assert_identical(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_round_trip_is_bit_identical(tmp_path: Path) -> None:
    model = perturbed(build_model("TiM-tiny"))
    save_pretrained(model, tmp_path / "tiny")
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["config.json", "model.safetensors"]
    loaded = from_pretrained(tmp_path / "tiny")
    assert isinstance(loaded, TiM) and loaded.config == model.config and not loaded.training
    assert_identical(model, loaded)
    x, t, r, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.zeros(2), torch.tensor([3, 10])
    assert torch.equal(model(x, t, r, y=y), loaded(x, t, r, y=y))


def test_round_trip_text_model_keeps_null_caption(tmp_path: Path) -> None:
    model = perturbed(build_model("TiM-tiny", conditioning="text", text_dim=12))
    model.set_null_context(torch.randn(3, 12))
    save_pretrained(model, tmp_path)
    loaded = from_pretrained(tmp_path)
    assert loaded.cond_embedder.null_context.shape == (3, 12)
    assert_identical(model, loaded)


def test_round_trip_mlp(tmp_path: Path) -> None:
    model = perturbed(build_model("MLP-toy", num_classes=4))
    save_pretrained(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["model_type"] == "TiMMLP" and meta["config"]["num_classes"] == 4
    assert_identical(model, from_pretrained(tmp_path))


def test_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TimError, match="config.json"):
        from_pretrained(tmp_path / "nowhere")
    save_pretrained(build_model("TiM-tiny"), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["depth"] = 3
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(TimError, match=r"missing \d+ \[blocks\.2\.") as info:
        from_pretrained(tmp_path)
    assert "unexpected 0 []" in str(info.value)
    meta["config"]["colour"] = "red"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(TimError, match="unknown TiMConfig keys"):
        from_pretrained(tmp_path)
    meta["model_type"] = "ResNet"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(TimError, match="model_type"):
        from_pretrained(tmp_path)


def test_config_dict_round_trip() -> None:
    for config in TIM_PRESETS.values():
        assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert dataclasses.replace(TIM_PRESETS["TiM-tiny"], rope_scale=0.5).to_dict()["rope_scale"] == 0.5
