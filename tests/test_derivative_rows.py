"""Derivative rows from the time sampler (no nonzero host sync) give the same loss as the nonzero path."""

from __future__ import annotations

import torch

from tim.objective import FlowMatchingLoss, MeanFlowLoss, TransitionLoss


def _network(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # Smooth, depends on x_t, t and r, so that dF/dt is not trivial.
    return torch.sin(x_t) * (1 + t[:, None]) + r[:, None] * x_t**2


def test_sampled_times_use_the_slice_and_match_explicit_times() -> None:
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    loss = TransitionLoss(direction_loss=False, adaptive=False)
    assert loss.derivative_rows(10) == slice(5, 10)
    sampled = loss(_network, x, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(1)  # replay the same draws: (t, r) first, then z
    t, r = loss.sample_times(x, g)
    z = torch.randn(x.shape, generator=g)
    explicit = loss(_network, x, z=z, t=t, r=r)  # explicit times: rows found with nonzero
    torch.testing.assert_close(sampled.per_sample, explicit.per_sample)
    assert bool((r[5:] < t[5:]).all()) and bool((r[:5] == t[:5]).all())


def test_ties_in_the_slice_get_exactly_zero_derivative() -> None:
    loss = TransitionLoss()
    x = torch.randn(4, 3)
    t = torch.tensor([0.5, 0.5, 0.7, 0.3])
    r = torch.tensor([0.5, 0.5, 0.7, 0.1])  # rows 2 (a tie inside the slice) and 3
    dF_dt = loss.time_derivative(_network, x, torch.randn(4, 3), t, r, {}, candidates=slice(2, 4))
    assert bool((dF_dt[:3] == 0).all()) and bool((dF_dt[3] != 0).all())


def test_other_samplers() -> None:
    assert FlowMatchingLoss().derivative_rows(8) == slice(8, 8)  # every row r = t
    assert MeanFlowLoss().derivative_rows(8) is None  # random r = t rows: nonzero path
