"""``tim bench cost``: training-step time and memory of each objective, sampling time, FLOPs.

For one network and one batch, the three ways to train it are measured side by side in one run:
flow matching (one forward + backward), TiM with the DDE derivative (plus two no-grad forwards
on the r < t rows, paper Eq. (10)) and TiM with the exact JVP derivative (forward-mode AD on
those rows). The variants are interleaved step by step, so machine load drifts affect them
alike, and each is reported as a ratio to flow matching (the TiM paper, arXiv 2509.04394, Table 1, reports the same
comparison on an A100: DDE 1.33x the training throughput of JVP).

Peak memory is the allocator's peak on CUDA; on CPU it is the peak of live tensor bytes
allocated during one step, reconstructed from the PyTorch profiler's memory timeline (weights,
EMA and optimizer state allocated before the step are excluded on both devices).

FLOPs are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls and convolutions;
elementwise work is not counted), and achieved FLOP/s are compared with the throughput of one
``matmul_size`` square matrix multiply timed in the same process and thread count, interleaved
with the training steps (one fp32 and one bf16 matmul per round, median over the rounds), so the
reference sees the same load as the steps (a reference taken at another time of a
shared machine gave 89-90% "of peak" where the interleaved one gives 24-45%).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from tim.errors import TimError

VARIANTS: dict[str, dict] = {
    "flow_matching": {"name": "flow_matching"},
    "tim_dde": {"name": "tim", "derivative": "dde"},
    "tim_jvp": {"name": "tim", "derivative": "jvp"},
}


def variants(config: CostConfig) -> dict[str, dict]:
    """The objectives timed, name -> :func:`tim.objective.build_objective` arguments.

    :data:`VARIANTS` with ``tim_dde`` in the first of ``config.derivative_precisions``, then one
    ``tim_dde_<mode>`` per further mode (``objective.derivative_precision``).
    """
    first, *others = config.derivative_precisions
    chosen = {name: dict(options) for name, options in VARIANTS.items()}
    chosen["tim_dde"]["derivative_precision"] = first
    for mode in others:
        chosen[f"tim_dde_{mode}"] = {"name": "tim", "derivative": "dde", "derivative_precision": mode}
    return chosen


@dataclass(frozen=True)
class CostConfig:
    """Settings of the cost benchmark.

    Attributes:
        model: model preset name (:func:`tim.models.build_model`).
        model_overrides: config fields to override (e.g. ``{"z_dim": 0}``).
        batch_size: training batch.
        timed_steps: timed training steps per variant (after ``warmup_steps``).
        warmup_steps: untimed steps per variant first (allocator, caches, lazy init).
        sampling_steps: step counts for the sampling-time measurement.
        sampling_batch: images per sampling call.
        device: "cpu" or "cuda".
        precision: "fp32" or "bf16" (autocast of the training step).
        derivative_precisions: DDE precision modes timed (``tim_dde`` is the first; each further
            mode adds a ``tim_dde_<mode>`` variant); see :func:`tim.objective.dde_derivative`.
        attention_backends: model attention backends to compare (e.g. ("sdpa", "flash")).
        matmul_size: side of the square matmul for the peak-throughput reference.
        seed: seed of the weights and data.
    """

    model: str = "TiM-digits"
    model_overrides: dict = field(default_factory=dict)
    batch_size: int = 128
    timed_steps: int = 10
    warmup_steps: int = 2
    sampling_steps: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 128)
    sampling_batch: int = 32
    device: str = "cpu"
    precision: str = "fp32"
    derivative_precisions: tuple[str, ...] = ("auto",)
    attention_backends: tuple[str, ...] = ("sdpa",)
    matmul_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise TimError(f"unknown precision {self.precision!r}", "use fp32 or bf16")
        from tim.objective import DERIVATIVE_PRECISIONS

        unknown = [m for m in self.derivative_precisions if m not in DERIVATIVE_PRECISIONS]
        if unknown or not self.derivative_precisions:
            raise TimError(
                f"derivative precisions {list(self.derivative_precisions)} are not all known",
                f"choose from {list(DERIVATIVE_PRECISIONS)}",
            )
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise TimError(f"device {self.device!r} requested but CUDA is not available", "use --device cpu")
        for name, value in (
            ("batch_size (--batch-size)", self.batch_size),
            ("timed_steps (--timed-steps)", self.timed_steps),
            ("sampling_batch (--sampling-batch)", self.sampling_batch),
        ):
            if value < 1:
                raise TimError(f"{name} = {value} is below 1", "pass a value of at least 1")


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(config: CostConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if config.precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def build_network(config: CostConfig, backend: str, device: torch.device) -> nn.Module:
    """The benchmarked network with a fixed initialisation (same weights for every variant)."""
    from tim.models import TIM_PRESETS, build_model

    overrides = dict(config.model_overrides)
    if config.model in TIM_PRESETS:  # the MLP has no attention
        overrides["attention_backend"] = backend
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return build_model(config.model, **overrides).to(device)


def _batch(
    model: nn.Module, batch_size: int, device: torch.device, generator: torch.Generator
) -> tuple[torch.Tensor, dict]:
    """Synthetic data of the network's input shape (the cost does not depend on pixel values)."""
    cfg = model.config
    shape = (cfg.dim,) if hasattr(cfg, "dim") else (cfg.in_channels, cfg.input_size, cfg.input_size)
    x = torch.randn((batch_size, *shape), generator=generator).to(device)
    classes = getattr(cfg, "num_classes", 0)
    cond = {"y": torch.randint(0, classes, (batch_size,), generator=generator).to(device)} if classes else {}
    return x, cond


