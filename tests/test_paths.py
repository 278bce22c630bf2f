"""Paths: derivatives against autodiff, general form against closed forms, the transition identity
on Gaussian data (exact PF-ODE flow map), r = t edge cases. Float64 on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from helpers.gaussian import PATH_IDS, GaussianExact, all_paths, time_pairs
from tim.errors import TimError
from tim.paths import (
    EDMPath,
    LinearPath,
    Path,
    TrigFlowPath,
    build_path,
)

pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py: every tensor here is float64


# ----------------------------------------------------------------------------- derivatives
@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_derivatives_match_forward_autodiff(path: Path) -> None:
    t, _ = time_pairs(path)
    for f, df in [
        (path.alpha, path.d_alpha),
        (path.sigma, path.d_sigma),
        (path.alpha_hat, path.d_alpha_hat),
        (path.sigma_hat, path.d_sigma_hat),
    ]:
        _, expected = torch.func.jvp(f, (t,), (torch.ones_like(t),))
        torch.testing.assert_close(df(t), expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_transition_ratio_matches_autograd_of_B(path: Path) -> None:
    t, r = time_pairs(path)
    b = Path.transition_coefficients(path, t, r)[1]
    _, d_b = torch.func.jvp(
        lambda tt: Path.transition_coefficients(path, tt, r)[1], (t,), (torch.ones_like(t),)
    )
    torch.testing.assert_close(Path.transition_ratio(path, t, r), b / d_b, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- general vs closed form
@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_closed_forms_match_general_form(path: Path) -> None:
    t, r = time_pairs(path)
    g = torch.Generator().manual_seed(1)
    x, z, F, dF = (torch.randn(64, 3, 2, 2, generator=g) for _ in range(4))
    for closed, general in zip(
        path.transition_coefficients(t, r), Path.transition_coefficients(path, t, r), strict=True
    ):
        torch.testing.assert_close(closed, general, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        path.transition_ratio(t, r), Path.transition_ratio(path, t, r), rtol=1e-9, atol=1e-12
    )
    x_t = path.interpolate(x, z, t).x_t
    torch.testing.assert_close(
        path.transition(x_t, F, t, r), Path.transition(path, x_t, F, t, r), rtol=1e-10, atol=1e-10
    )
    torch.testing.assert_close(
        path.transition_target(x, z, t, r, dF),
        Path.transition_target(path, x, z, t, r, dF),
        rtol=1e-9,
        atol=1e-9,
    )


def test_published_edm_formulas_are_wrong_unless_sigma_d_is_one() -> None:
    """arXiv 2509.04394, Eqs. 37-38 and the published code: A, B and B/B' use sigma_d^3; equal to ours only at sigma_d = 1."""
    t, r = torch.tensor([2.0, 0.7, 10.0]), torch.tensor([0.5, 0.1, 3.0])

    def published(sd: float) -> tuple[torch.Tensor, ...]:
        ratio = torch.sqrt(t**2 + sd**2) / torch.sqrt(r**2 + sd**2) / (sd**3 + t**2)
        a, b = (sd**3 + t * r) * ratio, sd**2 * (t - r) * ratio
        bt = (
            (t - r)
            * (sd**2 + t**2)
            * (sd**3 + t**2)
            / (
                2 * t * (r - t) * (sd**2 + t**2)
                - t * (r - t) * (sd**3 + t**2)
                + (sd**2 + t**2) * (sd**3 + t**2)
            )
        )
        return a, b, bt

    for sd in (1.0, 0.5):
        path = EDMPath(sigma_d=sd)
        ours = (*Path.transition_coefficients(path, t, r), Path.transition_ratio(path, t, r))
        close = all(torch.allclose(o, p, rtol=1e-12) for o, p in zip(ours, published(sd), strict=True))
        assert close == (sd == 1.0)


def test_linear_closed_forms_by_hand() -> None:
    path = LinearPath()
    t, r = torch.tensor([0.9, 0.5]), torch.tensor([0.2, 0.5])
    x, z, F, dF = torch.randn(4, 2, 3).unbind(0)
    x_t, v_t = path.interpolate(x, z, t)
    torch.testing.assert_close(x_t, (1 - t[:, None]) * x + t[:, None] * z)
    torch.testing.assert_close(v_t, z - x)
    torch.testing.assert_close(path.transition(x_t, F, t, r), x_t - (t - r)[:, None] * F)
    torch.testing.assert_close(path.transition_target(x, z, t, r, dF), (z - x) - (t - r)[:, None] * dF)


# ----------------------------------------------------------------------------- edges
@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_r_equal_t_gives_diffusion_target_without_nan(path: Path) -> None:
    t, _ = time_pairs(path, n=16)
    x, z = torch.randn(2, 16, 5).unbind(0)
    dF = torch.randn(16, 5)
    expected = path.diffusion_target(x, z, t)
    for target in (path.transition_target(x, z, t, t, dF), Path.transition_target(path, x, z, t, t, dF)):
        assert torch.isfinite(target).all()
        torch.testing.assert_close(target, expected, rtol=0, atol=0)
    a, b = Path.transition_coefficients(path, t, t)
    torch.testing.assert_close(a, torch.ones_like(a))
    assert (b == 0).all()


