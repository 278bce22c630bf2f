"""Training the small AutoencoderKL: the embedded default autoencoder of the latent path.

:func:`train_autoencoder` (the ``tim autoencoder train`` command), its settings and checks, and the
lower bound on its memory checked before any image is made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tim.autoencoders.model import Autoencoder, available_bytes, check_images, save_folder
from tim.errors import TimError


@dataclass
class TrainSettings:
    """Settings of :func:`train_autoencoder` (the ``tim autoencoder train`` options).

    The default network is an f4 AutoencoderKL with 4 latent channels (the SD-VAE's 4 channels at
    half its down-sampling, for 32-px images: 8x8x4 latents) and widths 16-32-32, 1 ResNet per
    block and no mid-block attention: ~0.23M parameters, 0.3-0.5 s per batch-16 step on one busy
    core (measured here), so a few minutes of training reconstruct the synthetic scenes.
    """

    widths: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_groups: int = 8
    steps: int = 3000
    minutes: float | None = None
    batch_size: int = (
        16  # more, smaller steps learn faster per CPU-minute (measured: 294 steps of 16 -> 25 dB)
    )
    lr: float = 2e-3
    warmup_steps: int = 50
    # KL weight: small, so the latent keeps detail (SD-VAE trains with 1e-6 next to perceptual and
    # GAN terms; with a plain L1 term 1e-4 keeps the latents near unit scale without blurring here).
    kl_weight: float = 1e-4
    # Squared-error term next to L1: on mostly black scenes L1 alone learns the colours slowly
    # (measured: red/green/yellow came out grey after 340 steps).
    l2_weight: float = (
        4.0  # measured: L1 + 4 x MSE, lr 2e-3, batch 16 -> 25.1 dB in 2 min (L1 alone: 19 dB in 3)
    )
    seed: int = 0
    progress: bool = True


def small_kl_config(settings: TrainSettings, image_size: int) -> dict[str, Any]:
    """The diffusers AutoencoderKL config that :func:`train_autoencoder` trains."""
    if not settings.widths or any(w <= 0 or w % settings.norm_groups for w in settings.widths):
        raise TimError(
            f"autoencoder widths {settings.widths} must be positive multiples of {settings.norm_groups}",
            "pass widths such as 16,32,32",
        )
    blocks = len(settings.widths)
    return dict(
        _class_name="AutoencoderKL",
        in_channels=3,
        out_channels=3,
        block_out_channels=tuple(settings.widths),
        down_block_types=("DownEncoderBlock2D",) * blocks,
        up_block_types=("UpDecoderBlock2D",) * blocks,
        latent_channels=settings.latent_channels,
        layers_per_block=settings.layers_per_block,
        norm_num_groups=settings.norm_groups,
        sample_size=image_size,
        mid_block_add_attention=False,
        scaling_factor=1.0,
        shift_factor=0.0,
    )


def psnr(reconstructed: Tensor, reference: Tensor) -> Tensor:
    """Per-image PSNR (dB) of images in [-1, 1], measured on the [0, 1] scale (peak 1)."""
    mse = ((reconstructed.clamp(-1, 1) - reference) / 2).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1 / mse.clamp_min(1e-10))


def train_autoencoder(
    images: Tensor,
    heldout: Tensor,
    out: str | Path,
    settings: TrainSettings | None = None,
    *,
    source: str = "",
) -> dict[str, Any]:
    """Train a small AutoencoderKL, set its latent scale/shift, save it atomically, report PSNR.

    Args:
        images: (N, 3, H, W) training images in [-1, 1] (H, W multiples of the factor).
        heldout: (M, 3, H, W) held-out images for the reported PSNR (never trained on).
        out: the new folder: diffusers ``save_pretrained`` files + ``train_report.json``; written to
            a temporary folder next to it and renamed at the end (never half-written).
        settings: network and optimisation settings.
        source: a description of the data for the report.

    Returns:
        The report (also ``out/train_report.json``): steps, seconds, parameters, the latent
        statistics behind ``scaling_factor`` / ``shift_factor``, held-out PSNR (mean, min).
    """
    settings = settings or TrainSettings()
    out = Path(out)
    _check_training_inputs(images, heldout, settings)
    config = small_kl_config(settings, images.shape[-1])
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)  # diffusers initialises its weights from the global generator
    ae = Autoencoder.from_config(config)
    vae = ae.vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.lr, weight_decay=0.0)
    steps_done, losses, started = _optimise(vae, optimizer, images, settings, generator)
    seconds = time.perf_counter() - started
    vae.eval().requires_grad_(False)
    stats = _set_latent_normalisation(ae, images)
    scores = torch.cat([psnr(ae.decode(ae.encode(chunk), tiled=False), chunk) for chunk in heldout.split(64)])
    report = {
        "format": "tim-autoencoder-train-v1",
        "source": source,
        "image_size": list(images.shape[-2:]),
        "train_images": len(images),
        "heldout_images": len(heldout),
        "architecture": {
            "class": "AutoencoderKL",
            "factor": ae.factor,
            "latent_channels": ae.latent_channels,
            "widths": list(settings.widths),
            "parameters": sum(p.numel() for p in vae.parameters()),
        },
        "steps": steps_done,
        "planned_steps": settings.steps,
        "seconds": round(seconds, 1),
        "batch_size": settings.batch_size,
        "lr": settings.lr,
        "kl_weight": settings.kl_weight,
        "seed": settings.seed,
        "final_l1": round(sum(losses[-50:]) / max(1, len(losses[-50:])), 5),
        "latents": stats,
        "heldout_psnr_db": round(float(scores.mean()), 2),
        "heldout_psnr_db_min": round(float(scores.min()), 2),
    }
    save_folder(ae, out, report)
    ae.folder = out
    return report


def _check_training_inputs(images: Tensor, heldout: Tensor, settings: TrainSettings) -> None:
    factor = 2 ** (len(settings.widths) - 1)
    for name, batch in (("training", images), ("held-out", heldout)):
        check_images(batch, 3)
        if len(batch) < 1:
            raise TimError(f"no {name} images", "give the autoencoder at least a few images of each split")
        if batch.shape[-1] % factor or batch.shape[-2] % factor:
            raise TimError(
                f"{name} images are {batch.shape[-2]}x{batch.shape[-1]}, not multiples of the factor {factor}",
                f"use an image size divisible by {factor}",
            )
    check_train_settings(settings)


def check_train_settings(settings: TrainSettings, image_size: int | None = None) -> None:
    """TimError for settings :func:`train_autoencoder` cannot use (checked before any data is made)."""
    if settings.steps < 1 or settings.batch_size < 1 or not settings.lr > 0:
        raise TimError(
            f"steps={settings.steps}, batch_size={settings.batch_size}, lr={settings.lr} must be positive",
            "pass positive --steps, --batch-size and --lr",
        )
    if settings.minutes is not None and not settings.minutes > 0:
        raise TimError(
            f"minutes={settings.minutes} is not positive", "pass a positive time budget, e.g. --minutes 3"
        )
    if settings.latent_channels < 1:
        raise TimError(
            f"latent_channels={settings.latent_channels} is < 1", "pass a positive latent channel count"
        )
    small_kl_config(settings, image_size or 32)
    factor = 2 ** (len(settings.widths) - 1)
    if image_size is not None and image_size % factor:
        raise TimError(
            f"image size {image_size} is not a multiple of the autoencoder factor {factor}",
            f"use an image size divisible by {factor}",
        )


# float32 values per pixel and first-block channel that one training step keeps for the backward
# pass, a lower bound: the full-resolution encoder and decoder blocks alone keep about a dozen
# (conv, norm and activation outputs of each ResNet layer).
TRAIN_SAVED_PER_PIXEL = 8


def training_memory_bytes(settings: TrainSettings, image_size: int, num_images: int) -> tuple[int, int]:
    """Lower bound on ``(image bytes, one step's activation bytes)`` of :func:`train_autoencoder`.

    Args:
        settings: the network and batch size.
        image_size: the side S of the square images.
        num_images: training plus held-out images held in memory as float32 (N, 3, S, S).
    """
    pixels = image_size * image_size
    images = num_images * 3 * pixels * 4
    activations = settings.batch_size * pixels * settings.widths[0] * TRAIN_SAVED_PER_PIXEL * 4
    return images, activations


def check_training_memory(
    settings: TrainSettings, image_size: int, num_images: int, device: torch.device | str = "cpu"
) -> None:
    """One TimError line, before any image is made, when training cannot fit in the free memory."""
    from tim.system import format_bytes

    images, activations = training_memory_bytes(settings, image_size, num_images)
    free = available_bytes(device)
    if images + activations > free:
        raise TimError(
            f"training at image size {image_size} on {num_images:,} images with batch size "
            f"{settings.batch_size} needs at least {format_bytes(images + activations)} "
            f"(images {format_bytes(images)}, one step {format_bytes(activations)}) but "
            f"{format_bytes(free)} is free on {device}",
            "lower --image-size, --num-images or --batch-size",
        )


def _optimise(
    vae: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    images: Tensor,
    settings: TrainSettings,
    generator: torch.Generator,
) -> tuple[int, list[float], float]:
    """The training loop: L1 reconstruction of a sampled latent + kl_weight x KL, warm-up, clipping."""
    bar = None
    if settings.progress:
        from tim.progress import progress_bar

        bar = progress_bar(total=settings.steps, unit="step", dynamic_ncols=True, desc="autoencoder")
    losses: list[float] = []
    started = time.perf_counter()
    step = 0
    try:
        while step < settings.steps:
            if settings.minutes is not None and time.perf_counter() - started > 60 * settings.minutes:
                if bar is not None:
                    bar.write(f"time budget of {settings.minutes:g} min reached at step {step}")
                break
            index = torch.randint(len(images), (settings.batch_size,), generator=generator)
            x = images[index]
            posterior = vae.encode(x).latent_dist
            z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)
            reconstruction = vae.decode(z).sample
            error = reconstruction - x
            l1 = error.abs().mean()
            loss = (
                l1
                + settings.l2_weight * error.pow(2).mean()
                + settings.kl_weight * posterior.kl().mean() / x[0].numel()
            )
            for group in optimizer.param_groups:  # linear warm-up (stable start at lr 1e-3)
                group["lr"] = settings.lr * min(1.0, (step + 1) / max(1, settings.warmup_steps))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            optimizer.step()
            losses.append(float(l1.detach()))
            step += 1
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(l1=f"{sum(losses[-10:]) / 10:.4f}", refresh=False)
    finally:
        if bar is not None:
            bar.close()
    return step, losses, started


@torch.no_grad()
def _set_latent_normalisation(ae: Autoencoder, images: Tensor) -> dict[str, float]:
    """shift = mean and scale = 1 / std of the training latents (posterior means), written to the config.

    The SD convention (scaling_factor = 1 / std of the latents, so TiM sees unit variance), with
    the mean removed first as SD3 and FLUX do (shift_factor): our small KL latents are not centred.
    """
    latents = torch.cat([ae.encode(chunk) for chunk in images[:1024].split(128)])  # 1024 x 256 values: enough
    mean, std = float(latents.mean()), float(latents.std())
    ae.vae.register_to_config(scaling_factor=1.0 / std, shift_factor=mean)
    ae.scaling_factor, ae.shift_factor = 1.0 / std, mean
    ae._config.update(scaling_factor=1.0 / std, shift_factor=mean)
    return {"mean": mean, "std": std, "scaling_factor": 1.0 / std, "shift_factor": mean}
