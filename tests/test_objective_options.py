"""Published objective options: guided target with w_gt (enhance_target) and time weighting on t alone."""

from __future__ import annotations

import math

import pytest
import torch

from tim.errors import TimError
from tim.objective import TransitionLoss, time_weight
from tim.paths import EDMPath, LinearPath, TrigFlowPath


def zero_net(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x_t, requires_grad=True)  # dF/dt = 0 and F_pred = 0: per_sample = mean(target^2)


class Teacher:
    """F_cond = 1 + x_t, F_uncond = -x_t / 2 (distinct, input-dependent); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        cond = (y == 1).to(x_t.dtype)[:, None, None]
        return cond * (1.0 + x_t) + (1 - cond) * (-0.5 * x_t)


def published_target(path, x, z, t, w_gt, w_cond, window):  # noqa: ANN001, ANN201
    """Published code (github.com/WZDTHU/TiM): base <- w_gt' base + w_cond' F_cond + (1 - w_gt' - w_cond') F_uncond at r = t."""
    x_t = path.interpolate(x, z, t).x_t
    F_cond, F_uncond = 1.0 + x_t, -0.5 * x_t
    inside = ((t >= window[0]) & (t <= window[1]))[:, None, None].to(x.dtype)
    w_gt_, w_cond_ = inside * w_gt + (1 - inside), inside * w_cond
    return w_gt_ * path.diffusion_target(x, z, t) + w_cond_ * F_cond + (1 - w_gt_ - w_cond_) * F_uncond


@pytest.mark.parametrize("path", [LinearPath(), TrigFlowPath(), EDMPath()], ids=lambda p: p.name)
@pytest.mark.parametrize(("w_gt", "w_cond"), [(1.0, 0.75), (0.8, 0.5), (0.9, 0.0)])
def test_guided_target_matches_the_published_enhance_target(path, w_gt: float, w_cond: float) -> None:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    x, z = torch.randn(2, 6, 3, 5, generator=g, dtype=torch.float64).unbind(0)
    fractions = torch.tensor([0.05, 0.3, 0.5, 0.8, 0.9, 0.99], dtype=torch.float64)
    t = path.t_min + fractions * (path.t_max - path.t_min)
    window = (float(t[1]), float(t[3]))  # inclusive ends, as published
    loss = TransitionLoss(
        path=path,
        guidance_scale=1.0 + w_cond,
        guidance_w_gt=w_gt,
        guidance_window=window,
        direction_loss=False,
        adaptive=False,
        time_function="constant",
    )
    teacher = Teacher()
    cond, null = {"y": torch.ones(6, dtype=torch.long)}, {"y": torch.zeros(6, dtype=torch.long)}
    out = loss(zero_net, x, z=z, t=t, r=t, teacher=teacher, teacher_cond=cond, teacher_uncond=null)
    expected = published_target(path, x, z, t, w_gt, w_cond, window).square().flatten(1).mean(1)
    torch.testing.assert_close(out.per_sample, expected)
    assert teacher.calls == (2 if w_cond > 0 else 1)  # the published code skips F_cond when w_cond = 0


def test_w_gt_alone_switches_the_teacher_on() -> None:
    assert not TransitionLoss().uses_teacher
    assert TransitionLoss(guidance_w_gt=0.9).uses_teacher and TransitionLoss(guidance_scale=1.75).uses_teacher
    with pytest.raises(TimError, match="guidance_w_gt"):
        TransitionLoss(guidance_w_gt=0.9)(zero_net, torch.randn(2, 3, 4))


def test_the_objective_wires_its_own_teacher() -> None:
    # The training loop hands over the EMA, the condition and null_cond for every batch; only a
    # guided target takes them (and only then is the null condition computed).
    calls: list[dict] = []

    def null_cond(cond: dict) -> dict:
        calls.append(cond)
        return {"y": torch.zeros_like(cond["y"])}

    cond = {"y": torch.ones(3, dtype=torch.long)}
    assert TransitionLoss().teacher_inputs(zero_net, cond, null_cond) == {} and not calls
    wired = TransitionLoss(guidance_scale=1.75).teacher_inputs(zero_net, cond, null_cond)
    assert wired["teacher"] is zero_net and wired["teacher_cond"] is cond and calls == [cond]
    assert torch.equal(wired["teacher_uncond"]["y"], torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("function", ["sqrt", "reciprocal", "square", "soft_min_snr"])
def test_time_weight_on_t_alone(function: str) -> None:
    t = torch.tensor([0.9, 0.6, 0.4, 0.3], dtype=torch.float64)
    r = torch.tensor([0.1, 0.6, 0.0, 0.2], dtype=torch.float64)
    tau = torch.tan(t)  # published weight_time_tangent, weight_t_and_r=False: Delta = tan t
    formula = {
        "sqrt": lambda d: (1 + d) ** -0.5,
        "reciprocal": lambda d: 1 / (1 + d),
        "square": lambda d: (1 + d) ** -2,
        "soft_min_snr": lambda d: 1 / (1 + d**2),
    }[function]
    expected = torch.where(r == t, torch.ones_like(t), formula(tau))
    torch.testing.assert_close(time_weight(t, r, function=function, interval=False), expected)
    interval = time_weight(t, r, function=function)
    assert not torch.allclose(interval, expected)  # the default uses tan t - tan r
    assert math.isclose(float(interval[2]), float(expected[2]))  # equal where r = 0


def test_loss_uses_weight_interval() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, 4, 4, generator=g)
    t = torch.linspace(0.2, 0.9, 8)
    r = t * 0.5
    for interval in (True, False):
        loss = TransitionLoss(weight_interval=interval, adaptive=False)
        out = loss(zero_net, x, t=t, r=r, generator=torch.Generator().manual_seed(1))
        weights = time_weight(t.double(), r.double(), interval=interval).float()
        torch.testing.assert_close(out.stats["weight_time"], weights.mean())
