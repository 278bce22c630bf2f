"""The time derivative dF/dt of the network along the conditional path: DDE and JVP.

Paper -> code map (TiM paper, arXiv 2509.04394v1):

=============================================================  =======================================
paper                                                          code
=============================================================  =======================================
DDE, TiM Eq. (10); epsilon (Table 10)                          :func:`dde_derivative`, :data:`DDE_EPSILON`
JVP alternative (Table 1)                                      :func:`jvp_derivative`
arithmetic of the DDE passes (docs/benchmarks.md)              :func:`derivative_precision_context`
=============================================================  =======================================

Both derivatives run without gradient (sg[F]) and take the network ``F(x_t, t, r, **cond)`` of
:mod:`tim.network`; :class:`tim.objective.TransitionLoss` calls them on the rows with r < t. Every
name here is also importable from :mod:`tim.objective`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any, Literal

import torch
from torch import Tensor

from tim.network import Network, float32_conditioning
from tim.paths import Path, expand_time

__all__ = [
    "DDE_EPSILON",
    "DERIVATIVE_PRECISIONS",
    "Derivative",
    "DerivativePrecision",
    "dde_derivative",
    "derivative_precision_context",
    "jvp_derivative",
    "resolve_derivative_precision",
    "select_condition_rows",
    "slice_condition_rows",
    "work_dtype",
]

DDE_EPSILON = 0.005  # arXiv 2509.04394, Table 10: the value used in every experiment

Derivative = Literal["dde", "jvp"]
# Arithmetic of the DDE passes (see dde_derivative): auto = follow the caller's arithmetic (mixed
# under bf16 autocast, tf32 on CUDA with TF32 allowed, else fp32); fp32 = float32 network, IEEE
# matmuls; tf32 = float32 network, TF32 matmuls on CUDA; mixed = bf16 trunk with float32 time
# conditioning, modulation and output, stencil in float64; bf16 = the whole network under bf16 autocast.
DerivativePrecision = Literal["auto", "fp32", "tf32", "mixed", "bf16"]
DERIVATIVE_PRECISIONS: tuple[str, ...] = ("auto", "fp32", "tf32", "mixed", "bf16")
# What "auto" becomes under bf16 autocast: the cheapest mode whose training quality matched fp32's
# in the A/B of docs/benchmarks/derivative-precision.md.
AUTO_UNDER_BF16: DerivativePrecision = "mixed"


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the derivative and the loss work in: float32, or float64 for float64 data; never 16-bit."""
    return torch.promote_types(dtype, torch.float32)


def select_condition_rows(cond: dict[str, Any], rows: Tensor, batch: int) -> dict[str, Any]:
    """The condition of the rows ``rows`` (an index tensor) of a batch of ``batch``.

    Every per-row tensor is sliced; anything else is left untouched (no mutation).
    """
    return {
        key: value[rows] if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch else value
        for key, value in cond.items()
    }


def slice_condition_rows(cond: dict[str, Any], rows: slice, batch: int) -> dict[str, Any]:
    """As :func:`select_condition_rows` for a slice (views, no index tensor)."""
    return {
        key: value[rows] if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch else value
        for key, value in cond.items()
    }


def _repeat_rows(cond: dict[str, Any], batch: int) -> dict[str, Any]:
    # The condition of a batch stacked twice (rows i and batch + i alike); other values untouched.
    return {
        key: torch.cat([value, value])
        if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] == batch
        else value
        for key, value in cond.items()
    }


@contextlib.contextmanager
def _float32_matmul_precision(precision: str, device: torch.device) -> Generator[None, None, None]:
    # CUDA float32 matmuls and cuDNN convolutions for one block: "high" allows TF32, "highest" is
    # IEEE float32. Other devices are left alone (on a CPU, tf32 is fp32). Restored on exit.
    if device.type != "cuda":
        yield
        return
    previous, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision(precision)
    torch.backends.cudnn.allow_tf32 = precision != "highest"
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
        torch.backends.cudnn.allow_tf32 = cudnn


