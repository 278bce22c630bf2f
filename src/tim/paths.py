"""Paths ("transports"): the schedule x_t = alpha_t x + sigma_t z and the transition algebra of TiM.

Time convention (stated once for the library): ``t = t_min`` is data and larger ``t`` is noisier;
for :class:`LinearPath` ``t = 0`` is data and ``t = 1`` is pure noise, :class:`TrigFlowPath` has
``t`` in ``[0, pi/2)``. A transition goes from the current time ``t`` to an earlier time ``r <= t``.

A path supplies four scalar functions of ``t`` and their time derivatives:

* the schedule ``alpha_t, sigma_t`` (``x_t = alpha_t x + sigma_t z``, arXiv 2509.04394, Tables 7-8);
* the output parametrisation ``alpha_hat_t, sigma_hat_t``: the network ``F`` regresses onto
  ``alpha_hat_t x + sigma_hat_t z`` in the diffusion limit ``r = t``.

Everything else is written ONCE in the general form of the TiM paper (arXiv 2509.04394, Sec. 3 and App. A.1) in :class:`Path`:

==========================================  ==================================================
quantity                                    method
==========================================  ==================================================
C_t = sigma_hat alpha - alpha_hat sigma     :meth:`Path.c_coefficient`
x_r = A x_t + B F                           :meth:`Path.transition_coefficients`,
                                            :meth:`Path.transition`
B / (dB/dt)                                 :meth:`Path.transition_ratio`
target = a^x + s^z + B/B'(a^'x + s^'z - dF/dt)  :meth:`Path.transition_target`
x_hat, z_hat implied by F                   :meth:`Path.predictions`
PF-ODE velocity implied by F                :meth:`Path.velocity`
stochastic transition (App. A.3, Alg. 2)    :meth:`Path.stochastic_transition`
==========================================  ==================================================

Per-path closed forms (e.g. linear: ``x_r = x_t - (t - r) F``, target ``v - (t - r) dF/dt``) are
short overrides; the tests check each against the general form.

Equation, table and appendix numbers are those of the paper (arXiv 2509.04394v1): the per-path
schedules, parametrisations, ``c_noise``, ``C_t``, ``A_{t,r}``, ``B_{t,r}`` and ``B/(dB/dt)`` are the
rows of Tab. 7/8; the transition identity and the general target are derived in App. A.1; the
linear target is the MeanFlow objective, Eq. 49; EDM's ``alpha_t`` is Eq. 34 and its ``A, B`` are
Eqs. 37-38 (corrected for sigma_d != 1); the stochastic transition is App. A.3. The general forms
of the first-order state transition (Sec. 3 of the paper) are cited by name, not by equation.

Shapes: the scalar functions act elementwise on ``t`` of any shape. Methods taking data tensors
accept ``t``/``r`` of shape ``(B,)`` (one time per row) or ``()`` and broadcast them over the
trailing dimensions of ``x`` (``(B, C, H, W)`` or ``(B, D)``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor

from tim.errors import TimError

__all__ = ["Path", "PathSample", "PATHS", "build_path", "expand_time"]
__all__ += ["LinearPath", "TrigFlowPath", "EDMPath", "VPPath", "VEPath"]  # the rows of Tab. 7/8


class PathSample(NamedTuple):
    """A point on the conditional path and its conditional velocity.

    Attributes:
        x_t: ``alpha_t x + sigma_t z``, shape of ``x``.
        v_t: ``d_alpha_t x + d_sigma_t z`` (= dx_t/dt at fixed x, z), shape of ``x``.
    """

    x_t: Tensor
    v_t: Tensor


def expand_time(t: Tensor, like: Tensor) -> Tensor:
    """Reshape a per-row time ``(B,)`` to ``(B, 1, ..., 1)`` so it broadcasts against ``like``.

    Args:
        t: times, shape ``(B,)`` or ``()``.
        like: a data tensor of shape ``(B, ...)``.

    Returns:
        ``t`` viewed with ``like.ndim`` dimensions (a 0-dim ``t`` is returned unchanged).
    """
    if t.ndim == 0:
        return t
    if t.ndim != 1 or t.shape[0] != like.shape[0]:
        raise TimError(
            f"time tensor of shape {tuple(t.shape)} does not match a batch of shape {tuple(like.shape)}",
            "pass one time per row, shape (B,), or a 0-dim tensor",
        )
    return t.reshape(-1, *([1] * (like.ndim - 1)))


class Path(ABC):
    """A diffusion path with its output parametrisation; the general transition algebra.

    Subclasses define the eight scalar functions, the network time input ``c_noise`` and the
    training time distribution. Attributes ``name``, ``t_min``, ``t_max``, ``sigma_d``.
    """

    name: str
    t_min: float
    t_max: float
    sigma_d: float

    # Schedule and parametrisation (arXiv 2509.04394, Tables 7-8). Elementwise on ``t``.
    @abstractmethod
    def alpha(self, t: Tensor) -> Tensor:
        """Data coefficient alpha_t of x_t = alpha_t x + sigma_t z."""

    @abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """Noise coefficient sigma_t of x_t = alpha_t x + sigma_t z."""

    @abstractmethod
    def d_alpha(self, t: Tensor) -> Tensor:
        """d alpha_t / dt."""

    @abstractmethod
    def d_sigma(self, t: Tensor) -> Tensor:
        """d sigma_t / dt."""

    @abstractmethod
    def alpha_hat(self, t: Tensor) -> Tensor:
        """Data coefficient of the output parametrisation F ~ alpha_hat_t x + sigma_hat_t z."""

    @abstractmethod
    def sigma_hat(self, t: Tensor) -> Tensor:
        """Noise coefficient of the output parametrisation F ~ alpha_hat_t x + sigma_hat_t z."""

    @abstractmethod
    def d_alpha_hat(self, t: Tensor) -> Tensor:
        """d alpha_hat_t / dt."""

    @abstractmethod
    def d_sigma_hat(self, t: Tensor) -> Tensor:
        """d sigma_hat_t / dt."""

    @abstractmethod
    def time_input(self, t: Tensor) -> Tensor:
        """Network time input c_noise(t) (paper Tab. 7/8, column c_noise), same shape as ``t``."""

    @abstractmethod
    def sample_time(
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """Draw ``n`` training times, shape ``(n,)``, float32 (a logit-normal law: one randn(n), as published)."""

    # ------------------------------------------------------------------ general form
    def interpolate(self, x: Tensor, z: Tensor, t: Tensor) -> PathSample:
        """Point on the conditional path and its velocity (arXiv 2509.04394, Tables 7-8).

        x_t = alpha_t x + sigma_t z;  v_t = d_alpha_t x + d_sigma_t z.

        Args:
            x: data, shape ``(B, ...)``.
            z: Gaussian noise, shape of ``x``.
            t: times, shape ``(B,)`` or ``()``.

        Returns:
            :class:`PathSample` ``(x_t, v_t)``, each of the shape of ``x``.
        """
        t = expand_time(t, x)
        x_t = self.alpha(t) * x + self.sigma(t) * z
        v_t = self.d_alpha(t) * x + self.d_sigma(t) * z
        return PathSample(x_t, v_t)

    def c_coefficient(self, t: Tensor) -> Tensor:
        """C_t = sigma_hat_t alpha_t - alpha_hat_t sigma_t (arXiv 2509.04394, Sec. 3; per path: Tab. 7/8), elementwise."""
        return self.sigma_hat(t) * self.alpha(t) - self.alpha_hat(t) * self.sigma(t)

    def transition_coefficients(self, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        """Coefficients of the first-order state transition x_r = A x_t + B F (arXiv 2509.04394, Sec. 3).

        A = (alpha_r sigma_hat_t - sigma_r alpha_hat_t) / C_t,
        B = (sigma_r alpha_t - alpha_r sigma_t) / C_t   (arXiv 2509.04394, Sec. 3; per path: Tab. 7/8).

        Args:
            t: current times (any shape).
            r: target times, broadcastable with ``t``.

        Returns:
            ``(A, B)`` with the broadcast shape of ``t`` and ``r``.
        """
        c_t = self.c_coefficient(t)
        a = (self.alpha(r) * self.sigma_hat(t) - self.sigma(r) * self.alpha_hat(t)) / c_t
        b = (self.sigma(r) * self.alpha(t) - self.alpha(r) * self.sigma(t)) / c_t
        return a, b

    def transition_ratio(self, t: Tensor, r: Tensor) -> Tensor:
        """B_{t,r} / (dB_{t,r}/dt) at fixed r (the target's factor, App. A.1; per path: Tab. 7/8), elementwise.

        With N = sigma_r alpha_t - alpha_r sigma_t (so B = N / C_t):
        B / B' = N C_t / (N' C_t - N C'_t). At r = t, N is exactly 0, so the ratio is exactly 0
        (no 0/0) and the target reduces to the diffusion target.
        """
        n = self.sigma(r) * self.alpha(t) - self.alpha(r) * self.sigma(t)
        d_n = self.sigma(r) * self.d_alpha(t) - self.alpha(r) * self.d_sigma(t)
        c_t = self.c_coefficient(t)
        d_c = (
            self.d_sigma_hat(t) * self.alpha(t)
            + self.sigma_hat(t) * self.d_alpha(t)
            - self.d_alpha_hat(t) * self.sigma(t)
            - self.alpha_hat(t) * self.d_sigma(t)
        )
        return n * c_t / (d_n * c_t - n * d_c)

    def transition(self, x_t: Tensor, F: Tensor, t: Tensor, r: Tensor) -> Tensor:
        """Jump from time t to time r <= t: x_r = A_{t,r} x_t + B_{t,r} F (arXiv 2509.04394, Sec. 3).

        Args:
            x_t: state at time t, shape ``(B, ...)``.
            F: network output at (x_t, t, r), shape of ``x_t``.
            t: current times, shape ``(B,)`` or ``()``.
            r: target times, shape ``(B,)`` or ``()``.

        Returns:
            x_r, shape of ``x_t``.
        """
        a, b = self.transition_coefficients(expand_time(t, x_t), expand_time(r, x_t))
        return a * x_t + b * F

    def diffusion_target(self, x: Tensor, z: Tensor, t: Tensor) -> Tensor:
        """alpha_hat_t x + sigma_hat_t z: the regression target at r = t (arXiv 2509.04394, App. B)."""
        t = expand_time(t, x)
        return self.alpha_hat(t) * x + self.sigma_hat(t) * z

    def transition_target(self, x: Tensor, z: Tensor, t: Tensor, r: Tensor, dF_dt: Tensor) -> Tensor:
        """Regression target from the state transition identity (arXiv 2509.04394, Sec. 3, App. A.1).

        target = alpha_hat_t x + sigma_hat_t z
                 + (B / dB/dt) (d_alpha_hat_t x + d_sigma_hat_t z - dF/dt).

        Args:
            x: data, shape ``(B, ...)``.
            z: noise, shape of ``x``.
            t: current times, shape ``(B,)`` or ``()``.
            r: target times, shape ``(B,)`` or ``()``; rows with r = t give the diffusion target.
            dF_dt: total derivative of the (stop-gradient) network output along the conditional
                path at fixed r, shape of ``x``.

        Returns:
            The target, shape of ``x``.
        """
        t_, r_ = expand_time(t, x), expand_time(r, x)
        slope = self.d_alpha_hat(t_) * x + self.d_sigma_hat(t_) * z - dF_dt
        return self.diffusion_target(x, z, t) + self.transition_ratio(t_, r_) * slope

    def predictions(self, x_t: Tensor, F: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Data and noise implied by an output F (arXiv 2509.04394, Sec. 3).

        x_hat = (sigma_hat_t x_t - sigma_t F) / C_t,  z_hat = (alpha_t F - alpha_hat_t x_t) / C_t.

        Returns:
            ``(x_hat, z_hat)``, each of the shape of ``x_t``.
        """
        t = expand_time(t, x_t)
        c_t = self.c_coefficient(t)
        x_hat = (self.sigma_hat(t) * x_t - self.sigma(t) * F) / c_t
        z_hat = (self.alpha(t) * F - self.alpha_hat(t) * x_t) / c_t
        return x_hat, z_hat

    def velocity(self, x_t: Tensor, F: Tensor, t: Tensor) -> Tensor:
        """PF-ODE velocity implied by a diffusion-mode output F(x_t, t, t): d_alpha x_hat + d_sigma z_hat."""
        x_hat, z_hat = self.predictions(x_t, F, t)
        t = expand_time(t, x_t)
        return self.d_alpha(t) * x_hat + self.d_sigma(t) * z_hat

    def stochastic_transition(
        self, x_t: Tensor, F: Tensor, t: Tensor, r: Tensor, stochasticity: float, noise: Tensor
    ) -> Tensor:
        """Transition plus a reverse-SDE correction of strength rho (arXiv 2509.04394, App. A.3, Alg. 2).

        With g^2 = 2 rho sigma_t (alpha_t d_sigma_t - d_alpha_t sigma_t) and dt = t - r:
        x_r <- A x_t + B F - rho (alpha_t d_sigma_t - d_alpha_t sigma_t) z_hat dt + sqrt(g^2 dt) xi,
        z_hat the noise implied by F. For the linear path this is the published update
        x_r - rho z_hat (t - r) + sqrt(2 rho t (t - r)) xi.

        Args:
            x_t: state, shape ``(B, ...)``.
            F: network output at (x_t, t, r).
            t: current time, shape ``(B,)`` or ``()``.
            r: target time, shape ``(B,)`` or ``()``.
            stochasticity: rho >= 0.
            noise: xi ~ N(0, I), shape of ``x_t``.

        Returns:
            x_r, shape of ``x_t``.
        """
        x_r = self.transition(x_t, F, t, r)
        _, z_hat = self.predictions(x_t, F, t)
        t_, r_ = expand_time(t, x_t), expand_time(r, x_t)
        dt = t_ - r_
        drift = self.alpha(t_) * self.d_sigma(t_) - self.d_alpha(t_) * self.sigma(t_)
        variance = 2.0 * stochasticity * self.sigma(t_) * drift * dt
        return x_r - stochasticity * drift * z_hat * dt + variance.sqrt() * noise

    def __repr__(self) -> str:
        return f"{type(self).__name__}(t_min={self.t_min}, t_max={self.t_max}, sigma_d={self.sigma_d})"


class LinearPath(Path):
    """OT flow matching (the default): alpha = 1 - t, sigma = t, F ~ z - x (velocity; Tab. 7/8 row OT-FM).

    Closed forms: x_r = x_t - (t - r) F; target v - (t - r) dF/dt, the MeanFlow objective (Eq. 49).

    Training times are logit-normal: logit(t) ~ N(P_mean, P_std^2) (the published code, github.com/WZDTHU/TiM; C2I values
    P_mean = -0.4, P_std = 1.0 from the published configs; T2I uses 0.0 / 1.6).
    """

    name = "linear"

    def __init__(self, P_mean: float = -0.4, P_std: float = 1.0) -> None:
        self.P_mean, self.P_std = float(P_mean), float(P_std)
        self.t_min, self.t_max, self.sigma_d = 0.0, 1.0, 1.0

    def alpha(self, t: Tensor) -> Tensor:  # noqa: D102
        return 1.0 - t

    def sigma(self, t: Tensor) -> Tensor:  # noqa: D102
        return t.clone()

    def d_alpha(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.full_like(t, -1.0)

    def d_sigma(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.ones_like(t)

    def alpha_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.full_like(t, -1.0)

    def sigma_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.ones_like(t)

    def d_alpha_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.zeros_like(t)

    def d_sigma_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.zeros_like(t)

    def time_input(self, t: Tensor) -> Tensor:  # noqa: D102
        return t

    def sample_time(  # noqa: D102
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        # sigmoid(P_mean + P_std n) == s / (1 + s) with s = exp(...) (the published form), but
        # without overflow for large draws.
        return torch.sigmoid(self.P_mean + self.P_std * torch.randn(n, generator=generator, device=device))

    def transition_coefficients(self, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        return torch.ones_like(t * r), r - t  # A = 1, B = r - t

    def transition_ratio(self, t: Tensor, r: Tensor) -> Tensor:  # noqa: D102
        return t - r

    def transition(self, x_t: Tensor, F: Tensor, t: Tensor, r: Tensor) -> Tensor:  # noqa: D102
        return x_t - (expand_time(t, x_t) - expand_time(r, x_t)) * F  # x_r = x_t - (t - r) F

    def transition_target(self, x: Tensor, z: Tensor, t: Tensor, r: Tensor, dF_dt: Tensor) -> Tensor:  # noqa: D102
        return (z - x) - (expand_time(t, x) - expand_time(r, x)) * dF_dt  # v - (t - r) dF/dt

    def __repr__(self) -> str:
        return f"LinearPath(P_mean={self.P_mean}, P_std={self.P_std})"


class TrigFlowPath(Path):
    """TrigFlow: alpha = cos t, sigma = sin t, F ~ cos t z - sin t x (Tab. 7/8 row TrigFlow).

    Closed forms: x_r = cos(t - r) x_t - sin(t - r) F; target v - tan(t - r) (x_t + dF/dt) (arXiv 2509.04394, App. A.1).

    Training times t = arctan(exp(P_mean + P_std n)) (published defaults P_mean -1.0, P_std 1.6,
    T_max 1.57, sigma_d 0.5), clamped into [t_min, t_max].
    """

    name = "trigflow"

    def __init__(
        self, P_mean: float = -1.0, P_std: float = 1.6, sigma_d: float = 0.5, t_max: float = 1.57
    ) -> None:
        # t_max = 1.57 < pi/2 (published default): tan(t - r) stays finite on the whole domain.
        if not 0.0 < t_max < math.pi / 2:
            raise TimError(f"TrigFlowPath t_max={t_max} is outside (0, pi/2)", "use e.g. t_max=1.57")
        self.P_mean, self.P_std, self.sigma_d = float(P_mean), float(P_std), float(sigma_d)
        self.t_min, self.t_max = 0.0, float(t_max)

    def alpha(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.cos(t)

    def sigma(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.sin(t)

    def d_alpha(self, t: Tensor) -> Tensor:  # noqa: D102
        return -torch.sin(t)

    def d_sigma(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.cos(t)

    def alpha_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return -torch.sin(t)

    def sigma_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.cos(t)

    def d_alpha_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return -torch.cos(t)

    def d_sigma_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return -torch.sin(t)

    def time_input(self, t: Tensor) -> Tensor:  # noqa: D102
        return t

    def sample_time(  # noqa: D102
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        draw = torch.randn(n, generator=generator, device=device)
        t = torch.atan(torch.exp(self.P_mean + self.P_std * draw))
        return t.clamp(self.t_min, self.t_max)

    def transition_coefficients(self, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        return torch.cos(t - r), torch.sin(r - t)

    def transition_ratio(self, t: Tensor, r: Tensor) -> Tensor:  # noqa: D102
        return torch.tan(t - r)

    def transition(self, x_t: Tensor, F: Tensor, t: Tensor, r: Tensor) -> Tensor:  # noqa: D102
        delta = expand_time(t, x_t) - expand_time(r, x_t)
        return torch.cos(delta) * x_t - torch.sin(delta) * F

    def transition_target(self, x: Tensor, z: Tensor, t: Tensor, r: Tensor, dF_dt: Tensor) -> Tensor:  # noqa: D102
        t_, r_ = expand_time(t, x), expand_time(r, x)
        x_t, v_t = self.interpolate(x, z, t)
        return v_t - torch.tan(t_ - r_) * (x_t + dF_dt)

    def __repr__(self) -> str:
        return f"TrigFlowPath(P_mean={self.P_mean}, P_std={self.P_std}, sigma_d={self.sigma_d}, t_max={self.t_max})"


class EDMPath(Path):
    """EDM (Karras et al. 2022) in TiM's scaled form, correct for every sigma_d (arXiv 2509.04394, Tab. 7/8; its Eqs. 37-38 hold only at sigma_d = 1).

    alpha = 1/sqrt(t^2 + sd^2) (Eq. 34), sigma = t/sqrt(t^2 + sd^2), F ~ EDM's F-target
    alpha_hat = t/(sd sqrt(t^2 + sd^2)), sigma_hat = -sd/sqrt(t^2 + sd^2), c_noise = ln(t)/4.
    The published code (and the paper's Eqs. 37-38) put sigma_d^3 in A, B and B/B', which is
    right only for sigma_d = 1; we use the correct forms. Times: ln t ~ N(P_mean, P_std^2)
    clamped into [t_min, t_max] (published defaults -1.2, 1.2, [0.01, 80], sigma_d 0.5).

    The clamp is a deliberate difference from the published ``EDM.sample_t``, which does not clamp.
    It keeps every training time inside the domain the sampler uses and the objective assumes: the
    consistency rows get r = t_min, which without it exceeds t when both draws fall below t_min (a
    transition forwards in time, target sign flipped), and the DDE stencil is defined on
    [t_min, t_max]. At the published settings it moves 0.45% of the r draws (min of two draws
    below 0.01), 5.2e-6 of the t draws below 0.01 and 3.3e-6 above 80 (normal tail probabilities
    of ln 0.01 and ln 80); no released config trains on EDM (all use OT-FM).
    """

    name = "edm"

    def __init__(
        self,
        P_mean: float = -1.2,
        P_std: float = 1.2,
        sigma_d: float = 0.5,
        t_min: float = 0.01,
        t_max: float = 80.0,
    ) -> None:
        if not 0.0 < t_min < t_max:
            raise TimError(
                f"EDMPath needs 0 < t_min < t_max, got {t_min}, {t_max}", "choose e.g. 0.01 and 80"
            )
        if not sigma_d > 0.0:  # sigma_d <= 0 makes C_t = -1/sigma_d and the time weights meaningless
            raise TimError(
                f"EDMPath needs sigma_d > 0, got {sigma_d}", "use the data standard deviation, e.g. 0.5"
            )
        self.P_mean, self.P_std, self.sigma_d = float(P_mean), float(P_std), float(sigma_d)
        self.t_min, self.t_max = float(t_min), float(t_max)

    def _norm(self, t: Tensor) -> Tensor:
        return torch.sqrt(t * t + self.sigma_d**2)

    def alpha(self, t: Tensor) -> Tensor:  # noqa: D102
        return 1.0 / self._norm(t)

    def sigma(self, t: Tensor) -> Tensor:  # noqa: D102
        return t / self._norm(t)

    def d_alpha(self, t: Tensor) -> Tensor:  # noqa: D102
        return -t / self._norm(t) ** 3

    def d_sigma(self, t: Tensor) -> Tensor:  # noqa: D102
        return self.sigma_d**2 / self._norm(t) ** 3

    def alpha_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return t / (self.sigma_d * self._norm(t))

    def sigma_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return -self.sigma_d / self._norm(t)

    def d_alpha_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return self.sigma_d / self._norm(t) ** 3

    def d_sigma_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return self.sigma_d * t / self._norm(t) ** 3

    def time_input(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.log(t) / 4.0  # EDM's c_noise (Karras et al. 2022, Table 1)

    def sample_time(  # noqa: D102
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        t = torch.exp(self.P_mean + self.P_std * torch.randn(n, generator=generator, device=device))
        return t.clamp(self.t_min, self.t_max)

    def transition_coefficients(self, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        denom = self._norm(r) * self._norm(t)
        return (r * t + self.sigma_d**2) / denom, self.sigma_d * (t - r) / denom

    def transition_ratio(self, t: Tensor, r: Tensor) -> Tensor:  # noqa: D102
        return (t - r) * (t * t + self.sigma_d**2) / (self.sigma_d**2 + r * t)

    def __repr__(self) -> str:
        return (
            f"EDMPath(P_mean={self.P_mean}, P_std={self.P_std}, sigma_d={self.sigma_d}, "
            f"t_min={self.t_min}, t_max={self.t_max})"
        )


class VPPath(Path):
    """The VP-SDE (DDPM) path (Tab. 7/8 row VP-SDE).

    beta_t = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1), alpha = 1/sqrt(beta^2+1),
    sigma = beta/sqrt(beta^2+1), F ~ z (epsilon prediction), c_noise = (T - 1) t (arXiv 2509.04394, Tables 7-8);
    B/(dB/dt) = (beta_t - beta_r) / beta_dot_t.

    Training times t ~ U(t_min, 1) (published: beta_d 19.9, beta_min 0.1, t_min 1e-5, T 1000).
    """

    name = "vp"

    def __init__(
        self, beta_min: float = 0.1, beta_d: float = 19.9, t_min: float = 1e-5, T: int = 1000
    ) -> None:
        # t_min = 0 gives beta = 0 and a 0/0 in d_beta; beta_min = beta_d = 0 is no noise at all.
        if not 0.0 < t_min < 1.0 or beta_min < 0 or beta_d < 0 or not beta_min + beta_d > 0 or T < 2:
            raise TimError(
                f"VPPath needs 0 < t_min < 1, beta_min, beta_d >= 0 (not both 0) and T >= 2, "
                f"got t_min={t_min}, beta_min={beta_min}, beta_d={beta_d}, T={T}",
                "use the published t_min=1e-5, beta_min=0.1, beta_d=19.9, T=1000",
            )
        self.beta_min, self.beta_d, self.T = float(beta_min), float(beta_d), int(T)
        self.t_min, self.t_max, self.sigma_d = float(t_min), 1.0, 1.0

    def _exponent(self, t: Tensor) -> Tensor:
        return 0.5 * self.beta_d * t * t + self.beta_min * t  # beta_t^2 + 1 = exp(E)

    def beta(self, t: Tensor) -> Tensor:
        """beta_t = sqrt(exp(E_t) - 1) (expm1 keeps precision near t = 0)."""
        return torch.sqrt(torch.expm1(self._exponent(t)))

    def d_beta(self, t: Tensor) -> Tensor:
        """d beta_t / dt = (beta_d t + beta_min)(beta_t^2 + 1) / (2 beta_t)."""
        return (self.beta_d * t + self.beta_min) * torch.exp(self._exponent(t)) / (2.0 * self.beta(t))

    def alpha(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.exp(-0.5 * self._exponent(t))

    def sigma(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.sqrt(-torch.expm1(-self._exponent(t)))

    def d_alpha(self, t: Tensor) -> Tensor:  # noqa: D102
        return -0.5 * (self.beta_d * t + self.beta_min) * self.alpha(t)

    def d_sigma(self, t: Tensor) -> Tensor:  # noqa: D102
        return 0.5 * (self.beta_d * t + self.beta_min) * self.alpha(t) ** 2 / self.sigma(t)

    def alpha_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.zeros_like(t)

    def sigma_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.ones_like(t)

    def d_alpha_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.zeros_like(t)

    def d_sigma_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.zeros_like(t)

    def time_input(self, t: Tensor) -> Tensor:  # noqa: D102
        return (self.T - 1) * t

    def sample_time(  # noqa: D102
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        u = torch.rand(n, generator=generator, device=device)
        return 1.0 + u * (self.t_min - 1.0)

    def transition_coefficients(self, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        root_r = torch.sqrt(self.beta(r) ** 2 + 1.0)
        return torch.sqrt(self.beta(t) ** 2 + 1.0) / root_r, (self.beta(r) - self.beta(t)) / root_r

    def transition_ratio(self, t: Tensor, r: Tensor) -> Tensor:  # noqa: D102
        return (self.beta(t) - self.beta(r)) / self.d_beta(t)

    def __repr__(self) -> str:
        return f"VPPath(beta_min={self.beta_min}, beta_d={self.beta_d}, t_min={self.t_min}, T={self.T})"


class VEPath(Path):
    """VE-SDE (score matching): alpha = 1, sigma = t, F ~ -z, c_noise = ln(t/2) (Tab. 7/8 row VE-SDE).

    Closed forms: x_r = x_t + (t - r) F; target -z - (t - r) dF/dt (arXiv 2509.04394, App. A.1).

    Training times t = sigma_min (sigma_max/sigma_min)^u, u ~ U(0, 1) (published 0.02, 100).
    """

    name = "ve"

    def __init__(self, sigma_min: float = 0.02, sigma_max: float = 100.0) -> None:
        if not 0.0 < sigma_min < sigma_max:
            raise TimError(
                f"VEPath needs 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}", "e.g. 0.02 and 100"
            )
        self.t_min, self.t_max, self.sigma_d = float(sigma_min), float(sigma_max), 1.0

    def alpha(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.ones_like(t)

    def sigma(self, t: Tensor) -> Tensor:  # noqa: D102
        return t.clone()

    def d_alpha(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.zeros_like(t)

    def d_sigma(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.ones_like(t)

    def alpha_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.zeros_like(t)

    def sigma_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.full_like(t, -1.0)

    def d_alpha_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.zeros_like(t)

    def d_sigma_hat(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.zeros_like(t)

    def time_input(self, t: Tensor) -> Tensor:  # noqa: D102
        return torch.log(t / 2.0)  # published c_noise for VE

    def sample_time(  # noqa: D102
        self, n: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        u = torch.rand(n, generator=generator, device=device)
        return self.t_min * (self.t_max / self.t_min) ** u

    def transition_coefficients(self, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:  # noqa: D102
        return torch.ones_like(t * r), t - r

    def transition_ratio(self, t: Tensor, r: Tensor) -> Tensor:  # noqa: D102
        return t - r

    def transition(self, x_t: Tensor, F: Tensor, t: Tensor, r: Tensor) -> Tensor:  # noqa: D102
        return x_t + (expand_time(t, x_t) - expand_time(r, x_t)) * F

    def transition_target(self, x: Tensor, z: Tensor, t: Tensor, r: Tensor, dF_dt: Tensor) -> Tensor:  # noqa: D102
        return -z - (expand_time(t, x) - expand_time(r, x)) * dF_dt

    def __repr__(self) -> str:
        return f"VEPath(sigma_min={self.t_min}, sigma_max={self.t_max})"


PATHS: dict[str, type[Path]] = {
    "linear": LinearPath,
    "trigflow": TrigFlowPath,
    "edm": EDMPath,
    "vp": VPPath,
    "ve": VEPath,
}


def build_path(name: str, **kwargs: float) -> Path:
    """Build a path by name.

    Args:
        name: one of ``"linear"`` (OT-FM, default everywhere), ``"trigflow"``, ``"edm"``, ``"vp"``, ``"ve"``.
        **kwargs: constructor arguments of that path (e.g. ``P_mean``, ``P_std``, ``sigma_d``).

    Returns:
        The path.

    Raises:
        TimError: unknown name or unknown keyword.
    """
    if name not in PATHS:
        raise TimError(f"unknown path {name!r}", f"choose one of {sorted(PATHS)}")
    try:
        return PATHS[name](**kwargs)
    except TypeError as error:
        raise TimError(
            f"bad arguments for path {name!r}: {error}", "see the path's docstring for its parameters"
        ) from None
