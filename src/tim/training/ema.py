"""Exponential moving average of the weights (DiT's update with a warm-up for short runs).

``ema <- decay_n * ema + (1 - decay_n) * theta`` after every optimizer step n (the published TiM uses
decay 0.9999 every step). A fixed 0.9999 needs ~10^4 steps before the average forgets the random
initialisation, far longer than a CPU demo run, so by default the decay ramps up as
``decay_n = min(decay, (1 + n) / (10 + n))`` (the warm-up of TensorFlow's ExponentialMovingAverage
with ``num_updates``): 0.1 at the first step, 0.9 after 80 steps, 0.99 after 890.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def ema_decay(decay: float, num_updates: int, warmup: bool = True) -> float:
    """Decay used for update number ``num_updates`` (0-based).

    Args:
        decay: the target decay in [0, 1).
        num_updates: EMA updates done before this one.
        warmup: ramp the decay as ``(1 + n) / (10 + n)`` until it reaches ``decay``.

    Returns:
        The decay for this update.
    """
    return min(decay, (1 + num_updates) / (10 + num_updates)) if warmup else decay


def make_ema(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` in eval mode (the EMA weights start equal to the model's)."""
    ema = copy.deepcopy(model).eval()
    ema.requires_grad_(False)
    return ema


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` for parameters; buffers are copied.

    Works unchanged on FSDP2-sharded modules: both hold the same sharding, so each process
    updates its local shard.
    """
    for ema_param, param in zip(ema.parameters(), model.parameters(), strict=True):
        ema_param.lerp_(param.detach(), 1.0 - decay)
    for ema_buffer, buffer in zip(ema.buffers(), model.buffers(), strict=True):
        ema_buffer.copy_(buffer)
