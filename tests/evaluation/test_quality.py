"""Quality benchmark: equal budgets, target checks on known tables, and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tim.errors import TimError
from tim.experiments.quality import (
    METHODS,
    QualityConfig,
    check_targets,
    run_config_dict,
    run_quality,
    summarise,
)


def test_every_method_gets_the_same_budget() -> None:
    config = QualityConfig()
    runs = {method: run_config_dict(config, method, seed=3) for method in METHODS}
    for method, data in runs.items():
        assert data.pop("objective") == {"name": method}
        assert data["train"]["seed"] == 3
    first = runs[METHODS[0]]
    assert all(data == first for data in runs.values())


def test_toy_runs_train_tim_with_plain_mse_and_keep_the_baselines_recipes() -> None:
    from tim.objective import build_objective

    config = QualityConfig(dataset="checkerboard")
    runs = {method: run_config_dict(config, method, seed=0) for method in METHODS}
    objectives = {method: build_objective(**runs[method]["objective"]) for method in METHODS}
    assert runs["tim"]["objective"] == {"name": "tim", "direction_loss": False, "adaptive": False}
    assert (objectives["tim"].direction_loss, objectives["tim"].adaptive) == (False, False)
    assert objectives["tim"].derivative == "dde"  # only the loss form changes, not the method
    assert (objectives["flow_matching"].direction_loss, objectives["flow_matching"].adaptive) == (
        False,
        False,
    )
    assert objectives["meanflow"].adaptive and objectives["meanflow"].adaptive_c == pytest.approx(1e-3)
    for data in runs.values():  # the rest of the budget is still identical
        data.pop("objective")
    assert all(data == runs["tim"] for data in runs.values())
    image_recipe = QualityConfig(
        dataset="checkerboard", objective_options={"direction_loss": True, "adaptive": True}
    )
    assert run_config_dict(image_recipe, "tim", 0)["objective"] == {
        "name": "tim",
        "direction_loss": True,
        "adaptive": True,
    }
    assert run_config_dict(QualityConfig(objective_options={"epsilon": 1e-3}), "tim", 0)["objective"] == {
        "name": "tim",
        "epsilon": 1e-3,
    }


def test_summarise_matches_numpy_and_keeps_non_finite_runs_visible() -> None:
    summary = summarise([1.0, 2.0, 4.0])
    assert summary["mean"] == pytest.approx(7 / 3)
    assert summary["std"] == pytest.approx(np.std([1.0, 2.0, 4.0], ddof=1))
    assert (summary["min"], summary["max"]) == (1.0, 4.0)
    assert summarise([None, 3.0])["values"] == [None, 3.0]
    assert summarise([None])["mean"] is None


def _table(curves: dict[str, list[float]], counts: tuple[int, ...]) -> dict:
    return {
        method: {
            "1.0": {str(s): {"frechet_distance": {"mean": v}} for s, v in zip(counts, values, strict=True)}
        }
        for method, values in curves.items()
    }


def test_targets_on_known_curves() -> None:
    counts = (1, 2, 4, 8, 16)
    config = QualityConfig(step_counts=counts)
    good = _table(
        {
            "tim": [5.0, 4.9, 4.8, 4.0, 3.9],
            "flow_matching": [90, 40, 20, 8, 4.5],
            "meanflow": [6.0, 6.0, 6.0, 6.0, 6.0],
        },
        counts,
    )
    results = check_targets(good, config)
    assert [r["met"] for r in results] == [True, True, True]
    assert results[0]["value"] == pytest.approx(5.0 / 4.5)
    assert results[1]["value"] == pytest.approx(4.9 / 5.0)
    assert results[2]["value"] == pytest.approx(4.0 / 6.0)  # worst ratio over steps >= 8
    bad = _table(
        {
            "tim": [6.0, 4.0, 4.3, 4.0, 3.9],
            "flow_matching": [90, 40, 20, 8, 4.5],
            "meanflow": [6.0, 6.0, 6.0, 3.0, 6.0],
        },
        counts,
    )
    met = [r["met"] for r in check_targets(bad, config)]
    assert met == [False, False, False]  # 6.0 > 1.25 * 4.5; 4.3 > 1.02 * 4.0; 4.0 > 3.0 at 8 steps


def test_bad_settings_are_user_errors() -> None:
    with pytest.raises(TimError, match="dataset"):
        QualityConfig(dataset="cifar")
    with pytest.raises(TimError, match="methods"):
        QualityConfig(methods=("tim", "ddpm"))


@pytest.mark.slow
def test_tiny_digits_run_writes_labelled_report_and_reuses_runs(tmp_path) -> None:
    model = {"preset": "TiM-digits", "hidden_size": 16, "depth": 1, "num_heads": 2, "modulation_rank": 8}
    config = QualityConfig(
        methods=("tim", "flow_matching"),
        seeds=(0,),
        train_steps=2,
        batch_size=8,
        step_counts=(1, 2),
        num_samples=20,
        model=model,
    )
    report = run_quality(config, tmp_path, log=lambda _: None)
    on_disk = json.loads((tmp_path / "quality.json").read_text())
    assert on_disk["results"].keys() == {"tim", "flow_matching"}
    cell = on_disk["results"]["tim"]["1.5"]["2"]["frechet_distance"]
    assert cell["mean"] > 0 and len(cell["values"]) == 1
    assert on_disk["labels"]["num_samples"] == 20 and "classifier" in on_disk["labels"]["feature_extractor"]
    assert (tmp_path / "quality.png").stat().st_size > 0 and "| tim | 1.0 |" in (
        tmp_path / "quality.md"
    ).read_text()
    assert report["per_seed"]["flow_matching"][0]["1.0"]["2"]["nfe"] == 2
    assert report["per_seed"]["flow_matching"][0]["1.5"]["2"]["nfe"] == 4  # a CFG pair costs 2
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir())
    again = run_quality(config, tmp_path, log=lambda _: None)  # same settings: no retraining
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == runs
    assert again["per_seed"] == report["per_seed"]


def test_monotone_target_is_1_02_and_judged_within_seed_noise() -> None:
    counts = (1, 2, 4)
    config = QualityConfig(step_counts=counts, seeds=(0, 1))
    table = _table({"tim": [5.0, 4.0, 4.2]}, counts)  # 4.2 / 4.0 = 1.05 > 1.02
    (monotone,) = [r for r in check_targets(table, config) if "non-increasing" in r["target"]]
    assert monotone["threshold"] == 1.02 and not monotone["met"]
    assert not monotone["met_within_noise"]  # no spread given: the excess 0.12 is real
    for cell in table["tim"]["1.0"].values():
        cell["frechet_distance"]["std"] = 0.1  # seed spread 0.1: s.e. of the difference 0.1
    (monotone,) = [r for r in check_targets(table, config) if "non-increasing" in r["target"]]
    assert not monotone["met"] and monotone["met_within_noise"]  # 0.12 <= 2 x 0.1


def test_budget_sweep_runs_each_budget_and_writes_the_combined_report(tmp_path, monkeypatch) -> None:
    from tim.experiments import quality

    counts = (1, 2)
    calls = []

    def fake_run_quality(config, out_dir, log, runs_dir, jobs):
        calls.append((config.train_steps, out_dir.name, runs_dir))
        value = 10.0 / config.train_steps
        results = _table({m: [value, value / 2] for m in config.methods}, counts)
        for by_scale in results.values():
            by_scale["1.5"] = by_scale["1.0"]
            for cell in by_scale["1.0"].values():
                cell["frechet_distance"]["std"] = 0.0
        return {
            "results": results,
            "targets": check_targets(results, config),
            "wall_seconds": 1.0,
            "labels": {},
            "config": {},
            "machine": {},
        }

    monkeypatch.setattr(quality, "run_quality", fake_run_quality)
    config = QualityConfig(step_counts=counts, methods=("tim", "flow_matching"))
    sweep = quality.run_budget_sweep(config, (10, 40), tmp_path, log=lambda _: None)
    assert [c[:2] for c in calls] == [(10, "train_steps_10"), (40, "train_steps_40")]
    assert {c[2] for c in calls} == {tmp_path / "runs"}  # trained runs shared across budgets
    on_disk = json.loads((tmp_path / "quality_budgets.json").read_text())
    assert on_disk["budgets"].keys() == sweep["budgets"].keys() == {"10", "40"}
    assert on_disk["budgets"]["40"]["results"]["tim"]["1.0"]["2"]["frechet_distance"]["mean"] == 0.125
    assert "| tim | 40 | 0.250 ± 0.000 | 0.125 ± 0.000 |" in (tmp_path / "quality_budgets.md").read_text()
    assert (tmp_path / "quality_budgets.png").stat().st_size > 0
    with pytest.raises(TimError, match="train_steps"):  # every budget is checked before any training
        quality.run_budget_sweep(config, (10, 1), tmp_path / "bad", log=lambda _: None)
    assert len(calls) == 2
