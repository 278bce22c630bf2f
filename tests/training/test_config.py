"""Strict run configuration: presets, YAML files, overrides, and one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tim.errors import TimError
from tim.training import (
    RUN_PRESETS,
    RunConfig,
    config_from_dict,
    load_config,
    save_config,
)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_defaults_build_and_have_paper_optimizer() -> None:
    cfg = RunConfig()
    assert cfg.optim.betas == (0.9, 0.95) and cfg.optim.weight_decay == 0.01 and cfg.optim.eps == 1e-6
    assert cfg.optim.grad_clip == 1.0 and cfg.train.label_dropout == 0.1 and cfg.objective.name == "tim"


@pytest.mark.parametrize("name", sorted(RUN_PRESETS))
def test_yaml_files_mirror_python_presets(name: str) -> None:
    assert load_config(CONFIGS / f"{name}.yaml") == RUN_PRESETS[name]() == load_config(name)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path: Path) -> None:
    assert isinstance(load_config(path), RunConfig)


def test_resolved_json_round_trips(tmp_path: Path) -> None:
    cfg = load_config("digits", ["model.depth=2", "objective.diffusion_share=0.4", "sample.steps=1,3"])
    save_config(cfg, tmp_path / "config.json")
    assert load_config(tmp_path / "config.json") == cfg
    # Only the preset name and its overrides are written, not every TiMConfig field.
    preset_overrides = load_config("digits", []).model.overrides
    expected = {"preset": "TiM-digits", **preset_overrides, "depth": 2}
    assert json.loads((tmp_path / "config.json").read_text())["model"] == expected


def test_overrides_are_typed_by_the_dataclass_fields() -> None:
    cfg = load_config(
        None,
        [
            "optim.lr=3e-4",
            "sample.steps=1,2,8",
            "train.deterministic=true",
            "model.depth=2",
            "objective.derivative=jvp",
            "optim.betas=[0.8, 0.9]",
            "sample.steps=4",
            "path.P_mean=-0.5",
        ],
    )
    assert cfg.optim.lr == 3e-4 and isinstance(cfg.optim.lr, float)
    assert cfg.sample.steps == (4,) and cfg.train.deterministic is True
    assert cfg.model.overrides == {"depth": 2} and cfg.objective.options == {"derivative": "jvp"}
    assert cfg.optim.betas == (0.8, 0.9) and cfg.path.options == {"P_mean": -0.5}


def test_yaml_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    # PyYAML reads "1e-4" as a string (YAML 1.1); the loader accepts numeric text for float fields.
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-4\n")
    assert load_config(tmp_path / "c.yaml").optim.lr == 1e-4


def test_open_sections_accept_nested_form() -> None:
    cfg = config_from_dict({"model": {"preset": "TiM-digits", "overrides": {"depth": 3}}})
    assert cfg.model.overrides == {"depth": 3}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    return path


# (id, overrides or YAML text, fragments that the one-line message must contain)
BAD_CONFIGS: list[tuple[str, list[str] | str, tuple[str, ...]]] = [
    ("unknown-section", ["trian.steps=3"], ("unknown config key 'trian'", "did you mean 'train'")),
    ("unknown-key", ["optim.lrr=0.1"], ("optim.lrr", "did you mean 'optim.lr'")),
    ("unknown-model-field", ["model.depthh=3"], ("model.depthh", "did you mean 'model.depth'")),
    (
        "unknown-objective-option",
        ["objective.diffusion_ratio=0.5"],
        ("objective.diffusion_ratio", "valid keys"),
    ),
    ("negative-lr", ["optim.lr=-1"], ("optim.lr = -1", "greater than 0")),
    ("zero-lr", ["optim.lr=0"], ("optim.lr = 0", "greater than 0")),
    ("lr-text", ["optim.lr=fast"], ("optim.lr = 'fast'", "a number")),
    ("lr-nan", ["optim.lr=nan"], ("optim.lr", "not finite")),
    (
        "diffusion-share-above-1",
        ["objective.diffusion_share=1.5"],
        ("objective.diffusion_share = 1.5 is outside [0, 1]", "between 0 and 1"),
    ),
    (
        "consistency-share-negative",
        ["objective.consistency_share=-0.1"],
        ("objective.consistency_share", "between 0 and 1"),
    ),
    ("shares-sum-above-1", ["objective.diffusion_share=0.95"], ("exceeds 1", "at most 1")),
    ("epsilon-zero", ["objective.epsilon=0"], ("objective.epsilon = 0", "greater than 0")),
    ("epsilon-negative", ["objective.epsilon=-0.005"], ("objective.epsilon", "greater than 0")),
    ("derivative-unknown", ["objective.derivative=fd"], ("derivative", "dde")),
    ("objective-unknown", ["objective.name=sit"], ("objective.name = 'sit'", "flow_matching")),
    ("path-unknown", ["path.name=cosine"], ("path.name = 'cosine'", "linear")),
    ("path-std-negative", ["path.P_std=-1"], ("path.P_std", "greater than 0")),
    ("model-preset-unknown", ["model.preset=TiM-H/2"], ("model.preset = 'TiM-H/2'", "TiM-B/4")),
    ("model-bad-heads", ["model.hidden_size=130"], ("model:", "head dim")),
    ("steps-text", ["train.steps=abc"], ("train.steps = 'abc'", "an integer")),
    ("steps-float", ["train.steps=2.5"], ("train.steps = 2.5", "an integer")),
    ("steps-zero", ["train.steps=0"], ("train.steps = 0", "at least 1")),
    ("batch-bool", ["train.batch_size=true"], ("train.batch_size = True", "an integer")),
    ("batch-zero", ["train.batch_size=0"], ("train.batch_size = 0", "at least 1")),
    ("precision-fp16", ["train.precision=fp16"], ("train.precision = 'fp16'", "'bf16'")),
    (
        "label-dropout-1",
        ["train.label_dropout=1.0"],
        ("train.label_dropout = 1 is outside [0, 1)", "between 0 and 1"),
    ),
    ("ema-decay-1", ["ema.decay=1"], ("ema.decay = 1 is outside [0, 1)", "between 0 and 1")),
    ("weight-decay-negative", ["optim.weight_decay=-0.01"], ("optim.weight_decay", "at least 0")),
    ("betas-one-value", ["optim.betas=0.9"], ("optim.betas = 0.9", "a list of 2 values")),
    ("betas-text", ["optim.betas=a,b"], ("optim.betas[0] = 'a'", "a number")),
    ("accumulation-zero", ["optim.accumulation=0"], ("optim.accumulation = 0", "at least 1")),
    ("keep-last-zero", ["train.keep_last=0"], ("train.keep_last = 0", "at least 1")),
    ("sample-steps-empty", ["sample.steps=[]"], ("sample.steps = []", "sample.steps=1,2,4")),
    ("sample-steps-zero", ["sample.steps=0,1"], ("sample.steps = [0, 1]", ">= 1")),
    ("sample-steps-text", ["sample.steps=one"], ("sample.steps[0] = 'one'", "an integer")),
    ("cfg-negative", ["sample.guidance_scale=-1"], ("sample.guidance_scale", "at least 0")),
    ("interval-reversed", ["sample.guidance_interval=0.8,0.2"], ("not an interval", "low <= high")),
    ("data-unknown", ["data.name=mnist"], ("data.name='mnist'", "digits")),
    ("data-mistyped", ["data.hflip=maybe"], ("data.hflip = 'maybe'", "true or false")),
    ("override-without-equals", ["optim.lr"], ("'optim.lr' is not of the form", "optim.lr=3e-4")),
    (
        "override-into-scalar",
        ["optim.lr.x=1"],
        ("inside 'optim.lr', which is not a section", "override 'optim.lr' itself"),
    ),
    ("section-not-mapping", "optim: 3\n", ("optim = 3", "a mapping")),
    ("top-level-list", "- 1\n- 2\n", ("must be a mapping", "top level")),
    ("bad-yaml", "optim:\n  lr: [1\n", ("not valid YAML", "fix the YAML syntax")),
]


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_gets_one_line_error(case: tuple, tmp_path: Path) -> None:
    _, bad, fragments = case
    with pytest.raises(TimError) as info:
        if isinstance(bad, str):
            load_config(_write(tmp_path, bad))
        else:
            load_config("digits", bad)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment.lower() in message.lower(), f"{fragment!r} not in {message!r}"


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TimError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_bad_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text("{'train': 1}")
    with pytest.raises(TimError, match="not valid JSON"):
        load_config(tmp_path / "c.json")
