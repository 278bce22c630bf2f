"""Cost benchmark: memory and FLOP counters on known operations; DDE's extra work is two forwards."""

from __future__ import annotations

import pytest
import torch

from tim.evaluation.cost import (
    CostConfig,
    TrainingStep,
    cost_ratios,
    cost_targets,
    count_flops,
    markdown_cost,
    peak_step_memory,
    run_cost,
)

TINY_MLP = {"model": "MLP-toy", "model_overrides": {"hidden_size": 16, "depth": 1}}


def test_cpu_peak_memory_of_known_allocations() -> None:
    def step() -> None:
        a = torch.ones(1_000_000)  # 4 MB
        b = torch.ones(500_000)  # 2 MB, both live: peak 6 MB
        del a, b
        c = torch.ones(250_000)  # 1 MB after the others are freed
        del c

    peak = peak_step_memory(step, torch.device("cpu"))
    assert peak == pytest.approx(6_000_000, rel=0.01)


def test_flop_count_of_a_matmul() -> None:
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    assert count_flops(lambda: a @ b) == 2 * 8 * 16 * 4


def test_dde_costs_two_extra_forwards_on_the_r_below_t_rows() -> None:
    config = CostConfig(**TINY_MLP, batch_size=8)
    device = torch.device("cpu")
    flow, dde = (
        TrainingStep(config, "flow_matching", "sdpa", device),
        TrainingStep(config, "tim_dde", "sdpa", device),
    )
    one_row = count_flops(lambda: dde.model(dde.x[:1], torch.ones(1), torch.zeros(1)))
    rows_below = 8 - round(0.5 * 8)  # TiM forces r = t on round(0.5 B) rows (paper Table 11)
    assert count_flops(dde) - count_flops(flow) == 2 * rows_below * one_row


def test_ratios_and_targets_on_known_numbers() -> None:
    results = {
        "flow_matching": {"step_seconds_median": 2.0, "peak_memory_bytes": 100},
        "tim_dde": {"step_seconds_median": 3.0, "peak_memory_bytes": 110},
        "tim_jvp": {"step_seconds_median": 5.0, "peak_memory_bytes": 300},
    }
    ratios = cost_ratios(results)
    assert ratios["tim_dde_time_vs_flow_matching"] == 1.5 and ratios["tim_dde_time_vs_tim_jvp"] == 0.6
    assert ratios["tim_jvp_memory_vs_flow_matching"] == 3.0
    assert [t["met"] for t in cost_targets(ratios)] == [True, True, True]
    assert [t["met"] for t in cost_targets(ratios | {"tim_dde_time_vs_tim_jvp": 0.9})] == [True, False, True]


@pytest.mark.slow
def test_tiny_cost_run_reports_every_variant() -> None:
    config = CostConfig(
        **TINY_MLP,
        batch_size=8,
        timed_steps=1,
        warmup_steps=0,
        sampling_steps=(1, 2),
        sampling_batch=4,
        matmul_size=64,
    )
    report = run_cost(config, log=lambda _: None)
    training = report["backends"]["sdpa"]["training"]
    assert set(training) == {"flow_matching", "tim_dde", "tim_jvp", "ratios", "matmul_peak"}
    assert training["matmul_peak"]["fp32"]["flops_per_second"] > 0  # timed in the same rounds as the steps
    assert 0 < training["tim_dde"]["fraction_of_matmul_peak"]
    assert training["tim_dde"]["flops_per_step"] > training["flow_matching"]["flops_per_step"] > 0
    assert training["flow_matching"]["peak_memory_bytes"] > 0
    assert report["matmul_peak"]["flops_per_second"] > 0
    assert set(report["backends"]["sdpa"]["sampling"]["by_steps"]) == {"1", "2"}
    assert "| tim_jvp |" in markdown_cost(report)


def test_derivative_precision_modes_add_dde_variants() -> None:
    from tim.errors import TimError
    from tim.evaluation.cost import variants

    config = CostConfig(**TINY_MLP, batch_size=8, derivative_precisions=("mixed", "bf16"))
    chosen = variants(config)
    assert list(chosen) == ["flow_matching", "tim_dde", "tim_jvp", "tim_dde_bf16"]
    assert chosen["tim_dde"]["derivative_precision"] == "mixed"
    step = TrainingStep(config, "tim_dde_bf16", "sdpa", torch.device("cpu"))
    assert step.objective.derivative_precision == "bf16"
    step()
    results = {name: {"step_seconds_median": 1.0, "peak_memory_bytes": None} for name in chosen}
    assert cost_ratios(results)["tim_dde_bf16_time_vs_tim_jvp"] == 1.0
    with pytest.raises(TimError, match="derivative precisions"):
        CostConfig(derivative_precisions=("fp16",))