def derivative_precision_context(
    precision: DerivativePrecision, device: torch.device
) -> contextlib.ExitStack[bool | None]:
    """The arithmetic of the DDE network passes for one precision mode (see :func:`dde_derivative`).

    ``auto``: as :func:`resolve_derivative_precision` says; ``fp32``: autocast off, IEEE float32
    matmuls on CUDA; ``tf32``: autocast off, TF32 matmuls on CUDA; ``mixed``: bf16 autocast with
    :func:`tim.network.float32_conditioning` on; ``bf16``: bf16 autocast.

    Args:
        precision: the mode.
        device: the device the network runs on.
    """
    precision = resolve_derivative_precision(precision, device)
    stack = contextlib.ExitStack()
    if precision in ("mixed", "bf16"):
        stack.enter_context(torch.autocast(device_type=device.type, dtype=torch.bfloat16))
        stack.enter_context(float32_conditioning(precision == "mixed"))
    else:
        # Under torch.compile, entering an autocast context is a graph break: skip it when autocast is off.
        if torch.is_autocast_enabled(device.type) or not torch.compiler.is_compiling():
            stack.enter_context(torch.autocast(device_type=device.type, enabled=False))
        stack.enter_context(_float32_matmul_precision("high" if precision == "tf32" else "highest", device))
    return stack


def resolve_derivative_precision(precision: DerivativePrecision, device: torch.device) -> DerivativePrecision:
    """The mode ``precision`` stands for on ``device`` now: ``"auto"`` follows the caller's arithmetic.

    ``"auto"`` is :data:`AUTO_UNDER_BF16` (``"mixed"``) inside a bf16 autocast region of ``device``
    (bf16 training); ``"tf32"`` on CUDA when float32 matmuls may use TF32 (``train.tf32``, on by
    default); ``"fp32"`` otherwise (a CPU, float32 training without TF32, fp16 autocast). Every
    other mode is returned unchanged.
    """
    if precision != "auto":
        return precision
    if torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.bfloat16:
        return AUTO_UNDER_BF16
    if device.type == "cuda" and torch.get_float32_matmul_precision() != "highest":
        return "tf32"  # the step's float32 matmuls run in TF32 (train.tf32): the passes follow
    return "fp32"


