"""Objective: DDE/JVP against the analytic derivative on Gaussian data, weights against closed
forms, purity (no mutation, no global RNG, NaN visible), baselines, hooks. Float64 on CPU."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from helpers.gaussian import PATH_IDS, GaussianExact, all_paths, time_pairs
from tim.errors import TimError
from tim.objective import (
    FlowMatchingLoss,
    MeanFlowLoss,
    TransitionLoss,
    adaptive_weight,
    build_objective,
    dde_derivative,
    jvp_derivative,
    per_sample_cosine,
    time_weight,
)
from tim.paths import EDMPath, LinearPath, Path, TrigFlowPath, VEPath, VPPath
from tim.timesteps import resolution_shift, sample_time_pairs

pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py: every tensor here is float64


class TinyNet(torch.nn.Module):
    """A smooth MLP F(x_t, t, r, y=None) on vectors (B, D), for interface tests."""

    def __init__(self, dim: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)  # test-local weights; the objective itself never touches the global RNG
        self.net = torch.nn.Sequential(
            torch.nn.Linear(dim + 2, 32), torch.nn.Tanh(), torch.nn.Linear(32, dim)
        )
        self.input_dtypes: list[torch.dtype] = []

    def forward(
        self, x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        self.input_dtypes.append(x_t.dtype)
        h = torch.cat([x_t, t[:, None].to(x_t.dtype), r[:, None].to(x_t.dtype)], 1)
        out = self.net(h)
        return out if y is None else out + y[:, None].to(out.dtype)


# ----------------------------------------------------------------------------- derivatives (Gaussian)
@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_dde_and_jvp_match_analytic_conditional_derivative(path: Path) -> None:
    exact = GaussianExact(path)
    t, r = time_pairs(path, n=32)
    # Keep t +- eps inside the domain and t - eps > r so the stencil is the plain central one.
    eps = 1e-3 * (path.t_max - path.t_min)
    r = torch.minimum(r, t - 2 * eps)
    x, z = exact.s * torch.randn(32, 3), torch.randn(32, 3)
    analytic = exact.dF_dt_conditional(x, z, t, r)
    jvp = jvp_derivative(exact.network, path, x, z, t, r)
    torch.testing.assert_close(jvp, analytic, rtol=1e-9, atol=1e-9)
    dde = dde_derivative(exact.network, path, x, z, t, r, epsilon=eps)
    scale = analytic.abs().max()
    assert ((dde - analytic).abs().max() / scale) < 1e-4  # O(eps^2) truncation


def test_dde_error_is_second_order() -> None:
    path = LinearPath()
    exact = GaussianExact(path)
    t, r = torch.tensor([0.6, 0.8]), torch.tensor([0.2, 0.1])
    x, z = torch.randn(2, 2, 4).unbind(0)
    analytic = exact.dF_dt_conditional(x, z, t, r)
    errors = [
        (dde_derivative(exact.network, path, x, z, t, r, epsilon=e) - analytic).abs().max().item()
        for e in (0.02, 0.01)
    ]
    assert 3.0 < errors[0] / errors[1] < 5.0  # halving eps quarters the error


def test_dde_stencil_stays_in_domain_and_above_r() -> None:
    """Near t_max and with t - r < eps the stencil is clamped; dividing by its real width keeps a
    function linear in t exact."""
    path = LinearPath()
    seen: list[torch.Tensor] = []

    def F(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        seen.append(t.clone())
        return x_t * 0 + (3.0 * t)[:, None]  # x_t-independent, dF/dt = 3

    t, r = torch.tensor([0.999, 0.5003, 0.7]), torch.tensor([0.2, 0.5, 0.0])
    x, z = torch.randn(2, 3, 2).unbind(0)
    dF = dde_derivative(F, path, x, z, t, r, epsilon=0.005)
    torch.testing.assert_close(dF, torch.full_like(dF, 3.0))
    (both,) = seen  # one network call of 2N rows: the + points, then the - points
    t_plus, t_minus = both.chunk(2)
    assert (t_plus <= path.t_max).all() and (t_minus >= r).all()
    assert t_plus[0] == 1.0 and t_minus[1] == 0.5


def test_dde_fp32_mode_runs_in_float32_under_bf16_autocast() -> None:
    net = TinyNet().float()
    x, z = torch.randn(2, 4, 3, dtype=torch.float32).unbind(0)
    t, r = torch.full((4,), 0.6, dtype=torch.float32), torch.full((4,), 0.2, dtype=torch.float32)
    reference = dde_derivative(net, LinearPath(), x, z, t, r)
    net.input_dtypes.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = dde_derivative(net, LinearPath(), x, z, t, r, precision="fp32")
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, reference)  # bf16 would be ~40 % off


def test_jvp_chain_rule_through_time_input() -> None:
    """EDM's network sees ln(t)/4: the JVP must differentiate through c_noise."""
    path = EDMPath()
    exact = GaussianExact(path)
    t, r = torch.tensor([3.0, 0.5]), torch.tensor([1.0, 0.1])
    x, z = torch.randn(2, 2, 3).unbind(0)
    torch.testing.assert_close(
        jvp_derivative(exact.network, path, x, z, t, r), exact.dF_dt_conditional(x, z, t, r)
    )


