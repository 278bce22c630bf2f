"""Training objectives: the TiM transition loss and two baselines on the same interface.

Paper -> code map (TiM paper, arXiv 2509.04394v1; equation, table and appendix numbers are the paper's):

=============================================================  =======================================
paper                                                          code
=============================================================  =======================================
(t, r) sampling, r = t / r = 0 shares (Table 11)               :func:`tim.timesteps.sample_time_pairs`
x_t = alpha x + sigma z, v_t (Tables 7-8)                      :meth:`tim.paths.Path.interpolate`
DDE, TiM Eq. (10)                                              :func:`tim.derivative.dde_derivative`
JVP alternative (Table 1)                                      :func:`tim.derivative.jvp_derivative`
target from the state transition identity (App. A.1)           :meth:`tim.paths.Path.transition_target`
model guidance, TiM Eq. (51)                                   :func:`tim.guidance.guided_target_offset`
per-sample MSE + cosine direction loss (Alg. 1)                :func:`per_sample_mse`, :func:`per_sample_cosine`
time weight (sigma_d + tau(t) - tau(r))^(-1/2) (Table 12)      :func:`time_weight`
adaptive normalisation w / (sg(L) + c) (Alg. 1)                :func:`adaptive_weight`
full loss, Eq. (13) + Alg. 1                                   :class:`TransitionLoss`
flow matching / SiT baseline (Table 4 row a)                   :class:`FlowMatchingLoss`
MeanFlow (App. B.2, Eq. (49))                                  :class:`MeanFlowLoss`
=============================================================  =======================================

Every objective is a callable ``loss(F, x, *, cond, generator, ...) -> LossOutput`` that works with
any network ``F(x_t, t, r, **cond)`` (``t``, ``r`` are network time inputs ``c_noise``). It is
pure: randomness only from the explicit generator, arguments are never mutated, and non-finite
values are never replaced (the published ``nan_to_num`` is deliberately not reproduced).

Dropout and the derivative passes: the derivative passes call the network with the same
condition dict as the prediction and in the module's current train/eval state; the released
networks (and ours) have no dropout, so the passes see the same function. Code that adds dropout
should pass an ``F_nograd`` in eval mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as functional
from torch import Tensor

from tim.derivative import (  # re-exported: ``from tim.objective import dde_derivative`` keeps working
    DDE_EPSILON,
    DERIVATIVE_PRECISIONS,
    Derivative,
    DerivativePrecision,
    dde_derivative,
    derivative_precision_context,
    jvp_derivative,
    resolve_derivative_precision,
    select_condition_rows,
    slice_condition_rows,
    work_dtype,
)
from tim.errors import TimError
from tim.guidance import guided_target_offset
from tim.network import Network  # re-exported: ``from tim.objective import Network`` keeps working
from tim.paths import LinearPath, Path, expand_time
from tim.timesteps import resolution_shift, resolve_generator, sample_time_pairs, shift_path_time

__all__ = [
    "LossOutput",
    "Network",
    "TransitionLoss",
    "FlowMatchingLoss",
    "MeanFlowLoss",
    "build_objective",
    "dde_derivative",
    "jvp_derivative",
    "time_weight",
    "adaptive_weight",
    "per_sample_mse",
    "per_sample_cosine",
    "DDE_EPSILON",
    "DERIVATIVE_PRECISIONS",
    "derivative_precision_context",
    "resolve_derivative_precision",
]

ADAPTIVE_C = 1e-5  # published code: 1 / (L.detach() + 10e-6)
COSINE_EPS = 1e-8  # published code: cosine_similarity(..., eps=1e-8)
# Valid ranges of fields, as dataclass field metadata ``gt/ge/lt/le`` (tim.training.config checks them).
_SHARE = {"ge": 0.0, "le": 1.0}  # a fraction of the batch's rows
_POSITIVE = {"gt": 0.0}
_NON_NEGATIVE = {"ge": 0.0}

TimeTransform = Literal["tan", "identity", "sigmoid"]
TimeFunction = Literal["sqrt", "constant", "reciprocal", "square", "soft_min_snr"]


Alignment = Callable[[Tensor, Tensor, dict[str, Any]], Tensor]
# (x_t, t, r, **cond) -> (F, features or None): the network with its alignment projector
FeaturesFn = Callable[..., tuple[Tensor, Tensor | None]]


@dataclass
class LossOutput:
    """Result of one objective evaluation.

    Attributes:
        loss: scalar to backpropagate (may be non-finite: never hidden).
        per_sample: ``(B,)`` weighted per-sample loss (``loss = per_sample.mean()``).
        stats: detached scalars, e.g. ``"mse"``, ``"cosine"``, ``"weight_time"``, ``"t_mean"``.
    """

    loss: Tensor
    per_sample: Tensor
    stats: dict[str, Tensor]


# ---------------------------------------------------------------------------- weights and distances
def _tau(t: Tensor, transform: TimeTransform) -> Tensor:
    if transform == "tan":
        return torch.tan(t)
    if transform == "sigmoid":
        return t / (1.0 - t)
    return t


def time_weight(
    t: Tensor,
    r: Tensor,
    *,
    transform: TimeTransform = "tan",
    function: TimeFunction = "sqrt",
    sigma_d: float = 1.0,
    interval: bool = True,
) -> Tensor:
    """Interval time weight w(t, r) = fn(tau(t) - tau(r)) (arXiv 2509.04394, Table 12).

    tau: ``"tan"`` tan t (default), ``"identity"`` t, ``"sigmoid"`` t/(1 - t). With Delta = tau(t) - tau(r)
    (or Delta = tau(t) when ``interval=False``, the published ``weight_t_and_r=False``):
    ``"sqrt"`` 1/sqrt(sigma_d + Delta) (default), ``"constant"`` 1, ``"reciprocal"`` 1/(sigma_d + Delta),
    ``"square"`` 1/(sigma_d + Delta)^2, ``"soft_min_snr"`` 1/(sigma_d^2 + Delta^2). Rows with r = t get 1.

    Args:
        t: current times, shape ``(B,)``.
        r: target times, shape ``(B,)``.
        transform: the time transform tau.
        function: the weighting function.
        sigma_d: the constant sigma_d (paper: 1).
        interval: weight on tau(t) - tau(r) (published default) or, when False, on tau(t) alone.

    Returns:
        Weights, shape ``(B,)``.
    """
    delta = _tau(t, transform) - _tau(r, transform) if interval else _tau(t, transform)
    if function == "sqrt":
        weights = (sigma_d + delta).rsqrt()
    elif function == "reciprocal":
        weights = 1.0 / (sigma_d + delta)
    elif function == "square":
        weights = (sigma_d + delta) ** -2
    elif function == "soft_min_snr":
        weights = 1.0 / (sigma_d**2 + delta**2)
    else:
        weights = torch.ones_like(delta)
    return torch.where(r == t, torch.ones_like(delta), weights)


def adaptive_weight(loss: Tensor, *, c: float = ADAPTIVE_C, power: float = 1.0) -> Tensor:
    """Adaptive normalisation 1 / (sg(L) + c)^p (arXiv 2509.04394, Alg. 1; MeanFlow uses p = 1, c = 1e-3).

    Args:
        loss: per-sample losses, shape ``(B,)``.
        c: the stabilising constant (TiM: 1e-5).
        power: p.

    Returns:
        Weights, shape ``(B,)``, detached.
    """
    return (loss.detach() + c) ** -power  # sg[L]: the weight carries no gradient


def per_sample_mse(F_pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error per sample over all non-batch dimensions, shape ``(B,)``."""
    return (F_pred - target).square().flatten(1).mean(1)


