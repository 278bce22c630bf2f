"""Config files that cannot be abused (issue 13 item 6): alias bombs, duplicate keys, empty files.

Before issue 13 a ten-line YAML alias bomb grew the process to ~12 GB before failing, duplicate
keys were silently last-wins, and an empty file trained on all defaults.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from tim.errors import TimError
from tim.training import load_config
from tim.training.strict import MAX_YAML_NODES

# Nine levels of nine aliases each: 9**9 = 387 million leaves once expanded.
BOMB = (
    "\n".join(
        ["a: &a [x, x, x, x, x, x, x, x, x]"]
        + [f"{chr(98 + k)}: &{chr(98 + k)} [{', '.join([f'*{chr(97 + k)}'] * 9)}]" for k in range(8)]
    )
    + "\n"
)


def _load(tmp_path: Path, text: str, name: str = "run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return load_config(path, [])


def test_alias_bomb_fails_fast_in_little_memory(tmp_path: Path) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(
        TimError, match=rf"expands too far through its YAML aliases.*{MAX_YAML_NODES}.*without nested"
    ):
        _load(tmp_path, BOMB)
    assert time.perf_counter() - started < 5.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: < 200 MB more at peak


def test_alias_bomb_in_an_override_fails_too() -> None:
    one_line = (
        "[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], "
        "&d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d], [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]]"
    )
    with pytest.raises(TimError, match="an override expands too far"):
        load_config(None, [f"sample.steps={one_line}"])


def test_ordinary_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    cfg = _load(tmp_path, "train: {<<: {steps: 7, batch_size: 16}, log_every: &n 5, checkpoint_every: *n}\n")
    assert (cfg.train.steps, cfg.train.batch_size, cfg.train.log_every, cfg.train.checkpoint_every) == (
        7,
        16,
        5,
        5,
    )


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    with pytest.raises(TimError, match=r"has the key 'lr' twice in one mapping \(line 3\).*keep one"):
        _load(tmp_path, "optim:\n  lr: 0.001\n  lr: 0.1\n")
    with pytest.raises(TimError, match="has the key 'train' twice"):
        _load(tmp_path, "train: {steps: 5}\ntrain: {steps: 6}\n")
    with pytest.raises(TimError, match=r"run.json' has the key 'steps' twice.*keep one"):
        _load(tmp_path, '{"train": {"steps": 5, "steps": 6}}', name="run.json")


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file_is_an_error(text: str, tmp_path: Path) -> None:
    with pytest.raises(TimError, match=r"config file '.*run.yaml' is empty.*--config digits"):
        _load(tmp_path, text)


def test_recursive_alias_and_deep_nesting_are_errors(tmp_path: Path) -> None:
    with pytest.raises(TimError, match="recursive YAML alias"):
        _load(tmp_path, "a: &a [1, *a]\n")
    with pytest.raises(TimError, match="nested too deeply"):
        _load(tmp_path, "a: " + "[" * 2000 + "]" * 2000 + "\n")
    with pytest.raises(TimError, match="nested too deeply"):
        _load(tmp_path, "[" * 5000 + "]" * 5000, name="deep.json")
