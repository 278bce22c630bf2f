"""Guidance: classifier-free guidance at sampling time and model guidance in the training target.

* :func:`classifier_free_guidance` - F = F_uncond + s (F_cond - F_uncond) (Ho & Salimans 2022;
  arXiv 2509.04394, Alg. 2).
* :func:`in_guidance_interval` - whether a sampling time is guided. ``"inclusive"`` (our default)
  guides low t_max <= t <= high t_max; ``"strict"`` reproduces the published sampler
  (low t_max < t < high t_max, so t = t_max is never guided, as in the published code, github.com/WZDTHU/TiM).
* :func:`guided_target_offset` - model guidance (TiM paper, arXiv 2509.04394, Eq. (51)): the target gains
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
    F_cond: Tensor,
    F_uncond: Tensor,
    t: Tensor,
    *,
    scale: float,
    window: tuple[float, float],
    w_gt: float = 1.0,
    base: Tensor | None = None,
) -> Tensor:
    """Model-guidance offset of the training target (TiM paper, arXiv 2509.04394, Eq. (51)).

    The published ``enhance_target`` replaces the target's base quantity D (the diffusion target,
    v_t on the linear path) by ``w_gt D + w_cond F_cond + (1 - w_gt - w_cond) F_uncond`` with
    ``w_cond = omega - 1``, i.e. adds

        offset = (omega - 1)(F_cond - F_uncond) + (w_gt - 1)(D - F_uncond)

    on rows with window[0] <= t <= window[1] (inclusive, as published), 0 elsewhere. With the
    published w_gt = 1 this is the single-scale form of Eq. (51). F_cond/F_uncond come from a
    no-grad teacher at r = t.

    Args:
        F_cond: teacher output with the true condition, shape ``(B, ...)``.
        F_uncond: teacher output with the null condition, same shape.
        t: training times, shape ``(B,)``.
        scale: omega = 1 + w_cond (1 = no guidance; the published _mg configs use 1.75).
        window: inclusive time window ``(t_lo, t_hi)`` (published _mg: (0.3, 0.8)).
        w_gt: weight of the data target D (published default 1.0).
        base: D, shape of ``F_cond``; needed when ``w_gt != 1``.

    Returns:
        The offset, shape of ``F_cond``.
    """
    inside = (t >= window[0]) & (t <= window[1])
    mask = inside.reshape(-1, *([1] * (F_cond.ndim - 1))).to(F_cond.dtype)
    offset = (scale - 1.0) * (F_cond - F_uncond)
    if w_gt != 1.0:
        if base is None:
            raise TimError(
                f"model guidance with w_gt={w_gt} needs the data target",
                "pass base=path.diffusion_target(x, z, t)",
            )
        offset = offset + (w_gt - 1.0) * (base.to(F_cond.dtype) - F_uncond)
    return offset * mask


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