class TrainingStep:
    """One optimizer step of one objective on one network (forward, derivative passes, backward, AdamW)."""

    def __init__(self, config: CostConfig, variant: str, backend: str, device: torch.device) -> None:
        from tim.objective import build_objective

        self.model = build_network(config, backend, device)
        self.objective = build_objective(**variants(config)[variant])
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.autocast, self.device = _autocast(config, device), device
        generator = torch.Generator().manual_seed(config.seed)
        self.x, self.cond = _batch(self.model, config.batch_size, device, generator)
        self.generator = torch.Generator(device=device).manual_seed(config.seed)

    def __call__(self) -> None:
        """Run one step (same batch every time; fresh (t, r, z) draws from the step generator)."""
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            out = self.objective(self.model, self.x, cond=self.cond, generator=self.generator)
        out.loss.backward()
        self.optimizer.step()


def time_call(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of one call, with device synchronisation on both sides."""
    _synchronize(device)
    started = time.perf_counter()
    fn()
    _synchronize(device)
    return time.perf_counter() - started


def peak_step_memory(step: Callable[[], None], device: torch.device) -> int | None:
    """Peak bytes allocated during one call beyond what was live before it (None if unmeasurable)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    return _cpu_peak_memory(step)


def _cpu_peak_memory(step: Callable[[], None]) -> int | None:
    """Peak live bytes of tensors created during ``step``, from the profiler's memory timeline."""
    from torch.profiler import ProfilerActivity, profile

    try:  # private API (torch.profiler._memory_profiler): degrade to "unmeasured", never guess
        from torch.profiler._memory_profiler import Action

        with profile(
            activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True
        ) as prof:
            step()
        live = peak = 0
        for _, action, _, size in prof._memory_profile().timeline:
            live += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
            peak = max(peak, live)
        return peak
    except (ImportError, AttributeError, RuntimeError):
        return None


def count_flops(fn: Callable[[], object]) -> int:
    """Floating-point operations of one call (matmul/conv family) by FlopCounterMode."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def matmul_peak(config: CostConfig, device: torch.device, repeats: int = 5) -> dict:
    """Best achieved FLOP/s of an n x n matmul in the benchmark's dtype (the machine's reference peak)."""
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
    n = config.matmul_size
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    time_call(lambda: a @ b, device)  # warm-up
    best = min(time_call(lambda: a @ b, device) for _ in range(repeats))
    return {"size": n, "dtype": str(dtype), "seconds": best, "flops_per_second": 2 * n**3 / best}


MATMUL_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def training_costs(config: CostConfig, backend: str, device: torch.device) -> dict:
    """Median step time, peak memory and FLOPs of every variant, interleaved step by step.

    Each round also times one fp32 and one bf16 ``matmul_size`` matmul: ``matmul_peak`` holds
    their medians, the same-process reference of "% of matmul peak".
    """
    steps = {variant: TrainingStep(config, variant, backend, device) for variant in variants(config)}
    n = config.matmul_size
    operands = {
        name: [torch.randn(n, n, device=device, dtype=dtype) for _ in range(2)]
        for name, dtype in MATMUL_DTYPES.items()
    }
    for _ in range(config.warmup_steps):
        for step in steps.values():
            step()
        for a, b in operands.values():
            time_call(lambda a=a, b=b: a @ b, device)
    times: dict[str, list[float]] = {variant: [] for variant in steps}
    matmul_times: dict[str, list[float]] = {name: [] for name in MATMUL_DTYPES}
    for _ in range(config.timed_steps):
        for variant, step in steps.items():  # interleaved: load drifts hit all variants alike
            times[variant].append(time_call(step, device))
        for name, (a, b) in operands.items():
            matmul_times[name].append(time_call(lambda a=a, b=b: a @ b, device))
    peaks = {
        name: {
            "size": n,
            "dtype": str(MATMUL_DTYPES[name]),
            "seconds_median": statistics.median(values),
            "flops_per_second": 2 * n**3 / statistics.median(values),
        }
        for name, values in matmul_times.items()
    }
    results = {}
    for variant, step in steps.items():
        seconds = statistics.median(times[variant])
        flops = count_flops(step)
        step.optimizer.zero_grad(set_to_none=True)  # gradients are part of the step's peak, not its baseline
        results[variant] = {
            "step_seconds_median": seconds,
            "step_seconds_all": times[variant],
            "peak_memory_bytes": peak_step_memory(step, device),
            "flops_per_step": flops,
            "achieved_flops_per_second": flops / seconds,
        }
    return results | {"ratios": cost_ratios(results), "matmul_peak": peaks}


def cost_ratios(results: dict) -> dict:
    """Step time and memory of each variant relative to flow matching, and DDE vs JVP."""
    base = results["flow_matching"]
    ratios = {}
    for variant in [name for name in results if name.startswith("tim_")]:
        ratios[f"{variant}_time_vs_flow_matching"] = (
            results[variant]["step_seconds_median"] / base["step_seconds_median"]
        )
        if results[variant]["peak_memory_bytes"] and base["peak_memory_bytes"]:
            ratios[f"{variant}_memory_vs_flow_matching"] = (
                results[variant]["peak_memory_bytes"] / base["peak_memory_bytes"]
            )
    for variant in [name for name in results if name.startswith("tim_dde")]:
        ratios[f"{variant}_time_vs_tim_jvp"] = (
            results[variant]["step_seconds_median"] / results["tim_jvp"]["step_seconds_median"]
        )
    return ratios


def cost_targets(ratios: dict) -> list[dict]:
    """The issue's cost targets, evaluated on the measured ratios."""
    checks = [
        ("TiM-DDE step time <= 1.75 x flow matching", "tim_dde_time_vs_flow_matching", 1.75),
        ("TiM-DDE step time <= 0.8 x TiM-JVP", "tim_dde_time_vs_tim_jvp", 0.8),
        ("TiM-DDE peak memory <= 1.15 x flow matching", "tim_dde_memory_vs_flow_matching", 1.15),
    ]
    return [
        {
            "target": text,
            "value": ratios.get(key),
            "threshold": limit,
            "met": None if ratios.get(key) is None else ratios[key] <= limit,
        }
        for text, key, limit in checks
    ]


