"""TiM network tests: presets, released layouts, init, shapes, conditioning, JVP, checkpointing."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from tim.errors import TimError
from tim.models import TIM_PRESETS, TiM, TiMConfig, build_model
from tim.models.convert import ours_to_released

# shared/specs/state-dicts/param_counts.md (published classes instantiated on CPU).
RELEASED_COUNTS = {  # preset: (total, without projector)
    "TiM-B/4": (136_173_120, 128_828_224),
    "TiM-XL/2": (672_259_344, 664_128_016),
    "TiM-XL/1": (672_296_224, 664_164_896),
    "TiM-T2I": (873_109_408, 864_978_080),
}
RELEASED_LISTINGS = {
    "TiM-B/4": "c2i_tim_b_p4.txt",
    "TiM-XL/2": "c2i_tim_xl_p2_256.txt",
    "TiM-T2I": "t2i_tim_xl_p1_t2i.txt",
}

TINY = TIM_PRESETS["TiM-tiny"]


def meta_model(config: TiMConfig) -> TiM:
    """Instantiate without allocating memory (shapes and counts only)."""
    with torch.device("meta"):
        return TiM(config)


def randomized(config: TiMConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> TiM:
    """A model whose zero-initialised layers are filled too, so the output depends on everything."""
    torch.manual_seed(seed)
    model = TiM(config).to(dtype)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def tiny_inputs(B: int = 3, H: int = 8, W: int = 8, seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 4, H, W, generator=g)
    t = torch.rand(B, generator=g)
    r = t * torch.rand(B, generator=g)
    y = torch.randint(0, 11, (B,), generator=g)
    return x, t, r, y


@pytest.mark.parametrize("preset", sorted(RELEASED_COUNTS))
def test_preset_parameter_counts_match_released(preset: str) -> None:
    total, without_projector = RELEASED_COUNTS[preset]
    assert sum(p.numel() for p in meta_model(TIM_PRESETS[preset]).parameters()) == total
    no_projector = dataclasses.replace(TIM_PRESETS[preset], z_dim=0)
    assert sum(p.numel() for p in meta_model(no_projector).parameters()) == without_projector


@pytest.mark.parametrize("preset", sorted(RELEASED_LISTINGS))
def test_state_dict_maps_onto_released_listing(preset: str, specs: Path) -> None:
    listing = (specs / "state-dicts" / RELEASED_LISTINGS[preset]).read_text().split("\n")
    released = {}
    for line in filter(None, listing):
        name, shape = re.fullmatch(r"(\S+) \[([\d,]*)\]", line.strip()).groups()
        released[name] = tuple(int(s) for s in shape.split(",") if s)
    ours = {
        ours_to_released(k): tuple(v.shape)
        for k, v in meta_model(TIM_PRESETS[preset]).state_dict().items()
        if not k.endswith("null_context")  # our null caption buffer has no released counterpart
    }
    assert ours == released


@pytest.mark.parametrize("conditioning", ["class", "text", "none"])
def test_output_is_exactly_zero_at_init(conditioning: str) -> None:
    model = build_model(TINY, conditioning=conditioning, text_dim=12)
    x, t, r, y = tiny_inputs()
    cond = {"class": {"y": y}, "text": {"context": torch.randn(3, 5, 12)}, "none": {}}[conditioning]
    out = model(x, t, r, **cond)
    assert out.shape == x.shape and out.abs().max().item() == 0.0


@pytest.mark.parametrize(
    ("H", "W", "p"), [(8, 8, 2), (4, 12, 2), (12, 4, 2), (16, 8, 2), (6, 10, 1), (2, 2, 2)]
)
@pytest.mark.parametrize("positions", ["grid", "wrapped"])
def test_any_resolution_and_aspect_ratio(H: int, W: int, p: int, positions: str) -> None:
    model = randomized(dataclasses.replace(TINY, patch_size=p, rope_positions=positions))
    x, t, r, y = tiny_inputs(H=H, W=W)
    out = model(x, t, r, y=y)
    assert out.shape == (3, 4, H, W) and torch.isfinite(out).all()
    assert (H // p, W // p, "cpu", torch.float32) in {key[:4] for key in model.rope._cache}


def test_rope_convention_matters_only_for_position_assignment() -> None:
    """Square grid: "wrapped" = (col, row) and "grid" = (row, col); transposing the input swaps them."""
    grid = randomized(dataclasses.replace(TINY, rope_positions="grid", patch_size=1))
    wrapped = randomized(dataclasses.replace(TINY, rope_positions="wrapped", patch_size=1))
    wrapped.load_state_dict(grid.state_dict())
    x, t, r, y = tiny_inputs()
    with torch.no_grad():
        # With p = 1 the patch embedding and unpatchify commute with transposition.
        out_grid = grid(x, t, r, y=y)
        out_wrapped_t = wrapped(x.transpose(-1, -2), t, r, y=y).transpose(-1, -2)
    torch.testing.assert_close(out_grid, out_wrapped_t, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out_grid, wrapped(x, t, r, y=y), atol=1e-3)


def test_determinism_under_fixed_seed() -> None:
    a, b = randomized(TINY, seed=3), randomized(TINY, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb and torch.equal(va, vb)
    x, t, r, y = tiny_inputs()
    assert torch.equal(a(x, t, r, y=y), b(x, t, r, y=y))
    assert not torch.equal(randomized(TINY, seed=4)(x, t, r, y=y), a(x, t, r, y=y))


def test_output_depends_on_interval_and_label() -> None:
    model = randomized(TINY)
    x, t, r, y = tiny_inputs()
    out = model(x, t, r, y=y)
    assert not torch.allclose(out, model(x, t, torch.zeros_like(r), y=y))
    assert not torch.allclose(out, model(x, t, r, y=(y + 1) % 10))


def test_jvp_through_model_matches_finite_difference() -> None:
    """Total derivative along (x_t, t) -> (v, 1) with r fixed: torch.func.jvp vs central difference."""
    model = randomized(dataclasses.replace(TINY, attention_backend="sdpa"), dtype=torch.float64)
    x, t, r, y = (v.double() if v.is_floating_point() else v for v in tiny_inputs())
    v = torch.randn_like(x)

    def F(x_t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return model(x_t, s, r, y=y)

    _, dF = torch.func.jvp(F, (x, t), (v, torch.ones_like(t)))
    eps = 1e-5
    finite = (F(x + eps * v, t + eps) - F(x - eps * v, t - eps)) / (2 * eps)
    torch.testing.assert_close(dF, finite, atol=1e-6, rtol=1e-5)


def test_checkpointing_gives_same_gradients_and_works_without_grad() -> None:
    plain = randomized(TINY)
    remat = randomized(dataclasses.replace(TINY, checkpointing=True))
    x, t, r, y = tiny_inputs()
    for model in (plain, remat):
        model(x, t, r, y=y).square().sum().backward()
    for (name, a), (_, b) in zip(plain.named_parameters(), remat.named_parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    with torch.no_grad():  # the derivative passes of the objective
        torch.testing.assert_close(remat(x, t, r, y=y), plain(x, t, r, y=y))
    _, tangent = torch.func.jvp(lambda s: remat(x, s, r, y=y), (t,), (torch.ones_like(t),))
    assert torch.isfinite(tangent).all()


def test_forward_with_features() -> None:
    model = randomized(TINY)
    x, t, r, y = tiny_inputs(H=8, W=12)
    captured = {}
    model.blocks[TINY.encoder_depth - 1].register_forward_hook(
        lambda m, i, o: captured.__setitem__("tokens", o)
    )
    out, features = model.forward_with_features(x, t, r, y=y)
    torch.testing.assert_close(out, model(x, t, r, y=y))
    assert features.shape == (3, 4 * 6, TINY.z_dim)
    torch.testing.assert_close(features, model.projector(captured["tokens"]))
    no_projector = build_model(TINY, z_dim=0)
    assert no_projector.projector is None and no_projector.forward_with_features(x, t, r, y=y)[1] is None


def test_class_null_and_drop_cond() -> None:
    model = build_model(TINY)
    y = torch.arange(10)
    assert model.null_cond({"y": y})["y"].tolist() == [10] * 10
    assert torch.equal(model.drop_cond({"y": y}, 0.0)["y"], y)
    assert model.drop_cond({"y": y}, 1.0)["y"].tolist() == [10] * 10
    big = torch.zeros(20000, dtype=torch.long)
    a = model.drop_cond({"y": big}, 0.1, torch.Generator().manual_seed(0))["y"]
    b = model.drop_cond({"y": big}, 0.1, torch.Generator().manual_seed(0))["y"]
    assert torch.equal(a, b) and abs((a == 10).float().mean().item() - 0.1) < 0.01
    with pytest.raises(TimError, match="probability"):
        model.drop_cond({"y": y}, 1.5)


def test_text_conditioning_null_drop_and_mask() -> None:
    model = randomized(dataclasses.replace(TINY, conditioning="text", text_dim=12))
    x, t, r, _ = tiny_inputs(B=2)
    context = torch.randn(2, 5, 12)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    out = model(x, t, r, context=context, context_mask=mask)
    changed = context.clone()
    changed[0, 3:] = 100.0  # padded tokens of row 0
    torch.testing.assert_close(model(x, t, r, context=changed, context_mask=mask), out)
    assert not torch.allclose(model(x, t, r, context=changed), model(x, t, r, context=context))

    model.set_null_context(torch.ones(1, 2, 12))
    null = model.null_cond({"context": context, "context_mask": mask})
    assert (
        null["context"].shape == (2, 5, 12)
        and null["context"][:, :2].eq(1).all()
        and null["context"][:, 2:].eq(0).all()
    )
    assert null["context_mask"].tolist() == [[True, True, False, False, False]] * 2
    assert set(model.null_cond({"context": context})) == {"context"}
    dropped = model.drop_cond({"context": context, "context_mask": mask}, 1.0)
    assert all(torch.equal(dropped[k], null[k]) for k in null)
    kept = model.drop_cond({"context": context, "context_mask": mask}, 0.0)
    assert torch.equal(kept["context"], context) and torch.equal(kept["context_mask"], mask)


def test_pooled_text_condition() -> None:
    """pooled_text adds a masked-mean caption vector to c: padding is ignored, the caption matters."""
    config = dataclasses.replace(TINY, conditioning="text", text_dim=12, pooled_text=True)
    model = randomized(config)
    x, t, r, _ = tiny_inputs(B=2)
    context = torch.randn(2, 5, 12)
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    pooled = model.cond_embedder.embed({"context": context, "context_mask": mask}).pooled
    assert pooled.shape == (2, config.hidden_size)
    normed = model.cond_embedder.norm(context[0, :3])
    torch.testing.assert_close(pooled[0], model.cond_embedder.pool_mlp(normed.mean(0)))
    out = model(x, t, r, context=context, context_mask=mask)
    changed = context.clone()
    changed[0, 3:] = 100.0  # padded tokens of row 0: neither pooled nor attended
    torch.testing.assert_close(model(x, t, r, context=changed, context_mask=mask), out)
    # The pooled path alone carries the caption: with cross-attention's output at zero the output still moves.
    with torch.no_grad():
        for block in model.blocks:
            block.cross_attn.proj.weight.zero_()
    assert not torch.allclose(model(x, t, r, context=context.flip(0), context_mask=mask.flip(0))[0], out[0])
    default = build_model(TINY, conditioning="text", text_dim=12)
    assert default.cond_embedder.pool_mlp is None  # off by default


def test_unconditional_model() -> None:
    model = randomized(dataclasses.replace(TINY, conditioning="none"))
    x, t, r, y = tiny_inputs()
    assert model(x, t, r).shape == x.shape
    assert model.null_cond({}) == {} and model.drop_cond({}, 0.5) == {}
    with pytest.raises(TimError, match="cond keys"):
        model(x, t, r, y=y)


def test_ablation_flags() -> None:
    D, depth = TINY.hidden_size, TINY.depth
    full = build_model(TINY)
    no_interval = build_model(TINY, interval_attention=False)
    no_decoupled = build_model(TINY, decoupled_time_embedding=False)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(full) - count(no_interval) == depth * 3 * D * D
    assert count(full) - count(no_decoupled) == count(full.dt_embedder)
    t, r = torch.rand(4), torch.rand(4)
    t_emb, dt_emb = no_decoupled.time_embeddings(t, r)
    torch.testing.assert_close(dt_emb, no_decoupled.t_embedder(t - r))


def test_bad_inputs_raise_tim_error() -> None:
    model = build_model(TINY)
    x, t, r, y = tiny_inputs()
    with pytest.raises(TimError, match="divisible"):
        model(x[..., :7], t, r, y=y)
    with pytest.raises(TimError, match="x_t has shape"):
        model(x[:, :3], t, r, y=y)
    with pytest.raises(TimError, match="time inputs"):
        model(x, t[:2], r, y=y)
    with pytest.raises(TimError, match="cond keys"):
        model(x, t, r)
    # Labels: out of range (an IndexError, or a CUDA device-side assert, without the check),
    # floating, or a different batch size than x_t.
    for bad_y, message in [
        (torch.tensor([0, 11, 1]), "outside"),
        (torch.tensor([0, -1, 1]), "outside"),
        (y.float(), "integer class labels"),
        (y[:2], "rows for a batch"),
    ]:
        with pytest.raises(TimError, match=message):
            model(x, t, r, y=bad_y)
    with pytest.raises(TimError, match="x_t has shape"):
        model(x.long(), t, r, y=y)
    with pytest.raises(TimError, match="head dim"):
        TiMConfig(hidden_size=30, num_heads=3)
    with pytest.raises(TimError, match="conditioning"):
        TiMConfig(conditioning="label")
    with pytest.raises(TimError, match="unknown model preset"):
        build_model("TiM-Z/9")
    with pytest.raises(TimError, match="unknown TiMConfig fields"):
        build_model("TiM-tiny", hidden=3)


def test_small_presets_build_and_run() -> None:
    digits = build_model("TiM-digits")
    x = torch.randn(2, *digits.sample_shape)
    assert digits(x, torch.rand(2), torch.zeros(2), y=torch.tensor([0, 9])).shape == (2, 1, 8, 8)
    assert sum(p.numel() for p in digits.parameters()) < 2_000_000


def test_rope_scale_interpolates_positions() -> None:
    model = randomized(TINY)
    x, t, r, y = tiny_inputs(H=16, W=16)
    out = model(x, t, r, y=y)
    model.set_rope_scale(0.5)
    assert model.config.rope_scale == 0.5
    scaled = model(x, t, r, y=y)
    assert not torch.allclose(out, scaled)
    reference = randomized(dataclasses.replace(TINY, rope_scale=0.5))
    torch.testing.assert_close(reference(x, t, r, y=y), scaled)
    with pytest.raises(TimError, match="rope scale"):
        model.set_rope_scale(0.0)


def test_explicit_flash_backend_needs_the_package() -> None:
    from tim.models.layers import flash_attn_available

    model = build_model(TINY)
    if flash_attn_available():
        model.set_attention_backend("flash")
    else:
        with pytest.raises(TimError, match="flash-attn"):
            model.set_attention_backend("flash")


@pytest.mark.gpu
def test_cuda_matches_cpu_and_bf16_autocast_is_finite() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    model = randomized(TINY)
    x, t, r, y = tiny_inputs(H=8, W=12)
    expected = model(x, t, r, y=y)
    cuda = model.cuda()
    inputs = [v.cuda() for v in (x, t, r, y)]
    torch.testing.assert_close(cuda(*inputs[:3], y=inputs[3]).cpu(), expected, atol=1e-4, rtol=1e-4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = cuda(*inputs[:3], y=inputs[3])
    assert torch.isfinite(out).all() and (out.float().cpu() - expected).abs().max() < 0.1
    _, tangent = torch.func.jvp(
        lambda s: cuda(inputs[0], s, inputs[2], y=inputs[3]), (inputs[1],), (torch.ones_like(inputs[1]),)
    )
    assert torch.isfinite(tangent).all()


def test_with_features_wrapper_routes_forward() -> None:
    from tim.models import WithFeatures

    model = randomized(TINY)
    x, t, r, y = tiny_inputs()
    out, features = WithFeatures(model)(x, t, r, y=y)
    expected_out, expected_features = model.forward_with_features(x, t, r, y=y)
    assert torch.equal(out, expected_out) and torch.equal(features, expected_features)
    assert list(WithFeatures(model).state_dict()) == [f"model.{k}" for k in model.state_dict()]


def test_bfloat16_autocast_and_bfloat16_weights_stay_close() -> None:
    model = randomized(TINY)
    x, t, r, y = tiny_inputs(H=8, W=12)
    expected = model(x, t, r, y=y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        autocast_out = model(x, t, r, y=y)
    bf16_out = model.to(torch.bfloat16)(x.bfloat16(), t.bfloat16(), r.bfloat16(), y=y)
    scale = expected.abs().max()
    for out in (autocast_out, bf16_out):
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
        assert (out.float() - expected).abs().max() < 0.05 * scale  # bf16 has ~3 significant digits
