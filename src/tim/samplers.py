"""Any-step sampling: transition sampling over an explicit time grid and flow-matching baselines.

TiM paper (arXiv 2509.04394), Alg. 2: on a decreasing grid t_0 = t_max > t_1 > ... > t_N = t_min, step i calls
F = F(x, c(t_i), c(t_{i+1})) and jumps x <- A x + B F (linear path: x - (t_i - t_{i+1}) F). The same
network therefore samples with 1, 2, 4, ... steps. Options:

* classifier-free guidance F_u + s (F_c - F_u) inside a guidance interval, ends inclusive by default;
  ``interval="strict"`` reproduces the published sampler (t strictly inside (low, high) t_max, so
  the first step at t = t_max is unguided when high = 1, as in the published code);
* stochastic sampling with strength rho (arXiv 2509.04394, App. A.3; linear path only, as published),
  never on the first or last step, noise from the explicit generator;
* baselines ``"euler"`` and ``"heun"``: flow-matching ODE solvers on the velocity of F(x, t, t).

The state is accumulated in float64; the network is called in the dtype of the noise, and the CFG
combination happens in that dtype before the cast to float64 (as published). NFE counts every
network evaluation of a batch (a CFG pair counts 2).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor

from tim.errors import TimError
from tim.guidance import IntervalMode, classifier_free_guidance, concat_cond, in_guidance_interval
from tim.network import GuidedNetwork, Network
from tim.paths import LinearPath, Path
from tim.timesteps import resolve_generator, time_grid

__all__ = [
    "DEFAULT_GUIDANCE_INTERVAL",
    "DEFAULT_GUIDANCE_SCALE",
    "DEFAULT_STEPS",
    "DEFAULT_STOCHASTICITY",
    "MAX_STEPS",
    "MAX_GUIDANCE_SCALE",
    "MAX_STOCHASTICITY",
    "SampleResult",
    "sample",
    "sample_batches",
    "seeded_noise",
    "Method",
]

Method = Literal["transition", "euler", "heun"]

# THE sampler limits: the sampler, the pipeline's recipe, `tim sample`, the app and run configs all
# check against these (one table; a value read back from a file is checked like a typed one).
#
# The most sampling steps any entry point accepts (``tim sample --steps``, ``sample.steps`` of a run
# config, ``steps`` of a pipeline's recipe.json): 4x the largest step count the paper samples with
# (250, the paper's largest step count). Quality stops improving long before; a larger number is almost surely a typo.
MAX_STEPS = 1000
# The largest classifier-free guidance scale: 10x the largest the paper uses (3.0 at 512 px).
MAX_GUIDANCE_SCALE = 30.0
MAX_STOCHASTICITY = 1.0  # the noise-removal term rho * z_hat * (t - r) must not exceed the noise present

# THE sampling defaults, beside the limits: every layer reads these (the run config's preview grids,
# SamplingRecipe and so recipe.json, `tim sample`, the app, the Python API: sample, sample_batches).
DEFAULT_STEPS = 4  # steps of a model sampled "by default" (recipe, app); sample()'s own grid default is 1
DEFAULT_GUIDANCE_SCALE = 1.0  # no classifier-free guidance
DEFAULT_GUIDANCE_INTERVAL: tuple[float, float] = (0.0, 1.0)  # guide every step (fractions of t_max)
DEFAULT_STOCHASTICITY = 0.0  # deterministic transitions


@dataclass
class SampleResult:
    """Result of :func:`sample`.

    Attributes:
        x: final sample, float32, shape of the noise.
        nfe: network evaluations actually spent (a CFG pair counts 2).
        times: the grid used, float64, shape ``(steps + 1,)``.
        trajectory: states at every grid time (float32, ``trajectory[0]`` is the noise), or None.
    """

    x: Tensor
    nfe: int
    times: Tensor
    trajectory: list[Tensor] | None


@dataclass
class _Guidance:
    cond: dict[str, Any]
    uncond: dict[str, Any] | None
    scale: float
    interval: tuple[float, float]
    mode: IntervalMode


def _network_call(
    F: Network, path: Path, x: Tensor, t: Tensor, r: Tensor, dtype: torch.dtype, cond: dict[str, Any]
) -> Tensor:
    n = x.shape[0]
    c_t = path.time_input(t).to(dtype).expand(n).clone()
    c_r = path.time_input(r).to(dtype).expand(n).clone()
    return F(x.to(dtype), c_t, c_r, **cond)


def _evaluate(
    F: Network, path: Path, x: Tensor, t: Tensor, r: Tensor, dtype: torch.dtype, guide: _Guidance
) -> tuple[Tensor, int]:
    """F(x, t, r) with optional CFG, returned in float64, and the NFE it cost."""
    guided = guide.scale != 1.0 and in_guidance_interval(
        float(t), guide.interval, t_max=path.t_max, mode=guide.mode
    )
    if not guided:
        return _network_call(F, path, x, t, r, dtype, guide.cond).to(torch.float64), 1
    assert guide.uncond is not None  # checked in sample()
    both = concat_cond(guide.cond, guide.uncond)
    if both is not None:  # one batched forward, as published
        F_cond, F_uncond = _network_call(F, path, torch.cat([x, x]), t, r, dtype, both).chunk(2)
    else:  # conditions of different layout (e.g. caption lengths): two forwards
        F_cond = _network_call(F, path, x, t, r, dtype, guide.cond)
        F_uncond = _network_call(F, path, x, t, r, dtype, guide.uncond)
    # Combine in the network dtype, then cast (published order; matters for bit-exactness).
    return classifier_free_guidance(F_cond, F_uncond, guide.scale).to(torch.float64), 2


def _resolve_grid(grid: Tensor | Sequence[float] | None, steps: int, path: Path, shift: float) -> Tensor:
    if grid is None:
        return time_grid(steps, path=path, shift=shift)
    if shift != 1.0:
        raise TimError(
            "shift applies to the default grid only, but an explicit grid was given",
            "shift your grid yourself or drop shift",
        )
    times = torch.as_tensor(grid, dtype=torch.float64).cpu()
    if times.ndim != 1:
        raise TimError(
            f"the time grid must be one-dimensional, got shape {tuple(times.shape)}", "e.g. [1.0, 0.5, 0.0]"
        )
    if times.numel() < 2 or not bool((times[1:] < times[:-1]).all()):
        raise TimError(
            f"the time grid must be strictly decreasing with at least 2 entries, got {times.numpy().tolist()}",
            "e.g. [1.0, 0.5, 0.0]",
        )
    if times[0] > path.t_max or times[-1] < path.t_min:
        raise TimError(
            f"the time grid leaves the path's domain [{path.t_min}, {path.t_max}]",
            "keep every time inside the domain",
        )
    return times


def _check_arguments(
    noise: Tensor,
    path: Path,
    guidance_scale: float,
    guidance_interval: tuple[float, float],
    uncond: dict[str, Any] | None,
    stochasticity: float,
    method: str,
    interval: str,
) -> None:
    if not noise.is_floating_point() or noise.ndim < 1:
        raise TimError(
            f"noise must be a floating tensor of shape (B, ...), got {noise.dtype} {tuple(noise.shape)}",
            "draw it with torch.randn(B, *sample_shape)",
        )
    if not (math.isfinite(guidance_scale) and math.isfinite(stochasticity)):
        raise TimError(
            f"guidance_scale={guidance_scale} and stochasticity={stochasticity} must be finite",
            "pass finite numbers",
        )
    if len(guidance_interval) != 2 or not 0.0 <= guidance_interval[0] <= guidance_interval[1] <= 1.0:
        raise TimError(
            f"guidance_interval must be (low, high) fractions of t_max with 0 <= low <= high <= 1, got {guidance_interval!r}",
            "e.g. (0.0, 1.0) to guide every step, (0.0, 0.6) as in the paper",
        )
    if method not in ("transition", "euler", "heun"):
        raise TimError(f"unknown sampling method {method!r}", "choose 'transition', 'euler' or 'heun'")
    if interval not in ("inclusive", "strict"):
        raise TimError(f"unknown guidance interval mode {interval!r}", "use 'inclusive' or 'strict'")
    if guidance_scale != 1.0 and uncond is None:
        raise TimError(
            f"guidance_scale={guidance_scale} needs an unconditional input",
            "pass uncond=model.null_cond(cond)",
        )
    if not 0.0 <= stochasticity <= MAX_STOCHASTICITY:
        # rho > 1 removes more than the predicted noise over a step, so the state overshoots. Measured
        # on exact Gaussian data (std 0.5, 4 steps): final std 0.53 at rho 0.2, 0.65 at 1, 7.9 at 10;
        # at rho 1000 and 16 steps 1e26. sample.stochasticity in the run config has the same bound.
        raise TimError(
            f"stochasticity must lie in [0, {MAX_STOCHASTICITY:g}], got {stochasticity}",
            "use 0 for the deterministic sampler, about 0.2 as in the paper",
        )
    if guidance_scale < 0:
        raise TimError(
            f"guidance_scale must be >= 0, got {guidance_scale}", "use 1 for no guidance, > 1 to guide"
        )
    if stochasticity > 0 and method != "transition":
        raise TimError(
            f"stochasticity applies to method='transition' only, got {method!r}", "set stochasticity=0.0"
        )
    # The first-order noise step is validated (marginals kept) on the linear path only; on VE with
    # a uniform grid it inflates the final std by ~20 % at 64 steps (measured), so we refuse.
    if stochasticity > 0 and not isinstance(path, LinearPath):
        raise TimError(
            f"stochastic sampling is implemented for the linear path only, got {path!r}",
            "set stochasticity=0.0",
        )


@torch.no_grad()
def sample(
    F: Network,
    noise: Tensor,
    *,
    path: Path | None = None,
    steps: int = 1,
    grid: Tensor | Sequence[float] | None = None,
    cond: dict[str, Any] | None = None,
    uncond: dict[str, Any] | None = None,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL,
    interval: IntervalMode = "inclusive",
    stochasticity: float = DEFAULT_STOCHASTICITY,
    shift: float = 1.0,
    method: Method = "transition",
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    return_trajectory: bool = False,
) -> SampleResult:
    """Generate samples from noise with any number of steps (arXiv 2509.04394, Alg. 2).

    Args:
        F: network ``F(x_t, t, r, **cond)``; called with inputs in ``noise.dtype``.
        noise: starting noise at t_max, shape ``(B, ...)``.
        path: the path (default linear).
        steps: number of grid intervals (ignored when ``grid`` is given).
        grid: explicit strictly decreasing time grid inside the path's domain.
        cond: condition dict for F (e.g. ``{"y": labels}``).
        uncond: null condition for CFG (required when ``guidance_scale != 1``).
        guidance_scale: CFG scale s (1 = no guidance).
        guidance_interval: ``(low, high)`` as fractions of t_max where CFG applies.
        interval: ``"inclusive"`` (default) or ``"strict"`` (published behaviour).
        stochasticity: rho >= 0 of the stochastic transition (``"transition"`` only).
        shift: SD3 time shift of the default grid (1 = uniform).
        method: ``"transition"`` (TiM), ``"euler"`` or ``"heun"`` (flow-matching baselines, r = t).
        generator: randomness for the stochastic sampler (None: a fresh generator), or one
            generator per sample (row i's noise then comes from generator i only).
        return_trajectory: keep the state at every grid time.

    Returns:
        :class:`SampleResult`.
    """
    path = LinearPath() if path is None else path
    _check_arguments(noise, path, guidance_scale, guidance_interval, uncond, stochasticity, method, interval)
    times = _resolve_grid(grid, steps, path, shift)
    guide = _Guidance(
        {} if cond is None else cond, uncond, float(guidance_scale), guidance_interval, interval
    )
    if stochasticity > 0 and not isinstance(generator, Sequence):
        generator = resolve_generator(generator, noise.device)
    x, dtype, nfe, n_steps = noise.to(torch.float64), noise.dtype, 0, times.numel() - 1
    trajectory = [noise.float().clone()] if return_trajectory else None
    grid_device = times.to(noise.device)
    for i in range(n_steps):
        t_cur, t_next = grid_device[i], grid_device[i + 1]
        if method == "transition":
            # Transition step: F(x, t_i, t_{i+1}), then x <- A x + B F.
            F_out, cost = _evaluate(F, path, x, t_cur, t_next, dtype, guide)
            if stochasticity > 0 and 0 < i < n_steps - 1:  # never on the first or last step (published)
                assert generator is not None  # resolved above whenever stochasticity > 0
                xi = _step_noise(x, generator)
                x = path.stochastic_transition(x, F_out, t_cur, t_next, stochasticity, xi)
            else:
                x = path.transition(x, F_out, t_cur, t_next)
        else:
            x, cost = _ode_step(F, path, x, t_cur, t_next, dtype, guide, heun=method == "heun")
        nfe += cost
        if trajectory is not None:
            trajectory.append(x.float())
    return SampleResult(x=x.float(), nfe=nfe, times=times, trajectory=trajectory)


def seeded_noise(indices: range, shape: Sequence[int], seed: int) -> tuple[Tensor, list[torch.Generator]]:
    """The starting noise of samples ``indices`` and their generators, sample i seeded ``seed + i``.

    Sample i is then the same image whatever the batch size, the device order or the other requests:
    the rule of every user-facing generator (``TiMPipeline``, ``tim sample``, the app, the benchmarks).

    Returns:
        ``(noise (n, *shape) float32 on the CPU, one generator per sample)``; each generator has
        drawn its sample's noise and continues from there (stochastic steps draw from it).
    """
    generators = [torch.Generator().manual_seed(seed + index) for index in indices]
    noise = (
        torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])
        if generators
        else torch.empty((0, *shape))
    )
    return noise, generators


@torch.no_grad()
def sample_batches(
    F: Network,
    noise: Tensor,
    *,
    cond: dict[str, Any] | None = None,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    batch_size: int | None = None,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    check_finite: str | None = None,
    **options: Any,
) -> SampleResult:
    """THE sampling loop of tim: :func:`sample` over batches, with the CFG null condition built here.

    Every caller that turns noise into samples goes through this function (the pipeline, ``tim
    sample`` jobs, the app, the benchmarks, the demos and the training preview grids), so guidance,
    batching and the NaN check mean the same everywhere.

    Args:
        F: the network; its ``null_cond`` gives the unconditional input when guided.
        noise: (N, ...) starting noise; its dtype is the network's input dtype.
        cond: condition tensors with N rows (``{}``/None: unconditional).
        guidance_scale: CFG scale (1 = none; then no null condition is built).
        batch_size: rows per :func:`sample` call (None: all at once).
        generator: one generator shared by the batches, or one per row (see :func:`seeded_noise`).
        check_finite: when given, a NaN or infinite sample raises ``TimError`` with this fix.
        **options: the other :func:`sample` keywords (path, steps, grid, guidance_interval,
            interval, stochasticity, shift, method).

    Returns:
        A :class:`SampleResult` for all rows: ``x`` float32 on the noise's device, ``nfe`` of one
        batch, the grid; no trajectory.
    """
    cond = {} if cond is None else cond
    size = len(noise) if batch_size is None else max(1, batch_size)
    parts: list[Tensor] = []
    result: SampleResult | None = None
    for start in range(0, len(noise), size):
        rows = slice(start, start + size)
        part = {key: value[rows] for key, value in cond.items()} if len(noise) > size else cond
        uncond = cast(GuidedNetwork, F).null_cond(part) if part and guidance_scale != 1.0 else None
        rows_generator = generator[rows] if isinstance(generator, Sequence) else generator
        result = sample(
            F,
            noise[rows],
            cond=part,
            uncond=uncond,
            guidance_scale=guidance_scale,
            generator=rows_generator,
            **options,
        )
        if check_finite is not None and not torch.isfinite(result.x).all():
            raise TimError(f"sampling with {options.get('steps', 1)} steps produced NaN or Inf", check_finite)
        parts.append(result.x)
    if result is None:
        return SampleResult(
            x=noise.float(), nfe=0, times=torch.empty(0, dtype=torch.float64), trajectory=None
        )
    x = parts[0] if len(parts) == 1 else torch.cat(parts)
    return SampleResult(x=x, nfe=result.nfe, times=result.times, trajectory=None)


def _step_noise(x: Tensor, generator: torch.Generator | Sequence[torch.Generator]) -> Tensor:
    """Fresh N(0, I) noise like ``x`` (float64) for a stochastic step.

    With one generator per row (a list), row i comes from generator i alone, so each sample's
    noise does not depend on how samples are batched (``tim.generation`` relies on this).
    """
    if not isinstance(generator, Sequence):
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float64)
    if len(generator) != x.shape[0]:
        raise TimError(
            f"got {len(generator)} generators for a batch of {x.shape[0]}", "pass one generator per sample"
        )
    rows = [torch.randn(x.shape[1:], generator=g, device=g.device, dtype=torch.float64) for g in generator]
    return torch.stack(rows).to(x.device)


def _ode_step(
    F: Network,
    path: Path,
    x: Tensor,
    t_cur: Tensor,
    t_next: Tensor,
    dtype: torch.dtype,
    guide: _Guidance,
    *,
    heun: bool,
) -> tuple[Tensor, int]:
    """One Euler or Heun step of the PF-ODE dx/dt = u(x, t), u from the diffusion-mode output F(x, t, t)."""
    F_cur, cost = _evaluate(F, path, x, t_cur, t_cur, dtype, guide)
    u_cur = path.velocity(x, F_cur, t_cur)
    x_euler = x + (t_next - t_cur) * u_cur
    if not heun:
        return x_euler, cost
    F_next, cost_next = _evaluate(F, path, x_euler, t_next, t_next, dtype, guide)
    u_next = path.velocity(x_euler, F_next, t_next)
    return x + (t_next - t_cur) * 0.5 * (u_cur + u_next), cost + cost_next
