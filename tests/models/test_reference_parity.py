"""Parity with the published TiM network on the reference tensors of shared/specs/refs.

The tiny class-conditional reference model (random weights under the released key names, config in
the file metadata) is loaded through our converter; our forward pass and its intermediates must
match the published code within 1e-4 (float32), and the network-dependent parts of the DDE, loss
and sampler references are reproduced with tim.objective / tim.samplers when those exist.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tim.models import TiM, load_released_checkpoint
from tim.models.layers import timestep_features

FORWARD_TOL = 1e-4  # shared/specs/README.md: forward tolerance of a faithful float32 implementation


def load(specs: Path, name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(specs / "refs" / f"{name}.safetensors"))


@pytest.fixture
def reference_model(specs: Path) -> TiM:
    return load_released_checkpoint(specs / "refs" / "tiny_c2i_weights.safetensors")


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float = FORWARD_TOL) -> None:
    torch.testing.assert_close(actual.float(), expected.float(), atol=atol, rtol=0)


def test_forward_output_and_intermediates(reference_model: TiM, specs: Path) -> None:
    ref = load(specs, "tiny_c2i_forward")
    model = reference_model
    captured: dict[str, torch.Tensor] = {}

    def keep(name: str, transform=lambda o: o):  # noqa: ANN001, ANN202 - a forward hook returning None
        return lambda module, inputs, output: captured.__setitem__(name, transform(output))

    model.blocks[0].modulation.register_forward_hook(keep("block0_adaLN", lambda o: o[:, 0]))
    for i, block in enumerate(model.blocks):
        block.register_forward_hook(keep(f"block{i}_out"))
    model.final_layer.register_forward_hook(keep("final_tokens"))
    model.patch_embed.register_forward_hook(keep("x_embed", lambda o: o.flatten(2).transpose(1, 2)))
    with torch.no_grad():
        out = model(ref["x"], ref["t"], ref["r"], y=ref["y"])
        t_emb, delta_emb = model.time_embeddings(ref["t"], ref["r"])
        c = t_emb + delta_emb + model.cond_embedder.table(ref["y"])
    close(out, ref["out"])
    close(timestep_features(ref["t"]), ref["t_freq"])
    close(t_emb, ref["t_emb"])
    close(delta_emb, ref["delta_emb"])
    close(c, ref["c"])
    for name in ("x_embed", "block0_adaLN", "block0_out", "block1_out", "final_tokens"):
        close(captured[name], ref[name])
    cos, sin = model.rope(4, 4, torch.device("cpu"))
    close(cos, ref["rope_cos"], atol=1e-6)
    close(sin, ref["rope_sin"], atol=1e-6)
    assert ref["out"].abs().max() > 0.1  # the reference is not trivially zero


def test_forward_float64(reference_model: TiM, specs: Path) -> None:
    ref = load(specs, "tiny_c2i_forward")
    model = reference_model.double()
    with torch.no_grad():
        out = model(ref["x"].double(), ref["t"].double(), ref["r"].double(), y=ref["y"])
    torch.testing.assert_close(out, ref["out_float64"].double(), atol=1e-5, rtol=0)


def recover_sample_labels(model: TiM, ref: dict[str, torch.Tensor]) -> torch.Tensor:
    """The class labels of the reference sampling run (the file stores none).

    Step 0 is unguided, so its 3 rows are conditional calls: for each row exactly one of the 11
    labels reproduces the stored output (the others are off by > 0.1).
    """
    x, t, r = (ref[f"main.step0.model_in_{k}"] for k in "xtr")
    with torch.no_grad():
        errors = torch.stack(
            [
                (model(x, t, r, y=torch.full((3,), label)) - ref["main.step0.model_out"])
                .flatten(1)
                .abs()
                .amax(1)
                for label in range(11)
            ]
        )  # (11 labels, 3 rows)
    best = errors.min(dim=0)
    assert (best.values < FORWARD_TOL).all() and (errors.sort(dim=0).values[1] > 0.1).all()
    return best.indices


def test_sampler_model_calls(reference_model: TiM, specs: Path) -> None:
    """Every network call of the reference 4-step CFG run (steps 1-3 stack [cond; null] rows)."""
    ref = load(specs, "tiny_c2i_sample")
    y = recover_sample_labels(reference_model, ref)
    assert ref["main.cfg_applied"].tolist() == [0, 1, 1, 1]
    for step in range(4):
        x, t, r = (ref[f"main.step{step}.model_in_{k}"] for k in "xtr")
        labels = y if step == 0 else torch.cat([y, reference_model.null_cond({"y": y})["y"]])
        with torch.no_grad():
            close(reference_model(x, t, r, y=labels), ref[f"main.step{step}.model_out"])


# ------------------------------------------------------------------------------------------------
# Network-dependent parts of the DDE, loss and sampler references (with tim.objective/samplers).


def test_dde_derivative(reference_model: TiM, specs: Path) -> None:
    """No clamping bites here: every row with r < t has r <= t - eps and t + eps <= 1."""
    from tim.objective import TransitionLoss

    ref = load(specs, "tiny_c2i_dde")
    t, r = ref["t"], ref["r"]
    assert ((t - 0.005 >= r) | (t == r)).all() and (t + 0.005 <= 1).all()
    objective = TransitionLoss()
    with torch.no_grad():
        F = reference_model(ref["OT_FM.x_t"], t, r, y=ref["y"])
        dF_dt = objective.time_derivative(reference_model, ref["x"], ref["z"], t, r, {"y": ref["y"]})
    close(F, ref["OT_FM.F"])
    n_diffusion = int(ref["n_diffusion"])
    assert dF_dt[:n_diffusion].abs().max() == 0
    torch.testing.assert_close(dF_dt, ref["OT_FM.dde"], atol=2e-3, rtol=1e-3)
    model64 = reference_model.double()
    with torch.no_grad():
        dF_dt64 = objective.time_derivative(
            model64, ref["x"].double(), ref["z"].double(), t.double(), r.double(), {"y": ref["y"]}
        )
    # The published timestep features are computed in float32 even in a float64 model (s.float()),
    # an O(1e-7) input error that the 1/(2 eps) = 100 difference quotient lifts to O(1e-5).
    torch.testing.assert_close(dF_dt64, ref["OT_FM.dde_float64"].double(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("direction_loss", [True, False])
def test_weighted_loss(reference_model: TiM, specs: Path, direction_loss: bool) -> None:
    """Our objective on the reference (x, z, t, r, y): prediction, target, per-sample and weighted loss.

    The published loss applies nan_to_num and does not clamp t - eps >= r; neither matters on these
    finite rows, all of which satisfy t - eps >= r.
    """
    from tim.objective import TransitionLoss

    ref = load(specs, "tiny_c2i_loss")
    t, r, y = ref["dde.t"], ref["dde.r"], ref["y"]
    assert ((t - 0.005 >= r) | (t == r)).all()
    objective = TransitionLoss(direction_loss=direction_loss)
    with torch.no_grad():
        out = objective(reference_model, ref["x"], cond={"y": y}, z=ref["z"], t=t, r=r)
        F_pred = reference_model(ref["dde.x_t"], t, r, y=y)
        dF_dt = objective.time_derivative(reference_model, ref["x"], ref["z"], t, r, {"y": y})
    close(F_pred, ref["dde.F_pred"])
    torch.testing.assert_close(dF_dt, ref["dde.dF_dv_dt"], atol=2e-3, rtol=1e-3)
    prefix = "dde." if direction_loss else "dde.nodir."
    if direction_loss:
        raw = ref["dde.denoising_loss"]
        expected = ref["dde.weight_time"] * ref["dde.weight_adaptive"] * raw
        torch.testing.assert_close(out.per_sample, expected, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.loss, ref[f"{prefix}weighted_loss"], atol=1e-4, rtol=1e-4)


def test_sampling_run(reference_model: TiM, specs: Path) -> None:
    """4 uniform steps, CFG 1.5 with the published strict interval (step 0 at t = 1 unguided)."""
    from tim.samplers import sample

    ref = load(specs, "tiny_c2i_sample")
    y = recover_sample_labels(reference_model, ref)
    trajectory = ref["main.trajectory"]
    result = sample(
        reference_model,
        trajectory[0],
        steps=4,
        cond={"y": y},
        uncond=reference_model.null_cond({"y": y}),
        guidance_scale=1.5,
        interval="strict",
        return_trajectory=True,
    )
    torch.testing.assert_close(result.times.float(), ref["main.t_steps"])
    assert result.nfe == 1 + 3 * 2  # 1 unguided step + 3 guided steps (a CFG pair counts 2): 7, not 8
    for step, state in enumerate(result.trajectory):
        close(state, trajectory[step])


def test_jvp_derivative_agrees_with_reference_dde(reference_model: TiM, specs: Path) -> None:
    """The objective's JVP backend runs through the model's automatic math-attention path and
    agrees with the published central difference to its O(eps^2) error."""
    from tim.objective import TransitionLoss

    ref = load(specs, "tiny_c2i_dde")
    assert reference_model.config.attention_backend == "auto"
    objective = TransitionLoss(derivative="jvp")
    dF_dt = objective.time_derivative(
        reference_model, ref["x"], ref["z"], ref["t"], ref["r"], {"y": ref["y"]}
    )
    torch.testing.assert_close(dF_dt, ref["OT_FM.dde"], atol=2e-3, rtol=1e-3)