def dde_derivative(
    F: Network,
    path: Path,
    x: Tensor,
    z: Tensor,
    t: Tensor,
    r: Tensor,
    cond: dict[str, Any] | None = None,
    *,
    epsilon: float = DDE_EPSILON,
    precision: DerivativePrecision = "auto",
) -> Tensor:
    """Total derivative dF/dt along the conditional path by central differences (TiM Eq. (10)).

    dF/dt ~ [F(x_{t+}, t+, r) - F(x_{t-}, t-, r)] / (t+ - t-), x_s = alpha_s x + sigma_s z with the
    same (x, z), r fixed. The stencil t+ = min(t + eps, t_max), t- = max(t - eps, r, t_min) keeps
    both points inside the path's domain and t- >= r (a one-sided stencil at the edges, divided by
    its real width). Runs without gradient (sg[F]); the two points of every row go through the
    network in ONE call of 2N rows (the + rows, then the - rows).

    ``precision`` chooses the arithmetic of that call, whatever autocast the caller is in
    (docs/benchmarks/derivative-precision.md measures each):

    * ``"auto"`` (default): ``"mixed"`` when called under bf16 autocast, ``"tf32"`` on CUDA with
      TF32 matmuls allowed, else ``"fp32"`` (:func:`resolve_derivative_precision`);
    * ``"fp32"``: float32 network (float64 for float64 data), IEEE float32 matmuls on CUDA;
    * ``"tf32"``: as fp32 with TF32 matmuls on CUDA (identical to fp32 elsewhere);
    * ``"mixed"``: the network under bf16 autocast with its input, time and interval embeddings, adaLN /
      interval modulation and output layer in float32 (:func:`tim.network.float32_conditioning`;
      honoured by :class:`tim.models.TiM` and :class:`tim.models.TiMMLP`), the perturbed times and
      inputs and the difference in float64 (float32 on devices without float64);
    * ``"bf16"``: the whole network under bf16 autocast (the published trainer's passes).

    Args:
        F: the network (evaluated once on 2N rows, no grad).
        path: the path.
        x: data, shape ``(N, ...)``, rows with r < t.
        z: noise, shape of ``x``.
        t: current times, shape ``(N,)``.
        r: target times, shape ``(N,)``, r < t.
        cond: condition dict for these rows.
        epsilon: half-width of the stencil (paper: 0.005).
        precision: ``"auto"``, ``"fp32"``, ``"tf32"``, ``"mixed"`` or ``"bf16"``.

    Returns:
        dF/dt, shape of ``x``, float32 (float64 for float64 data).
    """
    cond = {} if cond is None else cond
    precision = resolve_derivative_precision(precision, x.device)
    dtype = work_dtype(x.dtype)  # what the network is fed and what is returned
    stencil = torch.float64 if precision == "mixed" and x.device.type != "mps" else dtype
    x, z, t, r = x.to(stencil), z.to(stencil), t.to(stencil), r.to(stencil)
    t_plus = (t + epsilon).clamp(max=path.t_max)
    t_minus = torch.maximum(t - epsilon, r.clamp(min=path.t_min))
    n = x.shape[0]
    x_both = torch.cat([path.interpolate(x, z, t_plus).x_t, path.interpolate(x, z, t_minus).x_t]).to(dtype)
    c_both = path.time_input(torch.cat([t_plus, t_minus])).to(dtype)
    c_r = path.time_input(r).to(dtype)
    with torch.no_grad(), derivative_precision_context(precision, x.device):
        F_both = F(x_both, c_both, torch.cat([c_r, c_r]), **_repeat_rows(cond, n)).to(stencil)
    dF_dt = (F_both[:n] - F_both[n:]) / expand_time(t_plus - t_minus, x)
    return dF_dt.to(dtype)


def jvp_derivative(
    F: Network,
    path: Path,
    x: Tensor,
    z: Tensor,
    t: Tensor,
    r: Tensor,
    cond: dict[str, Any] | None = None,
) -> Tensor:
    """Exact total derivative dF/dt along the conditional path by forward-mode AD (the JVP row of arXiv 2509.04394, Table 1).

    dF/dt = d_x F . v_t + d_t F, computed as ``torch.func.jvp`` of t -> F(x_t(t), c(t), c(r)) with
    tangent (v_t, 1); the chain rule through ``c_noise`` is taken by autodiff. No gradient (sg[F]),
    float32 even under autocast. The network must support forward-mode AD (math attention; SDPA
    has no forward-mode rule on CPU).

    Args:
        F: the network.
        path: the path.
        x: data, shape ``(N, ...)``.
        z: noise, shape of ``x``.
        t: current times, shape ``(N,)``.
        r: target times, shape ``(N,)``.
        cond: condition dict for these rows.

    Returns:
        dF/dt, shape of ``x``.
    """
    cond = {} if cond is None else cond
    dtype = work_dtype(x.dtype)
    x, z, t, r = x.to(dtype), z.to(dtype), t.to(dtype), r.to(dtype)
    x_t, v_t = path.interpolate(x, z, t)
    c_r = path.time_input(r)

    def along_path(x_t: Tensor, t: Tensor) -> Tensor:
        return F(x_t, path.time_input(t), c_r, **cond).to(dtype)

    with torch.no_grad(), torch.autocast(device_type=x.device.type, enabled=False):
        dF_dt: Tensor = torch.func.jvp(along_path, (x_t, t), (v_t, torch.ones_like(t)))[1]
    return dF_dt
