"""A short CPU run learns: a held-out loss falls and 1-step samples land on the checkerboard (slow).

The TiM training loss itself is a poor progress signal (the adaptive weight normalises every
sample's loss to about w(t, r), and the regression target moves as dF/dt is learned), so the test
measures a fixed held-out quantity instead: the diffusion-mode error E||F(x_t, t, t) - v_t||^2 on
fixed (x, z, t), whose target does not depend on the network, against its Bayes-optimal value
(computed independently by Monte Carlo).

Marked slow (2-4 min on a shared 2-core machine): ``pytest -m slow tests/training/test_convergence.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tim.data.toy import sample_checkerboard
from tim.models import build_model
from tim.paths import LinearPath
from tim.samplers import sample
from tim.training import load_config, load_run, train
from tim.training.config import model_config

pytestmark = pytest.mark.slow


def _dark_cell_share(points: torch.Tensor) -> float:
    """Share of points on the 8 dark cells of the [-2, 2]^2 checkerboard (N(0, I) noise: ~0.45)."""
    inside = (points.abs() < 2).all(dim=1)
    cell = torch.floor(points + 2).long()
    dark = (cell[:, 0] + cell[:, 1]) % 2 == 0
    return (inside & dark).float().mean().item()


def _held_out() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fixed (x_t, t, v_t) on the linear path (v_t = z - x), t in [0.01, 0.99]."""
    generator = torch.Generator().manual_seed(123)
    x = sample_checkerboard(2048, generator)
    z = torch.randn(x.shape, generator=generator)
    t = torch.rand(x.shape[0], generator=generator) * 0.98 + 0.01
    x_t, v_t = LinearPath().interpolate(x, z, t)
    return x_t, t, v_t


def _diffusion_error(model: torch.nn.Module) -> float:
    """Held-out E||F(x_t, t, t) - v_t||^2."""
    x_t, t, v_t = _held_out()
    with torch.no_grad():
        return (model(x_t, t, t) - v_t).square().sum(1).mean().item()


def _bayes_error() -> float:
    """The smallest possible held-out error, E||E[v_t | x_t] - v_t||^2, by Monte Carlo.

    Given x_t, each data point X implies the noise z = (x_t - (1 - t) X) / t with weight
    N(z; 0, I); E[v_t | x_t] is the weighted mean of z - X over 20,000 fresh data points.
    """
    x_t, t, v_t = _held_out()
    data = sample_checkerboard(20000, torch.Generator().manual_seed(9)).double()
    total = 0.0
    for rows in torch.split(torch.arange(len(t)), 256):
        tt = t[rows, None, None].double()
        z = (x_t[rows, None].double() - (1 - tt) * data[None]) / tt
        weights = torch.softmax(-0.5 * z.square().sum(-1), dim=1)  # the 1/t^2 Jacobian is common to a row
        posterior_mean = (weights[..., None] * (z - data[None])).sum(1)
        total += (posterior_mean - v_t[rows].double()).square().sum().item()
    return total / len(t)


def test_toy_run_learns(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = load_config(
        "toy2d",
        [
            "train.steps=1000",
            "model.hidden_size=128",
            "optim.lr=2e-3",
            "train.progress=false",
            "train.checkpoint_every=1000",
            "sample.num=0",
            "train.device=cpu",
        ],
    )
    run = train(cfg, tmp_path / "run")
    model, _ = load_run(run)
    untrained = build_model(model_config(cfg))  # zero output at initialisation: error = E||v_t||^2
    start, end, best = _diffusion_error(untrained), _diffusion_error(model), _bayes_error()
    assert best < end < start - 0.3 * (start - best), (start, end, best)  # closed >= 30% of the reducible gap
    noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
    assert _dark_cell_share(noise) < 0.5
    with torch.no_grad():
        for steps in (1, 4):
            share = _dark_cell_share(sample(model, noise, steps=steps).x)
            assert share > 0.6, (steps, share)
