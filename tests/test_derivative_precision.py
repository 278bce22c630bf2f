"""DDE precision modes (objective.derivative_precision): each mode against a float64 JVP on a tiny
TiM, the batched 2N-row call against the two calls it replaced, the float32-conditioning switch of
the networks, and the CUDA-only TF32 switches.

The tolerances are not guessed: ``benchmarks/bench_derivative_precision.py --tiny`` measures the
target error's bias and standard deviation per (t, r) region on this exact network (random
TiM-tiny, adaLN-Zero layers ~ N(0, 0.02), seed 0); docs/benchmarks.md ("DDE precision modes") has
the table. Each bound below is twice the largest region's measured value at eps = 0.005.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from tim.errors import TimError
from tim.models import MLPConfig, TiMMLP, build_model
from tim.network import conditioning_in_float32, float32_conditioning
from tim.objective import (
    DERIVATIVE_PRECISIONS,
    TransitionLoss,
    build_objective,
    dde_derivative,
    derivative_precision_context,
    jvp_derivative,
    resolve_derivative_precision,
)
from tim.paths import LinearPath, expand_time

EPS = 0.005
# Measured on the random TiM-tiny (bench_derivative_precision.py --tiny --rows 8 --repeats 16),
# relative to RMS |v_t|, largest over the four regions at eps = 0.005 (the long jumps t >= 0.8,
# r = 0, in every mode): (bias, std). The bias is the raw one (noise floor included), as here.
MEASURED = {"fp32": (1.4e-5, 2.4e-5), "mixed": (8.0e-4, 1.0e-3), "bf16": (1.9e-2, 3.3e-2)}


def tiny_network(seed: int = 0) -> nn.Module:
    """TiM-tiny with its adaLN-Zero layers drawn from N(0, 0.02), so that F and dF/dt are not 0."""
    torch.manual_seed(seed)
    model = build_model("TiM-tiny").float().eval()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(1)
        for p in model.parameters():
            if p.abs().max() == 0:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.02)
    return model


def rows(n: int = 8, seed: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 8, 8, generator=g)
    z = torch.randn(n, 4, 8, 8, generator=g)
    t = 0.1 + 0.9 * torch.rand(n, generator=g)
    r = torch.where(torch.arange(n) % 2 == 0, torch.zeros(n), t * torch.rand(n, generator=g) * 0.9)
    return x, z, t, r, {"y": torch.arange(n) % 10}


def two_calls(F: nn.Module, x: torch.Tensor, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor, cond: dict):
    """The derivative as it was computed before the passes were batched: two calls of N rows."""
    path = LinearPath()
    t_plus = (t + EPS).clamp(max=path.t_max)
    t_minus = torch.maximum(t - EPS, r.clamp(min=path.t_min))
    with torch.no_grad():
        F_plus = F(path.interpolate(x, z, t_plus).x_t, t_plus, r, **cond)
        F_minus = F(path.interpolate(x, z, t_minus).x_t, t_minus, r, **cond)
    return (F_plus - F_minus) / expand_time(t_plus - t_minus, x), torch.cat([F_plus, F_minus])


def test_default_mode_is_auto_and_bad_mode_is_one_line() -> None:
    assert TransitionLoss().derivative_precision == "auto"
    assert DERIVATIVE_PRECISIONS == ("auto", "fp32", "tf32", "mixed", "bf16")
    with pytest.raises(TimError, match="unknown derivative_precision 'fp16'"):
        build_objective("tim", derivative_precision="fp16")


def test_batched_fp32_call_is_bit_identical_outside_the_network() -> None:
    """With a network whose rows do not interact (a closed form), one 2N call == two N calls, bitwise."""

    def F(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.sin(3 * x_t) * expand_time(t, x_t) ** 2 + expand_time(r, x_t)

    x, z, t, r, _ = rows()
    assert torch.equal(dde_derivative(F, LinearPath(), x, z, t, r), two_calls(F, x, z, t, r, {})[0])


def test_batched_fp32_call_matches_two_calls_to_float32_rounding() -> None:
    """On a TiM the matmul kernels block differently for N and 2N rows, so each F may differ by
    float32 rounding; the derivative then differs by about u32 |F| / eps. Measured on this network:
    bit-identical for some N (16 here), up to ~2e-5 relative otherwise. Bound: 64 ulp of max |F|."""
    model = tiny_network()
    for n in (1, 3, 8, 16):
        x, z, t, r, cond = rows(n, seed=n)
        old, F_values = two_calls(model, x, z, t, r, cond)
        new = dde_derivative(model, LinearPath(), x, z, t, r, cond)
        width = expand_time(
            (t + EPS).clamp(max=1.0) - torch.maximum(t - EPS, r.clamp(min=LinearPath().t_min)), x
        )
        bound = 64 * torch.finfo(torch.float32).eps * F_values.abs().max() / width
        assert ((new - old).abs() <= bound).all(), n


def _target_errors(mode: str, repeats: int = 8, jitter: float = 0.002) -> tuple[float, float]:
    """(bias, std) of the target error of ``mode`` over jittered repeats, relative to RMS |v_t|."""
    model, path = tiny_network(), LinearPath()
    reference = copy.deepcopy(model).double()
    reference.set_attention_backend("math")
    x, z, t0, r, cond = rows()
    g = torch.Generator().manual_seed(7)
    errors, v_sq = [], []
    for _ in range(repeats):
        t = torch.maximum(t0 + jitter * (2 * torch.rand(8, generator=g) - 1), r + 0.01).clamp(max=1.0)
        x64, z64, t64, r64 = x.double(), z.double(), t.double(), r.double()
        exact = jvp_derivative(reference, path, x64, z64, t64, r64, cond)
        d = dde_derivative(model, path, x, z, t, r, cond, epsilon=EPS, precision=mode).double()
        errors.append(
            (
                path.transition_target(x64, z64, t64, r64, d)
                - path.transition_target(x64, z64, t64, r64, exact)
            ).flatten(1)
        )
        v_sq.append(path.interpolate(x64, z64, t64).v_t.flatten(1).square().sum(1))
    e = torch.stack(errors)  # (K, N, D)
    rms_v = math.sqrt(float(torch.stack(v_sq).mean()))
    mean = e.mean(0)
    variance = float((e - mean).square().sum(-1).sum(0).mean()) / (repeats - 1)
    return math.sqrt(float(mean.square().sum(-1).mean())) / rms_v, math.sqrt(variance) / rms_v


@pytest.mark.parametrize("mode", ["fp32", "tf32", "mixed", "bf16"])
def test_each_mode_against_the_float64_jvp(mode: str) -> None:
    """Bias and spread of the DDE target vs the exact (float64 JVP) target within 2x the measured
    worst region (tf32 is fp32 off CUDA). The bias bound adds the noise floor 3 std / sqrt(K)."""
    bias, std = _target_errors(mode)
    measured_bias, measured_std = MEASURED["fp32" if mode == "tf32" else mode]
    assert std <= 2 * measured_std, (bias, std)
    assert bias <= 2 * measured_bias + 3 * std / math.sqrt(8), (bias, std)


def test_mixed_mode_is_more_accurate_than_bf16_and_differs_from_it() -> None:
    """The float32 conditioning is really used: mixed and bf16 give different, ordered errors."""
    mixed, bf16 = _target_errors("mixed"), _target_errors("bf16")
    assert math.hypot(*mixed) < math.hypot(*bf16)


def test_tf32_equals_fp32_off_cuda_and_modes_ignore_outer_autocast() -> None:
    model = tiny_network()
    x, z, t, r, cond = rows()
    fp32 = dde_derivative(model, LinearPath(), x, z, t, r, cond)
    assert torch.equal(dde_derivative(model, LinearPath(), x, z, t, r, cond, precision="tf32"), fp32)
    bf16 = dde_derivative(model, LinearPath(), x, z, t, r, cond, precision="bf16")
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a bf16 training step around the fp32 mode
        assert torch.equal(dde_derivative(model, LinearPath(), x, z, t, r, cond, precision="fp32"), fp32)
        assert torch.equal(dde_derivative(model, LinearPath(), x, z, t, r, cond, precision="bf16"), bf16)
    assert bf16.dtype == torch.float32 and not conditioning_in_float32()


def test_auto_is_mixed_under_bf16_autocast_and_fp32_otherwise() -> None:
    """auto follows the caller's autocast: bit-identical to mixed inside bf16 autocast, to fp32
    outside it and inside fp16 autocast; the explicit modes are never changed."""
    model, path = tiny_network(), LinearPath()
    x, z, t, r, cond = rows()
    fp32 = dde_derivative(model, path, x, z, t, r, cond, precision="fp32")
    mixed = dde_derivative(model, path, x, z, t, r, cond, precision="mixed")
    assert not torch.equal(fp32, mixed)
    assert torch.equal(dde_derivative(model, path, x, z, t, r, cond), fp32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(dde_derivative(model, path, x, z, t, r, cond), mixed)
        assert resolve_derivative_precision("auto", x.device) == "mixed"
        assert resolve_derivative_precision("bf16", x.device) == "bf16"
    with torch.autocast("cpu", dtype=torch.float16):
        assert torch.equal(dde_derivative(model, path, x, z, t, r, cond), fp32)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        assert resolve_derivative_precision("auto", x.device) == "fp32"


def test_auto_on_cuda_follows_the_tf32_switch() -> None:
    """On CUDA, auto is tf32 when the step's float32 matmuls may use TF32 (train.tf32) and fp32
    when they may not; a process-global Python setting, so this runs without a GPU."""
    cuda = torch.device("cuda")
    assert resolve_derivative_precision("auto", cuda) == "fp32"  # the process default: highest
    try:
        torch.set_float32_matmul_precision("high")
        assert resolve_derivative_precision("auto", cuda) == "tf32"
        assert resolve_derivative_precision("auto", torch.device("cpu")) == "fp32"
        assert resolve_derivative_precision("fp32", cuda) == "fp32"
    finally:
        torch.set_float32_matmul_precision("highest")


def test_float32_conditioning_switch_in_the_network() -> None:
    """Under bf16 autocast with the switch on, input and time embeddings, modulation and output are float32;
    without autocast the switch changes nothing (bitwise)."""
    model = tiny_network()
    x, _, t, r, cond = rows()
    seen: dict[str, torch.dtype] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, o.dtype))
        for name, module in [
            ("patch", model.patch_embed),
            ("t_embedder", model.t_embedder),
            ("modulation", model.blocks[0].modulation),
            ("final", model.final_layer),
            ("qkv", model.blocks[0].attn.qkv),
        ]
    ]
    with torch.no_grad():
        plain = model(x, t, r, **cond)
        with float32_conditioning():
            assert torch.equal(model(x, t, r, **cond), plain)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(x, t, r, **cond)
        assert seen == {
            "patch": torch.float32,
            "t_embedder": torch.float32,
            "modulation": torch.float32,
            "final": torch.float32,
            "qkv": torch.bfloat16,
        }
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(x, t, r, **cond)
        assert seen["patch"] == seen["modulation"] == seen["final"] == torch.bfloat16
    for hook in hooks:
        hook.remove()
    assert out.dtype == torch.float32 and not conditioning_in_float32()


def test_mlp_honours_the_switch() -> None:
    torch.manual_seed(0)
    mlp = TiMMLP(MLPConfig(dim=3, hidden_size=16, depth=2, zero_init_output=False)).eval()
    x, t, r = torch.randn(4, 3), torch.rand(4), torch.zeros(4)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = mlp(x, t, r)
        with float32_conditioning():
            mixed = mlp(x, t, r)
    assert bf16.dtype == torch.bfloat16 and mixed.dtype == torch.float32


@pytest.mark.parametrize("mode", DERIVATIVE_PRECISIONS)
def test_loss_runs_under_bf16_training_in_every_mode(mode: str) -> None:
    model = tiny_network()
    x = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    loss = TransitionLoss(derivative_precision=mode)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(model, x, cond={"y": torch.arange(8) % 10}, generator=torch.Generator().manual_seed(1))
    out.loss.backward()
    assert torch.isfinite(out.loss)


def test_precision_context_sets_and_restores_cuda_matmul_precision() -> None:
    """The CUDA flags are process-global Python settings, so this runs without a GPU."""
    assert torch.get_float32_matmul_precision() == "highest"
    cudnn = torch.backends.cudnn.allow_tf32
    cuda = torch.device("cuda")
    with derivative_precision_context("tf32", cuda):
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    with derivative_precision_context("fp32", cuda):
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
    assert torch.backends.cudnn.allow_tf32 == cudnn
    with derivative_precision_context("fp32", torch.device("cpu")):
        assert torch.get_float32_matmul_precision() == "highest"
    assert torch.get_float32_matmul_precision() == "highest"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", DERIVATIVE_PRECISIONS)
def test_each_mode_on_cuda_against_the_float64_jvp(mode: str) -> None:
    device = torch.device("cuda")
    model, path = tiny_network().to(device), LinearPath()
    reference = copy.deepcopy(model).double()
    reference.set_attention_backend("math")
    x, z, t, r, cond = (v.to(device) if torch.is_tensor(v) else v for v in rows())
    cond = {"y": cond["y"].to(device)}
    exact = jvp_derivative(reference, path, x.double(), z.double(), t.double(), r.double(), cond)
    d = dde_derivative(model, path, x, z, t, r, cond, precision=mode).double()
    error = float((d - exact).norm() / exact.norm())
    # d_error at eps = 0.005 on this network on the CPU (docs/benchmarks/derivative-precision.md):
    # fp32 0.8-3e-4, mixed 1.2-1.5e-2, bf16 0.28-0.44, TF32 emulated on the CPU 2.2-3.1e-2 (auto
    # outside autocast is fp32 here: the test leaves TF32 off). Bounds: about 3x the measured worst.
    assert error < {"auto": 1e-3, "fp32": 1e-3, "tf32": 0.1, "mixed": 0.05, "bf16": 0.9}[mode]
    assert torch.get_float32_matmul_precision() == "highest"


def test_train_tf32_switch_is_cuda_only_and_restored() -> None:
    from tim.training.config import load_config
    from tim.training.loop import tf32_matmuls

    assert load_config("digits").train.tf32 is True
    assert load_config("digits", ["train.tf32=false"]).train.tf32 is False
    cudnn = torch.backends.cudnn.allow_tf32
    with tf32_matmuls(True, torch.device("cpu")):
        assert torch.get_float32_matmul_precision() == "highest"
    with tf32_matmuls(True, torch.device("cuda")):
        assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    with tf32_matmuls(False, torch.device("cuda")):
        assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
    assert torch.get_float32_matmul_precision() == "highest" and torch.backends.cudnn.allow_tf32 == cudnn


@pytest.mark.slow  # ~10 s: two traces of the network
def test_mixed_mode_compiles_without_graph_breaks() -> None:
    """fullgraph=True raises on a graph break: the module flag and the autocast regions trace, and
    the flag is guarded on (fp32 after mixed is the fp32 graph)."""
    model = tiny_network()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager", dynamic=False)
    x, z, t, r, cond = rows(4)
    with torch.no_grad():
        F_max = model(x, t, r, **cond).abs().max().item()
    for mode in ("mixed", "fp32"):
        eager = dde_derivative(model, LinearPath(), x, z, t, r, cond, precision=mode)
        traced = dde_derivative(compiled, LinearPath(), x, z, t, r, cond, precision=mode)
        # a difference quotient: 1/(2 eps) x the rounding of F (bf16 for the trunk of mixed)
        tolerance = {"mixed": 2**-8, "fp32": 2**-20}[mode] * F_max / (2 * EPS)
        torch.testing.assert_close(traced, eager, atol=tolerance, rtol=0)
