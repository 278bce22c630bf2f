"""`tim models export` and `tim models score` on a tiny trained run: the bundled-model format end to end."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tim import pretrained


def test_export_score_and_use_a_run_as_a_bundled_model(
    tiny_run: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "pretrained" / "mine"
    code, out, err = run_cli(
        [
            "models",
            "export",
            str(tiny_run),
            "--name",
            "mine",
            "--out",
            str(folder),
            "--steps",
            "2",
            "--command",
            "tim train ...",
        ]
    )
    assert code == 0, err
    card = json.loads((folder / "card.json").read_text())
    assert card["steps"] > 0 and card["images"] == card["steps"] * card["run_config"]["train"]["batch_size"]
    assert card["recipe"]["steps"] == 2 and card["command"] == "tim train ..." and "cpu" in card["machine"]
    from tim.models.weights import read_safetensors

    tensors, _ = read_safetensors(folder / "model" / "model.safetensors")
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float16}

    code, out, err = run_cli(["models", "score", str(folder), "--quick"])
    assert code == 0, err
    scores = json.loads((folder / "card.json").read_text())["scores"]["digits"]["steps"]
    assert set(scores) == {"1", "8"} and 0.0 <= scores["1"]["class_accuracy"] <= 1.0
    assert "class_accuracy" in out and "| frechet_distance |" in (folder / "README.md").read_text()

    monkeypatch.setattr(pretrained, "ROOT", folder.parent)
    code, out, _ = run_cli(["models"])
    assert code == 0 and "bundled:mine" in out and "class accuracy" in out
    code, _, err = run_cli(
        ["sample", "--checkpoint", "bundled:mine", "--class", "1", "--out", str(tmp_path / "s")]
    )
    assert code == 0, err
    assert (tmp_path / "s" / "steps_002.npz").is_file()  # the recipe's default: 2 steps


def test_export_of_a_missing_run_is_one_line(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli(
        ["models", "export", str(tmp_path / "nope"), "--name", "x", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "o").exists()
