"""Test doubles for the pipeline tests: tiny networks and a stand-in autoencoder."""

from __future__ import annotations

import torch

from tim.models import build_model


def tiny_model(**overrides: object) -> torch.nn.Module:
    """TiM-tiny with perturbed weights (the released init outputs exactly 0), deterministic."""
    torch.manual_seed(0)
    model = build_model("TiM-tiny", **overrides)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model.eval()


class PixelShuffleAutoencoder:
    """A stand-in for tim.autoencoders.Autoencoder: decodes 4 latent channels to 1 grey channel at 2x.

    It has the interface the pipeline uses (decode, decode_bytes, latent_channels, factor,
    scaling_factor, shift_factor) and records what it decoded.
    """

    kind = "test"
    latent_channels = 4
    factor = 2
    scaling_factor = 0.5
    shift_factor = 0.25
    folder = None

    def __init__(self) -> None:
        self.decoded: list[torch.Tensor] = []

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        self.decoded.append(latents.clone())
        return torch.tanh(torch.nn.functional.pixel_shuffle(latents, 2))

    def decode_bytes(self, height: int, width: int) -> int:
        return 64 * height * width
