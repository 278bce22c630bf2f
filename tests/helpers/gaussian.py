"""Closed-form Gaussian quantities shared by the path, objective and sampler tests.

Imported as ``from helpers.gaussian import ...``: ``tests/conftest.py`` puts ``tests/`` on
``sys.path``, so this works under ``--import-mode=importlib`` from any working directory.
"""

from __future__ import annotations

import torch

from tim.paths import EDMPath, LinearPath, Path, TrigFlowPath, VEPath, VPPath

__all__ = ["PATH_IDS", "GaussianExact", "all_paths", "time_pairs"]


def all_paths() -> list[Path]:
    return [
        LinearPath(),
        TrigFlowPath(),
        EDMPath(sigma_d=0.5),
        EDMPath(sigma_d=1.0),
        EDMPath(sigma_d=1.7),
        VPPath(),
        VEPath(),
    ]


PATH_IDS = ["linear", "trigflow", "edm0.5", "edm1", "edm1.7", "vp", "ve"]


def time_pairs(path: Path, n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random t > r strictly inside the domain, float64 (away from the edges by 2 %)."""
    g = torch.Generator().manual_seed(seed)
    lo, hi = path.t_min + 0.02 * (path.t_max - path.t_min), path.t_max - 0.02 * (path.t_max - path.t_min)
    a = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    b = lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    return torch.maximum(a, b), torch.minimum(a, b)


class GaussianExact:
    """Exact quantities for data x ~ N(0, s^2 I), z ~ N(0, I) on a path.

    The marginal of x_t is N(0, std(t)^2), std(t)^2 = alpha_t^2 s^2 + sigma_t^2, the PF-ODE flow map
    is x_r = x_t std(r)/std(t), so the exact transition output is F = g(t, r) x_t with
    g = (std(r)/std(t) - A_{t,r}) / B_{t,r} and, at r = t, F = E[alpha_hat x + sigma_hat z | x_t]
    = (alpha_hat alpha s^2 + sigma_hat sigma)/std^2 x_t.
    """

    def __init__(self, path: Path, s: float = 1.7) -> None:
        self.path, self.s = path, s

    def std(self, t: torch.Tensor) -> torch.Tensor:
        p = self.path
        return torch.sqrt(p.alpha(t) ** 2 * self.s**2 + p.sigma(t) ** 2)

    def d_std(self, t: torch.Tensor) -> torch.Tensor:
        p = self.path
        return (p.alpha(t) * p.d_alpha(t) * self.s**2 + p.sigma(t) * p.d_sigma(t)) / self.std(t)

    def g(self, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        # A, B from the generic formulas of the base class (the closed forms are tested separately).
        a, b = Path.transition_coefficients(self.path, t, r)
        return (self.std(r) / self.std(t) - a) / b

    def g_diffusion(self, t: torch.Tensor) -> torch.Tensor:
        p = self.path
        return (p.alpha_hat(t) * p.alpha(t) * self.s**2 + p.sigma_hat(t) * p.sigma(t)) / self.std(t) ** 2

    def dg_dt(self, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.func.jvp(lambda tt: self.g(tt, r), (t,), (torch.ones_like(t),))[1]

    def time_from_input(self, c: torch.Tensor) -> torch.Tensor:
        """Invert c_noise(t) (the network sees c_noise)."""
        name = self.path.name
        if name == "edm":
            return torch.exp(4.0 * c)
        if name == "vp":
            return c / (self.path.T - 1)
        if name == "ve":
            return 2.0 * torch.exp(c)
        return c

    def F(self, x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """Exact F for path times t, r of shape (B,) (r = t rows use the diffusion limit)."""
        same = r == t
        r_safe = torch.where(
            same, r - 0.5 * (t - self.path.t_min) - 1e-3, r
        )  # any r < t; unused on same rows
        coeff = torch.where(same, self.g_diffusion(t), self.g(t, r_safe))
        return coeff.reshape(-1, *([1] * (x_t.ndim - 1))) * x_t

    def network(
        self, x_t: torch.Tensor, c_t: torch.Tensor, c_r: torch.Tensor, **cond: object
    ) -> torch.Tensor:
        """The exact F as a network: F(x_t, c_noise(t), c_noise(r))."""
        return self.F(x_t, self.time_from_input(c_t), self.time_from_input(c_r))

    def dF_dt_conditional(
        self, x: torch.Tensor, z: torch.Tensor, t: torch.Tensor, r: torch.Tensor
    ) -> torch.Tensor:
        """d/dt F(x_t, t, r) at fixed x, z, r (dx_t/dt = v_t): dg/dt x_t + g v_t."""
        x_t, v_t = self.path.interpolate(x, z, t)
        e = lambda v: v.reshape(-1, *([1] * (x.ndim - 1)))  # noqa: E731
        return e(self.dg_dt(t, r)) * x_t + e(self.g(t, r)) * v_t

    def posterior(self, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """E[x | x_t], E[z | x_t]."""
        e = lambda v: v.reshape(-1, *([1] * (x_t.ndim - 1)))  # noqa: E731
        var = e(self.std(t) ** 2)
        return e(self.path.alpha(t)) * self.s**2 * x_t / var, e(self.path.sigma(t)) * x_t / var
