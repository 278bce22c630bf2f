"""`tim demo t2i`: a tiny run writes every output (fast); the demo's network at every step count on a short
budget (slow); the default 15-minute command and its budget at full scale (full)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from tim.experiments.t2i import DEMO_OVERRIDES

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
ROOT = Path(__file__).resolve().parents[2]
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
    from tim.pretrained import available

    if "scenes" in available():  # the report puts the bundled model (same recipe, longer) beside the demo
        assert metrics["bundled"]["steps"] > 1000 and "`bundled:scenes`" in (out / "report.md").read_text()
    assert "caption encoding" in stdout
    # a second run into the same folder needs --overwrite (nothing is mixed or half-written)
    code, _, err = run_cli(["demo", "--quick", "--out", str(out), "t2i", *TINY])
    assert code == 2 and "--overwrite" in err
    # scripts/t2i_diagnose.py montage draws the same labelled montage for any run (no scores measured)
    from PIL import Image

    script = importlib.util.spec_from_file_location("t2i_diagnose", ROOT / "scripts" / "t2i_diagnose.py")
    assert script is not None and script.loader is not None
    diagnose = importlib.util.module_from_spec(script)
    script.loader.exec_module(diagnose)
    assert (
        diagnose.main(
            [
                "montage",
                str(out / "run"),
                "--steps",
                "1,2",
                "--columns",
                "2",
                "--out",
                str(tmp_path / "m.png"),
            ]
        )
        == 0
    )
    bad = ["montage", str(out / "run"), "--steps", "1,x", "--out", str(tmp_path / "bad.png")]
    assert diagnose.main(bad) == 2 and not (tmp_path / "bad.png").exists()  # a one-line error, nothing drawn
    # ... and measures how far the DDE is from the exact JVP derivative on that run's network
    report = tmp_path / "derivative.json"
    assert (
        diagnose.main(
            ["derivative", str(out / "run"), "--num", "2", "--eps", "0.05,0.0005", "--json", str(report)]
        )
        == 0
    )
    errors = json.loads(report.read_text())
    assert len(errors) == 2 * len(diagnose.DERIVATIVE_TIMES)
    interior = errors["r=0 t=0.6"]
    assert interior["|dF/dt| / |v|"] > 0 and 0 <= interior["eps=0.0005"] < interior["eps=0.05"]  # O(eps^2)
    assert diagnose.main(["derivative", str(out / "run"), "--eps", "0"]) == 2  # a one-line error
    from tim import viz
    from tim.experiments.t2i import GRID_PROMPTS

    block = viz.grid_array(torch.zeros(2 * len(GRID_PROMPTS), 3, 32, 32), nrow=2, scale=2)
    with Image.open(tmp_path / "m.png") as drawn:  # every grid prompt, 2 samples each, below a header
        assert drawn.height == 34 + block.shape[0] and drawn.width > 2 * block.shape[1]


def test_bad_override_is_one_line(tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli(["demo", "--out", str(tmp_path / "d"), "t2i", "data.name=digits"])
    assert code == 2 and err.count("\n") == 1 and "scenes" in err
    assert not (tmp_path / "d").exists()


# The slow test: the demo's network (TiM-scenes, 4x4 patches 128 wide) trained for one minute (an
# explicit train.time_limit: the budget rule is run by the fast test), sampled at every step count, on
# the --quick data and evaluation sets (256 scenes; 4 grid rows + 2/1 prompts per category): 24 images x
# 255 network calls instead of the default's 144 x 255 (7.2 min of sampling under load 11 on 2 cores,
# even with 2 images per grid row).
TRAIN_MINUTES = 1


@pytest.mark.slow
def test_short_t2i_demo_runs_every_stage(tmp_path: Path, run_cli) -> None:
    import numpy as np
    from PIL import Image

    steps = [1, 2, 4, 8, 16, 32, 64, 128]
    out = tmp_path / "demo_t2i"
    argv = ["demo", "--quick", "--out", str(out), "--per-class", "2", "--steps", ",".join(map(str, steps))]
    argv += ["t2i", "train.steps=20000", f"train.time_limit={TRAIN_MINUTES}", "train.progress=false"]
    code, _, err = run_cli(argv)
    assert code == 0, err
    metrics = _check(out, steps)
    train = metrics["train"]
    # The time limit, not the 20,000-step cap, ended training, after at least one optimiser step, and
    # the loop kept to it (60 s of slack for the last step and the final checkpoint on a loaded machine).
    assert train["stopped_by_time_limit"] and 1 <= train["steps"] < train["planned_steps"], train
    assert train["time_limit_minutes"] == TRAIN_MINUTES and train["seconds"] <= TRAIN_MINUTES * 60 + 60, train
    recipe = {
        item.split("=")[0].removeprefix("model.") for item in DEMO_OVERRIDES if item.startswith("model.")
    }
    assert set(train["model_overrides"]) == recipe, train["model_overrides"]  # the demo's network
    assert metrics["sampling"]["per_prompt"] == 2 and metrics["sampling"]["eval_prompts"]["seen"] > 0
    # The step count reaches the sampler: 1 and 128 steps from the same noise give different grids.
    first, last = (np.asarray(Image.open(out / f"steps_{k:03d}.png")) for k in (1, 128))
    assert first.shape == last.shape and not np.array_equal(first, last)
    report = (out / "report.md").read_text()
    assert f"for {train['steps']} steps" in report
    for k in steps:
        assert f"| {k} ({k}) | {metrics['geneval_vs_steps'][str(k)]['seen']['overall']:.3f} |" in report
    _check_run_dir(out / "run", train["steps"])


def _check_run_dir(run_dir: Path, steps: int) -> None:
    """The run folder loads back (EMA weights) at the step the report states; its images decode."""
    from PIL import Image

    from tim.training import load_run

    model, _ = load_run(run_dir, which="ema")
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == steps
    for name in ("montage.png", "quality_vs_steps.png"):
        with Image.open(run_dir.parent / name) as image:
            image.verify()


@pytest.mark.full
def test_full_t2i_demo_fits_15_minutes(tmp_path: Path, run_cli) -> None:
    """The default command, ~15 min on 2 cores: the time budget at full scale (pytest -m full)."""
    out = tmp_path / "demo_t2i"
    code, _, err = run_cli(["demo", "--out", str(out), "t2i"])
    assert code == 0, err
    metrics = _check(out, [1, 2, 4, 8, 16, 32, 64, 128])
    assert metrics["wall_seconds"] <= 15 * 60 * 1.05
    assert metrics["text_encoder"]["share_of_wall_time"] < 0.1


def test_report_lines_of_the_bundled_model() -> None:
    from tim.experiments.t2i import bundled_lines

    assert bundled_lines(None) == []
    bundled = {
        "steps": 20000,
        "images": 640000,
        "overall": {"seen": {"1": 0.5, "8": 0.625}, "heldout": {"1": 0.25}},
    }
    lines = bundled_lines(bundled)
    assert (
        "20,000 steps" in lines[1]
        and "| seen | 0.500 | 0.625 |" in lines
        and "| heldout | 0.250 | - |" in lines
    )
