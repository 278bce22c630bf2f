"""`tim bench geneval` end to end at toy size: every method trained alike, scored per split, CFG and step count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tim.errors import TimError
from tim.evaluation.geneval_bench import GenevalConfig, check_targets, eval_specs, run_config_dict

TINY_MODEL = {
    "preset": "TiM-scenes",
    "patch_size": 8,
    "hidden_size": 32,
    "depth": 1,
    "num_heads": 2,
    "modulation_rank": 8,
    "encoder_depth": 1,
}


def test_tiny_benchmark_writes_tables(tmp_path: Path) -> None:
    from tim.evaluation.geneval_bench import run_geneval

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
