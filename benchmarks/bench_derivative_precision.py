"""Bias and variance of the DDE target in each derivative precision mode, against a float64 JVP.

TiM's target (arXiv 2509.04394, Eq. (10) and the state transition identity) uses dF/dt from a
central difference of two no-grad network passes. Its error enters the regression target as
``e = target(d_DDE) - target(d_exact)`` (on the linear path ``e = -(t - r) (d_DDE - d_exact)``).
Rounding noise that is zero-mean only adds variance to the target (the regression's fixed point is
unchanged); a systematic error (truncation of the stencil, rounding that does not average out)
biases it. So each row is evaluated ``--repeats`` times at jittered times t + U(-j, j) (r fixed),
each time against the exact derivative at the same jittered point, a float64 ``torch.func.jvp`` of
a float64 copy of the network:

* bias     = RMS over rows of the per-row mean error, divided by the RMS of |v_t|;
* std      = RMS over rows and repeats of the error minus its row mean (unbiased), divided by the
  RMS of |v_t|; the bias estimate carries a noise floor of about std / sqrt(repeats);
* d_error  = RMS of |d_DDE - d_exact| over RMS |d_exact| (the derivative's own relative error);
* bias_debiased = sqrt(max(bias^2 - std^2 / repeats, 0)): the bias with its noise floor removed;
* worst_row_bias = the largest per-row |mean error| / |v_t|.

Rows are drawn per (t, r) region (long jumps from high noise are where the 1-step sampler lives):
``long`` t in [0.8, 1], r = 0; ``to_data`` t in [0.1, 0.8), r = 0; ``medium`` r > 0, t - r >= 0.1;
``short`` r > 0, t - r < 0.1. Every mode of :func:`tim.objective.dde_derivative` is run exactly as
training runs it (one 2N-row call, one-sided stencils at the edges); the tf32 mode is identical to
fp32 off CUDA and is skipped there unless asked for, but ``tf32-emulated`` measures it on a CPU
(:class:`EmulatedTF32`: every matmul's float32 operands rounded to TF32, float32 accumulation).

    python benchmarks/bench_derivative_precision.py --threads 1 --trained /tmp/run/pretrained
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time

import torch
import torch.nn.functional as F_nn
from torch import nn
from torch.overrides import TorchFunctionMode

from tim.models import build_model
from tim.objective import dde_derivative, jvp_derivative
from tim.paths import LinearPath

# region -> (t low, t high, r rule): r = 0, or r drawn so that t - r lies in [lo, hi)
REGIONS: dict[str, tuple[float, float, str]] = {
    "long (t>=0.8, r=0)": (0.8, 1.0, "zero"),
    "to_data (t<0.8, r=0)": (0.1, 0.8, "zero"),
    "medium (r>0, t-r>=0.1)": (0.2, 1.0, "medium"),
    "short (r>0, t-r<0.1)": (0.15, 1.0, "short"),
}


def round_to_tf32(x: torch.Tensor) -> torch.Tensor:
    """float32 -> the nearest TF32 value (10 explicit mantissa bits, ties away from zero), as float32."""
    if x.dtype != torch.float32:
        return x
    bits = x.contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


class EmulatedTF32(TorchFunctionMode):
    """CUDA's TF32 matmuls on a CPU: the float32 operands of every matmul, linear layer, convolution
    and attention product are rounded to TF32 and multiplied with float32 accumulation (as tensor
    cores do); everything else stays float32. Measures what ``derivative_precision=tf32`` does to the
    target without a GPU."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, D105
        kwargs = kwargs or {}
        if func in (
            F_nn.linear,
            F_nn.conv2d,
            torch.matmul,
            torch.bmm,
            torch.Tensor.matmul,
            torch.Tensor.__matmul__,
        ):
            rounded = [round_to_tf32(a) if torch.is_tensor(a) and i < 2 else a for i, a in enumerate(args)]
            return func(*rounded, **kwargs)
        if func is F_nn.scaled_dot_product_attention:
            q, k, v = args[:3]
            mask = kwargs.get("attn_mask", args[3] if len(args) > 3 else None)
            tf32 = round_to_tf32  # the mode is off inside this handler: round here
            scores = torch.matmul(tf32(q), tf32(k).transpose(-2, -1)) / math.sqrt(q.shape[-1])
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            return torch.matmul(tf32(torch.softmax(scores, dim=-1)), tf32(v))
        return func(*args, **kwargs)


