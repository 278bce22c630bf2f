"""`tim demo t2i`: a tiny in-process run writes every output with sane contents; the full demo is `slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = [
    "model.hidden_size=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.modulation_rank=8",
    "model.encoder_depth=1",
    "train.steps=3",
    "train.batch_size=8",
    "data.num_images=64",
    "train.progress=false",
    "optim.warmup_steps=0",
]
OUTPUTS = [
    "montage.png",
    "quality_vs_steps.png",
    "metrics.json",
    "report.md",
    "run/config.json",
    "run/pretrained/model.safetensors",
]


def _check(out: Path, steps: list[int]) -> dict:
    from PIL import Image

    for name in OUTPUTS + [f"steps_{k:03d}.png" for k in steps]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob("*.tmp*")), "a temporary file was left behind"
    grid = Image.open(out / "steps_001.png")
    assert grid.width > 2 * 32 * 3 + 50  # a label column left of 2 upscaled images per row
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["geneval_vs_steps"]) == [str(k) for k in steps]
    for k in steps:
        row = metrics["geneval_vs_steps"][str(k)]
        assert row["nfe"] == k
        for split in ("seen", "heldout"):
            assert 0.0 <= row[split]["overall"] <= 1.0
    text = metrics["text_encoder"]
    assert text["name"] == "minilm" and text["dim"] == 384 and text["captions_encoded"] > 10
    assert 0.0 < text["share_of_wall_time"] < 1.0
    report = (out / "report.md").read_text()
    assert all(f"\n| {k} ({k}) | " in report for k in steps)
    return metrics


def test_tiny_t2i_demo_writes_every_output(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "demo_t2i"
    code, stdout, err = run_cli(
        [
            "demo",
            "--quick",
            "--out",
            str(out),
            "--steps",
            "1,2",
            "--per-class",
            "2",
            "--threads",
            "1",
            "t2i",
            *TINY,
        ]
    )
    assert code == 0, err
    metrics = _check(out, [1, 2])
    assert metrics["train"]["steps"] == 3 and metrics["sampling"]["per_prompt"] == 2
    assert "caption encoding" in stdout
    # a second run into the same folder needs --overwrite (nothing is mixed or half-written)
    code, _, err = run_cli(["demo", "--quick", "--out", str(out), "t2i", *TINY])
    assert code == 2 and "--overwrite" in err


def test_bad_override_is_one_line(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli(["demo", "--out", str(tmp_path / "d"), "t2i", "data.name=digits"])
    assert code == 2 and err.count("\n") == 1 and "scenes" in err
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_full_t2i_demo_fits_15_minutes(tmp_path: Path, run_cli) -> None:
    out = tmp_path / "demo_t2i"
    code, _, err = run_cli(["demo", "--out", str(out), "t2i"])
    assert code == 0, err
    metrics = _check(out, [1, 2, 4, 8, 16, 32, 64, 128])
    assert metrics["wall_seconds"] <= 15 * 60 * 1.05
    assert metrics["text_encoder"]["share_of_wall_time"] < 0.1
