"""`tim bench geneval` end to end at toy size: every method trained alike, scored per split, CFG and step count."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tim.errors import TimError
from tim.experiments.geneval import GenevalConfig, check_targets, eval_specs, run_config_dict

TINY_MODEL = {
    "preset": "TiM-scenes",
    "patch_size": 8,
    "hidden_size": 32,
    "depth": 1,
    "num_heads": 2,
    "modulation_rank": 8,
    "encoder_depth": 1,
}


def _one_method_config(**changes) -> GenevalConfig:
    """TiM alone on the toy network: two steps, one seen prompt per category, one step count, no CFG."""
    settings = dict(
        methods=("tim",),
        train_steps=2,
        batch_size=4,
        num_images=16,
        step_counts=(1,),
        per_category=1,
        heldout_per_category=0,
        guidance_scale=1.0,
        model=TINY_MODEL,
    )
    return GenevalConfig(**(settings | changes))


def test_tiny_benchmark_writes_tables(tmp_path: Path) -> None:
    from tim.experiments.geneval import run_geneval

    config = GenevalConfig(
        methods=("tim", "flow_matching"),
        train_steps=2,
        batch_size=4,
        num_images=16,
        step_counts=(1, 2),
        per_category=1,
        heldout_per_category=1,
        guidance_scale=2.0,
        model=TINY_MODEL,
    )
    report = run_geneval(config, tmp_path, log=lambda _: None)
    for name in ("geneval.json", "geneval.md", "geneval.png"):
        assert (tmp_path / name).stat().st_size > 0
    saved = json.loads((tmp_path / "geneval.json").read_text())
    assert saved["results"].keys() == {"tim", "flow_matching"}
    cell = saved["results"]["tim"]["heldout"]["2.0"]["2"]
    assert cell["nfe"] == 4 and 0.0 <= cell["overall"] <= 1.0  # CFG: two calls per step
    assert saved["results"]["flow_matching"]["seen"]["1.0"]["1"]["nfe"] == 1
    assert {t["target"] for t in report["targets"]} >= {
        "TiM >= 0.70 at 1 NFE",
        "TiM >= flow_matching at every step count (min gap)",
    }
    assert "| tim | seen | 1.0 |" in (tmp_path / "geneval.md").read_text()
    # a rerun reuses the trained runs (same config hash) instead of training again
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    run_geneval(config, tmp_path, log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == runs


def test_only_the_objective_differs_between_methods():
    config = GenevalConfig()
    tim, fm = run_config_dict(config, "tim"), run_config_dict(config, "flow_matching")
    assert tim.pop("objective") != fm.pop("objective")
    assert tim == fm


def test_eval_prompts_are_fixed_and_split():
    seen, held = eval_specs("seen", 4), eval_specs("heldout", 4)
    assert [s.caption for s in seen] == [s.caption for s in eval_specs("seen", 4)]
    assert len(seen) == 24 and len(held) == 16  # 6 and 4 categories
    assert not {s.caption for s in seen} & {s.caption for s in held}


def test_targets_are_checked_on_the_seen_prompts():
    def curve(values: list[float]) -> dict:
        return {"seen": {"1.0": {str(k): {"overall": v} for k, v in zip((1, 2, 4, 8), values, strict=True)}}}

    results = {"tim": curve([0.72, 0.78, 0.81, 0.80]), "flow_matching": curve([0.1, 0.3, 0.6, 0.82])}
    config = GenevalConfig(step_counts=(1, 2, 4, 8), guidance_scale=1.0, methods=("tim", "flow_matching"))
    met = {t["target"]: t["met"] for t in check_targets(results, config)}
    assert met["TiM >= 0.70 at 1 NFE"] and met["TiM >= 0.80 at 8 steps"]
    assert met["TiM never falls by more than 0.02 as steps double"]
    assert not met["TiM >= flow_matching at every step count (min gap)"]  # 0.80 < 0.82 at 8 steps


@pytest.mark.parametrize(
    "field, value",
    [("methods", ("ddpm",)), ("train_steps", 1), ("per_category", 0), ("guidance_scale", -1.0)],
)
def test_bad_settings_are_one_line_errors(field, value):
    with pytest.raises(TimError):
        GenevalConfig(**{field: value})


@pytest.mark.parametrize("field, value", [("device", "tpu"), ("text_encoder", ""), ("time_limit", -1.0)])
def test_bad_device_encoder_or_time_limit_is_a_one_line_error(field, value):
    with pytest.raises(TimError, match="--device|--text-encoder|--time-limit") as error:
        GenevalConfig(**{field: value})
    assert "\n" not in str(error.value)


def test_cuda_reaches_the_run_config(monkeypatch):
    from tim.experiments.geneval import run_name

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    config = GenevalConfig(device="cuda")
    assert run_config_dict(config, "tim")["train"]["device"] == "cuda"
    assert run_name(config, "tim") != run_name(GenevalConfig(), "tim")  # a GPU run is another run


def test_a_missing_encoder_folder_fails_before_anything_is_written(tmp_path: Path) -> None:
    from tim.experiments.geneval import run_geneval

    with pytest.raises(TimError, match="neither 'minilm' nor a local folder"):
        run_geneval(GenevalConfig(text_encoder=str(tmp_path / "nope")), tmp_path / "out", log=lambda _: None)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_one_line_error():
    with pytest.raises(TimError, match="no CUDA GPU"):
        GenevalConfig(device="cuda")


def test_device_and_encoder_reach_the_run_config_and_defaults_keep_run_names():
    from tim.experiments.geneval import run_name

    data = run_config_dict(GenevalConfig(text_encoder="/models/minilm-fp16"), "tim")
    assert data["train"]["device"] == "cpu" and data["data"]["text_encoder"] == "/models/minilm-fp16"
    # Runs trained before the device/text-encoder settings existed are still found and reused:
    # this name was written by `tim bench geneval --methods tim --seed 1 --train-steps 3000` then.
    assert run_name(GenevalConfig(seed=1, train_steps=3000), "tim") == "scenes-tim-seed1-bfeba4d1ea"
    for changed in ({"text_encoder": "/x"}, {"time_limit": 5.0}):
        assert run_name(GenevalConfig(seed=1, train_steps=3000, **changed), "tim") != (
            "scenes-tim-seed1-bfeba4d1ea"
        )
    assert run_config_dict(GenevalConfig(time_limit=5.0), "tim")["train"]["time_limit"] == 5.0


def test_a_local_encoder_folder_trains_and_scores(tmp_path: Path) -> None:
    """--text-encoder FOLDER: the run trains on that encoder's features and is scored with it."""
    from helpers.text_models import tiny_bert
    from tim.experiments.geneval import run_geneval

    folder = tiny_bert(tmp_path / "bert", hidden=32)
    config = _one_method_config(model={**TINY_MODEL, "text_dim": 32}, text_encoder=str(folder))
    report = run_geneval(config, tmp_path / "out", log=lambda _: None)
    run_dir = Path(report["timings"]["tim"]["run_dir"])
    assert report["timings"]["tim"]["train_steps_reached"] == 2
    assert json.loads((run_dir / "config.json").read_text())["data"]["text_encoder"] == str(folder)
    assert 0.0 <= report["results"]["tim"]["seen"]["1.0"]["1"]["overall"] <= 1.0


