"""A lower bound on one training step's memory, checked before anything large is allocated.

A huge ``train.batch_size`` (or a huge model) used to reach the allocator and die with a traceback
after minutes of start-up, or drive the machine into swap. :func:`check_training_memory` estimates
what one optimizer step needs on one process and refuses, with a one-line error naming both
sizes, when that exceeds the memory available on the device.

The estimate is deliberately a *lower* bound, so that it never refuses a run that would fit:

* model state: fp32 weights, EMA copy, gradients and the two AdamW moments, 20 bytes per parameter;
* activations kept for the backward pass: per sample, tokens x width x depth x
  :data:`SAVED_PER_BLOCK` float32 values (attention scores, which SDPA may not materialise, are
  not counted);
* the batch tensors of the objective (x, z, x_t, target, F, dF/dt): :data:`BATCH_COPIES` copies.

Real peak use is higher (allocator slack, derivative passes, CUDA context), so passing the check
does not promise that a run fits; failing it means it certainly does not.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from tim.errors import TimError
from tim.system import UNKNOWN_MEMORY, available_memory

STATE_BYTES_PER_PARAM = 20  # fp32 weights + EMA + gradient + AdamW exp_avg + exp_avg_sq (4 bytes each)
# float32 values per token, width unit and block that one training step holds at its peak, a little
# below what we measured (peak RSS growth per batch row, torch 2.13 CPU, fp32, DDE objective):
# TiM-digits 35-37 (patch 2 and 4, batch 128-2048), MLP-toy 14 (batch 512-4096).
SAVED_PER_BLOCK = {"transformer": 32, "mlp": 12}
BATCH_COPIES = 6  # x, z, x_t, target, F and dF/dt of the objective, each the size of the batch


def _size(n: float) -> str:
    """Bytes as a short human-readable size (MiB up to TiB, then PiB)."""
    for unit, scale in (("MiB", 2**20), ("GiB", 2**30), ("TiB", 2**40)):
        if n < 1024 * scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n / 2**50:.1f} PiB"


def parameter_count(config: Any) -> int:
    """Parameters of the network ``config`` describes, counted on the meta device (nothing allocated)."""
    from tim.models import build_model

    with torch.device("meta"):
        return sum(p.numel() for p in build_model(config).parameters())


def activation_bytes_per_sample(config: Any, item_shape: tuple[int, ...]) -> int:
    """Lower bound on the activation bytes one sample keeps for the backward pass.

    Args:
        config: a ``TiMConfig`` (tokens = patches of the item) or ``MLPConfig`` (one token).
        item_shape: ``(C, H, W)`` or ``(D,)``.
    """
    patch = getattr(config, "patch_size", None)
    tokens = (
        math.prod(max(1, side // patch) for side in item_shape[1:]) if patch and len(item_shape) == 3 else 1
    )
    width, depth = getattr(config, "hidden_size", 1), getattr(config, "depth", 1)
    blocks = tokens * width * depth * SAVED_PER_BLOCK["transformer" if patch else "mlp"] * 4
    return blocks + BATCH_COPIES * 4 * math.prod(item_shape)


def available_bytes(device: torch.device) -> int | None:
    """Free memory on ``device`` (:func:`tim.system.available_memory`); None if unknown."""
    value, _ = available_memory(device)
    return None if value >= UNKNOWN_MEMORY else value


def check_training_memory(
    config: Any,
    item_shape: tuple[int, ...],
    rows_per_process: int,
    batch_size: int,
    device: torch.device,
    available: int | None = None,
) -> int:
    """Refuse a step that cannot fit in memory; return the estimated bytes.

    Args:
        config: the network config.
        item_shape: one data item's shape (the largest bucket for bucketed data).
        rows_per_process: rows of one micro-batch on this process.
        batch_size: ``train.batch_size`` (for the message).
        device: where training runs.
        available: free bytes (default: measured with :func:`available_bytes`).

    Raises:
        TimError: the lower bound exceeds the free memory.
    """
    available = available_bytes(device) if available is None else available
    state = STATE_BYTES_PER_PARAM * parameter_count(config)
    per_row = activation_bytes_per_sample(config, item_shape)
    needed = state + rows_per_process * per_row
    if available is None or needed <= available:
        return needed
    where = f"{device.type} (free memory)"
    if state > available:
        raise TimError(
            f"the model's training state alone needs at least {_size(state)} but only "
            f"{_size(available)} is available on {where}",
            "choose a smaller model (model.preset, model.hidden_size, model.depth) or a larger device",
        )
    fits = max(1, (available - state) // per_row)
    raise TimError(
        f"train.batch_size = {batch_size} needs at least {_size(needed)} per process for one "
        f"training step ({rows_per_process} rows x {per_row / 2**10:.1f} KiB + {_size(state)} "
        f"model state) but only {_size(available)} is available on {where}",
        f"lower train.batch_size, or raise optim.accumulation so that each micro-batch has at most "
        f"about {fits} rows",
    )
