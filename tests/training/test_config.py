"""Strict run configuration: presets, YAML files, overrides, and one-line errors for bad input."""

from __future__ import annotations

import dataclasses
import inspect
import json
import typing
from pathlib import Path
from typing import Any

import pytest

from tim.errors import TimError
from tim.training import (
    RUN_PRESETS,
    RunConfig,
    config_from_dict,
    load_config,
    save_config,
)
from tim.training.config import (
    _MIRRORED,
    ModelConfig,
    ObjectiveConfig,
    PathConfig,
    SampleConfig,
    build_objective_from_config,
    config_differences,
    set_options,
)

PATH_POSITIVE = ("P_std", "sigma_d", "t_max", "sigma_max", "sigma_min")  # bounded in PathConfig
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
    # Only the preset name and the fields set on it are written, not every TiMConfig field.
    assert json.loads((tmp_path / "config.json").read_text())["model"] == {
        "preset": "TiM-digits",
        "patch_size": 4,
        "depth": 2,
    }


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
    assert cfg.model.depth == 2 and set_options(cfg.model) == {"depth": 2}
    assert cfg.objective.derivative == "jvp" and set_options(cfg.objective) == {"derivative": "jvp"}
    assert cfg.optim.betas == (0.8, 0.9) and set_options(cfg.path) == {"P_mean": -0.5}
    assert cfg.objective.diffusion_share is None  # unset: TransitionLoss's own default applies


def test_yaml_exponent_without_dot_is_a_float(tmp_path: Path) -> None:
    # PyYAML reads "1e-4" as a string (YAML 1.1); the loader accepts numeric text for float fields.
    (tmp_path / "c.yaml").write_text("optim:\n  lr: 1e-4\n")
    assert load_config(tmp_path / "c.yaml").optim.lr == 1e-4


def _source_options(sources: list[type], bounds: dict[str, dict[str, float]]) -> list[tuple[str, Any, dict]]:
    """(name, ``T | None``, range metadata) of every constructor option of ``sources``, first seen first."""
    options: dict[str, tuple[str, Any, dict]] = {}
    for source in sources:
        is_dataclass = dataclasses.is_dataclass(source)
        hints = typing.get_type_hints(source if is_dataclass else source.__init__)
        metadata = {f.name: dict(f.metadata) for f in dataclasses.fields(source)} if is_dataclass else {}
        for key in inspect.signature(source).parameters:
            if key not in ("path", "alignment"):  # Python objects, not config data
                options.setdefault(key, (key, hints[key] | None, bounds.get(key, metadata.get(key, {}))))
    return list(options.values())


@pytest.mark.parametrize("section", ["model", "path", "objective"])
def test_named_sections_list_exactly_the_options_of_their_sources(section: str) -> None:
    # The explicit ModelConfig/PathConfig/ObjectiveConfig fields must not drift from what they build.
    from tim.models import MLPConfig, TiMConfig
    from tim.objective import OBJECTIVES
    from tim.paths import PATHS

    schema, sources, bounds = {
        "model": (ModelConfig, [TiMConfig, MLPConfig], {}),
        "path": (PathConfig, list(PATHS.values()), {k: {"gt": 0.0} for k in PATH_POSITIVE}),
        "objective": (ObjectiveConfig, list(OBJECTIVES.values()), {}),
    }[section]
    head, *options = dataclasses.fields(schema)
    hints = typing.get_type_hints(schema)
    got = [(f.name, hints[f.name], dict(f.metadata)) for f in options]
    assert got == _source_options(sources, bounds)
    assert all(f.default is None for f in options)  # None: the named class's own default applies
    assert head.default == getattr(schema(), head.name) and head.default in _MIRRORED[section][1]


def test_sample_section_is_bounded_by_the_sampler_limits() -> None:
    from tim.samplers import MAX_GUIDANCE_SCALE, MAX_STEPS, MAX_STOCHASTICITY

    bounds = {f.name: dict(f.metadata) for f in dataclasses.fields(SampleConfig)}
    assert bounds["stochasticity"]["le"] == MAX_STOCHASTICITY
    load_config(None, [f"sample.guidance_scale={MAX_GUIDANCE_SCALE}"])
    with pytest.raises(TimError, match="sample.guidance_scale .* above the maximum of 30"):
        load_config(None, [f"sample.guidance_scale={MAX_GUIDANCE_SCALE * 2}"])
    with pytest.raises(TimError, match="above the maximum"):
        load_config(None, [f"sample.steps={MAX_STEPS + 1}"])


def test_mirrored_sections_have_every_field_of_what_they_build() -> None:
    built = build_objective_from_config(load_config(None, ["objective.name=flow_matching"]))
    assert built.diffusion_share == 1.0  # unset fields keep the named objective's own defaults


# config.json as older runs wrote it: options nested under objective.options / model.overrides.
OLD_CONFIG_JSON = """{
  "model": {"preset": "TiM-digits", "overrides": {"patch_size": 4, "depth": 2}},
  "path": {"name": "linear", "options": {"P_mean": -0.5}},
  "objective": {"name": "tim", "options": {"diffusion_share": 0.4, "guidance_scale": 1.5}},
  "train": {"steps": 10, "batch_size": 8}
}"""


