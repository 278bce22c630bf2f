"""`tim bench`: flags map onto the benchmarks; bad input is a one-line usage error."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tim.cli.bench import parse_overrides
from tim.cli.main import main
from tim.errors import TimError

REPO = Path(__file__).resolve().parents[2]


def test_parse_overrides_types_values() -> None:
    assert parse_overrides(["hidden_size=64", "qk_norm=False", "attention_backend=math"]) == {
        "hidden_size": 64,
        "qk_norm": False,
        "attention_backend": "math",
    }
    with pytest.raises(TimError, match="KEY=VALUE"):
        parse_overrides(["hidden_size"])


def test_quality_flags_map_onto_the_config(tmp_path, monkeypatch, capsys) -> None:
    seen = {}

    def fake_run_quality(config, out, log, jobs):
        seen["config"], seen["out"], seen["jobs"] = config, out, jobs
        return {"results": {}, "per_seed": {"hidden": True}}

    monkeypatch.setattr("tim.experiments.quality.run_quality", fake_run_quality)
    status = main(
        [
            "bench",
            "quality",
            "--dataset",
            "moons",
            "--methods",
            "tim,flow_matching",
            "--seeds",
            "3,4",
            "--train-steps",
            "7",
            "--sampling-steps",
            "1,8",
            "--cfg",
            "2.0",
            "--model-override",
            "depth=2",
            "--objective-option",
            "direction_loss=true",
            "--objective-option",
            "epsilon=0.001",
            "--jobs",
            "3",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 0
    config = seen["config"]
    assert (config.dataset, config.methods, config.seeds, config.train_steps) == (
        "moons",
        ("tim", "flow_matching"),
        (3, 4),
        7,
    )
    assert config.step_counts == (1, 8) and config.guidance_scale == 2.0
    assert config.model == {"preset": "MLP-toy", "depth": 2} and seen["jobs"] == 3
    assert config.objective_options == {"direction_loss": True, "epsilon": 0.001}
    assert "per_seed" not in json.loads(capsys.readouterr().out)


def test_quality_defaults_are_past_the_drift_regime(tmp_path, monkeypatch) -> None:
    """By default the bench trains 2,000 steps and scores 1,000 samples (docs/benchmarks.md).

    At 500 steps every method's Frechet distance still rose after 4-8 sampling steps (TiM +22% from
    4 to 128), and 300 samples had a set-to-set noise as large as the effects; the CLI takes its
    defaults from the config, so the two cannot disagree.
    """
    from tim.experiments.quality import QualityConfig

    seen = []

    def fake_run_quality(config, out, log, jobs):
        seen.append(config)
        return {"results": {}}

    monkeypatch.setattr("tim.experiments.quality.run_quality", fake_run_quality)
    assert main(["bench", "quality", "--out", str(tmp_path)]) == 0
    assert (QualityConfig().train_steps, QualityConfig().num_samples) == (2000, 1000)
    assert (seen[0].train_steps, seen[0].num_samples) == (2000, 1000)


def test_bench_quality_on_a_toy_end_to_end(tmp_path, capsys) -> None:
    status = main(
        [
            "bench",
            "quality",
            "--dataset",
            "8gaussians",
            "--methods",
            "meanflow",
            "--seeds",
            "0",
            "--train-steps",
            "2",
            "--batch-size",
            "16",
            "--sampling-steps",
            "1,4",
            "--num-samples",
            "64",
            "--model-override",
            "hidden_size=16",
            "--model-override",
            "depth=1",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["metric"] == "energy_distance" and "per_seed" not in printed
    assert set(printed["results"]["meanflow"]["1.0"]) == {"1", "4"}
    assert json.loads((tmp_path / "quality.json").read_text())["config"]["model"]["hidden_size"] == 16


def test_bench_usage_errors_exit_2(tmp_path, capsys) -> None:
    assert main(["bench", "quality", "--dataset", "cifar", "--out", str(tmp_path)]) == 2
    assert "unknown quality dataset" in capsys.readouterr().err
    assert main(["bench", "cost", "--sampling-steps", "1,x"]) == 2


def test_gpu_script_is_valid_bash() -> None:
    result = subprocess.run(
        ["bash", "-n", str(REPO / "benchmarks" / "gpu.sh")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_a_list_of_train_steps_sweeps_the_budget(tmp_path, monkeypatch, capsys) -> None:
    seen = {}

    def fake_sweep(config, budgets, out, log, jobs):
        seen["config"], seen["budgets"] = config, budgets
        return {"budgets": {str(b): {} for b in budgets}}

    monkeypatch.setattr("tim.experiments.quality.run_budget_sweep", fake_sweep)
    args = ["bench", "quality", "--dataset", "moons", "--train-steps", "7,9", "--out", str(tmp_path)]
    assert main(args) == 0
    assert seen["budgets"] == (7, 9) and seen["config"].train_steps == 7
    assert json.loads((tmp_path / "quality_budgets.json").read_text())["budgets"].keys() == {"7", "9"}
    assert json.loads(capsys.readouterr().out)["budgets"].keys() == {"7", "9"}  # printed too
    assert main([*args[:4], "--train-steps", "7,x", "--out", str(tmp_path)]) == 2
    assert "comma-separated list of integers" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["quality", "cost", "geneval"])
def test_out_that_is_a_file_is_one_line_before_any_work(tmp_path, monkeypatch, capsys, command) -> None:
    def never(*args, **kwargs):
        raise AssertionError("the benchmark ran")

    for name in (
        "experiments.quality.run_quality",
        "evaluation.cost.run_cost",
        "experiments.geneval.run_geneval",
    ):
        monkeypatch.setattr(f"tim.{name}", never)
    (tmp_path / "report").write_text("not a folder")
    for out, fragment in (
        (tmp_path / "report", f"--out '{tmp_path / 'report'}' is a file, not a folder"),
        (tmp_path / "report" / "sub", f"'{tmp_path / 'report'}' in --out"),
    ):
        assert main(["bench", command, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and fragment in err and "pass a folder path" in err, err
        assert "Traceback" not in err
