"""tim.autoencoders on tiny random AutoencoderKL / AutoencoderDC folders: load, shapes, ranges, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from helpers.autoencoders import tiny_dc, tiny_kl  # noqa: E402

from tim.autoencoders import Autoencoder, check_latent_channels  # noqa: E402
from tim.errors import TimError  # noqa: E402


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("autoencoders")
    return {"AutoencoderKL": tiny_kl(root / "kl", shift_factor=0.1), "AutoencoderDC": tiny_dc(root / "dc")}


@pytest.mark.parametrize(("kind", "channels", "scale", "shift"),
                         [("AutoencoderKL", 4, 0.5, 0.1), ("AutoencoderDC", 8, 0.4, 0.0)])
def test_load_encode_decode(folders: dict[str, Path], kind: str, channels: int, scale: float, shift: float) -> None:
    ae = Autoencoder.from_pretrained(folders[kind])
    assert (ae.kind, ae.latent_channels, ae.factor, ae.scaling_factor, ae.shift_factor) == (kind, channels, 4, scale, shift)
    images = torch.rand(3, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = ae.encode(images)
    assert latents.shape == (3, channels, 4, 6) and latents.dtype == torch.float32
    assert torch.equal(latents, ae.encode(images))  # KL: the posterior mean, no sampling
    decoded = ae.decode(latents * 20)  # far outside the usual range: still clipped to [-1, 1]
    assert decoded.shape == images.shape and decoded.min() >= -1 and decoded.max() <= 1
    assert decoded.abs().max() == 1  # the clip did act
    x = ae.normalize(latents)
    torch.testing.assert_close(x, (latents - shift) * scale)
    torch.testing.assert_close(ae.denormalize(x), latents)


def test_save_pretrained_round_trip(folders: dict[str, Path], tmp_path: Path) -> None:
    ae = Autoencoder.from_pretrained(folders["AutoencoderKL"])
    ae.save_pretrained(tmp_path / "copy")
    again = Autoencoder.from_pretrained(tmp_path / "copy")
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ae.decode(latents), again.decode(latents))
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]  # no temporary folder left
    with pytest.raises(TimError, match="already exists and is not empty"):
        ae.save_pretrained(tmp_path / "copy")


def test_bad_folders_and_inputs(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TimError, match="does not exist"):
        Autoencoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(TimError, match="has no config.json"):
        Autoencoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(TimError, match="holds a UNet2DModel, not an autoencoder we support"):
        Autoencoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(TimError, match="not readable JSON"):
        Autoencoder.from_pretrained(tmp_path)
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text((folders["AutoencoderKL"] / "config.json").read_text())
    with pytest.raises(TimError, match="cannot load the AutoencoderKL"):
        Autoencoder.from_pretrained(weightless)
    with pytest.raises(TimError, match="on the CPU is not supported"):
        Autoencoder.from_pretrained(folders["AutoencoderKL"], dtype=torch.bfloat16)
    ae = Autoencoder.from_pretrained(folders["AutoencoderDC"])
    with pytest.raises(TimError, match="do not match this autoencoder's 8 latent channels"):
        ae.decode(torch.zeros(1, 4, 4, 4))
    with pytest.raises(TimError, match="not a multiple of the autoencoder factor 4"):
        ae.encode(torch.zeros(1, 3, 10, 12))
    with pytest.raises(TimError, match=r"not \(B, 3, H, W\)"):
        ae.encode(torch.zeros(3, 16, 16))
    with pytest.raises(TimError, match="works on 4-channel latents but the autoencoder"):
        check_latent_channels(ae, 4)
