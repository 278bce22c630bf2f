"""Time-conditioning variants (published ``new_condition``, paper Table 4): layouts and closed forms."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tim.errors import TimError
from tim.models import TiM, TiMConfig, load_released_checkpoint
from tim.models.convert import ours_to_released
from tim.models.tim import TIME_CONDITIONS

REF = "tiny_c2i_weights.safetensors"


def tiny(condition: str, decoupled: bool = True) -> TiM:
    config = TiMConfig(
        in_channels=4,
        input_size=8,
        patch_size=2,
        hidden_size=32,
        depth=2,
        num_heads=2,
        modulation_rank=16,
        num_classes=10,
        encoder_depth=1,
        z_dim=0,
        decoupled_time_embedding=decoupled,
        time_condition=condition,
    )
    torch.manual_seed(0)
    return TiM(config).eval()


def closed_form(model: TiM, condition: str, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """The published get_delta_embed table (github.com/WZDTHU/TiM), term by term."""
    E_t = model.t_embedder
    E_d = model.dt_embedder if model.dt_embedder is not None else model.t_embedder
    terms = {
        "t-r": [E_d(t - r)],
        "r": [E_d(r)],
        "t,r": [E_t(t), E_d(r)],
        "t,t-r": [E_t(t), E_d(t - r)],
        "r,t-r": [E_t(r), E_d(t - r)],
        "t,r,t-r": [E_t(t), E_t(r), E_d(t - r)],
    }[condition]
    return torch.stack(terms).sum(0)


@pytest.mark.parametrize("decoupled", [True, False])
@pytest.mark.parametrize("condition", TIME_CONDITIONS)
def test_interval_embedding_matches_the_published_table(condition: str, decoupled: bool) -> None:
    model = tiny(condition, decoupled)
    t, r = torch.tensor([0.9, 0.5, 0.3]), torch.tensor([0.2, 0.5, 0.0])
    with torch.no_grad():
        t_emb, e = model.time_embeddings(t, r)
        torch.testing.assert_close(t_emb, model.t_embedder(t))
        torch.testing.assert_close(e, closed_form(model, condition, t, r))


def test_the_conditioning_vector_and_interval_attention_see_the_option() -> None:
    """With "r", F(x, t, r) equals the "t-r" network's F(x, t, t - r): the option reaches c and IA-Attn."""
    interval, target = tiny("t-r"), tiny("r")
    target.load_state_dict(interval.state_dict())
    for block in interval.blocks:  # adaLN-Zero gates start at 0: make the blocks matter
        torch.nn.init.normal_(block.modulation.fc_out.weight, std=0.5)
    torch.nn.init.normal_(interval.final_layer.linear.weight, std=0.5)
    target.load_state_dict(interval.state_dict())
    x, y = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1)), torch.tensor([1, 2, 3])
    t, r = torch.tensor([0.9, 0.6, 0.4]), torch.tensor([0.1, 0.3, 0.4])
    with torch.no_grad():
        expected = interval(x, t, t - r, y=y)
        torch.testing.assert_close(target(x, t, r, y=y), expected)
        assert not torch.allclose(interval(x, t, r, y=y), expected)  # the option changes the output


@pytest.mark.parametrize("condition", TIME_CONDITIONS)
def test_layout_is_the_published_one_for_every_option(tmp_path: Path, specs: Path, condition: str) -> None:
    """The released tiny state dict loads strictly under every option, with and without use_new_embed."""
    state = load_file(str(specs / "refs" / REF))
    released = json.loads((specs / "refs" / "INDEX.json").read_text())["tiny_c2i_weights"]
    config = {**json.loads(_metadata(specs)["config"]), "new_condition": condition}
    save_file(state, str(tmp_path / "sep.safetensors"), metadata={"config": json.dumps(config)})
    model = load_released_checkpoint(tmp_path / "sep.safetensors")
    assert model.config.time_condition == condition and model.dt_embedder is not None
    assert sorted(ours_to_released(k) for k in model.state_dict()) == sorted(released)
    shared = {k: v for k, v in state.items() if not k.startswith("delta_embedder.")}
    config["use_new_embed"] = False
    save_file(shared, str(tmp_path / "shared.safetensors"), metadata={"config": json.dumps(config)})
    model = load_released_checkpoint(tmp_path / "shared.safetensors")
    assert model.dt_embedder is None and model.config.time_condition == condition


def test_unknown_option_is_one_line() -> None:
    with pytest.raises(TimError, match="time_condition"):
        TiMConfig(time_condition="t+r")


def _metadata(specs: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(specs / "refs" / REF), "pt") as handle:
        return handle.metadata()
