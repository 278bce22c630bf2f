"""What a run leaves besides checkpoints: sample grids of the EMA model and the exported weights."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tim.training import distributed
from tim.training.config import RunConfig, model_config
from tim.training.logging import write_summary
from tim.training.preemption import deferred, interruptible
from tim.training.state import TrainState
from tim.training.text import grid_condition


def sample_grids(
    cfg: RunConfig,
    run_dir: Path,
    step: int,
    ema: nn.Module,
    objective: Any,
    info: Any,
    env: distributed.DistEnv,
) -> None:
    """Draw the EMA model's samples with each ``sample.steps`` count and save a grid per count.

    Drawing is interruptible (a stop signal raises :class:`tim.training.preemption.SignalStop` at
    once: a grid is worth nothing next to a preempted job's seconds); writing a grid is deferred, so
    a PNG is never cut in half.
    """
    if cfg.sample.num == 0:
        return
    try:
        from tim.samplers import sample_batches
        from tim.viz import save_grid, scatter
    except ImportError:  # an optional part of the package is missing: training goes on without grids
        return
    generator = torch.Generator(device=env.device).manual_seed(cfg.sample.seed)
    noise = torch.randn((cfg.sample.num, *info.shape), generator=generator, device=env.device)
    out = run_dir / "samples"
    out.mkdir(exist_ok=True)
    with interruptible():
        if getattr(
            info, "text_dim", 0
        ):  # text model: one training caption per grid row (samples/grid_prompts.txt)
            cond = grid_condition(info, cfg.sample.num, env.device, out if env.is_main else None)
        else:
            cond = (
                {"y": torch.arange(cfg.sample.num, device=env.device) % info.num_classes}
                if info.num_classes
                else {}
            )
    for steps in cfg.sample.steps:
        with interruptible(), torch.no_grad():
            x = sample_batches(
                ema,
                noise,
                path=objective.path,
                steps=steps,
                cond=cond,
                guidance_scale=cfg.sample.guidance_scale,
                guidance_interval=cfg.sample.guidance_interval,
                stochasticity=cfg.sample.stochasticity,
                generator=generator,
            ).x.cpu()
        name = out / f"step_{step:08d}_nfe_{steps}.png"
        with deferred("writing a sample grid"):
            if env.is_main and info.kind == "image":
                save_grid(_preview(x), name, nrow=int(math.sqrt(cfg.sample.num)) or 1)
            elif env.is_main:
                scatter({f"{steps} steps": x}, name, title=f"step {step}, {steps} sampling steps")


def _preview(x: torch.Tensor) -> torch.Tensor:
    """Images (B, C, H, W) as a viewable grid input in [-1, 1].

    Pixels (1 or 3 channels) are clipped. Latents with another channel count (e.g. 4 for SD-VAE,
    32 for DC-AE) cannot be decoded here (the loop has no autoencoder), so their first three
    channels are shown, scaled by the largest magnitude of the grid: a preview, not a picture.
    """
    if x.shape[1] in (1, 3):
        return x.clamp(-1, 1)
    x = x[:, :3] if x.shape[1] >= 3 else x[:, :1]
    return x / x.abs().amax().clamp_min(1e-8)


def export_run(
    cfg: RunConfig, run_dir: Path, ema: nn.Module, state: TrainState, env: distributed.DistEnv
) -> None:
    """Write the EMA weights as a ``save_pretrained`` folder and the run summary (rank 0)."""
    from tim.models import build_model, save_pretrained

    weights = distributed.full_model_state(ema)
    if not env.is_main:
        return
    export = build_model(model_config(cfg))
    export.load_state_dict(weights)
    save_pretrained(export, run_dir / "pretrained")
    write_summary(
        run_dir,
        {
            "steps": state.step,
            "images": state.images,
            "skipped": state.skipped,
            "ema_updates": state.ema_updates,
        },
    )
