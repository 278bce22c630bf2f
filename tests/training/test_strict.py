"""tim.training.strict knows no schema: the same one-line errors for any nested dataclasses.

The run config's own messages are pinned in test_config.py; here a two-section toy schema checks
that the reader works from the schema it is given, not from RunConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from tim.errors import TimError
from tim.training import strict


@dataclass(frozen=True)
class Inner:
    rate: float = strict.bounded(0.5, gt=0.0, le=1.0)
    mode: Literal["fast", "slow"] = "fast"
    sizes: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class Toy:
    inner: Inner = field(default_factory=Inner)
    count: int = strict.bounded(3, ge=1)


def _build(data: dict, overrides: list[str] | None = None) -> Toy:
    config = strict.merge(Toy, strict.apply_overrides(Toy, data, overrides or []))
    strict.check_values(config)
    return config


def test_a_toy_schema_is_typed_from_yaml_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "toy.yaml"
    path.write_text("inner:\n  mode: slow\ncount: ${inner.sizes.1}\n")
    config = _build(strict.read_file(path), ["inner.sizes=4,5", "inner.rate=1"])
    assert config == Toy(inner=Inner(rate=1.0, mode="slow", sizes=(4, 5)), count=5)


@pytest.mark.parametrize(
    ("data", "overrides", "message"),
    [
        ({"inner": {"rat": 0.1}}, [], r"unknown config key 'inner.rat'.*did you mean 'inner.rate'"),
        ({}, ["inner.mode=medium"], r"inner.mode = 'medium' is not allowed.*use one of 'fast', 'slow'"),
        ({}, ["count=many"], r"count = 'many' has type str, expected an integer"),
        ({}, ["inner.rate=2"], r"inner.rate = 2 is outside \(0, 1\]"),
        ({}, ["count=0"], r"count = 0 must be >= 1"),
        ({}, ["count.deep=1"], r"override 'count.deep' goes inside 'count', which is not a section"),
    ],
)
def test_a_toy_schema_refuses_in_one_line(data: dict, overrides: list[str], message: str) -> None:
    with pytest.raises(TimError, match=message) as caught:
        _build(data, overrides)
    assert "\n" not in str(caught.value)


def test_flat_lists_dotted_leaves() -> None:
    assert strict.flat({"a": {"b": 1, "c": [1, 2]}, "d": "x"}) == {"a.b": 1, "a.c": [1, 2], "d": "x"}