def test_old_nested_layout_is_migrated(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(OLD_CONFIG_JSON)
    cfg = load_config(tmp_path / "config.json")
    assert (cfg.model.patch_size, cfg.model.depth, cfg.path.P_mean) == (4, 2, -0.5)
    assert (cfg.objective.diffusion_share, cfg.objective.guidance_scale, cfg.train.steps) == (0.4, 1.5, 10)
    assert config_differences(json.loads(OLD_CONFIG_JSON), cfg) == []
    assert "options" not in cfg.to_dict()["objective"] and "overrides" not in cfg.to_dict()["model"]


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
    ("betas-one-value", ["optim.betas=0.9"], ("optim.betas = [0.9]", "a list of 2 values")),
    ("betas-text", ["optim.betas=a,b"], ("optim.betas = ['a', 'b']", "each a number")),
    ("betas-three", ["optim.betas=0.8,0.9,0.99"], ("optim.betas", "a list of 2 values")),
    ("beta-one", ["optim.betas=0.9,1.0"], ("optim.betas = [0.9, 1.0] must both lie in [0, 1)", "0.95")),
    ("model-field-of-other-class", ["model.dim=3"], ("unknown config key 'model.dim'", "depth")),
    (
        "objective-field-of-other-class",
        ["objective.share_r_neq_t=0.5"],
        ("objective.share_r_neq_t", "valid keys"),
    ),
    ("accumulation-zero", ["optim.accumulation=0"], ("optim.accumulation = 0", "at least 1")),
    ("keep-last-zero", ["train.keep_last=0"], ("train.keep_last = 0", "at least 1")),
    ("sample-steps-empty", ["sample.steps=[]"], ("sample.steps = []", "sample.steps=1,2,4")),
    ("sample-steps-zero", ["sample.steps=0,1"], ("sample.steps = [0, 1]", ">= 1")),
    ("sample-steps-text", ["sample.steps=one"], ("sample.steps = ['one']", "each an integer")),
    (
        "sample-steps-huge",
        ["sample.steps=[1,100000000]"],
        ("sample.steps = [1, 100000000] has 100000000 steps, above the maximum of 1000", "[1, 1000]"),
    ),
    ("sample-steps-yaml-huge", "sample: {steps: [1001]}\n", ("above the maximum of 1000", "[1, 1000]")),
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


def test_sample_steps_share_the_sampling_cap() -> None:
    """A run config accepts exactly the step counts `tim sample --steps` accepts (one constant)."""
    from tim.cli.sample import MAX_STEPS as cli_cap
    from tim.samplers import MAX_STEPS

    assert cli_cap is MAX_STEPS
    assert load_config("digits", [f"sample.steps=1,{MAX_STEPS}"]).sample.steps == (1, MAX_STEPS)
    with pytest.raises(TimError, match=f"above the maximum of {MAX_STEPS}"):
        load_config("digits", [f"sample.steps={MAX_STEPS + 1}"])


def _valid_keys(overrides: list[str]) -> list[str]:
    with pytest.raises(TimError) as info:
        load_config("digits", overrides)
    return str(info.value).split("valid keys here: ")[1].split(", ")


def test_refused_key_lists_only_the_named_class_options() -> None:
    # The schema of a mirrored section is every objective's (every model config's) options combined;
    # the list of valid keys must be the chosen one's: TiM's here, without MeanFlow's share_r_neq_t.
    valid = _valid_keys(["objective.diffusion_ratio=0.5"])
    assert "diffusion_share" in valid and "share_r_neq_t" not in valid and "P_std" not in valid
    assert "share_r_neq_t" in _valid_keys(["objective.name=meanflow", "objective.share_r_neq=0.3"])
    valid = _valid_keys(["model.depthh=3"])  # TiM-digits: TiMConfig's fields, not MLPConfig's dim
    assert "depth" in valid and "patch_size" in valid and "dim" not in valid


def test_interpolations_resolve_against_the_whole_config(tmp_path: Path) -> None:
    cfg = load_config("digits", ["train.log_every=${train.checkpoint_every}"])  # a key the file sets
    assert cfg.train.log_every == cfg.train.checkpoint_every == load_config("digits").train.checkpoint_every
    (tmp_path / "c.yaml").write_text("train: {steps: '${nope.x}'}\n")
    with pytest.raises(TimError, match=r"^train.steps has an interpolation that does not resolve \(.*nope"):
        load_config(tmp_path / "c.yaml")
    with pytest.raises(TimError, match="does not resolve"):
        load_config(None, ["train.steps=${train.missing}"])


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(TimError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_bad_json_is_named(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_text('{"train": {"steps": 1,}')
    with pytest.raises(TimError, match=r"c.json' is not valid YAML or JSON \(line \d+\)"):
        load_config(tmp_path / "c.json")


def test_old_nested_layout_resumes(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from tim.training.state import check_resume_config

    old = json.loads(OLD_CONFIG_JSON)
    checkpoint = SimpleNamespace(config=old, path=tmp_path / "checkpoints" / "step_00000010")
    check_resume_config(checkpoint, config_from_dict(old))  # same run: no difference, no error
    with pytest.raises(TimError, match="was trained with model"):
        check_resume_config(checkpoint, load_config(None, ["model.patch_size=4", "model.depth=3"]))


def test_missing_omegaconf_is_one_line(monkeypatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "omegaconf", None)  # import omegaconf now raises ImportError
    with pytest.raises(
        TimError, match=r"omegaconf is not installed; pip install \"transition-models\[train\]\""
    ):
        load_config(None, ["train.steps=3"])
