"""Released-checkpoint converter: renaming, file formats, nesting, prefixes, strict errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tim.errors import TimError
from tim.models import TiM, build_model, load_released_checkpoint, released_config
from tim.models.convert import ours_to_released, released_to_ours

REF_CONFIG = {
    "input_size": 8,
    "patch_size": 2,
    "in_channels": 4,
    "hidden_size": 64,
    "depth": 2,
    "num_heads": 4,
    "mlp_ratio": 4.0,
    "class_dropout_prob": 0.1,
    "num_classes": 10,
    "encoder_depth": 1,
    "z_dim": 32,
    "projector_dim": 48,
    "qk_norm": True,
    "new_condition": "t-r",
    "use_new_embed": True,
    "distance_aware": True,
    "lora_hidden_size": 24,
}


@pytest.fixture
def released_state(specs: Path) -> dict[str, torch.Tensor]:
    return load_file(str(specs / "refs" / "tiny_c2i_weights.safetensors"))


def inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(2, 4, 8, 8, generator=g),
        torch.tensor([0.9, 0.4]),
        torch.tensor([0.1, 0.4]),
        torch.tensor([3, 10]),
    )


def test_renaming_is_invertible_on_all_released_keys(specs: Path) -> None:
    for listing in (specs / "state-dicts").glob("*.txt"):
        for line in filter(None, listing.read_text().split("\n")):
            name = line.split()[0]
            assert ours_to_released(released_to_ours(name)) == name
    assert released_to_ours("blocks.3.attn.qkv_d.weight") == "blocks.3.attn.qkv_interval.weight"
    assert released_to_ours("y_embedder.mlp.fc1_g.bias") == "cond_embedder.mlp.fc_gate.bias"


def test_config_from_metadata(specs: Path) -> None:
    model = load_released_checkpoint(specs / "refs" / "tiny_c2i_weights.safetensors")
    config = model.config
    assert (config.hidden_size, config.depth, config.modulation_rank, config.z_dim, config.projector_dim) == (
        64,
        2,
        24,
        32,
        48,
    )
    assert (
        config.rope_positions == "wrapped" and config.decoupled_time_embedding and config.interval_attention
    )
    assert released_config(REF_CONFIG) == config
    assert released_config({**REF_CONFIG, "lora_hidden_size": None}).modulation_rank == 48  # (64 // 4) * 3
    assert released_config({**REF_CONFIG, "new_condition": "t,r"}).time_condition == "t,r"
    with pytest.raises(TimError, match="new_condition"):
        released_config({**REF_CONFIG, "new_condition": "t+r"})


def test_nested_pickle_with_prefixes_prefers_ema(tmp_path: Path, specs: Path, released_state: dict) -> None:
    reference = load_released_checkpoint(specs / "refs" / "tiny_c2i_weights.safetensors")
    raw = {f"module.{k}": torch.zeros_like(v) for k, v in released_state.items()}
    ema = {f"module.{k}": v for k, v in released_state.items()}
    torch.save({"model": raw, "ema": ema, "steps": 5}, tmp_path / "ckpt.pt")
    config = released_config(REF_CONFIG)
    model = load_released_checkpoint(tmp_path / "ckpt.pt", config)
    x, t, r, y = inputs()
    assert torch.equal(model(x, t, r, y=y), reference(x, t, r, y=y))
    raw_model = load_released_checkpoint(tmp_path / "ckpt.pt", config, prefer_ema=False)
    assert raw_model(x, t, r, y=y).abs().max() == 0


def test_preset_or_config_switches_to_released_positions(tmp_path: Path, released_state: dict) -> None:
    save_file(released_state, str(tmp_path / "plain.safetensors"))  # no metadata
    with pytest.raises(TimError, match="carries no config"):
        load_released_checkpoint(tmp_path / "plain.safetensors")
    config = dataclasses.replace(released_config(REF_CONFIG), rope_positions="grid")
    model = load_released_checkpoint(tmp_path / "plain.safetensors", config, attention_backend="math")
    assert model.config.rope_positions == "wrapped" and model.config.attention_backend == "math"


def test_missing_projector_gives_z_dim_zero(tmp_path: Path, released_state: dict) -> None:
    state = {k: v for k, v in released_state.items() if not k.startswith("projector.")}
    save_file(state, str(tmp_path / "inference.safetensors"), metadata={"config": json.dumps(REF_CONFIG)})
    model = load_released_checkpoint(tmp_path / "inference.safetensors")
    assert model.projector is None and model.config.z_dim == 0


def test_strict_mismatch_names_keys(tmp_path: Path, released_state: dict) -> None:
    state = dict(released_state)
    del state["blocks.1.attn.qkv_d.weight"]
    state["blocks.0.attn.extra.weight"] = torch.zeros(3)
    state["final_layer.linear.bias"] = torch.zeros(5)
    save_file(state, str(tmp_path / "bad.safetensors"), metadata={"config": json.dumps(REF_CONFIG)})
    with pytest.raises(TimError) as info:
        load_released_checkpoint(tmp_path / "bad.safetensors")
    message = str(info.value)
    assert "\n" not in message
    assert "missing 1 [blocks.1.attn.qkv_interval.weight]" in message
    assert "unexpected 1 [blocks.0.attn.extra.weight]" in message
    assert "mis-shaped 1 [final_layer.linear.bias (5,) vs (16,)]" in message
    with pytest.raises(TimError, match="unknown suffix"):
        (tmp_path / "w.npz").write_bytes(b"")
        load_released_checkpoint(tmp_path / "w.npz", "TiM-tiny")
    with pytest.raises(TimError, match="does not exist"):
        load_released_checkpoint(tmp_path / "none.safetensors", "TiM-tiny")


def test_text_model_round_trip_through_released_layout(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ours = build_model(
        "TiM-tiny", conditioning="text", text_dim=12, rope_positions="wrapped", mask_context=False
    )
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.1 * torch.randn_like(p))
    exported = {
        ours_to_released(k): v for k, v in ours.state_dict().items() if not k.endswith("null_context")
    }
    assert "y_embedder.mlp.fc1_x.weight" in exported and "blocks.0.cross_attn.kv.weight" in exported
    torch.save({"ema": exported}, tmp_path / "t2i.bin")
    loaded = load_released_checkpoint(tmp_path / "t2i.bin", ours.config)
    assert isinstance(loaded, TiM)
    x, t, r, _ = inputs()
    context = torch.randn(2, 5, 12)
    assert torch.equal(loaded(x, t, r, context=context), ours(x, t, r, context=context))


def test_smaller_file_as_a_large_preset_is_refused_before_building_it(
    tmp_path: Path, released_state: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small file loaded as TiM-XL/2: refused from its header; the 672M network is never built."""
    import safetensors

    import tim.models.convert as convert

    save_file(released_state, str(tmp_path / "small.safetensors"))
    built: list[str] = []
    real_tim = convert.TiM

    def spy(config: object) -> TiM:
        model = real_tim(config)
        built.append(next(model.parameters()).device.type)
        return model

    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("tensor data was read")

    monkeypatch.setattr(convert, "TiM", spy)
    monkeypatch.setattr(safetensors, "safe_open", no_read)
    with pytest.raises(TimError) as info:
        load_released_checkpoint(tmp_path / "small.safetensors", "TiM-XL/2")
    message = str(info.value)
    assert "\n" not in message and "small.safetensors do not match the model" in message
    assert "mis-shaped" in message and "(1152, 1152)" in message
    assert built == ["meta"]  # only the shape-only model on the meta device


def test_integer_weights_are_refused_in_every_format(tmp_path: Path, released_state: dict) -> None:
    """Integer tensors where float weights belong would be cast into garbage: refused by name."""
    state = dict(released_state)
    state["final_layer.linear.weight"] = state["final_layer.linear.weight"].to(torch.int32)
    metadata = {"config": json.dumps(REF_CONFIG)}
    save_file(state, str(tmp_path / "int.safetensors"), metadata=metadata)
    torch.save(state, tmp_path / "int.pt")
    for name in ("int.safetensors", "int.pt"):
        with pytest.raises(TimError, match=f"final_layer.linear.weight in .*{name} is stored as I32"):
            load_released_checkpoint(tmp_path / name, released_config(REF_CONFIG))


def test_metadata_config_that_is_not_an_object_is_one_line(tmp_path: Path, released_state: dict) -> None:
    for text in ("[1, 2]", "{", json.dumps({k: v for k, v in REF_CONFIG.items() if k != "qk_norm"})):
        save_file(released_state, str(tmp_path / "m.safetensors"), metadata={"config": text})
        with pytest.raises(TimError, match="not a JSON object of TiM constructor arguments"):
            load_released_checkpoint(tmp_path / "m.safetensors")