def sampling_costs(config: CostConfig, backend: str, device: torch.device) -> dict:
    """Seconds per image and FLOPs per sampling step for each step count (transition sampler, no CFG)."""
    from tim.samplers import sample_batches

    model = build_network(config, backend, device).eval()
    noise, cond = _batch(model, config.sampling_batch, device, torch.Generator().manual_seed(config.seed))

    def run(steps: int):
        return sample_batches(model, noise, steps=steps, cond=cond)

    with _autocast(config, device):
        flops_per_step = count_flops(lambda: run(1))
        run(1)  # warm-up
        per_steps = {}
        for steps in config.sampling_steps:
            seconds = time_call(lambda steps=steps: run(steps), device)
            per_steps[str(steps)] = {
                "seconds_per_image": seconds / config.sampling_batch,
                "achieved_flops_per_second": flops_per_step * steps / seconds,
            }
    return {
        "batch": config.sampling_batch,
        "flops_per_step_per_image": flops_per_step / config.sampling_batch,
        "by_steps": per_steps,
    }


def run_cost(config: CostConfig, log: Callable[[str], None] = print) -> dict:
    """The whole cost benchmark as a JSON-ready dict (see the module docstring)."""
    from tim.evaluation.machine import machine_info

    device = torch.device(config.device)
    started = time.perf_counter()
    peak = matmul_peak(config, device)  # before the steps, kept for comparison with older reports
    report = {
        "benchmark": "cost",
        "config": asdict(config),
        "machine": machine_info() | _device_name(device),
        "matmul_peak": peak,
        "threads": torch.get_num_threads(),
        "backends": {},
    }
    for backend in config.attention_backends:
        training = training_costs(config, backend, device)
        sampling = sampling_costs(config, backend, device)
        same_process = training["matmul_peak"][config.precision][
            "flops_per_second"
        ]  # interleaved with the steps
        for variant in variants(config):
            training[variant]["fraction_of_matmul_peak"] = (
                training[variant]["achieved_flops_per_second"] / same_process
            )
        report["backends"][backend] = {
            "training": training,
            "sampling": sampling,
            "targets": cost_targets(training["ratios"]),
        }
        log(f"{backend}: {training['ratios']}")
    report["parameters"] = sum(
        p.numel() for p in build_network(config, config.attention_backends[0], device).parameters()
    )
    report["wall_seconds"] = time.perf_counter() - started
    return report


