"""Small pure pieces of the trainer: EMA decay, warm-up, run length, per-step generators."""

from __future__ import annotations

import pytest
import torch

from tim.training import load_config
from tim.training.ema import ema_decay, make_ema, update_ema
from tim.training.loop import learning_rate, step_generator, total_steps


def test_ema_decay_warmup_closed_form() -> None:
    assert ema_decay(0.999, 0) == pytest.approx(0.1)  # (1 + 0) / (10 + 0)
    assert ema_decay(0.999, 80) == pytest.approx(81 / 90)
    assert ema_decay(0.999, 10**6) == 0.999
    assert ema_decay(0.999, 0, warmup=False) == 0.999


def test_ema_update_is_the_convex_combination() -> None:
    model = torch.nn.Linear(3, 2).double()
    ema = make_ema(model)
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    update_ema(ema, model, 0.75)
    for key, value in ema.state_dict().items():
        expected = 0.75 * before[key] + 0.25 * model.state_dict()[key]
        assert torch.allclose(value, expected, rtol=0, atol=1e-15)
    assert not any(p.requires_grad for p in ema.parameters()) and not ema.training


def test_linear_warmup_then_constant() -> None:
    cfg = load_config(None, ["optim.lr=1e-3", "optim.warmup_steps=4"])
    assert [learning_rate(cfg, n) for n in range(6)] == pytest.approx(
        [2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3]
    )
    assert learning_rate(load_config(None, ["optim.lr=1e-3"]), 0) == 1e-3  # paper: no warm-up


def test_run_length_in_steps_or_images() -> None:
    assert total_steps(load_config(None, ["train.steps=7"])) == 7
    assert total_steps(load_config(None, ["train.images=1000", "train.batch_size=64"])) == 16  # ceil(1000/64)


def test_step_generators_are_reproducible_and_distinct() -> None:
    cpu = torch.device("cpu")

    def draw(*key: int) -> torch.Tensor:
        return torch.randn(4, generator=step_generator(*key, cpu))

    assert torch.equal(draw(0, 5, 1), draw(0, 5, 1))
    keys = [(0, 5, 1), (0, 5, 0), (0, 6, 1), (1, 5, 1), (0, 1, 5)]
    samples = [draw(*key) for key in keys]
    assert all(not torch.equal(a, b) for i, a in enumerate(samples) for b in samples[i + 1 :])
