"""Bad inputs (`TiMPipeline` requests and pipeline folders (tim convert's rows: tests/pipeline)): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers.bad_inputs import (
    Case,
    check_case,
    tim_error,
)


def _rgb_pipeline():  # noqa: ANN202 - a TiMPipeline
    from tim.generation import SamplingRecipe, TiMPipeline
    from tim.models import build_model

    torch.manual_seed(0)
    return TiMPipeline(build_model("TiM-tiny", in_channels=3).eval(), SamplingRecipe(steps=1))


def pipeline_call(**kwargs: object) -> Callable[[Path], str]:
    return lambda tmp: tim_error(lambda: _rgb_pipeline()(**kwargs))


def _pipeline_too_large(tmp: Path) -> str:
    pipe = _rgb_pipeline()
    pipe.memory_limit = 1_000_000
    return tim_error(lambda: pipe(class_labels=[1], height=256, width=256))


def _pipeline_folder_without_weights(tmp: Path) -> str:
    from tim.generation import TiMPipeline

    folder = _rgb_pipeline().save_pretrained(tmp / "pipe")
    (folder / "model" / "model.safetensors").unlink()
    return tim_error(lambda: TiMPipeline.load(folder))


def _pipeline_folder_bit_flipped(tmp: Path) -> str:
    from tim.generation import TiMPipeline

    folder = _rgb_pipeline().save_pretrained(tmp / "pipe")
    weights = folder / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0x10
    weights.write_bytes(bytes(data))
    return tim_error(lambda: TiMPipeline.load(folder))


def _released_file_not_tim(tmp: Path) -> str:
    from safetensors.torch import save_file

    from tim.generation import TiMPipeline

    save_file({"encoder.weight": torch.zeros(2, 2)}, str(tmp / "other.safetensors"))
    return tim_error(
        lambda: TiMPipeline.from_released(
            tmp / "other.safetensors", preset="TiM-XL/2", autoencoder=tmp / "ae"
        )
    )


def _pipeline_half_on_cpu(tmp: Path) -> str:
    from tim.generation import TiMPipeline

    folder = _rgb_pipeline().save_pretrained(tmp / "pipe")
    return tim_error(lambda: TiMPipeline.load(folder, dtype="bf16"))


CASES: list[Case] = [
    Case(
        "pipeline-prompt-for-class-model",
        "sampling",
        "`pipe(prompt=...)` on a class-conditioned pipeline",
        pipeline_call(prompt="a cat"),
        ("prompt was given", "class-conditioned model"),
        ("pass class_labels=",),
    ),
    Case(
        "pipeline-label-out-of-range",
        "sampling",
        "`pipe(class_labels=[10])` for a 10-class model",
        pipeline_call(class_labels=[10]),
        ("class label 10 is out of range", "10 classes"),
        ("ids in [0, 9]",),
    ),
    Case(
        "pipeline-size-not-divisible",
        "sampling",
        "`pipe(height=9)` with patch size 2",
        pipeline_call(class_labels=[1], height=9, width=8),
        ("9x8 is not divisible by 2",),
        ("multiples of 2",),
    ),
    Case(
        "pipeline-too-large",
        "sampling",
        "a 256x256 request with 1 MB of memory available",
        _pipeline_too_large,
        ("256x256 image needs about", "only 976.6 KiB are available"),
        ("smaller height/width",),
    ),
    Case(
        "pipeline-folder-missing-part",
        "checkpoint",
        "a pipeline folder whose `model/model.safetensors` was deleted",
        _pipeline_folder_without_weights,
        ("has no model/",),
        ("tim convert or save_pretrained",),
    ),
    Case(
        "pipeline-folder-bit-flipped",
        "checkpoint",
        "a pipeline folder whose `model/model.safetensors` has one flipped bit",
        _pipeline_folder_bit_flipped,
        ("model.safetensors is damaged (SHA-256 differs from pipeline.json)",),
        ("restore the file or re-create the folder",),
    ),
    Case(
        "released-file-not-tim",
        "checkpoint",
        "`TiMPipeline.from_released` on a file that is not the preset's weights (autoencoder folder missing too)",
        _released_file_not_tim,
        ("other.safetensors do not match the model", "unexpected 1 [encoder.weight]"),
        ("check that the checkpoint and the model config",),
    ),
    Case(
        "pipeline-half-on-cpu",
        "sampling",
        "`TiMPipeline.load(..., dtype='bf16')` on the CPU",
        _pipeline_half_on_cpu,
        ("bfloat16 inference on the cpu is not supported",),
        ("use dtype fp32 on the cpu",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