def test_derivative_only_on_rows_with_r_below_t() -> None:
    seen_rows: list[int] = []
    net = TinyNet()

    def F(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen_rows.append(x_t.shape[0])
        assert (y >= 10).all() if x_t.shape[0] == 4 else True  # derivative passes get the matching cond rows
        return net(x_t, t, r, y)

    loss = TransitionLoss()
    x, z = torch.randn(2, 5, 3).unbind(0)
    t = torch.tensor([0.5, 0.6, 0.7, 0.8, 0.9])
    r = torch.tensor([0.5, 0.6, 0.2, 0.3, 0.9])
    y = torch.tensor([0, 1, 10, 11, 2])
    dF = loss.time_derivative(F, x, z, t, r, {"y": y})
    assert seen_rows == [4]  # the two rows with r < t, at t + eps and t - eps in one call
    assert (dF[[0, 1, 4]] == 0).all() and (dF[[2, 3]] != 0).all()


def test_dde_and_jvp_agree_on_a_network() -> None:
    net = TinyNet()
    x, z = torch.randn(2, 6, 3).unbind(0)
    t, r = torch.rand(6) * 0.5 + 0.3, torch.rand(6) * 0.2
    dde = dde_derivative(net, LinearPath(), x, z, t, r)
    jvp = jvp_derivative(net, LinearPath(), x, z, t, r)
    torch.testing.assert_close(dde, jvp, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------- weights
def test_time_weight_closed_forms() -> None:
    t, r = torch.tensor([0.9, 0.5, 0.7]), torch.tensor([0.1, 0.5, 0.0])
    d_tan = torch.tan(t) - torch.tan(r)
    torch.testing.assert_close(time_weight(t, r), torch.where(r == t, 1.0, 1 / torch.sqrt(1 + d_tan)))
    d = t - r
    cases = {
        "constant": torch.ones(3),
        "reciprocal": 1 / (1 + d),
        "square": 1 / (1 + d) ** 2,
        "soft_min_snr": 1 / (1 + d**2),
        "sqrt": 1 / torch.sqrt(1 + d),
    }
    for function, expected in cases.items():
        expected = torch.where(r == t, 1.0, expected)
        torch.testing.assert_close(time_weight(t, r, transform="identity", function=function), expected)
    sig = t / (1 - t) - r / (1 - r)
    torch.testing.assert_close(
        time_weight(t, r, transform="sigmoid", function="reciprocal", sigma_d=0.5),
        torch.where(r == t, 1.0, 1 / (0.5 + sig)),
    )


def test_adaptive_weight_is_detached() -> None:
    loss = torch.tensor([1.0, 3.0], requires_grad=True)
    w = adaptive_weight(loss, c=1e-5)
    torch.testing.assert_close(w, 1 / (loss.detach() + 1e-5))
    assert not w.requires_grad
    torch.testing.assert_close(
        adaptive_weight(loss.detach(), c=1e-3, power=2.0), (loss.detach() + 1e-3) ** -2
    )


def test_cosine_over_channels_for_images_and_over_features_for_vectors() -> None:
    a, b = torch.randn(2, 2, 3, 4, 5).unbind(0)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    torch.testing.assert_close(per_sample_cosine(a, b), (1 - cos).flatten(1).mean(1))
    u, v = torch.randn(2, 6, 4).unbind(0)
    torch.testing.assert_close(per_sample_cosine(u, v), 1 - (u * v).sum(1) / (u.norm(dim=1) * v.norm(dim=1)))


# ----------------------------------------------------------------------------- the full loss
def manual_tim_loss(
    F_pred: torch.Tensor, target: torch.Tensor, t: torch.Tensor, r: torch.Tensor
) -> torch.Tensor:
    """Independent re-statement of Alg. 1 for images: (mse + cos) * w_time / (sg(L) + 1e-5)."""
    mse = ((F_pred - target) ** 2).mean(dim=(1, 2, 3))
    cos = torch.nn.functional.cosine_similarity(F_pred, target, dim=1).neg().add(1).mean(dim=(1, 2))
    raw = mse + cos
    w = torch.where(r == t, 1.0, (1 + torch.tan(t) - torch.tan(r)) ** -0.5)
    return w * raw / (raw.detach() + 1e-5)


def test_transition_loss_matches_manual_computation() -> None:
    class ConvNet(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            return self.conv(x_t) * (1 + t)[:, None, None, None] + r[:, None, None, None]

    torch.manual_seed(0)
    net = ConvNet()
    x, z = torch.randn(2, 6, 3, 4, 4).unbind(0)
    t = torch.tensor([0.5, 0.7, 0.9, 0.8, 0.6, 0.4])
    r = torch.tensor([0.5, 0.7, 0.3, 0.1, 0.0, 0.0])
    out = TransitionLoss()(net, x, z=z, t=t, r=r)
    path = LinearPath()
    x_t, v_t = path.interpolate(x, z, t)
    F_pred = net(x_t, t, r)
    dF = jvp_derivative(net, path, x, z, t, r)
    target = v_t - (t - r)[:, None, None, None] * dF
    expected = manual_tim_loss(F_pred, target, t, r)
    torch.testing.assert_close(out.per_sample, expected, rtol=1e-5, atol=1e-6)  # DDE vs JVP: O(eps^2)
    torch.testing.assert_close(out.loss, expected.mean(), rtol=1e-5, atol=1e-6)
    out.loss.backward()
    assert net.conv.weight.grad is not None and torch.isfinite(net.conv.weight.grad).all()


def test_loss_is_pure_and_deterministic() -> None:
    net = TinyNet()
    x = torch.randn(8, 3)
    cond = {"y": torch.arange(8)}
    x_copy, cond_copy = x.clone(), copy.deepcopy(cond)
    before = torch.get_rng_state()
    loss = TransitionLoss()
    a = loss(net, x, cond=cond, generator=torch.Generator().manual_seed(3))
    b = loss(net, x, cond=cond, generator=torch.Generator().manual_seed(3))
    loss(net, x, cond=cond)  # generator=None: still no global RNG
    assert torch.equal(before, torch.get_rng_state())
    assert (
        torch.equal(x, x_copy) and torch.equal(cond["y"], cond_copy["y"]) and cond.keys() == cond_copy.keys()
    )
    assert torch.equal(a.per_sample, b.per_sample)
    assert set(a.stats) >= {"mse", "cosine", "weight_time", "t_mean"}
    assert all(not v.requires_grad and v.ndim == 0 for v in a.stats.values())


def test_non_finite_loss_is_visible() -> None:
    def F(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        out = x_t * t[:, None]
        return torch.where(torch.arange(x_t.shape[0])[:, None] == 0, torch.nan, out)

    out = TransitionLoss()(F, torch.randn(4, 3), generator=torch.Generator().manual_seed(0))
    assert torch.isnan(out.loss)


def test_default_sampling_uses_path_distribution_and_generator() -> None:
    net = TinyNet()
    x = torch.randn(20, 3)
    out = TransitionLoss()(net, x, generator=torch.Generator().manual_seed(7))
    t, r = sample_time_pairs(LinearPath(), 20, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(out.stats["t_mean"], t.double().mean())
    torch.testing.assert_close(out.stats["r_mean"], r.double().mean())


def test_resolution_shift_of_training_times() -> None:
    net = lambda x_t, t, r: x_t * t[:, None, None, None]  # noqa: E731
    x = torch.randn(10, 1, 8, 16)
    out = TransitionLoss(shift_base=(4, 4))(net, x, generator=torch.Generator().manual_seed(1))
    shift = resolution_shift(8, 16, 4, 4)
    t, _ = sample_time_pairs(LinearPath(), 10, shift=shift, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.stats["t_mean"], t.double().mean())
    with pytest.raises(TimError):
        TransitionLoss(shift_base=(4, 4))(TinyNet(), torch.randn(4, 3))


def test_model_guidance_offsets_target_inside_inclusive_window() -> None:
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def teacher(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append((t.clone(), r.clone()))
        return torch.ones_like(x_t) * (y == 1)[:, None].to(x_t.dtype)  # F_cond = 1, F_uncond = 0

    def F(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x_t, requires_grad=True)

    x, z = torch.randn(2, 4, 3).unbind(0)
    t = torch.tensor([0.3, 0.5, 0.8, 0.9])
    loss = TransitionLoss(
        guidance_scale=1.75, guidance_window=(0.3, 0.8), direction_loss=False, adaptive=False
    )
    cond, null = {"y": torch.ones(4, dtype=torch.long)}, {"y": torch.zeros(4, dtype=torch.long)}
    out = loss(F, x, z=z, t=t, r=t, teacher=teacher, teacher_cond=cond, teacher_uncond=null)
    offset = torch.tensor([0.75, 0.75, 0.75, 0.0])[:, None]
    expected = ((z - x + offset) ** 2).mean(1)
    torch.testing.assert_close(out.per_sample, expected)
    assert all(torch.equal(tt, rr) for tt, rr in calls)  # teacher at r = t
    with pytest.raises(TimError):
        loss(F, x, z=z, t=t, r=t)


def test_alignment_hook() -> None:
    net = TinyNet()
    received: dict[str, torch.Tensor] = {}

    def features_fn(x_t, t, r, **cond):
        return net(x_t, t, r, **cond), x_t * 2.0

    def alignment(features: torch.Tensor, x: torch.Tensor, cond: dict) -> torch.Tensor:
        received["features"] = features
        return features.square().mean(1)

    x = torch.randn(6, 3)
    plain = TransitionLoss()(net, x, generator=torch.Generator().manual_seed(0))
    hooked = TransitionLoss(alignment=alignment, alignment_weight=0.5)(
        net, x, features_fn=features_fn, generator=torch.Generator().manual_seed(0)
    )
    torch.testing.assert_close(
        hooked.per_sample - plain.per_sample, 0.5 * received["features"].square().mean(1)
    )
    with pytest.raises(TimError):
        TransitionLoss(alignment=alignment)(net, x)


# ----------------------------------------------------------------------------- baselines, building
def test_flow_matching_loss_is_plain_velocity_mse() -> None:
    net = TinyNet()
    x = torch.randn(16, 3)
    out = FlowMatchingLoss()(net, x, generator=torch.Generator().manual_seed(4))
    g = torch.Generator().manual_seed(4)
    t = LinearPath().sample_time(16, generator=g).double()
    z = torch.randn(16, 3, generator=g)
    x_t = (1 - t[:, None]) * x + t[:, None] * z
    expected = ((net(x_t, t, t) - (z - x)) ** 2).mean(1)
    torch.testing.assert_close(out.per_sample, expected)


def test_meanflow_loss() -> None:
    net = TinyNet()
    x = torch.randn(4000, 3)
    loss = MeanFlowLoss()
    t, r = loss.sample_times(x, torch.Generator().manual_seed(0))
    share = (r < t).double().mean().item()
    assert abs(share - 0.25) < 0.03 and (r <= t).all()
    path = LinearPath()
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(9))
    out = loss(net, x[:8], z=z, t=t[:8], r=r[:8])
    x_t, v_t = path.interpolate(x[:8], z, t[:8])
    target = v_t - (t[:8] - r[:8])[:, None] * jvp_derivative(net, path, x[:8], z, t[:8], r[:8])
    raw = ((net(x_t, t[:8], r[:8]) - target) ** 2).mean(1)
    torch.testing.assert_close(out.per_sample, raw / (raw.detach() + 1e-3))
    with pytest.raises(TimError):
        MeanFlowLoss(path=TrigFlowPath())


def test_build_objective_and_validation() -> None:
    assert isinstance(build_objective("tim"), TransitionLoss)
    assert isinstance(build_objective("flow_matching", LinearPath()), FlowMatchingLoss)
    assert isinstance(build_objective("meanflow"), MeanFlowLoss)
    assert build_objective("tim", VPPath(), derivative="jvp").derivative == "jvp"
    for bad in (
        dict(derivative="fd"),
        dict(time_function="cubic"),
        dict(time_transform="log"),
        dict(epsilon=0.0),
    ):
        with pytest.raises(TimError):
            TransitionLoss(**bad)
    with pytest.raises(TimError):
        build_objective("consistency")
    with pytest.raises(TimError):
        build_objective("tim", nonsense=1)
    with pytest.raises(TimError):  # tan(t) is not monotone on [0.01, 80]
        TransitionLoss(path=EDMPath())
    for bad in ({"adaptive_c": 0.0}, {"guidance_window": (0.8, 0.3)}):
        with pytest.raises(TimError):
            TransitionLoss(**bad)
    assert TransitionLoss(path=VEPath(), time_transform="identity").path.t_max == 100.0
    # The flow-matching baseline has a constant time weight, so tau's domain does not matter.
    assert isinstance(build_objective("flow_matching", EDMPath()), FlowMatchingLoss)


@pytest.mark.parametrize(
    "x, kwargs",
    [
        (torch.ones(4, 2, dtype=torch.long), {}),
        (torch.ones(4), {}),
        (torch.ones(4, 2), {"z": torch.ones(4, 3)}),
        (torch.ones(4, 2), {"t": torch.full((3,), 0.5), "r": torch.zeros(3)}),
        (torch.ones(4, 2), {"t": torch.full((4,), 0.2), "r": torch.full((4,), 0.5)}),  # r > t
        (torch.ones(4, 2), {"t": torch.full((4,), 0.5)}),
    ],
    ids=["integer-x", "1d-x", "z-shape", "t-shape", "r-after-t", "t-without-r"],
)
def test_bad_batches_raise_one_line_errors(x: torch.Tensor, kwargs: dict) -> None:
    with pytest.raises(TimError):
        TransitionLoss()(lambda x_t, t, r: x_t, x, generator=torch.Generator().manual_seed(0), **kwargs)


@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
def test_loss_runs_and_is_finite_on_every_path(path: Path) -> None:
    transform = "tan" if path.t_max < math.pi / 2 else "identity"
    net = TinyNet()
    out = TransitionLoss(path=path, time_transform=transform)(
        net, torch.randn(16, 3), generator=torch.Generator().manual_seed(0)
    )
    assert torch.isfinite(out.loss)
    out.loss.backward()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_autocast_loss_and_sampler() -> None:
    """On CUDA: generators live on the device, DDE passes run in float32 under bf16 autocast,
    and the sampler keeps a float64 state."""
    from tim.samplers import sample

    device = torch.device("cuda")
    net = TinyNet().float().to(device)
    x = torch.randn(64, 3, device=device, dtype=torch.float32)
    before = torch.cuda.get_rng_state()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = TransitionLoss()(net, x, generator=torch.Generator(device).manual_seed(0))
    assert torch.isfinite(out.loss) and torch.equal(before, torch.cuda.get_rng_state())
    net.input_dtypes.clear()
    z, t, r = (
        torch.randn_like(x),
        torch.full((64,), 0.7, device=device),
        torch.full((64,), 0.2, device=device),
    )
    reference = dde_derivative(net, LinearPath(), x, z, t, r)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        autocast = dde_derivative(net, LinearPath(), x, z, t, r)
    torch.testing.assert_close(autocast, reference)
    result = sample(
        net,
        torch.randn(8, 3, device=device, dtype=torch.float32),
        steps=4,
        stochasticity=0.2,
        generator=torch.Generator(device).manual_seed(1),
    )
    assert result.x.device.type == "cuda" and torch.isfinite(result.x).all()