GPU_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_geneval.sh"


def _run_gpu_script(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHON": sys.executable, "WORK": str(tmp_path / "work"), **env}
    return subprocess.run(
        ["bash", str(GPU_SCRIPT), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=600,
    )


def test_gpu_script_refuses_what_it_cannot_run(tmp_path: Path) -> None:
    missing = _run_gpu_script(tmp_path, DEVICE="cpu", GPU_DIR=str(tmp_path / "no-gpu-dir"))
    assert missing.returncode == 2 and "run 'bash benchmarks/gpu_geneval.sh prepare' first" in missing.stderr
    (tmp_path / "gpu" / "minilm").mkdir(parents=True)
    (tmp_path / "gpu" / "minilm" / "config.json").write_text("{}")
    no_wheel = _run_gpu_script(tmp_path, DEVICE="cpu", GPU_DIR=str(tmp_path / "gpu"))
    assert no_wheel.returncode == 2 and "omegaconf-*.whl is missing" in no_wheel.stderr
    (tmp_path / "gpu" / "whl").mkdir()
    (tmp_path / "gpu" / "whl" / "omegaconf-0-py3-none-any.whl").write_text("")
    no_method = _run_gpu_script(tmp_path, DEVICE="cpu", GPU_DIR=str(tmp_path / "gpu"), METHODS=",")
    assert no_method.returncode == 2 and "names no method" in no_method.stderr
    if not torch.cuda.is_available():
        no_gpu = _run_gpu_script(tmp_path)
        assert no_gpu.returncode == 2 and "no CUDA device" in no_gpu.stderr


@pytest.mark.slow
def test_gpu_script_runs_the_benchmark_end_to_end_on_the_cpu(tmp_path: Path) -> None:
    """DEVICE=cpu and toy settings: the script's flags reach `tim bench geneval` and the reports come back."""
    from helpers.text_models import tiny_bert

    tiny_bert(tmp_path / "gpu" / "minilm", hidden=32)
    (tmp_path / "gpu" / "whl").mkdir()
    (tmp_path / "gpu" / "whl" / "omegaconf-0-py3-none-any.whl").write_text("")  # omegaconf is installed here
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "geneval.md").write_text("an earlier call's report")  # must not come back
    overrides = " ".join(f"--model-override {k}={v}" for k, v in {**TINY_MODEL, "text_dim": 32}.items())
    result = _run_gpu_script(
        tmp_path,
        DEVICE="cpu",
        GPU_DIR=str(tmp_path / "gpu"),
        STEPS="2",
        BATCH="4",
        MINUTES="1",
        METHODS="tim,meanflow",
        PER_CATEGORY="1",
        HELDOUT="1",
        EXTRA=f"--num-images 16 --sampling-steps 1,2 {overrides}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "out" / "geneval.json").read_text())
    assert report["config"]["batch_size"] == 4 and report["config"]["time_limit"] == 1.0
    assert report["config"]["text_encoder"] == str(tmp_path / "gpu" / "minilm")
    assert {m: t["train_steps_reached"] for m, t in report["timings"].items()} == {"tim": 2, "meanflow": 2}
    assert (tmp_path / "out" / "geneval.png").stat().st_size > 0
    assert "Training steps reached (of 2): tim 2, meanflow 2" in (tmp_path / "out" / "geneval.md").read_text()


def test_a_time_limited_run_stops_early_and_is_still_scored(tmp_path: Path) -> None:
    """--time-limit: training stops with its checkpoint; the report says how far it got."""
    from tim.experiments.geneval import run_geneval

    config = _one_method_config(train_steps=100_000, time_limit=0.02)  # 1.2 s
    report = run_geneval(config, tmp_path, log=lambda _: None)
    reached = report["timings"]["tim"]["train_steps_reached"]
    assert 0 < reached < 100_000
    assert "Unequal or shortened training budgets" in (tmp_path / "geneval.md").read_text()
    assert 0.0 <= report["results"]["tim"]["seen"]["1.0"]["1"]["overall"] <= 1.0


def test_train_precision_reaches_the_run_config_and_is_checked() -> None:
    """--train-precision bf16 trains every method under bf16 autocast; fp32 leaves the config as before."""
    assert "precision" not in run_config_dict(GenevalConfig(), "tim")["train"]
    assert run_config_dict(GenevalConfig(train_precision="bf16"), "tim")["train"]["precision"] == "bf16"
    with pytest.raises(TimError, match="unknown train precision"):
        GenevalConfig(train_precision="fp8")