def _device_name(device: torch.device) -> dict:
    return {"accelerator": torch.cuda.get_device_name(device)} if device.type == "cuda" else {}


def markdown_cost(report: dict) -> str:
    """Markdown tables of one cost report: training step per variant, sampling time per image."""
    lines = []
    for backend, data in report["backends"].items():
        training = data["training"]
        peaks = training.get("matmul_peak", {})
        peak_text = ", ".join(f"{name} {row['flops_per_second'] / 1e9:.1f}" for name, row in peaks.items())
        lines += [
            f"Attention backend `{backend}`, batch {report['config']['batch_size']}, {report['config']['precision']}"
            + (f"; same-process matmul peak (GFLOP/s, interleaved): {peak_text}" if peak_text else "")
            + ":",
            "",
            "| objective | step time (ms) | vs flow matching | peak memory (MiB) | vs flow matching | GFLOP/step | % of matmul peak |",
            "|---|---|---|---|---|---|---|",
        ]
        base = training["flow_matching"]
        for variant in [name for name in training if name not in ("ratios", "matmul_peak")]:
            row = training[variant]
            memory = row["peak_memory_bytes"]
            mem_ratio = (
                f"{memory / base['peak_memory_bytes']:.2f}" if memory and base["peak_memory_bytes"] else "n/a"
            )
            lines.append(
                f"| {variant} | {1e3 * row['step_seconds_median']:.1f} | {row['step_seconds_median'] / base['step_seconds_median']:.2f} | "
                f"{memory / 2**20 if memory else float('nan'):.1f} | {mem_ratio} | {row['flops_per_step'] / 1e9:.2f} | "
                f"{100 * row['fraction_of_matmul_peak']:.1f} |"
            )
        lines += ["", "| sampling steps | ms per image | GFLOP/s achieved |", "|---|---|---|"]
        for steps, row in data["sampling"]["by_steps"].items():
            lines.append(
                f"| {steps} | {1e3 * row['seconds_per_image']:.3f} | {row['achieved_flops_per_second'] / 1e9:.1f} |"
            )
        lines += ["", "| target | value | threshold | met |", "|---|---|---|---|"]
        lines += [
            f"| {t['target']} | {_format(t['value'])} | {t['threshold']} | {t['met']} |"
            for t in data["targets"]
        ]
        lines.append("")
    return "\n".join(lines)


def _format(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
