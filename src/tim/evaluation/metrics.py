"""Distances between a generated sample set and a reference set.

Every function takes plain arrays (numpy or torch, converted to float64 numpy) and returns Python
floats, so they can be checked against independent computations (``scipy.linalg.sqrtm``, closed
forms for Gaussians) on tiny inputs. Only numpy is needed; scipy is never imported here.

| Distance | Function | Reference |
|---|---|---|
| Fréchet distance between Gaussians | :func:`frechet_distance` | Heusel et al. 2017 (FID), Dowson & Landau 1982 |
| Kernel (KID) distance, unbiased MMD² | :func:`kernel_distance` | Bińkowski et al. 2018, Eq. (2) with the cubic polynomial kernel |
| Energy distance | :func:`energy_distance` | Székely & Rizzo 2013, Eq. (1) |
| Sliced Wasserstein-2 | :func:`sliced_wasserstein` | Bonneel et al. 2015 |
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tim.errors import TimError


def _as_float64(values: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Convert to a finite float64 numpy array; NaN/Inf is a user error, never hidden."""
    if isinstance(values, torch.Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(array)):
        raise TimError(f"{name} contains NaN or Inf", "check the model or sampler that produced it")
    return array


def _as_features(values: np.ndarray | torch.Tensor, name: str, min_rows: int = 2) -> np.ndarray:
    array = _as_float64(values, name)
    if array.ndim != 2 or array.shape[0] < min_rows:
        raise TimError(
            f"{name} has shape {tuple(array.shape)}, expected (N, D) with N >= {min_rows}",
            "pass one feature vector per row",
        )
    return array


@dataclass(frozen=True)
class GaussianStats:
    """Mean and covariance of a feature set (the FID "statistics").

    Attributes:
        mu: shape (D,).
        sigma: shape (D, D), unbiased sample covariance.
        count: number of feature vectors they were computed from.
    """

    mu: np.ndarray
    sigma: np.ndarray
    count: int


def gaussian_stats(features: np.ndarray | torch.Tensor) -> GaussianStats:
    """Mean and unbiased covariance of ``features`` of shape (N, D), N >= 2."""
    array = _as_features(features, "features")
    return GaussianStats(
        array.mean(axis=0), np.cov(array, rowvar=False).reshape(array.shape[1], -1), len(array)
    )


def _symmetric_sqrt(matrix: np.ndarray) -> np.ndarray:
    """Principal square root of a symmetric positive semi-definite matrix via eigh."""
    eigenvalues, eigenvectors = np.linalg.eigh((matrix + matrix.T) / 2)
    # Round-off can make tiny eigenvalues of a PSD matrix slightly negative.
    return (eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))) @ eigenvectors.T


def frechet_distance_from_stats(
    mu_1: np.ndarray, sigma_1: np.ndarray, mu_2: np.ndarray, sigma_2: np.ndarray
) -> float:
    """Fréchet (2-Wasserstein²) distance between N(mu_1, sigma_1) and N(mu_2, sigma_2).

    d² = |mu_1 − mu_2|² + tr(sigma_1) + tr(sigma_2) − 2 tr((sigma_1 sigma_2)^{1/2})  (Dowson &
    Landau 1982; the FID formula of Heusel et al. 2017). The trace term is computed as the sum of
    square roots of the eigenvalues of sigma_1^{1/2} sigma_2 sigma_1^{1/2}, which is symmetric PSD
    and has the same spectrum as sigma_1 sigma_2, so no non-symmetric ``sqrtm`` is needed.

    Args:
        mu_1: mean of the first Gaussian, shape (D,).
        sigma_1: its covariance, shape (D, D).
        mu_2: mean of the second Gaussian, shape (D,).
        sigma_2: its covariance, shape (D, D).

    Returns:
        The squared distance (>= 0 up to round-off).
    """
    mu_1, mu_2 = _as_float64(mu_1, "mu_1"), _as_float64(mu_2, "mu_2")
    sigma_1, sigma_2 = _as_float64(sigma_1, "sigma_1"), _as_float64(sigma_2, "sigma_2")
    if mu_1.shape != mu_2.shape or sigma_1.shape != sigma_2.shape or sigma_1.shape != mu_1.shape * 2:
        raise TimError(
            "Fréchet distance statistics have mismatched shapes",
            "compute both from the same feature extractor",
        )
    root_1 = _symmetric_sqrt(sigma_1)
    eigenvalues = np.linalg.eigvalsh(root_1 @ sigma_2 @ root_1)
    trace_sqrt = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    return float(np.sum((mu_1 - mu_2) ** 2) + np.trace(sigma_1) + np.trace(sigma_2) - 2.0 * trace_sqrt)


