"""Time sampling: (t, r) pair layout, shift, grids, resolution shift."""

from __future__ import annotations

import math

import pytest
import torch

from tim.errors import TimError
from tim.paths import EDMPath, LinearPath, TrigFlowPath
from tim.timesteps import resolution_shift, sample_time_pairs, shift_path_time, shift_time, time_grid


def test_pairs_layout_published() -> None:
    """First round(0.5 n) rows r = t, last round(0.1 n) rows r = t_min, the rest r < t."""
    path = LinearPath()
    t, r = sample_time_pairs(path, 256, generator=torch.Generator().manual_seed(0))
    assert t.shape == r.shape == (256,)
    assert torch.equal(r[:128], t[:128])
    assert (r[-26:] == 0.0).all()  # round(25.6) = 26
    assert (r[128:-26] < t[128:-26]).all()


def test_pairs_are_max_and_min_of_two_draws() -> None:
    path = LinearPath()
    g = torch.Generator().manual_seed(5)
    t1 = path.sample_time(10, generator=g)
    t2 = path.sample_time(10, generator=g)
    t, r = sample_time_pairs(
        path, 10, diffusion_share=0.0, consistency_share=0.0, generator=torch.Generator().manual_seed(5)
    )
    torch.testing.assert_close(t, torch.maximum(t1, t2))
    torch.testing.assert_close(r, torch.minimum(t1, t2))


def test_pairs_bankers_rounding_and_bad_shares() -> None:
    t, r = sample_time_pairs(LinearPath(), 5, generator=torch.Generator().manual_seed(0))
    assert int((r == t).sum()) == 2  # round(2.5) = 2 (banker's rounding, as published)
    assert int((r == 0).sum()) == 0  # round(0.5) = 0
    with pytest.raises(TimError):
        sample_time_pairs(LinearPath(), 8, diffusion_share=0.8, consistency_share=0.3)
    with pytest.raises(TimError):
        sample_time_pairs(LinearPath(), 8, diffusion_share=1.5)
    with pytest.raises(TimError):
        sample_time_pairs(LinearPath(), -1)


def test_pairs_use_path_t_min_and_never_touch_global_rng() -> None:
    path = EDMPath()
    before = torch.get_rng_state()
    t, r = sample_time_pairs(path, 20, generator=torch.Generator().manual_seed(1))
    t_none, _ = sample_time_pairs(path, 20)  # fresh generator, still not the global one
    assert torch.equal(before, torch.get_rng_state())
    assert (r[-2:] == path.t_min).all() and (r <= t).all() and t_none.shape == (20,)


def test_shift_time_closed_form() -> None:
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    s = 3.0
    shifted = shift_time(t, s)
    torch.testing.assert_close(shifted, s * t / (1 + (s - 1) * t))
    assert shifted[0] == 0 and shifted[-1] == 1 and (shifted[1:-1] > t[1:-1]).all()
    torch.testing.assert_close(shift_time(t, 1.0), t)
    with pytest.raises(TimError):
        shift_time(t, 0.0)


def test_shift_path_time_uses_normalised_time() -> None:
    path = TrigFlowPath()
    t = torch.tensor([0.0, 0.5, path.t_max], dtype=torch.float64)
    expected = path.t_max * shift_time(t / path.t_max, 2.0)
    torch.testing.assert_close(shift_path_time(t, path, 2.0), expected)


def test_shifted_pairs_keep_order() -> None:
    t0, r0 = sample_time_pairs(LinearPath(), 64, generator=torch.Generator().manual_seed(2))
    t, r = sample_time_pairs(LinearPath(), 64, shift=2.0, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(t, shift_time(t0, 2.0))
    assert (r <= t).all() and (r[-6:] == 0).all()


def test_resolution_shift() -> None:
    assert resolution_shift(1024, 1024, 1024, 1024) == 1.0
    assert math.isclose(resolution_shift(2048, 2048, 1024, 1024), 2.0)
    assert math.isclose(resolution_shift(512, 2048, 1024, 1024), 1.0)
    with pytest.raises(TimError):
        resolution_shift(0, 10, 10, 10)


def test_time_grid() -> None:
    path = LinearPath()
    grid = time_grid(4, path=path)
    assert grid.dtype == torch.float64
    torch.testing.assert_close(grid, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0], dtype=torch.float64))
    shifted = time_grid(4, path=path, shift=3.0)
    torch.testing.assert_close(shifted, shift_time(grid, 3.0))
    edm = time_grid(2, path=EDMPath())
    assert edm[0] == 80.0 and edm[-1] == 0.01
    with pytest.raises(TimError):
        time_grid(0, path=path)
