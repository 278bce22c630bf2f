"""Distances checked against independent computations (scipy, brute-force loops, closed forms)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.linalg
import scipy.stats
import torch

from tim.errors import TimError
from tim.evaluation.metrics import (
    energy_distance,
    frechet_distance,
    frechet_distance_from_stats,
    gaussian_stats,
    kernel_distance,
    mmd2_unbiased,
    sliced_wasserstein,
)


def _random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    factor = rng.standard_normal((dim, dim))
    return factor @ factor.T / dim + 0.1 * np.eye(dim)


@pytest.mark.parametrize("dim", [1, 5, 32])
def test_frechet_matches_scipy_sqrtm(dim: int) -> None:
    rng = np.random.default_rng(dim)
    mu_1, mu_2 = rng.standard_normal(dim), rng.standard_normal(dim)
    sigma_1, sigma_2 = _random_spd(rng, dim), _random_spd(rng, dim)
    covmean = scipy.linalg.sqrtm(sigma_1 @ sigma_2).real
    expected = np.sum((mu_1 - mu_2) ** 2) + np.trace(sigma_1 + sigma_2 - 2 * covmean)
    assert frechet_distance_from_stats(mu_1, sigma_1, mu_2, sigma_2) == pytest.approx(
        expected, rel=1e-9, abs=1e-9
    )


def test_frechet_of_features_matches_scipy_on_random_data() -> None:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((400, 16))
    b = 0.5 * rng.standard_normal((300, 16)) @ rng.standard_normal((16, 16)) + 1.0
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    expected = np.sum((mu_a - mu_b) ** 2) + np.trace(
        cov_a + cov_b - 2 * scipy.linalg.sqrtm(cov_a @ cov_b).real
    )
    assert frechet_distance(torch.from_numpy(a), b) == pytest.approx(expected, rel=1e-8)


def test_frechet_diagonal_closed_form_and_zero_for_identical() -> None:
    # For diagonal covariances: sum (mu1-mu2)^2 + sum (s1 - s2)^2 with s the standard deviations.
    mu_1, mu_2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    s_1, s_2 = np.array([1.0, 2.0, 0.5]), np.array([3.0, 1.0, 0.5])
    expected = np.sum((mu_1 - mu_2) ** 2) + np.sum((s_1 - s_2) ** 2)
    assert frechet_distance_from_stats(mu_1, np.diag(s_1**2), mu_2, np.diag(s_2**2)) == pytest.approx(
        expected
    )
    stats = gaussian_stats(np.random.default_rng(1).standard_normal((50, 4)))
    assert abs(frechet_distance_from_stats(stats.mu, stats.sigma, stats.mu, stats.sigma)) < 1e-10


def _brute_force_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(np.dot(a, b)) / len(a) + 1.0) ** 3

    m, n = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_mmd2_matches_brute_force_loops() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((9, 3)), rng.standard_normal((7, 3)) + 0.5
    assert mmd2_unbiased(x, y) == pytest.approx(_brute_force_mmd2(x, y), rel=1e-12)


def test_kid_is_unbiased_for_equal_distributions_and_positive_for_shift() -> None:
    rng = np.random.default_rng(3)
    same = [
        kernel_distance(rng.standard_normal((40, 4)), rng.standard_normal((60, 4)))[0] for _ in range(300)
    ]
    standard_error = np.std(same) / np.sqrt(len(same))
    assert abs(np.mean(same)) < 4 * standard_error
    shifted = kernel_distance(rng.standard_normal((200, 4)), rng.standard_normal((200, 4)) + 1.0)[0]
    assert shifted > 20 * np.std(same)


def test_kid_subsets_agree_with_all_rows() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((600, 4)), rng.standard_normal((500, 4)) + 0.7
    full, spread_full = kernel_distance(a, b)
    subsets, spread = kernel_distance(a, b, subset_size=200, num_subsets=50, seed=0)
    assert spread_full == 0.0 and spread > 0.0
    assert subsets == pytest.approx(full, abs=3 * spread / np.sqrt(50) + 1e-3)


def test_energy_distance_matches_brute_force_and_scipy() -> None:
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((12, 2)), rng.standard_normal((10, 2)) + 1.0

    def dist(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.linalg.norm(a - b))

    xy = np.mean([dist(a, b) for a in x for b in y])
    xx = np.mean([dist(x[i], x[j]) for i, j in itertools.permutations(range(len(x)), 2)])
    yy = np.mean([dist(y[i], y[j]) for i, j in itertools.permutations(range(len(y)), 2)])
    assert energy_distance(x, y) == pytest.approx(2 * xy - xx - yy, rel=1e-12)
    # 1-D: scipy's energy_distance is the square root of the V-statistic (diagonal included).
    u, v = rng.standard_normal(30), rng.standard_normal(25) + 0.3
    u_xx = np.mean([abs(u[i] - u[j]) for i, j in itertools.permutations(range(30), 2)])
    u_yy = np.mean([abs(v[i] - v[j]) for i, j in itertools.permutations(range(25), 2)])
    v_statistic = scipy.stats.energy_distance(u, v) ** 2
    expected = v_statistic - u_xx / 30 - u_yy / 25  # V-statistic pairs include n zero diagonal terms
    assert energy_distance(u[:, None], v[:, None]) == pytest.approx(expected, rel=1e-10)


def test_sliced_wasserstein_closed_forms() -> None:
    rng = np.random.default_rng(6)
    x = rng.standard_normal((500, 2))
    shift = np.array([3.0, -4.0])
    # A pure shift c: W_2^2 along direction theta is (theta.c)^2, whose mean over the circle is |c|^2 / 2.
    expected = np.sqrt(np.sum(shift**2) / 2)
    assert sliced_wasserstein(x, x + shift, num_projections=4096) == pytest.approx(expected, rel=0.03)
    # 1-D: every direction is +-1, so it is the exact W_2 between the empirical distributions.
    a, b = rng.standard_normal(200), 2.0 * rng.standard_normal(200)
    exact = np.sqrt(np.mean((np.sort(a) - np.sort(b)) ** 2))
    assert sliced_wasserstein(a[:, None], b[:, None], num_projections=8) == pytest.approx(exact, rel=1e-12)
    assert sliced_wasserstein(x, x) == 0.0


def test_non_finite_inputs_are_errors_not_hidden() -> None:
    x = np.ones((5, 2))
    x[2, 1] = np.nan
    with pytest.raises(TimError, match="NaN"):
        frechet_distance(x, np.ones((5, 2)))
    with pytest.raises(TimError, match="shape"):
        energy_distance(np.ones(5), np.ones((5, 1)))
