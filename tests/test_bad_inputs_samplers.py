"""Bad inputs (`tim.samplers.sample` arguments): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers.bad_inputs import (
    Case,
    check_case,
    tim_error,
)


def sampler_error(**kwargs: object) -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.samplers import sample

        return tim_error(
            lambda: sample(lambda x, t, r: torch.zeros_like(x), torch.zeros(2, 2), steps=4, **kwargs)
        )

    return trigger


CASES: list[Case] = [
    Case(
        "sampler-stochasticity-too-large",
        "sampling",
        "`sample(..., stochasticity=5)` (valid: 0 to 1)",
        sampler_error(stochasticity=5.0),
        ("stochasticity must lie in [0, 1]", "got 5"),
        ("0.2",),
    ),
    Case(
        "sampler-interval-above-1",
        "sampling",
        "`sample(..., guidance_interval=(0, 1.5))`",
        sampler_error(guidance_interval=(0.0, 1.5)),
        ("guidance_interval", "high <= 1", "1.5"),
        ("(0.0, 1.0)",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
