"""Sampler: exact Gaussian transitions for any number of steps, CFG interval edges, NFE, dtypes,
stochastic sampling keeps the marginals, flow-matching baselines. Float64 on CPU."""

from __future__ import annotations

import pytest
import torch

from helpers.gaussian import PATH_IDS, GaussianExact, all_paths
from tim.errors import TimError
from tim.paths import LinearPath, Path
from tim.samplers import sample

pytestmark = pytest.mark.usefixtures("float64")  # tests/conftest.py: every tensor here is float64


def noise(n: int = 4096, dim: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("path", all_paths(), ids=PATH_IDS)
@pytest.mark.parametrize("steps", [1, 2, 8, 64])
def test_exact_F_maps_noise_to_data_for_any_steps(path: Path, steps: int) -> None:
    """Each exact transition is the PF-ODE flow map, so the result is noise * std(t_min)/std(t_max)
    whatever the number of steps; on the linear path that is N(0, s^2)."""
    exact = GaussianExact(path, s=1.7)
    z = noise()
    result = sample(exact.network, z, path=path, steps=steps)
    t_max, t_min = torch.tensor(path.t_max), torch.tensor(path.t_min)
    expected = z * exact.std(t_min) / exact.std(t_max)
    torch.testing.assert_close(result.x.double(), expected, rtol=1e-5, atol=1e-5)  # result.x is float32
    assert result.nfe == steps and result.times.shape == (steps + 1,)
    if path.name == "linear":
        std = result.x.double().std().item()
        assert abs(std - 1.7) < 4 * 1.7 / (2 * z.numel()) ** 0.5  # sampling error of the std


def test_trajectory_and_float64_state() -> None:
    exact = GaussianExact(LinearPath())
    z = noise(64)
    result = sample(exact.network, z, steps=4, return_trajectory=True)
    assert len(result.trajectory) == 5 and torch.equal(result.trajectory[0], z.float())
    assert result.x.dtype == torch.float32
    for i, state in enumerate(result.trajectory):
        t = torch.tensor(1.0 - i / 4)
        torch.testing.assert_close(state.double(), z * exact.std(t), rtol=1e-6, atol=1e-6)


def test_network_called_in_noise_dtype() -> None:
    seen: list[tuple[torch.dtype, torch.dtype]] = []

    def F(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        seen.append((x_t.dtype, t.dtype))
        assert t.shape == r.shape == (x_t.shape[0],)
        return x_t

    sample(F, torch.randn(3, 2, dtype=torch.float32), steps=2)
    assert seen == [(torch.float32, torch.float32)] * 2


def test_user_grid_and_shift() -> None:
    seen: list[tuple[float, float]] = []

    def F(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        seen.append((float(t[0]), float(r[0])))
        return torch.zeros_like(x_t)

    result = sample(F, torch.randn(2, 2), grid=[1.0, 0.9, 0.2, 0.0])
    assert seen == [(1.0, 0.9), (0.9, 0.2), (0.2, 0.0)] and result.nfe == 3
    seen.clear()
    sample(F, torch.randn(2, 2), steps=2, shift=3.0)
    assert seen[0] == (1.0, 0.75)  # shift_time(0.5, 3) = 1.5 / 2
    for bad_grid in ([0.0, 1.0], [1.0], [1.5, 0.0]):
        with pytest.raises(TimError):
            sample(F, torch.randn(2, 2), grid=bad_grid)
    with pytest.raises(TimError):
        sample(F, torch.randn(2, 2), grid=[1.0, 0.0], shift=2.0)


# ----------------------------------------------------------------------------- CFG
def guided_recorder() -> tuple[list[tuple[float, int]], object]:
    calls: list[tuple[float, int]] = []

    def F(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        calls.append((float(t[0]), x_t.shape[0]))
        return torch.zeros_like(x_t) + y[:, None].to(x_t.dtype)  # F_cond = y, F_uncond = null label

    return calls, F


@pytest.mark.parametrize(
    ("interval", "bounds", "guided_times", "nfe"),
    [
        ("inclusive", (0.0, 1.0), [1.0, 0.75, 0.5, 0.25], 8),
        ("strict", (0.0, 1.0), [0.75, 0.5, 0.25], 7),  # published: t = 1 unguided
        ("inclusive", (0.25, 0.5), [0.5, 0.25], 6),
        ("strict", (0.25, 0.5), [], 4),
        ("strict", (0.0, 0.7), [0.5, 0.25], 6),
    ],
)
def test_cfg_interval_edges(
    interval: str, bounds: tuple[float, float], guided_times: list[float], nfe: int
) -> None:
    calls, F = guided_recorder()
    y, null = torch.full((3,), 2), torch.full((3,), 10)
    result = sample(
        F,
        torch.randn(3, 2),
        steps=4,
        cond={"y": y},
        uncond={"y": null},
        guidance_scale=1.5,
        guidance_interval=bounds,
        interval=interval,
    )
    assert result.nfe == nfe
    assert [t for t, batch in calls if batch == 6] == guided_times


def test_cfg_combination_value() -> None:
    _, F = guided_recorder()
    y, null = torch.full((3,), 2), torch.full((3,), 10)
    # One step 1 -> 0 on the linear path: x_0 = z - F, F = 10 + 1.5 (2 - 10) = -2.
    z = torch.randn(3, 2)
    result = sample(F, z, steps=1, cond={"y": y}, uncond={"y": null}, guidance_scale=1.5)
    torch.testing.assert_close(result.x.double(), z + 2.0, rtol=1e-6, atol=1e-6)
    with pytest.raises(TimError):
        sample(F, z, cond={"y": y}, guidance_scale=2.0)  # no uncond


def test_cfg_with_condition_layouts_that_cannot_be_stacked() -> None:
    calls: list[int] = []

    def F(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        calls.append(x_t.shape[0])
        return torch.zeros_like(x_t) + context.mean(dim=(1, 2))[:, None]

    cond, uncond = {"context": torch.ones(2, 5, 3)}, {"context": torch.zeros(2, 1, 3)}
    result = sample(F, torch.randn(2, 2), steps=2, cond=cond, uncond=uncond, guidance_scale=3.0)
    assert calls == [2, 2, 2, 2] and result.nfe == 4


# ----------------------------------------------------------------------------- stochastic
@pytest.mark.parametrize(("stochasticity", "steps"), [(0.3, 64), (0.2, 16), (1.0, 128)])
def test_stochastic_sampler_keeps_marginals(stochasticity: float, steps: int) -> None:
    exact = GaussianExact(LinearPath(), s=1.7)
    z = noise(20_000, 1, seed=1)
    result = sample(
        exact.network, z, steps=steps, stochasticity=stochasticity, generator=torch.Generator().manual_seed(2)
    )
    deterministic = sample(exact.network, z, steps=steps).x.double()
    assert (result.x.double() - deterministic).abs().mean() > 0.05  # the noise did something
    std = result.x.double().std().item()
    assert abs(std / 1.7 - 1.0) < 0.03, std  # sampling error ~0.5 %, first-order step error ~1 %
    assert abs(result.x.double().mean().item()) < 0.05


def test_stochastic_sampling_refused_off_the_linear_path() -> None:
    exact = GaussianExact(all_paths()[1])
    with pytest.raises(TimError):
        sample(exact.network, noise(4), path=exact.path, steps=4, stochasticity=0.2)


def test_stochastic_step_skips_first_and_last_and_uses_generator() -> None:
    def F(x_t: torch.Tensor, t: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x_t)

    z = torch.randn(4, 3)
    one = sample(F, z, steps=2, stochasticity=0.5, generator=torch.Generator().manual_seed(0)).x
    torch.testing.assert_close(one, z.float())  # 2 steps = first + last: no noise
    before = torch.get_rng_state()
    a = sample(F, z, steps=4, stochasticity=0.5, generator=torch.Generator().manual_seed(0)).x
    b = sample(F, z, steps=4, stochasticity=0.5, generator=torch.Generator().manual_seed(0)).x
    assert torch.equal(a, b) and not torch.equal(a, z.float())
    assert torch.equal(before, torch.get_rng_state())
    with pytest.raises(TimError):
        sample(F, z, stochasticity=-0.1)
    with pytest.raises(TimError):
        sample(F, z, stochasticity=0.1, method="euler")


# ----------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("path", [p for p in all_paths() if p.t_max <= 2.0], ids=["linear", "trigflow", "vp"])
def test_euler_and_heun_converge_with_exact_velocity(path: Path) -> None:
    # (EDM and VE on a uniform grid over [0.01, 80] / [0.02, 100] are too stiff for 100-step Euler.)
    exact = GaussianExact(path, s=1.7)
    z = noise(64)
    expected = z * exact.std(torch.tensor(path.t_min)) / exact.std(torch.tensor(path.t_max))
    errors = {}
    for method, steps in [("euler", 40), ("euler", 80), ("heun", 40), ("heun", 80)]:
        result = sample(exact.network, z, path=path, steps=steps, method=method)
        assert result.nfe == steps * (2 if method == "heun" else 1)
        errors[method, steps] = (result.x.double() - expected).abs().max().item()
    assert errors["heun", 80] < errors["euler", 80] < errors["euler", 40]
    assert errors["heun", 80] < errors["heun", 40]


def test_one_step_flow_matching_is_worse_than_transition_on_gaussian() -> None:
    """With the exact F, a 1-step transition is exact but a 1-step Euler step on the velocity is not."""
    exact = GaussianExact(LinearPath(), s=0.3)
    z = noise(1024)
    expected = z * 0.3
    transition = sample(exact.network, z, steps=1).x.double()
    euler = sample(exact.network, z, steps=1, method="euler").x.double()
    assert (transition - expected).abs().max() < 1e-5 < (euler - expected).abs().max()


def test_bad_arguments() -> None:
    F = lambda x_t, t, r: x_t  # noqa: E731
    with pytest.raises(TimError):
        sample(F, torch.randn(2, 2), method="dpm")
    with pytest.raises(TimError):
        sample(F, torch.randn(2, 2), interval="open")
    with pytest.raises(TimError):
        sample(F, torch.zeros(2, 2, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"guidance_scale": 2.0, "uncond": {}, "guidance_interval": (0.8, 0.2)},  # would silently never guide
        {"guidance_scale": 2.0, "uncond": {}, "guidance_interval": (0.5,)},
        {"guidance_scale": float("nan"), "uncond": {}},
        {"steps": 4, "stochasticity": float("nan")},  # would silently run deterministically
        {"grid": [[1.0, 0.5], [0.25, 0.0]]},  # would silently be flattened
    ],
    ids=["reversed-interval", "short-interval", "nan-scale", "nan-stochasticity", "2d-grid"],
)
def test_bad_arguments_raise_one_line_errors(kwargs: dict) -> None:
    with pytest.raises(TimError):
        sample(lambda x_t, t, r: x_t, torch.randn(2, 2), **kwargs)
    with pytest.raises(TimError):  # 0-dim noise has no batch dimension
        sample(lambda x_t, t, r: x_t, torch.tensor(1.0))


def test_negative_guidance_scale_is_a_clear_error() -> None:
    with pytest.raises(TimError, match="guidance_scale must be >= 0"):
        sample(lambda x, t, r, **c: x, torch.zeros(2, 2), steps=1, guidance_scale=-1.0, uncond={})


def test_sampling_defaults_agree_across_layers() -> None:
    """Every layer's default sampling knobs are THE defaults of tim.samplers (same values and types)."""
    import argparse
    import inspect
    from types import SimpleNamespace

    from tim import samplers
    from tim.app import logic
    from tim.cli.sample import _sampler_options
    from tim.generation import backends
    from tim.generation.recipe import SamplingRecipe
    from tim.training.config import SampleConfig

    table = {
        "guidance_scale": samplers.DEFAULT_GUIDANCE_SCALE,
        "guidance_interval": samplers.DEFAULT_GUIDANCE_INTERVAL,
        "stochasticity": samplers.DEFAULT_STOCHASTICITY,
    }
    assert table == {"guidance_scale": 1.0, "guidance_interval": (0.0, 1.0), "stochasticity": 0.0}
    assert samplers.DEFAULT_STEPS == 4

    def signature_defaults(function, names) -> dict:
        parameters = inspect.signature(function).parameters
        return {name: parameters[name].default for name in names}

    recipe, config = SamplingRecipe(), SampleConfig()
    layers = {
        "SamplingRecipe": {name: getattr(recipe, name) for name in table},
        "SampleConfig": {name: getattr(config, name) for name in table},
        "sample": signature_defaults(samplers.sample, table),
        "app generate": signature_defaults(logic.generate, table),
    }
    for name, got in layers.items():
        assert repr(got) == repr(table), name  # same values and types (1.0, not 1; a tuple, not a list)
    scale_only = [samplers.sample_batches, backends.sample_classes, backends.generate]
    for function in scale_only:
        assert signature_defaults(function, ["guidance_scale"]) == {"guidance_scale": table["guidance_scale"]}
    assert recipe.steps == signature_defaults(logic.generate, ["steps"])["steps"] == samplers.DEFAULT_STEPS
    # `tim sample` on a non-image run (no recipe): nothing given on the command line.
    vector = SimpleNamespace(kind="vector", info=SimpleNamespace(default_steps=[1, 2]), conditioning="none")
    args = argparse.Namespace(cfg=None, stochasticity=None)
    options, steps = _sampler_options(vector, args, None, None)
    assert repr(options) == repr(table) and steps == [2]
