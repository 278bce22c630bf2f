"""Bad inputs (autoencoder folders, latent channels, decode memory, dtypes): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

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


def _autoencoder_folder_error(make: Callable[[Path], None]) -> Callable[[Path], str]:
    """``Autoencoder.from_pretrained`` on a folder that ``make`` prepares."""

    def trigger(tmp: Path) -> str:
        from tim.autoencoders import Autoencoder

        folder = tmp / "vae"
        folder.mkdir()
        make(folder)
        return tim_error(lambda: Autoencoder.from_pretrained(folder))

    return trigger


def _tiny_autoencoder(tmp: Path, **options: object) -> object:
    from helpers.autoencoders import tiny_kl
    from tim.autoencoders import Autoencoder

    return Autoencoder.from_pretrained(tiny_kl(tmp / "kl"), **options)


def _autoencoder_wrong_channels(tmp: Path) -> str:
    from tim.autoencoders import check_latent_channels

    return tim_error(lambda: check_latent_channels(_tiny_autoencoder(tmp), 32, "the TiM model"))


def _autoencoder_decode_too_big(tmp: Path) -> str:
    ae = _tiny_autoencoder(tmp, memory_limit=10 * 2**20)
    return tim_error(lambda: ae.decode(torch.zeros(1, 4, 256, 256)))


def _autoencoder_bf16_cpu(tmp: Path) -> str:
    return tim_error(lambda: _tiny_autoencoder(tmp, dtype=torch.bfloat16))


CASES: list[Case] = [
    Case(
        "autoencoder-other-class",
        "data",
        "an autoencoder folder whose config.json is another model (a UNet)",
        _autoencoder_folder_error(lambda f: (f / "config.json").write_text('{"_class_name": "UNet2DModel"}')),
        ("holds a UNet2DModel", "not an autoencoder we support"),
        ("AutoencoderKL", "AutoencoderDC"),
    ),
    Case(
        "autoencoder-no-config",
        "data",
        "an autoencoder folder without config.json",
        _autoencoder_folder_error(lambda f: None),
        ("has no config.json",),
        ("save_pretrained",),
    ),
    Case(
        "autoencoder-wrong-channels",
        "sampling",
        "a 4-channel autoencoder for a model of 32-channel latents",
        _autoencoder_wrong_channels,
        ("32-channel latents", "makes 4-channel"),
        ("the autoencoder the model was trained with",),
    ),
    Case(
        "autoencoder-decode-too-big",
        "sampling",
        "decoding a 1024x1024 image with 10 MB of memory to spare",
        _autoencoder_decode_too_big,
        ("1024x1024", "in tiles needs about", "is available on cpu"),
        ("smaller image", "smaller tiles"),
    ),
    Case(
        "autoencoder-bf16-cpu",
        "sampling",
        "an autoencoder in bfloat16 on the CPU",
        _autoencoder_bf16_cpu,
        ("bfloat16 on the cpu",),
        ("float32 on the cpu",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
