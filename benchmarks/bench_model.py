"""Throughput of the TiM network: forward and forward+backward, SDPA vs plain (math) attention.

Prints one JSON object: per attention backend, images/s, tokens/s and achieved FLOP/s for the
forward pass and for forward+backward, plus the FLOPs per image counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention, counted on the
math kernel). Times are medians over ``--iters`` calls after two warm-up calls.

    python benchmarks/bench_model.py                          # TiM-digits, CPU, 1 thread
    python benchmarks/bench_model.py --preset TiM-tiny --size 32 --batch 16
    python benchmarks/bench_model.py --device cuda --preset TiM-B/4 --batch 64 --dtype bfloat16
    python benchmarks/bench_model.py --compare-legacy --repeats 5   # new vs previous attention, interleaved

``--compare-legacy`` times the current attention layers against the previous implementation
(kept below as :func:`legacy_self_attention`: RoPE from unflatten/unbind/stack/neg on permuted
q and k, the kernel looked up on every call) on the same model and inputs, alternating the two
``--repeats`` times, and reports the median of each and their ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tim.models import build_model
from tim.models.layers import SelfAttention, apply_rope, attention


def legacy_self_attention(self: SelfAttention, u: torch.Tensor, dt_emb: torch.Tensor, rope) -> torch.Tensor:  # noqa: ANN001
    """The self-attention forward before the faster block (for before/after timing only)."""
    B, N, D = u.shape
    qkv = self.qkv(u)
    if self.qkv_interval is not None:
        qkv = qkv + self.qkv_interval(dt_emb)
    q, k, v = qkv.reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k = self.q_norm(q), self.k_norm(k)
    cos, sin = _legacy_tables(rope)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    o = attention(q, k, v, self.backend)  # flash-attn availability looked up per call, as before
    return self.proj(o.transpose(1, 2).reshape(B, N, D))


_LEGACY: dict[int, tuple] = {}


def _legacy_tables(rope) -> tuple:  # noqa: ANN001
    # The previous (cos, sin) tables, each (N, hd), rebuilt once per table object.
    if id(rope) not in _LEGACY:
        sign = torch.tensor([-1.0, 1.0], dtype=rope.cos.dtype, device=rope.cos.device).repeat(
            rope.cos.shape[-1] // 2
        )
        _LEGACY[id(rope)] = (rope.cos[:, 0], rope.sin_signed[:, 0] * sign, rope)
    return _LEGACY[id(rope)][:2]


def set_legacy(model: torch.nn.Module, legacy: bool) -> None:
    """Switch every self-attention layer between the legacy and the current forward."""
    for module in model.modules():
        if isinstance(module, SelfAttention):
            if legacy:
                module.forward = legacy_self_attention.__get__(module)
            else:
                module.__dict__.pop("forward", None)


def make_inputs(model: torch.nn.Module, batch: int, size: int, device: torch.device) -> tuple:
    g = torch.Generator().manual_seed(0)
    C = model.config.in_channels
    x = torch.randn(batch, C, size, size, generator=g).to(device)
    t = torch.rand(batch, generator=g).to(device)
    r = t * torch.rand(batch, generator=g).to(device)
    cond = {"y": torch.randint(0, model.config.num_classes + 1, (batch,), generator=g).to(device)}
    return x, t, r, cond


def count_flops(step, *args) -> int:  # noqa: ANN001
    with FlopCounterMode(display=False) as counter:
        step(*args)
    return counter.get_total_flops()


def timed(step, args: tuple, iters: int, device: torch.device, warmup: int = 2) -> float:  # noqa: ANN001
    """Seconds per call (median of ``iters`` after ``warmup`` warm-up calls)."""
    for _ in range(warmup):
        step(*args)
    times = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step(*args)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="TiM-digits")
    parser.add_argument(
        "--size", type=int, default=None, help="latent side (default: the preset's input_size)"
    )
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument(
        "--override",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model config field, e.g. --override hidden_size=384 (repeatable)",
    )
    parser.add_argument(
        "--compare-legacy", action="store_true", help="time new vs previous attention, interleaved"
    )
    parser.add_argument("--repeats", type=int, default=5, help="rounds of the interleaved comparison")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.override)}
    model = build_model(args.preset, **overrides).to(device)
    size = args.size or model.config.input_size
    x, t, r, cond = make_inputs(model, args.batch, size, device)
    tokens_per_image = (size // model.config.patch_size) ** 2
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bfloat16")

    def forward(x, t, r, cond):  # noqa: ANN001, ANN202
        with torch.no_grad(), autocast:
            return model(x, t, r, **cond)

    def forward_backward(x, t, r, cond):  # noqa: ANN001, ANN202
        with autocast:
            loss = model(x, t, r, **cond).float().square().mean()
        loss.backward()

    steps = (("forward", forward), ("forward_backward", forward_backward))
    if args.compare_legacy:
        print(json.dumps(compare_legacy(model, steps, (x, t, r, cond), args, overrides), indent=2))
        return
    # FLOPs are counted once on the math kernel: FlopCounterMode has no formula for the CPU flash
    # kernel of SDPA (it would count 0 for attention), and both kernels do the same arithmetic.
    model.set_attention_backend("math")
    flops_of = {name: count_flops(step, x, t, r, cond) for name, step in steps}
    results = {}
    for backend in ("sdpa", "math"):
        model.set_attention_backend(backend)
        entry = {}
        for name, step in steps:
            flops = flops_of[name]
            seconds = timed(step, (x, t, r, cond), args.iters, device)
            entry[name] = {
                "images_per_s": round(args.batch / seconds, 2),
                "tokens_per_s": round(args.batch * tokens_per_image / seconds, 1),
                "gflop_per_image": round(flops / args.batch / 1e9, 6),
                "achieved_gflop_per_s": round(flops / seconds / 1e9, 3),
                "ms_per_batch": round(seconds * 1e3, 3),
            }
        results[backend] = entry
    report = {
        "benchmark": "bench_model",
        "preset": args.preset,
        "parameters": sum(p.numel() for p in model.parameters()),
        "latent": [model.config.in_channels, size, size],
        "tokens_per_image": tokens_per_image,
        "batch": args.batch,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": args.threads,
        "dtype": args.dtype,
        "torch": torch.__version__,
        "machine": platform.machine(),
        "results": results,
    }
    print(json.dumps(report, indent=2))


def matmul_seconds(n: int, dtype: torch.dtype, device: torch.device) -> float:
    """Seconds of one n x n matmul (best of 3): the same-process reference peak."""
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    return min(timed(torch.matmul, (a, b), 1, device) for _ in range(3))


def compare_legacy(model, steps, inputs, args, overrides) -> dict:  # noqa: ANN001
    """Current vs legacy attention and the matmul peak, interleaved round by round (medians)."""
    model.set_attention_backend("math")
    flops = {name: count_flops(step, *inputs) for name, step in steps}
    model.set_attention_backend("sdpa")
    dtype = torch.bfloat16 if args.dtype == "bfloat16" else torch.float32
    times: dict[str, list[float]] = {}
    for variant in ("legacy", "current"):  # warm both once; the rounds below then alternate them
        set_legacy(model, variant == "legacy")
        for _, step in steps:
            step(*inputs)
    for _ in range(args.repeats):
        times.setdefault("matmul_1024", []).append(matmul_seconds(1024, dtype, inputs[0].device))
        for variant in ("legacy", "current"):
            set_legacy(model, variant == "legacy")
            for name, step in steps:
                times.setdefault(f"{name}/{variant}", []).append(
                    timed(step, inputs, args.iters, inputs[0].device, 0)
                )
    set_legacy(model, False)
    median = {key: sorted(values)[len(values) // 2] for key, values in times.items()}
    peak = 2 * 1024**3 / median["matmul_1024"]
    out = {
        "preset": args.preset,
        "overrides": overrides,
        "batch": args.batch,
        "dtype": args.dtype,
        "threads": args.threads,
        "repeats": args.repeats,
        "iters": args.iters,
        "matmul_peak_gflop_per_s": round(peak / 1e9, 2),
        "results": {},
    }
    for name, _ in steps:
        legacy, current = median[f"{name}/legacy"], median[f"{name}/current"]
        out["results"][name] = {
            "legacy_ms": round(legacy * 1e3, 3),
            "current_ms": round(current * 1e3, 3),
            "speedup": round(legacy / current, 3),
            "legacy_fraction_of_matmul_peak": round(flops[name] / legacy / peak, 3),
            "current_fraction_of_matmul_peak": round(flops[name] / current / peak, 3),
        }
    return out


if __name__ == "__main__":
    main()
