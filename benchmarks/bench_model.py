"""Throughput of the TiM network: forward and forward+backward, SDPA vs plain (math) attention.

Prints one JSON object: per attention backend, images/s, tokens/s and achieved FLOP/s for the
forward pass and for forward+backward, plus the FLOPs per image counted by
``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions and attention, counted on the
math kernel). Times are medians over ``--iters`` calls after two warm-up calls.

    python benchmarks/bench_model.py                          # TiM-digits, CPU, 1 thread
    python benchmarks/bench_model.py --preset TiM-tiny --size 32 --batch 16
    python benchmarks/bench_model.py --device cuda --preset TiM-B/4 --batch 64 --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from tim.models import build_model


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


def timed(step, args: tuple, iters: int, device: torch.device) -> float:  # noqa: ANN001
    """Seconds per call (median of ``iters`` after 2 warm-up calls)."""
    for _ in range(2):
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
    parser.add_argument("--size", type=int, default=None, help="latent side (default: the preset's input_size)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model = build_model(args.preset).to(device)
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


if __name__ == "__main__":
    main()