def test_interpolate_endpoints_linear_and_trigflow() -> None:
    x, z = torch.randn(2, 4, 3).unbind(0)
    lin = LinearPath()
    torch.testing.assert_close(lin.interpolate(x, z, torch.zeros(4)).x_t, x)
    torch.testing.assert_close(lin.interpolate(x, z, torch.ones(4)).x_t, z)
    trig = TrigFlowPath()
    torch.testing.assert_close(trig.interpolate(x, z, torch.zeros(4)).x_t, x)
    torch.testing.assert_close(trig.interpolate(x, z, torch.full((4,), math.pi / 2)).x_t, z)


@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_predictions_round_trip(path: Path) -> None:
    """F = alpha_hat x + sigma_hat z implies x_hat = x, z_hat = z; the velocity is v_t."""
    t, _ = time_pairs(path, n=8)
    x, z = torch.randn(2, 8, 3).unbind(0)
    x_t, v_t = path.interpolate(x, z, t)
    F = path.diffusion_target(x, z, t)
    x_hat, z_hat = path.predictions(x_t, F, t)
    torch.testing.assert_close(x_hat, x)
    torch.testing.assert_close(z_hat, z)
    torch.testing.assert_close(path.velocity(x_t, F, t), v_t)


# ----------------------------------------------------------------------------- Gaussian closed form
@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_transition_identity_on_gaussian_data_marginal_form(path: Path) -> None:
    """E[target | x_t] = F exactly: feed E[x|x_t], E[z|x_t] and dF/dt along the PF-ODE."""
    exact = GaussianExact(path)
    t, r = time_pairs(path)
    x_t = exact.std(t)[:, None] * torch.randn(64, 4)
    x_hat, z_hat = exact.posterior(x_t, t)
    u = (exact.d_std(t) / exact.std(t))[:, None] * x_t  # PF-ODE velocity
    dF_ode = exact.dg_dt(t, r)[:, None] * x_t + exact.g(t, r)[:, None] * u
    target = path.transition_target(x_hat, z_hat, t, r, dF_ode)
    torch.testing.assert_close(target, exact.F(x_t, t, r), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_transition_identity_on_gaussian_data_conditional_form(path: Path) -> None:
    """With the conditional derivative (fixed x, z), target - F is affine in (x, z) with zero mean given x_t.

    target - F = k_x x + k_z z; zero conditional mean given x_t = alpha x + sigma z means
    Cov(k_x x + k_z z, x_t) = k_x alpha s^2 + k_z sigma = 0.
    """
    exact = GaussianExact(path)
    t, r = time_pairs(path, n=32)

    def residual(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        x_t = path.interpolate(x, z, t).x_t
        dF = exact.dF_dt_conditional(x, z, t, r)
        return path.transition_target(x, z, t, r, dF) - exact.F(x_t, t, r)

    ones, zeros = torch.ones(32, 1), torch.zeros(32, 1)
    k_x, k_z = residual(ones, zeros)[:, 0], residual(zeros, ones)[:, 0]
    covariance = k_x * path.alpha(t) * exact.s**2 + k_z * path.sigma(t)
    scale = k_x.abs() + k_z.abs() + 1.0
    assert (covariance.abs() / scale).max() < 1e-8


@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_exact_F_composes_and_gives_velocity_at_r_equal_t(path: Path) -> None:
    exact = GaussianExact(path)
    t, r = time_pairs(path, n=32)
    s = 0.5 * (t + r)
    x_t = exact.std(t)[:, None] * torch.randn(32, 3)
    x_s = path.transition(x_t, exact.F(x_t, t, s), t, s)
    via_s = path.transition(x_s, exact.F(x_s, s, r), s, r)
    direct = path.transition(x_t, exact.F(x_t, t, r), t, r)
    torch.testing.assert_close(via_s, direct, rtol=1e-10, atol=1e-10)
    # r -> t: F(x_t, t, r) tends to the diffusion-mode output whose velocity is the PF-ODE velocity.
    near = exact.F(x_t, t, t - 1e-6 * (t - path.t_min))
    torch.testing.assert_close(near, exact.F(x_t, t, t), rtol=1e-4, atol=1e-5)
    u = (exact.d_std(t) / exact.std(t))[:, None] * x_t
    torch.testing.assert_close(path.velocity(x_t, exact.F(x_t, t, t), t), u, rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- time distribution, build
@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_sample_time_in_domain_and_deterministic(path: Path) -> None:
    before = torch.get_rng_state()
    a = path.sample_time(4096, generator=torch.Generator().manual_seed(3))
    b = path.sample_time(4096, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert torch.equal(before, torch.get_rng_state())
    assert a.shape == (4096,) and (a >= path.t_min).all() and (a <= path.t_max).all()


def test_linear_time_distribution_is_logit_normal() -> None:
    t = (
        LinearPath(P_mean=-0.4, P_std=1.0)
        .sample_time(200_000, generator=torch.Generator().manual_seed(0))
        .double()
    )
    logit = torch.log(t / (1 - t))
    assert abs(logit.mean().item() + 0.4) < 0.01 and abs(logit.std().item() - 1.0) < 0.01


def test_build_path() -> None:
    assert isinstance(build_path("linear"), LinearPath)
    assert build_path("edm", sigma_d=1.0).sigma_d == 1.0
    with pytest.raises(TimError):
        build_path("cosine")
    with pytest.raises(TimError):
        build_path("linear", sigma_d=2.0)
    for name, bad in [
        ("edm", {"sigma_d": 0.0}),
        ("vp", {"t_min": 0.0}),
        ("vp", {"beta_min": 0.0, "beta_d": 0.0}),
    ]:
        with pytest.raises(TimError):  # each would give NaN or a noiseless schedule, not an error
            build_path(name, **bad)