def per_sample_cosine(F_pred: Tensor, target: Tensor) -> Tensor:
    """Direction loss 1 - cos(F_pred, target) over the channel dim (dim 1), averaged over the rest.

    For images ``(B, C, H, W)`` the cosine is per pixel over C (published), for vectors
    ``(B, D)`` it is over D. Returns shape ``(B,)``.
    """
    cosine = functional.cosine_similarity(F_pred, target, dim=1, eps=COSINE_EPS)
    return (1.0 - cosine).reshape(F_pred.shape[0], -1).mean(1)


# ---------------------------------------------------------------------------- the TiM loss
@dataclass
class TransitionLoss:
    """The TiM objective; defaults are the paper's final recipe (arXiv 2509.04394, Alg. 1, Tables 11-12).

    Per call: draw (t, r) and z; x_t, v_t on the path; F_pred = F(x_t, c(t), c(r)); dF/dt of
    sg[F] by DDE (or JVP) on rows with r < t (0 elsewhere); the target of the state transition
    identity (+ model guidance); L_i = MSE + (1 - cos); weight w(t, r)/(sg(L_i) + c); plus the
    optional alignment term ``alignment_weight * alignment(features, x, cond)``.

    Low-dimensional data: the cosine term and the per-sample adaptive normalisation assume that
    L_i averages many numbers (latent pixels). On 2-D vectors the cosine's minimiser is not the
    conditional mean and 1/(sg(L_i) + c) turns the regression into a mode-seeking log-loss; set
    ``direction_loss=False, adaptive=False`` there (scripts/toy_2d_comparison.py measures both).

    Attributes:
        path: the path (default linear / OT-FM, P_mean -0.4, P_std 1.0).
        diffusion_share: fraction of rows with r = t (paper 0.5).
        consistency_share: fraction of rows with r = t_min (paper 0.1).
        derivative: ``"dde"`` (default) or ``"jvp"``.
        epsilon: DDE half-width (paper 0.005).
        derivative_precision: arithmetic of the DDE passes, ``"auto"`` (default: ``"mixed"`` under
            bf16 autocast, else ``"fp32"``), ``"fp32"``, ``"tf32"``, ``"mixed"`` or ``"bf16"``
            (:func:`dde_derivative`); the JVP always runs in float32.
        time_transform: tau of the time weight (``"tan"``, ``"identity"``, ``"sigmoid"``).
        time_function: weighting function (``"sqrt"``, ``"constant"``, ``"reciprocal"``, ``"square"``,
            ``"soft_min_snr"``).
        weight_sigma_d: sigma_d in the time weight (paper 1.0).
        weight_interval: weight on tau(t) - tau(r) (published ``weight_t_and_r=True``, default) or,
            when False, on tau(t) alone.
        adaptive: apply the adaptive normalisation.
        adaptive_c: its constant c (paper 1e-5).
        adaptive_power: its power p (TiM 1).
        direction_loss: add the cosine direction loss (published code: on).
        guidance_scale: model-guidance omega = 1 + the published w_cond (1 = off; _mg configs 1.75).
        guidance_w_gt: the published ``w_gt``, weight of the data target in the guided target
            ``w_gt D + w_cond F_cond + (1 - w_gt - w_cond) F_uncond`` (1.0 in every published config;
            != 1 switches the teacher on even with guidance_scale 1).
        guidance_window: inclusive window of t where model guidance applies (published (0.3, 0.8)).
        alignment: optional hook ``(features, x, cond) -> (B,)`` loss (e.g. REPA); needs ``features_fn``.
        alignment_weight: coefficient of the alignment term (published 1.0).
        shift_base: ``(H0, W0)`` for a resolution time shift of the training times computed from
            the batch's spatial size (None = off).
    """

    path: Path = field(default_factory=LinearPath)
    diffusion_share: float = field(default=0.5, metadata=_SHARE)
    consistency_share: float = field(default=0.1, metadata=_SHARE)
    derivative: Derivative = "dde"
    epsilon: float = field(default=DDE_EPSILON, metadata=_POSITIVE)
    derivative_precision: DerivativePrecision = "auto"
    time_transform: TimeTransform = "tan"
    time_function: TimeFunction = "sqrt"
    weight_sigma_d: float = field(default=1.0, metadata=_POSITIVE)
    weight_interval: bool = True
    adaptive: bool = True
    adaptive_c: float = field(default=ADAPTIVE_C, metadata=_POSITIVE)
    adaptive_power: float = field(default=1.0, metadata=_NON_NEGATIVE)
    direction_loss: bool = True
    guidance_scale: float = field(default=1.0, metadata=_NON_NEGATIVE)
    guidance_window: tuple[float, float] = (0.0, 1.0)
    guidance_w_gt: float = 1.0
    alignment: Alignment | None = None
    alignment_weight: float = field(default=1.0, metadata=_NON_NEGATIVE)
    shift_base: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        _check_choice("derivative", self.derivative, ("dde", "jvp"))
        _check_choice("derivative_precision", self.derivative_precision, DERIVATIVE_PRECISIONS)
        _check_choice("time_transform", self.time_transform, ("tan", "identity", "sigmoid"))
        _check_choice(
            "time_function", self.time_function, ("sqrt", "constant", "reciprocal", "square", "soft_min_snr")
        )
        if not self.epsilon > 0:
            raise TimError(f"epsilon must be positive, got {self.epsilon}", "use the paper's 0.005")
        if not self.adaptive_c > 0:  # c <= 0 divides by sg(L) + c, which can reach 0 or go negative
            raise TimError(f"adaptive_c must be positive, got {self.adaptive_c}", "use the paper's 1e-5")
        if len(self.guidance_window) != 2 or not self.guidance_window[0] <= self.guidance_window[1]:
            raise TimError(
                f"guidance_window must be (t_low, t_high) with t_low <= t_high, got {self.guidance_window!r}",
                "e.g. the published (0.3, 0.8)",
            )
        if not isinstance(self.path, Path):  # pyright: ignore[reportUnnecessaryIsInstance]  -- checks what users pass at runtime
            raise TimError(
                f"path must be a tim.paths.Path, got {type(self.path).__name__}", "use tim.paths.build_path"
            )
        # tau must be increasing on the whole domain, else Delta < 0 and the weight is NaN; a
        # constant weight ignores tau (the flow-matching baseline on EDM/VE paths).
        weighted = self.time_function != "constant"
        if weighted and self.time_transform == "tan" and self.path.t_max >= math.pi / 2:
            raise TimError(
                f"time_transform 'tan' needs t_max < pi/2, the path has t_max={self.path.t_max}",
                "use time_transform='identity'",
            )
        if weighted and self.time_transform == "sigmoid" and self.path.t_max > 1.0:
            raise TimError(
                f"time_transform 'sigmoid' needs t_max <= 1, the path has t_max={self.path.t_max}",
                "use time_transform='identity'",
            )

    # -------------------------------------------------------------- pieces
    def sample_times(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Training pairs (t, r) for a batch ``x`` (shape ``(B, ...)``), each ``(B,)``."""
        return sample_time_pairs(
            self.path,
            x.shape[0],
            diffusion_share=self.diffusion_share,
            consistency_share=self.consistency_share,
            shift=self._shift(x),
            generator=generator,
            device=x.device,
        )

    def _shift(self, x: Tensor) -> float:
        if self.shift_base is None:
            return 1.0
        if x.ndim != 4:
            raise TimError(
                f"shift_base needs image batches (B, C, H, W), got shape {tuple(x.shape)}",
                "set shift_base=None",
            )
        return resolution_shift(x.shape[-2], x.shape[-1], *self.shift_base)

    def time_derivative(
        self,
        F: Network,
        x: Tensor,
        z: Tensor,
        t: Tensor,
        r: Tensor,
        cond: dict[str, Any],
        *,
        candidates: slice | None = None,
    ) -> Tensor:
        """dF/dt of sg[F] on rows with r < t (DDE or JVP); exactly 0 on the other rows. Shape of ``x``.

        Args:
            F: the network, called as ``F(x_t, t, r, **cond)``.
            x: (B, ...) clean data.
            z: (B, ...) noise, same shape as ``x``.
            t: (B,) start times.
            r: (B,) target times, ``r <= t``.
            cond: keyword conditioning passed to ``F`` (sliced with the rows).
            candidates: a slice known to hold every row with r < t (from :meth:`derivative_rows`):
                the derivative runs on that slice and is masked by ``r < t`` there, which needs
                no host sync (and no graph break under ``torch.compile``). None: the rows are
                found with ``nonzero`` (explicit or MeanFlow times).
        """
        dF_dt = torch.zeros(x.shape, dtype=work_dtype(x.dtype), device=x.device)
        if candidates is not None:
            if candidates.start >= candidates.stop:
                return dF_dt
            values = self._derivative(
                F,
                x[candidates],
                z[candidates],
                t[candidates],
                r[candidates],
                slice_condition_rows(cond, candidates, x.shape[0]),
            )
            strict = expand_time(r[candidates] < t[candidates], values)  # ties r = t get exactly 0
            dF_dt[candidates] = torch.where(strict, values, torch.zeros_like(values))
            return dF_dt
        rows = (r < t).nonzero().squeeze(1)
        if rows.numel() == 0:
            return dF_dt
        values = self._derivative(
            F, x[rows], z[rows], t[rows], r[rows], select_condition_rows(cond, rows, x.shape[0])
        )
        return dF_dt.index_copy(0, rows, values)

    def _derivative(
        self, F: Network, x: Tensor, z: Tensor, t: Tensor, r: Tensor, cond: dict[str, Any]
    ) -> Tensor:
        if self.derivative == "jvp":
            return jvp_derivative(F, self.path, x, z, t, r, cond)
        return dde_derivative(
            F, self.path, x, z, t, r, cond, epsilon=self.epsilon, precision=self.derivative_precision
        )

    def derivative_rows(self, n: int) -> slice | None:
        """Rows of a batch of ``n`` that can have r < t when the times come from :meth:`sample_times`.

        :func:`tim.timesteps.sample_time_pairs` gives rows ``[:round(diffusion_share n)]`` r = t, so
        only the rest need a derivative; None for subclasses that draw times differently.
        """
        if type(self).sample_times is not TransitionLoss.sample_times:
            return None
        return slice(round(self.diffusion_share * n), n)

    @property
    def uses_teacher(self) -> bool:
        """Whether the target needs the guidance teacher (EMA) at all."""
        return self.guidance_scale != 1.0 or self.guidance_w_gt != 1.0

    def teacher_inputs(
        self, teacher: Network, cond: dict[str, Any], null_cond: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """The keyword arguments that wire a guidance teacher into :meth:`__call__`; {} when none is needed.

        A training loop passes its EMA model, the batch's true condition and the model's
        ``null_cond`` for every batch; only a guided target (:attr:`uses_teacher`) evaluates them.
        """
        if not self.uses_teacher:
            return {}
        return {"teacher": teacher, "teacher_cond": cond, "teacher_uncond": null_cond(cond)}

    def guidance_offset(
        self,
        teacher: Network | None,
        x_t: Tensor,
        t: Tensor,
        teacher_cond: dict[str, Any] | None,
        teacher_uncond: dict[str, Any] | None,
        base: Tensor | None = None,
    ) -> Tensor | None:
        """Model-guidance offset (TiM Eq. (51)) from a no-grad teacher at r = t, or None when off.

        ``base`` is the diffusion target D (needed when ``guidance_w_gt != 1``).
        """
        if not self.uses_teacher:
            return None
        if teacher is None or teacher_cond is None or teacher_uncond is None:
            raise TimError(
                f"model guidance (guidance_scale={self.guidance_scale}, guidance_w_gt={self.guidance_w_gt}) needs "
                "teacher, teacher_cond and teacher_uncond",
                "pass the EMA model with the true and the null condition, or set guidance_scale=1.0 and guidance_w_gt=1.0",
            )
        c_t = self.path.time_input(t)
        with torch.no_grad():  # sg[teacher]: the teacher only shapes the target
            F_uncond = teacher(x_t, c_t, c_t, **teacher_uncond)
            # w_cond = 0: the published code skips the conditional pass (its term vanishes).
            F_cond = teacher(x_t, c_t, c_t, **teacher_cond) if self.guidance_scale != 1.0 else F_uncond
        return guided_target_offset(
            F_cond,
            F_uncond,
            t,
            scale=self.guidance_scale,
            window=self.guidance_window,
            w_gt=self.guidance_w_gt,
            base=base,
        )

    def _predict(
        self,
        F: Network,
        features_fn: FeaturesFn | None,
        x_t: Tensor,
        t: Tensor,
        r: Tensor,
        cond: dict[str, Any],
    ) -> tuple[Tensor, Tensor | None]:
        c_t, c_r = self.path.time_input(t), self.path.time_input(r)
        if self.alignment is None:
            return F(x_t, c_t, c_r, **cond), None
        if features_fn is None:
            raise TimError(
                "the alignment hook needs features", "pass features_fn=model.forward_with_features"
            )
        F_pred, features = features_fn(x_t, c_t, c_r, **cond)
        if features is None:
            raise TimError(
                "features_fn returned no features for the alignment hook", "enable the model's projector"
            )
        return F_pred, features

    def _weights(self, t: Tensor, r: Tensor, loss: Tensor) -> tuple[Tensor, Tensor]:
        w_time = time_weight(
            t,
            r,
            transform=self.time_transform,
            function=self.time_function,
            sigma_d=self.weight_sigma_d,
            interval=self.weight_interval,
        )
        if not self.adaptive:
            return w_time, torch.ones_like(loss)
        w_adaptive = adaptive_weight(loss, c=self.adaptive_c, power=self.adaptive_power)
        return w_time, w_adaptive

    # -------------------------------------------------------------- the call
    def __call__(
        self,
        F: Network,
        x: Tensor,
        *,
        cond: dict[str, Any] | None = None,
        generator: torch.Generator | None = None,
        F_nograd: Network | None = None,
        features_fn: FeaturesFn | None = None,
        teacher: Network | None = None,
        teacher_cond: dict[str, Any] | None = None,
        teacher_uncond: dict[str, Any] | None = None,
        z: Tensor | None = None,
        t: Tensor | None = None,
        r: Tensor | None = None,
    ) -> LossOutput:
        """Evaluate the loss on one batch.

        Args:
            F: network ``F(x_t, t, r, **cond)`` (with gradient).
            x: data, shape ``(B, ...)``.
            cond: condition dict (e.g. CFG-dropped labels); also used by the derivative passes.
            generator: randomness for (t, r) and z (None: a fresh generator, never the global RNG).
            F_nograd: network used for the no-grad derivative passes (e.g. the module unwrapped
                from DDP); default ``F``.
            features_fn: ``(x_t, t, r, **cond) -> (F, features)`` for the alignment hook.
            teacher: model-guidance teacher (EMA), evaluated at r = t without gradient.
            teacher_cond: the teacher's conditional inputs (true labels).
            teacher_uncond: the teacher's null condition.
            z: explicit noise (shape of ``x``), e.g. for parity tests; default drawn.
            t: explicit current times ``(B,)``; must be given together with ``r``.
            r: explicit target times ``(B,)``.

        Returns:
            :class:`LossOutput`.
        """
        cond = {} if cond is None else cond
        _check_batch(x, z, t, r)
        generator = resolve_generator(generator, x.device)
        candidates = None
        if t is None or r is None:  # _check_batch: both or neither
            t, r = self.sample_times(x, generator)
            candidates = self.derivative_rows(x.shape[0])
        time_dtype = work_dtype(x.dtype)
        t, r = t.to(device=x.device, dtype=time_dtype), r.to(device=x.device, dtype=time_dtype)
        if z is None:
            z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x_t, _ = self.path.interpolate(x, z, t)
        F_pred, features = self._predict(F, features_fn, x_t, t, r, cond)
        dF_dt = self.time_derivative(
            F if F_nograd is None else F_nograd, x, z, t, r, cond, candidates=candidates
        )
        target = self.path.transition_target(x.to(dF_dt.dtype), z.to(dF_dt.dtype), t, r, dF_dt)
        base = self.path.diffusion_target(x, z, t) if self.guidance_w_gt != 1.0 else None
        offset = self.guidance_offset(teacher, x_t, t, teacher_cond, teacher_uncond, base)
        if offset is not None:
            target = target + offset.to(target.dtype)
        target = target.detach()  # sg[target] (all its inputs are already gradient-free)
        return self._reduce(F_pred.to(target.dtype), target, t, r, features, x, cond)

    def _reduce(
        self,
        F_pred: Tensor,
        target: Tensor,
        t: Tensor,
        r: Tensor,
        features: Tensor | None,
        x: Tensor,
        cond: dict[str, Any],
    ) -> LossOutput:
        mse = per_sample_mse(F_pred, target)
        cosine = per_sample_cosine(F_pred, target) if self.direction_loss else torch.zeros_like(mse)
        raw = mse + cosine
        w_time, w_adaptive = self._weights(t, r, raw)
        per_sample = w_time * w_adaptive * raw
        stats = {
            "mse": mse.mean(),
            "cosine": cosine.mean(),
            "loss_raw": raw.mean(),
            "weight_time": w_time.mean(),
            "weight_adaptive": w_adaptive.mean(),
            "t_mean": t.mean(),
            "r_mean": r.mean(),
        }
        if self.alignment is not None and features is not None:
            alignment = self.alignment(features, x, cond)
            per_sample = per_sample + self.alignment_weight * alignment
            stats["alignment"] = alignment.mean()
        stats = {key: value.detach() for key, value in stats.items()}
        return LossOutput(loss=per_sample.mean(), per_sample=per_sample, stats=stats)


def _check_batch(x: Tensor, z: Tensor | None, t: Tensor | None, r: Tensor | None) -> None:
    # User-supplied batch pieces: fail with one line instead of a broadcasting traceback.
    if not x.is_floating_point() or x.ndim < 2:
        raise TimError(
            f"x must be a floating batch of shape (B, ...) with ndim >= 2, got {x.dtype} {tuple(x.shape)}",
            "pass images (B, C, H, W) or vectors (B, D) as float tensors",
        )
    if z is not None and z.shape != x.shape:
        raise TimError(
            f"noise z has shape {tuple(z.shape)}, x has {tuple(x.shape)}", "pass z of the shape of x"
        )
    if (t is None) != (r is None):
        raise TimError("pass both t and r, or neither", "give explicit times as a pair")
    if t is not None and r is not None:
        if t.shape != (x.shape[0],) or r.shape != (x.shape[0],):
            raise TimError(
                f"t and r have shapes {tuple(t.shape)}, {tuple(r.shape)} for a batch of {x.shape[0]}",
                f"pass one time per row, shape ({x.shape[0]},)",
            )
        if bool((r > t).any()):
            raise TimError(
                "some explicit target times r exceed t", "a transition goes to an earlier time: r <= t"
            )


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise TimError(f"unknown {name} {value!r}", f"choose one of {list(allowed)}")


# ---------------------------------------------------------------------------- baselines
@dataclass
class FlowMatchingLoss(TransitionLoss):
    """Flow matching / SiT baseline (arXiv 2509.04394, Table 4 row a) on the TiM interface.

    Every row has r = t, so the target is the diffusion target alpha_hat x + sigma_hat z (the
    velocity z - x on the linear path) and no derivative pass runs; one time draw per row from the
    path's distribution; plain per-sample MSE: no cosine term, no time weight, no adaptive
    normalisation. The alignment hook and model guidance remain available.
    """

    diffusion_share: float = 1.0
    consistency_share: float = 0.0
    time_function: TimeFunction = "constant"
    adaptive: bool = False
    direction_loss: bool = False

    def sample_times(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """One draw t ~ path per row and r = t; each ``(B,)``."""
        t = shift_path_time(
            self.path.sample_time(x.shape[0], generator=generator, device=x.device), self.path, self._shift(x)
        )
        return t, t.clone()

    def derivative_rows(self, n: int) -> slice:
        """No row needs a derivative: every sampled row has r = t (an empty slice, no host sync)."""
        return slice(n, n)


@dataclass
class MeanFlowLoss(TransitionLoss):
    """MeanFlow (Geng et al. 2025) on the TiM interface (arXiv 2509.04394, App. B.2: same target on the linear path).

    The target is u_tgt = v - (t - r) du/dt, identical to TiM's on the linear path. Differences
    from TiM's recipe:

    * derivative by JVP (``torch.func.jvp``), not DDE;
    * (t, r): two logit-normal draws (MeanFlow's own ``P_mean``/``P_std``, default -0.4/1.0),
      t = max, r = min, then r = t on a random subset; only ``share_r_neq_t`` (default 25%) of rows
      keep r != t; no forced r = 0 rows;
    * loss: squared error only (no cosine direction term), no time weighting;
    * adaptive weight 1/(sg(L) + c)^p with MeanFlow's c = 1e-3 and p = 1 (TiM: c = 1e-5);
    * the squared error is averaged over dimensions (MeanFlow sums), so c acts on the mean.

    Network conditioning on (t, r) vs (t, t - r) is the network's business, not the objective's.
    """

    derivative: Derivative = "jvp"
    time_function: TimeFunction = "constant"
    direction_loss: bool = False
    adaptive_c: float = 1e-3  # MeanFlow paper, adaptive loss weighting
    adaptive_power: float = 1.0  # MeanFlow paper, p = 1 for ImageNet
    share_r_neq_t: float = field(default=0.25, metadata=_SHARE)  # MeanFlow paper, best ratio of r != t
    P_mean: float = -0.4
    P_std: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.path, LinearPath):
            raise TimError(
                f"MeanFlowLoss is defined on the linear path, got {self.path!r}", "use path=LinearPath()"
            )
        if not 0.0 <= self.share_r_neq_t <= 1.0:
            raise TimError(
                f"share_r_neq_t must lie in [0, 1], got {self.share_r_neq_t}", "MeanFlow uses 0.25"
            )

    def sample_times(self, x: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """MeanFlow's pairs: t = max, r = min of two logit-normal draws; r = t except on a random share."""
        n, device = x.shape[0], x.device
        time_law = LinearPath(self.P_mean, self.P_std)
        t1 = time_law.sample_time(n, generator=generator, device=device)
        t2 = time_law.sample_time(n, generator=generator, device=device)
        t, r = torch.maximum(t1, t2), torch.minimum(t1, t2)
        keep = torch.rand(n, generator=generator, device=device) < self.share_r_neq_t
        return t, torch.where(keep, r, t)


OBJECTIVES: dict[str, type[TransitionLoss]] = {
    "tim": TransitionLoss,
    "flow_matching": FlowMatchingLoss,
    "meanflow": MeanFlowLoss,
}


def build_objective(name: str, path: Path | None = None, **kwargs: Any) -> TransitionLoss:
    """Build an objective by name.

    Args:
        name: ``"tim"`` (:class:`TransitionLoss`), ``"flow_matching"`` or ``"meanflow"``.
        path: the path (default linear).
        **kwargs: fields of that objective's dataclass.

    Returns:
        The objective.

    Raises:
        TimError: unknown name or field.
    """
    if name not in OBJECTIVES:
        raise TimError(f"unknown objective {name!r}", f"choose one of {sorted(OBJECTIVES)}")
    try:
        return OBJECTIVES[name](path=LinearPath() if path is None else path, **kwargs)
    except TypeError as error:
        raise TimError(
            f"bad arguments for objective {name!r}: {error}", "see the objective's docstring"
        ) from None
