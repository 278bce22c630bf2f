"""Eager vs ``torch.compile``: one TiM-DDE training step and 1-step sampling, interleaved.

Prints one JSON object with the median seconds of each variant over ``--repeats`` rounds (the
variants alternate inside every round, so load drifts hit both alike), their ratio, the one-off
compile time, and the largest difference between eager and compiled outputs.

    python benchmarks/bench_compile.py                                  # TiM-digits, batch 64, 1 thread
    python benchmarks/bench_compile.py --preset TiM-B/4 --override hidden_size=384 \\
        --override depth=6 --override num_heads=6 --override z_dim=0    # the B/4-shaped network

The training step is what ``train.compile=true`` runs: the network compiled once (``dynamic=False``)
and used for the gradient pass and the two DDE passes; the objective and AdamW stay eager.
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from tim.models import build_model
from tim.objective import build_objective
from tim.samplers import sample


def _seconds(fn) -> float:  # noqa: ANN001
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    started = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="TiM-digits")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast for the gradient pass")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {key: json.loads(value) for key, value in (item.split("=", 1) for item in args.override)}
    torch.manual_seed(0)
    device = torch.device(args.device)
    eager = build_model(args.preset, **overrides).to(device)
    models = {"eager": eager, "compiled": copy.deepcopy(eager)}
    networks = {"eager": models["eager"], "compiled": torch.compile(models["compiled"], dynamic=False)}
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    objective = build_objective("tim")
    cfg = eager.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, cfg.in_channels, cfg.input_size, cfg.input_size, generator=g).to(device)
    y = torch.randint(0, cfg.num_classes, (args.batch,), generator=g).to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)

    def train_step(name: str) -> None:
        optimizers[name].zero_grad(set_to_none=True)
        with autocast:
            out = objective(
                networks[name], x, cond={"y": y}, generator=torch.Generator(device).manual_seed(1)
            )
        out.loss.backward()
        optimizers[name].step()

    def sample_1(name: str) -> torch.Tensor:
        with torch.no_grad():
            return sample(networks[name], x, steps=1, cond={"y": y}).x

    compile_seconds = {
        "train_step": _seconds(lambda: train_step("compiled")),
        "sample_1_step": _seconds(lambda: sample_1("compiled")),
    }
    train_step("eager")
    sample_1("eager")
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for name in networks:
            times.setdefault(f"train_step/{name}", []).append(_seconds(lambda name=name: train_step(name)))
            times.setdefault(f"sample_1_step/{name}", []).append(_seconds(lambda name=name: sample_1(name)))
    median = {key: sorted(v)[len(v) // 2] for key, v in times.items()}
    with torch.no_grad():
        models["compiled"].load_state_dict(models["eager"].state_dict())
        difference = (sample_1("compiled") - sample_1("eager")).abs().max().item()
    report = {
        "benchmark": "bench_compile",
        "preset": args.preset,
        "overrides": overrides,
        "batch": args.batch,
        "device": args.device,
        "bf16": args.bf16,
        "threads": args.threads,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "compile_seconds": {k: round(v, 2) for k, v in compile_seconds.items()},
        "median_ms": {k: round(1e3 * v, 2) for k, v in median.items()},
        "speedup": {
            part: round(median[f"{part}/eager"] / median[f"{part}/compiled"], 3)
            for part in ("train_step", "sample_1_step")
        },
        "max_abs_difference_1_step_sample": difference,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
