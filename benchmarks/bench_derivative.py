"""Accuracy and cost of derivative schemes for dF/dt against the fp32 JVP.

For each network, rows with r < t are drawn from the training distribution of (t, r)
(:meth:`tim.objective.TransitionLoss.sample_times`), the exact derivative is taken by
``torch.func.jvp`` in float32, and each scheme is compared with it:

* ``dde2``: the paper's central difference [F(t+h) - F(t-h)] / 2h (TiM Eq. (10));
* ``dde4``: the 4-point central difference [-F(t+2h) + 8F(t+h) - 8F(t-h) + F(t-2h)] / 12h,
  truncation error O(h^4), so h can be large enough that bf16 rounding stops dominating;

each in float32 or under bf16 autocast. Only rows whose whole stencil lies in [max(r, t_min), t_max]
are scored (their share is reported): the edge rows use a one-sided stencil in every scheme.
Relative error = ||d - d_jvp|| / ||d_jvp|| over all scored rows; cost = seconds of the derivative
passes relative to fp32 dde2 (interleaved, median of ``--repeats``).

    python benchmarks/bench_derivative.py --trained /tmp/app_run/pretrained
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from tim.models import build_model
from tim.objective import TransitionLoss, jvp_derivative
from tim.paths import LinearPath

STENCILS = {
    "dde2": ((1.0, -1.0), (1.0, -1.0), 2.0),
    "dde4": ((2.0, 1.0, -1.0, -2.0), (-1.0, 8.0, -8.0, 1.0), 12.0),
}


def stencil_derivative(F, path, x, z, t, r, cond, *, stencil: str, h: float, bf16: bool) -> torch.Tensor:  # noqa: ANN001
    """dF/dt by a central stencil of half-step h, the network under bf16 autocast or in float32."""
    offsets, weights, denominator = STENCILS[stencil]
    c_r = path.time_input(r)
    total = torch.zeros_like(x)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for offset, weight in zip(offsets, weights, strict=True):
            s = t + offset * h
            total = total + weight * F(path.interpolate(x, z, s).x_t, path.time_input(s), c_r, **cond).float()
    return total / (denominator * h)


def perturbed(model: torch.nn.Module, std: float = 0.02) -> torch.nn.Module:
    """A random network whose adaLN-Zero layers are not zero (else F = 0 and dF/dt = 0)."""
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(1)
        for p in model.parameters():
            if p.abs().max() == 0:
                p.normal_(0.0, std)
    return model


def digits_batch(n: int, side: int) -> torch.Tensor:
    from sklearn.datasets import load_digits

    images = torch.tensor(load_digits().images[:n], dtype=torch.float32) / 8.0 - 1.0  # [0, 16] -> [-1, 1]
    return (
        torch.nn.functional.interpolate(images[:, None], size=(side, side)) if side != 8 else images[:, None]
    )


def study(
    name: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, schemes: list, repeats: int
) -> dict:
    path, objective = LinearPath(), TransitionLoss()
    t, r = objective.sample_times(x, torch.Generator().manual_seed(0))
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    h_max = max(h * max(abs(o) for o in STENCILS[s][0]) for s, h, _ in schemes)
    rows = (
        (r < t) & (t - h_max >= torch.maximum(r, torch.full_like(r, path.t_min))) & (t + h_max <= path.t_max)
    )
    x, z, t, r, cond = x[rows], z[rows], t[rows], r[rows], {"y": y[rows]}
    model.set_attention_backend("math")
    reference = jvp_derivative(model, path, x, z, t, r, cond)
    model.set_attention_backend("sdpa")
    out = {"network": name, "rows_scored": int(rows.sum()), "rows_total": len(rows), "schemes": {}}
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for stencil, h, bf16 in schemes:
            key = f"{stencil} h={h} {'bf16' if bf16 else 'fp32'}"
            started = time.perf_counter()
            d = stencil_derivative(model, path, x, z, t, r, cond, stencil=stencil, h=h, bf16=bf16)
            times.setdefault(key, []).append(time.perf_counter() - started)
            per_row = (d - reference).flatten(1).norm(dim=1) / reference.flatten(1).norm(dim=1)
            out["schemes"][key] = {
                "relative_error": round(float((d - reference).norm() / reference.norm()), 5),
                "median_row_relative_error": round(float(per_row.median()), 5),
            }
    base = sorted(times["dde2 h=0.005 fp32"])[repeats // 2]
    for key, values in times.items():
        out["schemes"][key]["cost_vs_fp32_dde2"] = round(sorted(values)[repeats // 2] / base, 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trained", default=None, help="a save_pretrained folder of a trained digits model")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    schemes = [
        ("dde2", 0.005, False),
        ("dde2", 0.005, True),
        ("dde2", 0.02, True),
        ("dde2", 0.05, True),
        ("dde4", 0.02, True),
        ("dde4", 0.05, True),
        ("dde4", 0.1, True),
        ("dde4", 0.05, False),
    ]
    y = torch.arange(args.batch) % 10
    results = []
    if args.trained:
        from tim.models.weights import from_pretrained

        model = from_pretrained(args.trained).float().eval()
        results.append(
            study(
                f"trained digits ({args.trained})",
                model,
                digits_batch(args.batch, model.config.input_size),
                y,
                schemes,
                args.repeats,
            )
        )
    torch.manual_seed(0)
    digits = perturbed(build_model("TiM-digits").eval())
    results.append(study("random TiM-digits", digits, digits_batch(args.batch, 8), y, schemes, args.repeats))
    torch.manual_seed(0)
    b4 = perturbed(build_model("TiM-B/4", hidden_size=384, depth=6, num_heads=6, z_dim=0).eval())
    x = torch.randn(args.batch, 4, 32, 32, generator=torch.Generator().manual_seed(2))
    results.append(study("random B/4-shaped (384 wide, depth 6, 64 tokens)", b4, x, y, schemes, args.repeats))
    print(
        json.dumps(
            {
                "benchmark": "bench_derivative",
                "batch": args.batch,
                "threads": args.threads,
                "torch": torch.__version__,
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