def frechet_distance(features_1: np.ndarray | torch.Tensor, features_2: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets of shape (N1, D), (N2, D).

    Biased upwards for small N (the estimate of the covariance is noisy), so always quote the
    sample count next to it.
    """
    stats_1, stats_2 = gaussian_stats(features_1), gaussian_stats(features_2)
    return frechet_distance_from_stats(stats_1.mu, stats_1.sigma, stats_2.mu, stats_2.sigma)


def polynomial_kernel(a: np.ndarray, b: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """k(a, b) = (a·b / D + coef0)^degree, the KID kernel (Bińkowski et al. 2018, §4). Shapes (N, D), (M, D) -> (N, M)."""
    return (a @ b.T / a.shape[1] + coef0) ** degree


def mmd2_unbiased(features_1: np.ndarray, features_2: np.ndarray) -> float:
    """Unbiased MMD² with the cubic polynomial kernel (Bińkowski et al. 2018, Eq. (2)).

    MMD²_u = Σ_{i≠j} k(x_i, x_j)/(m(m−1)) + Σ_{i≠j} k(y_i, y_j)/(n(n−1)) − 2 Σ_{i,j} k(x_i, y_j)/(m n).
    Unbiased, so it can be slightly negative when the two sets come from the same distribution.
    """
    m, n = len(features_1), len(features_2)
    k_xx = polynomial_kernel(features_1, features_1)
    k_yy = polynomial_kernel(features_2, features_2)
    k_xy = polynomial_kernel(features_1, features_2)
    term_xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    term_yy = (k_yy.sum() - np.trace(k_yy)) / (n * (n - 1))
    return float(term_xx + term_yy - 2.0 * k_xy.mean())


def kernel_distance(
    features_1: np.ndarray | torch.Tensor,
    features_2: np.ndarray | torch.Tensor,
    *,
    subset_size: int | None = None,
    num_subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: unbiased polynomial-kernel MMD², on all rows or averaged over random subsets.

    With ``subset_size=None`` (or when both sets have at most ``subset_size`` rows) the estimate
    uses all rows once: still unbiased, lower variance than subsets, and the spread is reported
    as 0. Otherwise it averages ``num_subsets`` subsets of ``subset_size`` rows drawn without
    replacement from each set (the KID protocol of Bińkowski et al. 2018, subsets of 1000).

    Args:
        features_1: the first set, shape (N1, D), N1 >= 2.
        features_2: the second set, shape (N2, D), N2 >= 2.
        subset_size: rows per subset, or None for all rows.
        num_subsets: number of subsets.
        seed: seed of the subset draw (numpy Generator; global RNG untouched).

    Returns:
        (mean, standard deviation over subsets).
    """
    a, b = _as_features(features_1, "features_1"), _as_features(features_2, "features_2")
    if a.shape[1] != b.shape[1]:
        raise TimError(
            "KID feature sets have different dimensions", "use the same feature extractor for both"
        )
    if subset_size is None or (len(a) <= subset_size and len(b) <= subset_size):
        return mmd2_unbiased(a, b), 0.0
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))


def _mean_pairwise_distance(a: np.ndarray, b: np.ndarray, exclude_diagonal: bool) -> float:
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    distances = np.sqrt(np.clip(squared, 0.0, None))
    if exclude_diagonal:
        return float((distances.sum() - np.trace(distances)) / (len(a) * (len(a) - 1)))
    return float(distances.mean())


def energy_distance(samples: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """Unbiased (U-statistic) energy distance D² = 2 E|X−Y| − E|X−X'| − E|Y−Y'|.

    Székely & Rizzo 2013, Eq. (1). Zero iff the distributions are equal; the unbiased estimate
    can be slightly negative for two samples of the same distribution. Shapes (N, D), (M, D).
    """
    x, y = _as_features(samples, "samples"), _as_features(reference, "reference")
    return (
        2.0 * _mean_pairwise_distance(x, y, exclude_diagonal=False)
        - _mean_pairwise_distance(x, x, exclude_diagonal=True)
        - _mean_pairwise_distance(y, y, exclude_diagonal=True)
    )


def sliced_wasserstein(
    samples: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    *,
    num_projections: int = 256,
    seed: int = 0,
) -> float:
    """Sliced 2-Wasserstein distance, sqrt(E_θ W_2²(θ·X, θ·Y)) over uniform random directions θ.

    Each 1-D W_2² is computed exactly from quantile functions (sorted projections, linearly
    interpolated onto a common grid when N ≠ M). Bonneel et al. 2015. Shapes (N, D), (M, D).
    """
    x, y = _as_features(samples, "samples"), _as_features(reference, "reference")
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((x.shape[1], num_projections))
    theta /= np.linalg.norm(theta, axis=0, keepdims=True)
    x_proj, y_proj = np.sort(x @ theta, axis=0), np.sort(y @ theta, axis=0)
    if len(x_proj) != len(y_proj):
        levels = (np.arange(max(len(x), len(y))) + 0.5) / max(len(x), len(y))
        x_proj, y_proj = _quantiles(x_proj, levels), _quantiles(y_proj, levels)
    return float(np.sqrt(np.mean((x_proj - y_proj) ** 2)))


def _quantiles(sorted_values: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Empirical quantile functions of each column of ``sorted_values`` at ``levels``."""
    grid = (np.arange(len(sorted_values)) + 0.5) / len(sorted_values)
    return np.stack([np.interp(levels, grid, column) for column in sorted_values.T], axis=1)
