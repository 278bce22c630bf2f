"""Time sampling: training (t, r) pairs and inference time grids.

* :func:`sample_time_pairs` - two draws from the path's time distribution (shares: arXiv
  2509.04394, Table 11), t = max, r = min; the first ``round(diffusion_share n)`` rows get r = t, the last
  ``round(consistency_share n)`` rows get r = t_min (published layout, banker's rounding).
* :func:`time_grid` - arXiv 2509.04394, Alg. 2: uniform grid from t_max down to t_min, optionally shifted.
* :func:`shift_time`, :func:`resolution_shift` - SD3's resolution-dependent time shift
  (the paper applies it for text-to-image, arXiv 2509.04394, App. C.2).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tim.errors import TimError
from tim.paths import Path

__all__ = [
    "sample_time_pairs",
    "time_grid",
    "shift_time",
    "resolution_shift",
    "shift_path_time",
    "resolve_generator",
]


def resolve_generator(
    generator: torch.Generator | None, device: torch.device | str | None = None
) -> torch.Generator:
    """Return ``generator``, or a fresh nondeterministically seeded one (never the global RNG).

    Args:
        generator: a generator or None.
        device: the device the draws will live on (used only when creating one).

    Returns:
        A generator on ``device``.
    """
    if generator is not None:
        return generator
    fresh = torch.Generator(device=torch.device(device) if device is not None else "cpu")
    fresh.seed()  # seeds from the OS entropy source; leaves torch's global RNG untouched
    return fresh


def shift_time(t: Tensor, shift: float) -> Tensor:
    """SD3 time shift on [0, 1]: s t / (1 + (s - 1) t) (Esser et al. 2024).

    ``shift > 1`` moves times towards noise (t = 1); maps 0 -> 0 and 1 -> 1, monotone.

    Args:
        t: times in [0, 1], any shape.
        shift: s > 0.

    Returns:
        Shifted times, shape and dtype of ``t``.
    """
    if not shift > 0:
        raise TimError(f"time shift must be positive, got {shift}", "use shift=1.0 to disable it")
    return shift * t / (1.0 + (shift - 1.0) * t)


def shift_path_time(t: Tensor, path: Path, shift: float) -> Tensor:
    """Apply :func:`shift_time` to times of ``path``, on the normalised time (t - t_min)/(t_max - t_min)."""
    if shift == 1.0:
        return t
    width = path.t_max - path.t_min
    return path.t_min + width * shift_time((t - path.t_min) / width, shift)


def resolution_shift(height: int, width: int, base_height: int, base_width: int) -> float:
    """Resolution-dependent shift sqrt(H W / (H0 W0)) (SD3; base 1024^2 for T2I in arXiv 2509.04394, App. C.2).

    Args:
        height: image (or latent) height H.
        width: image (or latent) width W.
        base_height: reference height H0.
        base_width: reference width W0.

    Returns:
        The shift factor (1.0 at the base resolution).
    """
    if min(height, width, base_height, base_width) <= 0:
        raise TimError(
            f"resolution_shift needs positive sizes, got {height}x{width} over {base_height}x{base_width}",
            "pass the spatial size of the batch and of the base resolution",
        )
    return math.sqrt(height * width / (base_height * base_width))


def sample_time_pairs(
    path: Path,
    n: int,
    *,
    diffusion_share: float = 0.5,
    consistency_share: float = 0.1,
    shift: float = 1.0,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Draw training pairs (t, r), r <= t (arXiv 2509.04394, Table 11 shares).

    Two independent draws t1, t2 from ``path.sample_time`` (in this order); t = max, r = min.
    Rows ``[:round(diffusion_share n)]`` get r = t ("diffusion" rows), rows
    ``[n - round(consistency_share n):]`` get r = t_min ("consistency" rows); Python's round
    (banker's rounding) as in the published code. With ``shift != 1`` both times are shifted
    by :func:`shift_path_time` (monotone, so r <= t is kept).

    Args:
        path: the path whose time distribution is used.
        n: number of pairs.
        diffusion_share: fraction of rows with r = t (paper default 0.5).
        consistency_share: fraction of rows with r = t_min (paper default 0.1).
        shift: SD3 time shift (1.0 = off).
        generator: source of randomness (None: a fresh generator; never the global RNG).
        device: device of the result.

    Returns:
        ``(t, r)``, each shape ``(n,)``, float32.
    """
    if not isinstance(n, int) or n < 0:  # pyright: ignore[reportUnnecessaryIsInstance]  -- checks what users pass at runtime
        raise TimError(
            f"the number of time pairs must be a non-negative integer, got {n!r}", "pass the batch size"
        )
    if not (0.0 <= diffusion_share <= 1.0 and 0.0 <= consistency_share <= 1.0):
        raise TimError(
            f"shares must lie in [0, 1], got diffusion {diffusion_share}, consistency {consistency_share}",
            "e.g. diffusion_share=0.5, consistency_share=0.1",
        )
    n_diffusion, n_consistency = round(diffusion_share * n), round(consistency_share * n)
    if diffusion_share + consistency_share > 1.0 or n_diffusion + n_consistency > n:
        raise TimError(
            f"diffusion_share {diffusion_share} + consistency_share {consistency_share} exceed the batch",
            "make the two shares sum to at most 1",
        )
    generator = resolve_generator(generator, device)
    t1 = path.sample_time(n, generator=generator, device=device)
    t2 = path.sample_time(n, generator=generator, device=device)
    t, r = torch.maximum(t1, t2), torch.minimum(t1, t2)
    t, r = shift_path_time(t, path, shift), shift_path_time(r, path, shift)
    r = torch.cat(
        [
            t[:n_diffusion],
            r[n_diffusion : n - n_consistency],
            torch.full_like(r[n - n_consistency :], path.t_min),
        ]
    )
    return t, r


def time_grid(steps: int, *, path: Path, shift: float = 1.0) -> Tensor:
    """Uniform inference grid from t_max down to t_min, optionally shifted (arXiv 2509.04394, Alg. 2).

    Args:
        steps: number of transitions (NFE without guidance), >= 1.
        path: the path (gives t_min, t_max).
        shift: SD3 time shift applied to the normalised grid (1.0 = off).

    Returns:
        Decreasing grid, shape ``(steps + 1,)``, float64, ``grid[0] = t_max``, ``grid[-1] = t_min``.
    """
    if not isinstance(steps, int) or steps < 1:  # pyright: ignore[reportUnnecessaryIsInstance]  -- checks what users pass at runtime
        raise TimError(f"steps must be a positive integer, got {steps!r}", "use e.g. steps=1, 2, 4 or 64")
    grid = torch.linspace(path.t_max, path.t_min, steps + 1, dtype=torch.float64)
    return shift_path_time(grid, path, shift)
