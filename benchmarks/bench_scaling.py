"""Forward time and peak memory vs token count for a small TiM on CPU (native-resolution scaling).

Token counts 64 ... 16,384 (16,384 = a 4096x4096 image through a 32x autoencoder at patch 1, the
paper's largest size, arXiv 2509.04394, App. C.2). Square token grids, batch 1, float32, ``torch.no_grad``.

Memory method: every (tokens, backend) point runs in a FRESH subprocess. The worker builds the
model and the input, then reports ``peak_mb`` = growth of ``resource.getrusage(RUSAGE_SELF).ru_maxrss``
(the process's peak resident set) across its first forward pass, i.e. the extra peak memory one
forward needs. A fresh process per point keeps allocator caches of other sizes out of the number
(tracemalloc does not see torch's allocations; CUDA memory stats do not exist on CPU). Resolution is
a page or so; small points read ~0-2 MB. ``scores_mb`` is what ONE layer's full N x N attention
score matrix would take (heads x N^2 x 4 bytes): the SDPA path must stay far below it, and the
"math" reference path (run only up to 4,096 tokens) shows the quadratic growth it avoids.
Timing: median of ``--repeats`` forwards after the first.

Run: ``python benchmarks/bench_scaling.py`` (about 1-2 minutes on 2 cores); prints JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time

DEFAULT_TOKENS = (64, 256, 1024, 4096, 16384)
MATH_MAX_TOKENS = 4096  # the math path's N x N scores at 16,384 tokens would need ~2 GiB per layer


def model_config(side: int, backend: str) -> dict:
    """A small TiM at patch 1 on 32-channel (DC-AE f32c32-like) latents; side x side tokens."""
    return {
        "in_channels": 32,
        "input_size": side,
        "patch_size": 1,
        "hidden_size": 128,
        "depth": 2,
        "num_heads": 2,
        "modulation_rank": 32,
        "num_classes": 10,
        "encoder_depth": 1,
        "z_dim": 0,
        "attention_backend": backend,
    }


def max_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(tokens: int, backend: str, repeats: int) -> dict:
    """Measure one point in this (fresh) process."""
    import torch

    from tim.models import TiM, TiMConfig

    torch.set_num_threads(1)
    side = math.isqrt(tokens)
    config = TiMConfig(**model_config(side, backend))
    model = TiM(config).eval()
    generator = torch.Generator().manual_seed(0)
    x_t = torch.randn(1, config.in_channels, side, side, generator=generator)
    t, r, y = torch.tensor([0.8]), torch.tensor([0.3]), torch.tensor([3])
    before = max_rss_mb()
    times = []
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first pass is the memory measurement and a warm-up
            start = time.perf_counter()
            out = model(x_t, t, r, y=y)
            times.append(time.perf_counter() - start)
            if len(times) == 1:
                peak = max_rss_mb() - before
    assert out.shape == x_t.shape and bool(torch.isfinite(out).all())
    return {
        "tokens": tokens,
        "grid": [side, side],
        "backend": backend,
        "forward_s": statistics.median(times[1:]),
        "peak_mb": round(peak, 1),
        "scores_mb": round(config.num_heads * tokens**2 * 4 / 2**20, 1),
        "params": sum(p.numel() for p in model.parameters()),
    }


def fit_exponent(points: list[dict], key: str) -> float | None:
    """Least-squares slope of log(key) vs log(tokens): 1 = linear, 2 = quadratic (None below 2 points)."""
    if len(points) < 2:
        return None
    xs = [math.log(p["tokens"]) for p in points]
    ys = [math.log(max(p[key], 1e-3)) for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tokens", default=",".join(map(str, DEFAULT_TOKENS)), help="comma-separated square token counts"
    )
    parser.add_argument("--repeats", type=int, default=2, help="timed forwards per point (median reported)")
    parser.add_argument("--no-math", action="store_true", help="skip the math-attention reference points")
    parser.add_argument("--worker", nargs=2, metavar=("TOKENS", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(int(args.worker[0]), args.worker[1], args.repeats)))
        return
    tokens = [int(n) for n in args.tokens.split(",")]
    if any(math.isqrt(n) ** 2 != n for n in tokens):
        raise SystemExit(
            "error: token counts must be perfect squares (square grids); e.g. --tokens 64,256,1024"
        )
    points = []
    for backend in ("sdpa", "math"):
        for n in tokens:
            if backend == "math" and (args.no_math or n > MATH_MAX_TOKENS):
                continue
            command = [sys.executable, __file__, "--worker", str(n), backend, "--repeats", str(args.repeats)]
            out = subprocess.run(
                command, capture_output=True, text=True, check=True, env={**_env(), "OMP_NUM_THREADS": "1"}
            )
            points.append(json.loads(out.stdout.strip().splitlines()[-1]))
    sdpa = [p for p in points if p["backend"] == "sdpa"]
    large = [p for p in sdpa if p["tokens"] >= 1024]
    large = large if len(large) >= 2 else sdpa  # fixed overheads dominate the smallest points
    result = {
        "benchmark": "bench_scaling",
        "device": "cpu, 1 thread",
        "model": {
            k: v for k, v in model_config(0, "sdpa").items() if k not in ("input_size", "attention_backend")
        },
        "batch": 1,
        "memory_method": "ru_maxrss growth across the first forward, fresh subprocess per point",
        "points": points,
        "sdpa_fit_tokens": [p["tokens"] for p in large],
        "sdpa_memory_exponent": _round(fit_exponent(large, "peak_mb")),
        "sdpa_time_exponent": _round(fit_exponent(large, "forward_s")),
    }
    print(json.dumps(result, indent=2))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


if __name__ == "__main__":
    main()
