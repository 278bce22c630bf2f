"""Tiny random diffusers autoencoders saved with save_pretrained (for tests; no download).

``tiny_kl(folder)``: AutoencoderKL, f4 (3 blocks), 4 latent channels, widths 8-16-16, mid-block attention.
``tiny_dc(folder)``: AutoencoderDC, f4 (3 blocks), 8 latent channels, ResBlocks + one EfficientViT stage.
Both are deterministic (seeded) and take well under a second to build on one core.
"""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_kl(
    folder: str | Path,
    *,
    latent_channels: int = 4,
    scaling_factor: float = 0.5,
    shift_factor: float | None = None,
    seed: int = 0,
) -> Path:
    """Build, seed and save a tiny AutoencoderKL; returns the folder."""
    import diffusers

    torch.manual_seed(seed)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16, 16),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=latent_channels,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=32,
        scaling_factor=scaling_factor,
        shift_factor=shift_factor,
    )
    vae.save_pretrained(str(folder))
    return Path(folder)


def tiny_dc(
    folder: str | Path, *, latent_channels: int = 8, scaling_factor: float = 0.4, seed: int = 0
) -> Path:
    """Build, seed and save a tiny AutoencoderDC; returns the folder."""
    import diffusers

    torch.manual_seed(seed)
    vae = diffusers.AutoencoderDC(
        latent_channels=latent_channels,
        attention_head_dim=8,
        encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 16, 16),
        decoder_block_out_channels=(8, 16, 16),
        encoder_layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1),
        encoder_qkv_multiscales=((), (), (5,)),
        decoder_qkv_multiscales=((), (), (5,)),
        scaling_factor=scaling_factor,
    )
    vae.save_pretrained(str(folder))
    return Path(folder)
