"""Same seed -> same result, for samples, losses, data and whole training runs (issue 6 item 5).

Every random draw in the library comes from an explicit ``torch.Generator`` (docs/internals.md),
so two runs with the same seed must agree bit for bit on CPU, and a different seed must change
the result (otherwise the equality checks would prove nothing). The global RNG must not be
touched by sampling or by the loss.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tim.models import build_model
from tim.objective import build_objective
from tim.paths import build_path
from tim.samplers import sample


def random_model(seed: int = 0) -> nn.Module:
    """``TiM-tiny`` with every parameter redrawn: the released initialisation outputs exactly 0,
    which would make any sampler trivially deterministic in the network."""
    model = build_model("TiM-tiny")
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
    return model.eval()


def draw(model: nn.Module, seed: int, steps: int) -> torch.Tensor:
    """Samples with noise, CFG and the stochastic transition all driven by one seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(6, 4, 8, 8, generator=generator)
    cond = {"y": torch.tensor([0, 1, 2, 3, 4, 9])}
    with torch.no_grad():
        return sample(
            model,
            noise,
            path=build_path("linear"),
            steps=steps,
            cond=cond,
            uncond=model.null_cond(cond),
            guidance_scale=1.5,
            stochasticity=0.3,
            generator=generator,
        ).x


@pytest.mark.parametrize("steps", [1, 4])
def test_sampler_same_seed_same_samples(steps: int) -> None:
    model = random_model()
    global_rng = torch.get_rng_state()
    first, second = draw(model, seed=7, steps=steps), draw(model, seed=7, steps=steps)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert not torch.equal(first, draw(model, seed=8, steps=steps))
    assert torch.equal(torch.get_rng_state(), global_rng), "sampling touched the global RNG"


def test_stochastic_steps_depend_on_the_generator_not_only_the_noise() -> None:
    """With rho > 0 the generator also drives the fresh noise of the middle steps."""
    model = random_model()
    noise = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = {"y": torch.tensor([1, 2, 3, 4])}

    def run(seed: int) -> torch.Tensor:
        with torch.no_grad():
            return sample(
                model,
                noise,
                steps=4,
                cond=cond,
                stochasticity=0.5,
                generator=torch.Generator().manual_seed(seed),
            ).x

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def loss_and_grads(model: nn.Module, seed: int) -> tuple[torch.Tensor, list[torch.Tensor]]:
    objective = build_objective("tim", build_path("linear"))
    x = torch.randn(8, 4, 8, 8, generator=torch.Generator().manual_seed(123))
    model.zero_grad(set_to_none=True)
    out = objective(model, x, cond={"y": torch.arange(8) % 10}, generator=torch.Generator().manual_seed(seed))
    out.loss.backward()
    return out.loss.detach(), [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_loss_same_seed_same_value_and_gradients() -> None:
    model = random_model().train()
    global_rng = torch.get_rng_state()
    loss_a, grads_a = loss_and_grads(model, seed=3)
    loss_b, grads_b = loss_and_grads(model, seed=3)
    assert torch.isfinite(loss_a)
    assert torch.equal(loss_a, loss_b)
    assert len(grads_a) == len(grads_b) > 0
    assert all(torch.equal(a, b) for a, b in zip(grads_a, grads_b, strict=True))
    assert not torch.equal(loss_a, loss_and_grads(model, seed=4)[0])
    assert torch.equal(torch.get_rng_state(), global_rng), "the loss touched the global RNG"


def test_data_source_same_seed_same_batches() -> None:
    from tim.data import DataConfig, build_data_source

    def batches(seed: int) -> list[dict[str, torch.Tensor]]:
        source = build_data_source(DataConfig(name="digits"), batch_size=32, seed=seed)
        return [source.next_batch() for _ in range(3)]

    first, second, other = batches(0), batches(0), batches(1)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a["x"], b["x"]) and torch.equal(a["y"], b["y"])
    assert not torch.equal(first[0]["x"], other[0]["x"])


# A tiny digits run: 4 optimizer steps with label dropout, EMA and an objective that draws
# (t, r) and z every step, logged every step.
TINY_TRAINING = [
    "train.steps=4",
    "train.batch_size=16",
    "train.progress=false",
    "train.log_every=1",
    "train.checkpoint_every=4",
    "model.hidden_size=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.modulation_rank=8",
    "sample.steps=[1]",
    "sample.num=2",
]


def train_tiny(run_dir: Path, seed: int) -> tuple[list[float], dict[str, torch.Tensor]]:
    """Train the tiny run; return its per-step losses and final weights (model + EMA)."""
    from tim.training import load_config, load_run, train

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train(load_config("digits", TINY_TRAINING + [f"train.seed={seed}"]), run_dir)
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line and "event" not in line]
    weights = {}
    for which in ("model", "ema"):
        model, _ = load_run(run_dir, which=which)
        weights |= {f"{which}.{k}": v for k, v in model.state_dict().items()}
    return losses, weights


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[float], dict]]:
    """Three tiny runs: "a" and "b" with seed 5, "c" with seed 6."""
    root = tmp_path_factory.mktemp("runs")
    return {
        name: (root / name, *train_tiny(root / name, seed)) for name, seed in (("a", 5), ("b", 5), ("c", 6))
    }


def test_training_same_seed_same_trajectory(tiny_runs: dict) -> None:
    (_, losses_a, weights_a), (_, losses_b, weights_b), (_, losses_c, weights_c) = tiny_runs.values()
    assert len(losses_a) == 4 and all(map(torch.isfinite, torch.tensor(losses_a)))
    assert losses_a == losses_b
    assert weights_a.keys() == weights_b.keys()
    assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert losses_c != losses_a
    assert not all(torch.equal(weights_a[k], weights_c[k]) for k in weights_a)


def test_command_line_sample_same_seed_same_files(tiny_runs: dict, tmp_path: Path) -> None:
    """``tim sample --seed S`` twice writes identical arrays; another seed writes other ones."""
    from tim.cli.main import main

    run = tiny_runs["a"][0]

    def samples(seed: int, name: str) -> np.ndarray:
        out = tmp_path / name
        argv = [
            "sample",
            "--checkpoint",
            str(run),
            "--steps",
            "2",
            "--per-class",
            "2",
            "--seed",
            str(seed),
            "--out",
            str(out),
        ]
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(argv) == 0
        with np.load(out / "steps_002.npz") as data:
            return data["samples"]

    first = samples(11, "first")
    assert first.shape == (20, 1, 8, 8) and np.isfinite(first).all()
    assert np.array_equal(first, samples(11, "second"))
    assert not np.array_equal(first, samples(12, "third"))
