"""Guidance: classifier-free guidance at sampling time and model guidance in the training target.

* :func:`classifier_free_guidance` - F = F_uncond + s (F_cond - F_uncond) (Ho & Salimans 2022;
  paper.md §7).
* :func:`in_guidance_interval` - whether a sampling time is guided. ``"inclusive"`` (our default)
  guides low t_max <= t <= high t_max; ``"strict"`` reproduces the published sampler
  (low t_max < t < high t_max, so t = t_max is never guided; paper.md §12 item 6).
* :func:`guided_target_offset` - model guidance (paper.md §5.4, TiM Eq. (51)): the target gains
  (omega - 1)(F_cond - F_uncond) of a teacher (EMA) evaluated at r = t, inside a time window.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from tim.errors import TimError

__all__ = ["classifier_free_guidance", "in_guidance_interval", "guided_target_offset", "IntervalMode"]

IntervalMode = Literal["inclusive", "strict"]


def classifier_free_guidance(F_cond: Tensor, F_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: F_uncond + scale (F_cond - F_uncond).

    Args:
        F_cond: conditional output, shape ``(B, ...)``.
        F_uncond: unconditional output, same shape.
        scale: guidance scale (1 = conditional output).

    Returns:
        The guided output, shape and dtype of ``F_cond``.
    """
    return F_uncond + scale * (F_cond - F_uncond)


def in_guidance_interval(
    t: float, interval: tuple[float, float], *, t_max: float, mode: IntervalMode = "inclusive"
) -> bool:
    """Whether CFG is applied at sampling time ``t``.

    Args:
        t: current time.
        interval: ``(low, high)`` as fractions of ``t_max`` (as in the published sampler).
        t_max: the path's largest time.
        mode: ``"inclusive"``: low t_max <= t <= high t_max; ``"strict"``: low t_max < t < high t_max
            (published behaviour, t = t_max unguided when high = 1).

    Returns:
        True if guidance is applied.
    """
    low, high = interval[0] * t_max, interval[1] * t_max
    if mode == "inclusive":
        return low <= t <= high
    if mode == "strict":
        return low < t < high
    raise TimError(f"unknown guidance interval mode {mode!r}", "use 'inclusive' or 'strict'")


def guided_target_offset(
    F_cond: Tensor, F_uncond: Tensor, t: Tensor, *, scale: float, window: tuple[float, float]
) -> Tensor:
    """Model-guidance offset of the training target (TiM Eq. (51), paper.md §5.4).

    offset = (omega - 1)(F_cond - F_uncond) on rows with window[0] <= t <= window[1] (inclusive,
    as published), 0 elsewhere. F_cond/F_uncond come from a no-grad teacher at r = t.

    Args:
        F_cond: teacher output with the true condition, shape ``(B, ...)``.
        F_uncond: teacher output with the null condition, same shape.
        t: training times, shape ``(B,)``.
        scale: omega (1 = no guidance; the published _mg configs use 1.75).
        window: inclusive time window ``(t_lo, t_hi)`` (published _mg: (0.3, 0.8)).

    Returns:
        The offset, shape of ``F_cond``.
    """
    inside = (t >= window[0]) & (t <= window[1])
    mask = inside.reshape(-1, *([1] * (F_cond.ndim - 1))).to(F_cond.dtype)
    return (scale - 1.0) * (F_cond - F_uncond) * mask


def concat_cond(cond: dict[str, Tensor], other: dict[str, Tensor]) -> dict[str, Tensor] | None:
    """Stack two condition dicts along the batch (for one CFG forward), or None if they differ in layout."""
    if cond.keys() != other.keys():
        return None
    out: dict[str, Tensor] = {}
    for key, value in cond.items():
        extra = other[key]
        if not (torch.is_tensor(value) and torch.is_tensor(extra)) or value.shape[1:] != extra.shape[1:]:
            return None
        out[key] = torch.cat([value, extra])
    return out