def dde_in_mode(mode: str, *args, **kwargs) -> torch.Tensor:  # noqa: ANN002, ANN003
    """:func:`dde_derivative` in ``mode``; ``tf32-emulated`` is fp32 under :class:`EmulatedTF32`."""
    if mode != "tf32-emulated":
        return dde_derivative(*args, precision=mode, **kwargs)
    with EmulatedTF32():
        return dde_derivative(*args, precision="fp32", **kwargs)


def perturbed(model: nn.Module, std: float = 0.02, seed: int = 1) -> nn.Module:
    """A random network whose adaLN-Zero layers are not zero (else F = 0 and dF/dt = 0)."""
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(seed)
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0.0, std)
    return model


def region_times(region: str, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(t, r) rows of one region, float64."""
    low, high, rule = REGIONS[region]
    t = low + (high - low) * torch.rand(n, generator=generator, dtype=torch.float64)
    if rule == "zero":
        return t, torch.zeros_like(t)
    gap = torch.rand(n, generator=generator, dtype=torch.float64)
    if rule == "medium":
        gap = 0.1 + (t - 0.15) * gap  # t - r in [0.1, t - 0.05): r >= 0.05
    else:
        gap = 0.02 + 0.08 * gap  # t - r in [0.02, 0.1)
    return t, t - gap


def study(
    name: str,
    model: nn.Module,
    x: torch.Tensor,
    cond: dict[str, torch.Tensor],
    *,
    modes: list[str],
    epsilons: list[float],
    repeats: int,
    jitter: float,
    seed: int,
) -> dict:
    """Bias/variance of every (mode, eps) on every region for one network and one batch of data."""
    path = LinearPath()
    model = model.float().eval()
    reference = copy.deepcopy(model).double()
    if hasattr(reference, "set_attention_backend"):
        reference.set_attention_backend("math")  # forward-mode AD (SDPA has no forward rule on CPU)
    n = x.shape[0]
    out: dict = {"network": name, "rows_per_region": n, "repeats": repeats, "jitter": jitter, "regions": {}}
    seconds: dict[str, float] = {}
    for index, region in enumerate(REGIONS):
        generator = torch.Generator().manual_seed(seed + index)
        t0, r = region_times(region, n, generator)
        z = torch.randn(x.shape, generator=generator)
        errors: dict[str, list[torch.Tensor]] = {}
        d_errors: dict[str, list[float]] = {}
        d_norms: list[float] = []
        v_sq = []
        for _ in range(repeats):
            shift = jitter * (2 * torch.rand(n, generator=generator, dtype=torch.float64) - 1)
            t = (t0 + shift).clamp(max=path.t_max)
            t = torch.maximum(t, r + 0.01).float().double()  # the float32 times the DDE sees
            x64, z64 = x.double(), z.double()
            exact = jvp_derivative(reference, path, x64, z64, t, r, cond)
            target_exact = path.transition_target(x64, z64, t, r, exact)
            v_sq.append(path.interpolate(x64, z64, t).v_t.flatten(1).square().sum(1))
            d_norms.append(float(exact.square().sum()))
            for mode in modes:
                for eps in epsilons:
                    key = f"{mode} eps={eps}"
                    started = time.perf_counter()
                    d = dde_in_mode(mode, model, path, x, z, t.float(), r.float(), cond, epsilon=eps)
                    seconds[key] = seconds.get(key, 0.0) + time.perf_counter() - started
                    target = path.transition_target(x64, z64, t, r, d.double())
                    errors.setdefault(key, []).append((target - target_exact).flatten(1))
                    d_errors.setdefault(key, []).append(float((d.double() - exact).square().sum()))
        rms_v = math.sqrt(float(torch.stack(v_sq).mean()))
        v_rows = torch.stack(v_sq).mean(0).sqrt()  # (n,)
        rows = {}
        for key, values in errors.items():
            e = torch.stack(values)  # (K, n, D)
            mean = e.mean(0)  # (n, D): per-row bias
            spread = (e - mean).square().sum(-1).sum(0) / max(repeats - 1, 1)  # (n,) unbiased variance
            bias_sq, var = float(mean.square().sum(-1).mean()), float(spread.mean())
            rows[key] = {
                "bias": math.sqrt(bias_sq) / rms_v,
                "bias_debiased": math.sqrt(max(bias_sq - var / repeats, 0.0)) / rms_v,
                "std": math.sqrt(var) / rms_v,
                "d_error": math.sqrt(sum(d_errors[key]) / sum(d_norms)),
                "worst_row_bias": float((mean.norm(dim=-1) / v_rows).max()),
            }
        out["regions"][region] = rows
    base = seconds.get(f"fp32 eps={epsilons[0]}")
    if base:
        out["seconds_vs_fp32"] = {key: round(value / base, 3) for key, value in seconds.items()}
    return out


def digits_batch(n: int, side: int) -> torch.Tensor:
    """The first n scikit-learn digits in [-1, 1], (n, 1, side, side)."""
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[:n], dtype=torch.float32) / 8.0 - 1.0
    images = images[:, None]
    return torch.nn.functional.interpolate(images, size=(side, side)) if side != 8 else images


def scenes_batch(n: int, pipeline_source: str) -> tuple[nn.Module, torch.Tensor, dict[str, torch.Tensor]]:
    """A trained text-to-image network and n training scenes with their encoded captions."""
    from tim.data.scenes import render_scenes, scene_tensor
    from tim.generation import TiMPipeline

    pipeline = TiMPipeline.load(pipeline_source)
    model: nn.Module = pipeline.model
    size = int(model.config.input_size)  # type: ignore[union-attr]
    x = scene_tensor(n, seed=0, size=size)  # the images of render_scenes(n, seed=0), in [-1, 1]
    captions = render_scenes(n, seed=0, size=size)[1]
    assert pipeline.text_encoder is not None
    cond = {
        key: value.float() if value.is_floating_point() else value
        for key, value in pipeline.text_encoder(captions).items()
    }
    return model, x, cond


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", default=None, help="save_pretrained folder of a trained digits network")
    parser.add_argument(
        "--trained-scenes",
        default=None,
        help="a trained text-to-image pipeline (e.g. bundled:scenes, 64 tokens)",
    )
    parser.add_argument("--random-b4", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--tiny", action="store_true", help="also the random TiM-tiny of the tests")
    parser.add_argument("--rows", type=int, default=8, help="rows per region")
    parser.add_argument("--repeats", type=int, default=8)
    parser.add_argument("--jitter", type=float, default=0.002)
    parser.add_argument("--eps", default="0.005,0.01,0.02,0.05")
    parser.add_argument(
        "--modes",
        default=None,
        help="default fp32,mixed,bf16 (+tf32 on CUDA); tf32-emulated = CUDA's TF32 matmuls emulated on a CPU",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    modes = (args.modes or "fp32,mixed,bf16").split(",")
    epsilons = [float(e) for e in args.eps.split(",")]
    options = dict(modes=modes, epsilons=epsilons, repeats=args.repeats, jitter=args.jitter, seed=args.seed)
    started = time.perf_counter()
    y = torch.arange(args.rows) % 10
    results = []
    if args.tiny:
        torch.manual_seed(0)
        tiny = perturbed(build_model("TiM-tiny"))
        cfg = tiny.config
        x = torch.randn(args.rows, cfg.in_channels, cfg.input_size, cfg.input_size)
        results.append(study("random TiM-tiny", tiny, x, {"y": y % cfg.num_classes}, **options))
    if args.trained:
        from tim.models.weights import from_pretrained

        model = from_pretrained(args.trained)
        x = digits_batch(args.rows, model.config.input_size)
        results.append(study(f"trained digits ({args.trained})", model, x, {"y": y}, **options))
    if args.trained_scenes:
        model, x, cond = scenes_batch(args.rows, args.trained_scenes)
        results.append(study(f"trained scenes ({args.trained_scenes})", model, x, cond, **options))
    if args.random_b4:
        torch.manual_seed(0)
        b4 = perturbed(build_model("TiM-B/4", hidden_size=384, depth=6, num_heads=6, z_dim=0))
        x = torch.randn(args.rows, 4, 32, 32, generator=torch.Generator().manual_seed(2))
        results.append(study("random B/4-shaped (384 wide, depth 6, 64 tokens)", b4, x, {"y": y}, **options))
    report = {
        "benchmark": "bench_derivative_precision",
        "threads": args.threads,
        "torch": torch.__version__,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
