"""benchmarks/bench_pipeline.py keeps working: its sections run at toy size and report what docs/benchmarks.md quotes."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch

from tim.models import TIM_PRESETS

ROOT = Path(__file__).resolve().parents[2]


def bench():  # noqa: ANN201 - the script as a module
    spec = importlib.util.spec_from_file_location("bench_pipeline", ROOT / "benchmarks" / "bench_pipeline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_overhead_and_the_4096_estimate() -> None:
    module = bench()
    tiny = dataclasses.replace(TIM_PRESETS["TiM-tiny"], in_channels=3)
    row = module.overhead("tiny", tiny, 4, 1, torch.device("cpu"))
    assert (
        row["output_type"] == "pt"
        and row["raw_images_per_s_median"] > 0
        and 0 <= row["pipeline_own_share_of_call"] < 1
    )
    estimate = module.estimate_4096(torch.device("cpu"), with_decode=False)
    assert estimate["tokens"] == 16384 and estimate["latent"] == [32, 128, 128]
    assert 1.5 < estimate["weights_GiB"] < 1.7  # 864.98M parameters without the projector, bf16
    assert estimate["total_GiB_tiled_decode"] > estimate["network_activations_GiB"] > 1


@pytest.mark.slow
def test_the_4096_decode_estimate_of_a_dc_ae() -> None:
    estimate = bench().estimate_4096(torch.device("cpu"))
    assert estimate["decode_GiB_tiled"] < estimate["decode_GiB_untiled"]
    assert estimate["total_GiB_tiled_decode"] > estimate["weights_GiB"] + estimate["decode_GiB_tiled"]
