"""Run configuration: nested frozen dataclasses are the single source of truth.

A run is described by :class:`RunConfig`; YAML files under ``configs/`` and JSON files written
beside every checkpoint map onto it one to one through a strict loader:

* an unknown key, a wrong type or an out-of-range value raises :class:`tim.errors.TimError`
  naming the dotted key and the fix (``objective.diffusion_share = 1.5 is outside [0, 1]; set a
  value between 0 and 1``);
* command-line overrides are dotted ``key.sub=value`` strings, typed by the dataclass field;
* three sections are *open*: ``model`` (a preset name plus overrides of the preset's
  ``TiMConfig``/``MLPConfig`` fields), ``path`` (a path name plus its constructor options) and
  ``objective`` (an objective name plus its constructor options). Their extra keys are checked
  against those classes' own fields and signatures, so the library has one definition of each
  option, not a copy here.

Named run presets are Python objects (:data:`RUN_PRESETS`); ``configs/<name>.yaml`` mirrors them.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tim.data.config import DataConfig
from tim.errors import TimError
from tim.training.repa import RepaConfig

# Field metadata keys understood by the range check: value must be > gt, >= ge, < lt, <= le.
_BOUNDS = ("gt", "ge", "lt", "le")
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
# YAML anchors/aliases are allowed, but a document may expand to at most this many nodes: a
# config has a few hundred, an "alias bomb" of ten lines expands to billions (issue 13).
MAX_YAML_NODES = 100_000


def _bounded(default: Any, **bounds: float) -> Any:
    """A dataclass field with a default and range bounds checked by the loader."""
    return field(default=default, metadata=bounds)


@dataclass(frozen=True)
class ModelConfig:
    """Which network to train: a preset of ``tim.models`` plus overrides of its config fields."""

    preset: str = "TiM-digits"  # name known to tim.models.build_model
    overrides: dict[str, Any] = field(default_factory=dict)  # TiMConfig/MLPConfig field -> value


@dataclass(frozen=True)
class PathConfig:
    """The probability path x_t = alpha_t x + sigma_t z (tim.paths.build_path)."""

    name: str = "linear"  # "linear" | "trigflow" | "edm" | "vp" | "ve"
    options: dict[str, Any] = field(default_factory=dict)  # constructor options of the path


@dataclass(frozen=True)
class ObjectiveConfig:
    """The training loss (tim.objective.build_objective)."""

    name: Literal["tim", "flow_matching", "meanflow"] = "tim"
    options: dict[str, Any] = field(default_factory=dict)  # constructor options, e.g. diffusion_share


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a constant learning rate and optional linear warm-up (paper.md §5.3)."""

    lr: float = _bounded(1e-4, gt=0.0)  # learning rate after warm-up
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW (beta1, beta2), paper.md §5.3
    weight_decay: float = _bounded(0.01, ge=0.0)  # AdamW decoupled weight decay, paper.md §5.3
    eps: float = _bounded(1e-6, gt=0.0)  # AdamW denominator epsilon, paper.md §5.3
    warmup_steps: int = _bounded(0, ge=0)  # linear warm-up from 0 to lr over this many steps
    grad_clip: float = _bounded(1.0, ge=0.0)  # max global gradient norm; 0 disables clipping
    accumulation: int = _bounded(1, ge=1)  # micro-batches per optimizer step (per process)


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the weights (paper.md §5.3: 0.9999 every step)."""

    decay: float = _bounded(0.9999, ge=0.0, lt=1.0)  # target decay per optimizer step
    warmup: bool = True  # use min(decay, (1 + n) / (10 + n)) so short runs get a useful EMA


@dataclass(frozen=True)
class TrainConfig:
    """Length, batch, precision and bookkeeping of the run."""

    steps: int = _bounded(2000, ge=1)  # optimizer steps (ignored when images > 0)
    images: int = _bounded(0, ge=0)  # if > 0: train until this many images have been seen
    time_limit: float = _bounded(0.0, ge=0.0)  # if > 0: also stop (with a checkpoint) after this many minutes
    batch_size: int = _bounded(64, ge=1)  # global batch per optimizer step (all processes)
    seed: int = _bounded(0, ge=0, le=MAX_SEED)  # seeds model init, data order and every random draw
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast where supported
    label_dropout: float = _bounded(0.1, ge=0.0, lt=1.0)  # CFG condition dropout, paper.md §5.3
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    parallel: Literal["ddp", "fsdp"] = "ddp"  # wrapping when launched with torchrun
    checkpoint_every: int = _bounded(500, ge=1)  # optimizer steps between checkpoints
    keep_last: int = _bounded(3, ge=1)  # checkpoints kept on disk
    sample_every: int = _bounded(0, ge=0)  # steps between sample grids; 0 = only at the end
    log_every: int = _bounded(10, ge=1)  # steps between metric lines
    max_bad_steps: int = _bounded(20, ge=1)  # consecutive non-finite steps before stopping
    deterministic: bool = False  # torch.use_deterministic_algorithms for bit-exact reruns
    compile: bool = False  # torch.compile the network for the gradient and DDE passes (JVP stays eager)
    progress: bool = True  # tqdm progress bar on rank 0


@dataclass(frozen=True)
class SampleConfig:
    """How the periodic sample grids are drawn (tim.samplers.sample)."""

    steps: tuple[int, ...] = (1, 2, 4)  # one grid per step count
    num: int = _bounded(16, ge=0)  # samples per grid; 0 = no grids
    guidance_scale: float = _bounded(1.0, ge=0.0)  # CFG scale; 1 = no guidance
    guidance_interval: tuple[float, float] = (0.0, 1.0)  # CFG only for t in this interval
    stochasticity: float = _bounded(0.0, ge=0.0, le=1.0)  # rho of the stochastic transition
    seed: int = _bounded(0, ge=0, le=MAX_SEED)  # noise seed of the grids (fixed across the run)


@dataclass(frozen=True)
class LoggingConfig:
    """Where metrics go (always the run directory)."""

    jsonl: bool = True  # metrics.jsonl, one JSON object per logged step
    csv: bool = True  # metrics.csv with the same rows
    tensorboard: bool = False  # also write TensorBoard events (needs the tensorboard package)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run; saved as ``config.json`` beside every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    path: PathConfig = field(default_factory=PathConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ema: EMAConfig = field(default_factory=EMAConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    repa: RepaConfig = field(default_factory=RepaConfig)  # representation alignment (tim.training.repa)

    def to_dict(self) -> dict[str, Any]:
        """The config as plain JSON/YAML data (open sections flattened, as in the YAML files)."""
        return to_dict(self)


# ----------------------------------------------------------------------------------------------
# Open sections: the field that absorbs extra keys, the name field, and where their schema lives.

_OPEN_SECTIONS: dict[type, tuple[str, str]] = {
    ModelConfig: ("preset", "overrides"),
    PathConfig: ("name", "options"),
    ObjectiveConfig: ("name", "options"),
}


def _model_schema(preset: str) -> dict[str, Any]:
    """Field name -> type of the config dataclass behind a model preset."""
    from tim.models import MLP_PRESETS, TIM_PRESETS

    presets = {**TIM_PRESETS, **MLP_PRESETS}
    if preset not in presets:
        raise TimError(f"model.preset = {preset!r} is unknown", f"use one of {', '.join(sorted(presets))}")
    return typing.get_type_hints(type(presets[preset]))


def _path_schema(name: str) -> dict[str, Any]:
    """Constructor option -> type of a path class."""
    from tim.paths import PATHS

    if name not in PATHS:
        raise TimError(f"path.name = {name!r} is unknown", f"use one of {', '.join(sorted(PATHS))}")
    return _signature_schema(PATHS[name])


def _objective_schema(name: str) -> dict[str, Any]:
    """Field -> type of an objective dataclass (the path and code-only hooks excluded)."""
    from tim.objective import OBJECTIVES

    if name not in OBJECTIVES:
        raise TimError(f"objective.name = {name!r} is unknown", f"use one of {', '.join(sorted(OBJECTIVES))}")
    schema = typing.get_type_hints(OBJECTIVES[name])
    for code_only in ("path", "alignment"):  # a Path object / a Python callable: not config data
        schema.pop(code_only, None)
    return schema


# Ranges of open-section options (the classes themselves check choices and some ranges).
_UNIT = {"ge": 0.0, "le": 1.0}
_OPTION_BOUNDS: dict[str, dict[str, float]] = {
    "objective.diffusion_share": _UNIT,  # share of rows with r = t (paper.md §5.2)
    "objective.consistency_share": _UNIT,  # share of rows with r = 0 (paper.md §5.2)
    "objective.share_r_neq_t": _UNIT,  # MeanFlow's share of rows with r != t
    "objective.epsilon": {"gt": 0.0},  # DDE half-width (paper.md §4)
    "objective.weight_sigma_d": {"gt": 0.0},
    "objective.adaptive_c": {"gt": 0.0},
    "objective.adaptive_power": {"ge": 0.0},
    "objective.guidance_scale": {"ge": 0.0},
    "objective.alignment_weight": {"ge": 0.0},
    "path.P_std": {"gt": 0.0},
    "path.sigma_d": {"gt": 0.0},
    "path.t_max": {"gt": 0.0},
    "path.sigma_max": {"gt": 0.0},
    "path.sigma_min": {"gt": 0.0},
}

_SCHEMAS: dict[type, Callable[[str], dict[str, Any]]] = {
    ModelConfig: _model_schema,
    PathConfig: _path_schema,
    ObjectiveConfig: _objective_schema,
}


def _signature_schema(cls: type) -> dict[str, Any]:
    """Keyword -> annotation of ``cls.__init__`` (or of a dataclass's fields)."""
    hints = typing.get_type_hints(cls.__init__)
    params = inspect.signature(cls.__init__).parameters
    return {
        n: hints.get(n, Any)
        for n, p in params.items()
        if n != "self" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


# ----------------------------------------------------------------------------------------------
# Strict conversion of plain data into the dataclasses.


def _unknown_key(key: str, valid: list[str]) -> TimError:
    section, _, name = key.rpartition(".")
    close = difflib.get_close_matches(name, valid, n=1)
    # Suggest the full dotted key (train.steps, not steps): that is what the user has to type.
    hint = f"did you mean '{section + '.' if section else ''}{close[0]}'? " if close else ""
    return TimError(f"unknown config key '{key}'", f"{hint}valid keys here: {', '.join(sorted(valid))}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _wrong_type(key: str, value: Any, expected: str) -> TimError:
    return TimError(
        f"{key} = {value!r} has type {type(value).__name__}, expected {expected}",
        f"write {key} as {expected}",
    )


def _coerce(key: str, value: Any, tp: Any) -> Any:
    """Check ``value`` against annotation ``tp`` and return it in canonical form (tuples, floats)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise _wrong_type(key, value, f"a mapping of {tp.__name__} fields")
        return _build(tp, value, key)
    if origin is Literal:
        if value not in args:
            raise TimError(f"{key} = {value!r} is not allowed", f"use one of {', '.join(map(repr, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for candidate in inner:
            try:
                return _coerce(key, value, candidate)
            except TimError as error:
                errors.append(error)
        raise errors[0]
    if origin in (tuple, list):
        variadic = origin is list or (len(args) == 2 and args[1] is Ellipsis)
        if isinstance(value, str):
            value = [item.strip() for item in value.strip("[]()").split(",") if item.strip()]
        if variadic and isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]  # "sample.steps=4" means the one-element list [4]
        if not isinstance(value, (list, tuple)):
            raise _wrong_type(key, value, "a list" if variadic else f"a list of {len(args)} values")
        if not variadic and len(value) != len(args):
            raise TimError(
                f"{key} = {list(value)!r} has {len(value)} entries, expected {len(args)}",
                f"give exactly {len(args)} values",
            )
        item_types = [args[0] if args else Any] * len(value) if variadic else list(args)
        items = [_coerce(f"{key}[{i}]", v, t) for i, (v, t) in enumerate(zip(value, item_types))]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise _wrong_type(key, value, "a mapping")
        return dict(value)
    return _coerce_scalar(key, value, tp)


def _coerce_scalar(key: str, value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if not isinstance(value, bool):
            raise _wrong_type(key, value, "true or false")
        return value
    if tp is int:
        if isinstance(value, str):
            try:
                value = int(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong_type(key, value, "an integer")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string: accept numeric text
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong_type(key, value, "a number")
        if not math.isfinite(value):
            raise TimError(f"{key} = {value} is not finite", "set a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise _wrong_type(key, value, "a string")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise _wrong_type(key, value, _type_name(tp))
    return value


def _number(bound: float) -> str:
    """A bound as text: integers exactly (2**63 - 1, not 9.22337e+18), floats in short form."""
    return str(bound) if isinstance(bound, int) else f"{bound:g}"


def _check_bounds(key: str, value: Any, bounds: dict[str, float]) -> None:
    """Raise a TimError when ``value`` violates the field's range metadata."""
    if value is None or not any(b in bounds for b in _BOUNDS):
        return
    lo = (
        _number(bounds["gt"] if "gt" in bounds else bounds["ge"])
        if "gt" in bounds or "ge" in bounds
        else None
    )
    hi = (
        _number(bounds["lt"] if "lt" in bounds else bounds["le"])
        if "lt" in bounds or "le" in bounds
        else None
    )
    ok = (
        ("gt" not in bounds or value > bounds["gt"])
        and ("ge" not in bounds or value >= bounds["ge"])
        and ("lt" not in bounds or value < bounds["lt"])
        and ("le" not in bounds or value <= bounds["le"])
    )
    if ok:
        return
    shown = f"{value:g}" if isinstance(value, float) else value
    if lo is not None and hi is not None:
        left, right = "(" if "gt" in bounds else "[", ")" if "lt" in bounds else "]"
        raise TimError(
            f"{key} = {shown} is outside {left}{lo}, {hi}{right}", f"set a value between {lo} and {hi}"
        )
    if "gt" in bounds:
        raise TimError(f"{key} = {shown} must be > {lo}", f"set a value greater than {lo}")
    if "ge" in bounds:
        raise TimError(f"{key} = {shown} must be >= {lo}", f"set a value of at least {lo}")
    raise TimError(
        f"{key} = {shown} must be {'<' if 'lt' in bounds else '<='} {hi}", f"set a value below {hi}"
    )


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from ``data`` strictly; ``prefix`` is the dotted key for messages."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if cls in _OPEN_SECTIONS:
        return _build_open(cls, data, prefix, hints)
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            raise _unknown_key(key, list(fields))
        kwargs[name] = _coerce(key, value, hints[name])
        _check_bounds(key, kwargs[name], dict(fields[name].metadata))
    try:
        return cls(**kwargs)
    except TimError as error:  # a foreign dataclass's own validation: name the section
        raise (error if f"{prefix}." in str(error) else TimError(f"{prefix}: {error}")) from None


def _build_open(cls: type, data: dict[str, Any], prefix: str, hints: dict[str, Any]) -> Any:
    """Build an open section: its name field plus extra keys checked against the named class."""
    name_field, extra_field = _OPEN_SECTIONS[cls]
    name = _coerce(
        f"{prefix}.{name_field}", data.get(name_field, getattr(cls(), name_field)), hints[name_field]
    )
    extra = {k: v for k, v in data.items() if k != name_field}
    if isinstance(extra.get(extra_field), dict):  # JSON written by to_dict is flat; accept nesting too
        extra = extra.pop(extra_field) | extra
    schema = _SCHEMAS[cls](name)
    checked = {}
    for key, value in extra.items():
        dotted = f"{prefix}.{key}"
        if key not in schema:
            raise _unknown_key(dotted, list(schema) + [name_field])
        checked[key] = _coerce(dotted, value, schema[key])
        _check_bounds(dotted, checked[key], _OPTION_BOUNDS.get(dotted, {}))
    return cls(**{name_field: name, extra_field: checked})


def to_dict(config: Any) -> Any:
    """Plain data (dicts, lists, scalars) of a config dataclass; open sections are flattened."""
    if dataclasses.is_dataclass(config):
        if type(config) in _OPEN_SECTIONS:
            name_field, extra_field = _OPEN_SECTIONS[type(config)]
            return {name_field: getattr(config, name_field)} | to_dict(getattr(config, extra_field))
        return {f.name: to_dict(getattr(config, f.name)) for f in dataclasses.fields(config)}
    if isinstance(config, (list, tuple)):
        return [to_dict(v) for v in config]
    if isinstance(config, dict):
        return {k: to_dict(v) for k, v in config.items()}
    return config


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from plain data, strictly (unknown/mistyped keys are errors).

    Args:
        data: nested mapping with any subset of the sections; missing keys keep their defaults.

    Returns:
        The validated run configuration.
    """
    if not isinstance(data, dict):
        raise TimError(
            f"the config must be a mapping of sections, got {type(data).__name__}",
            "write sections like 'train:' and 'optim:' at the top level",
        )
    config = _build(RunConfig, data, "")
    _check_consistency(config)
    return config


def _check_consistency(config: RunConfig) -> None:
    """Rules that involve more than one field, and the named classes' own validation."""
    options = config.objective.options
    shares = options.get("diffusion_share", 0.5) + options.get("consistency_share", 0.1)
    if config.objective.name == "tim" and shares > 1.0:
        raise TimError(
            f"objective.diffusion_share + objective.consistency_share = {shares:g} exceeds 1",
            "lower one of them so that their sum is at most 1",
        )
    build_objective_from_config(config)
    model_config(config)
    if not config.sample.steps or any(s < 1 for s in config.sample.steps):
        raise TimError(
            f"sample.steps = {list(config.sample.steps)} must be a non-empty list of integers >= 1",
            "use e.g. sample.steps=1,2,4",
        )
    if not all(0.0 <= beta < 1.0 for beta in config.optim.betas):
        raise TimError(
            f"optim.betas = {list(config.optim.betas)} must both lie in [0, 1)",
            "use e.g. optim.betas=[0.9,0.95] (paper.md §5.3)",
        )
    low, high = config.sample.guidance_interval
    if not 0.0 <= low <= high <= 1.0:
        raise TimError(
            f"sample.guidance_interval = ({low}, {high}) is not an interval of fractions of t_max",
            "give two fractions with 0 <= low <= high <= 1, e.g. [0.0, 0.6] (paper.md §7)",
        )


# What may differ between a run's saved config and the config it is resumed with: how long it
# runs, how often it logs, checkpoints and draws sample grids, where and on how many processes it
# runs (optim.accumulation keeps the global batch when the world size changes; the loop warns that
# the data order then differs). Everything else (data, seed, optimizer, objective, path, model,
# global batch, precision, EMA) changes the trajectory.
RESUMABLE_KEYS = (
    "train.steps",
    "train.images",
    "train.time_limit",
    "train.checkpoint_every",
    "train.keep_last",
    "train.sample_every",
    "train.log_every",
    "train.max_bad_steps",
    "train.progress",
    "train.device",
    "train.parallel",
    "train.deterministic",
    "train.compile",
    "optim.accumulation",
    "logging",
    "sample",
)


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested plain config data -> ``{"section.key": value}`` (lists and scalars are leaves)."""
    if not isinstance(data, dict):
        return {prefix: data}
    flat: dict[str, Any] = {}
    for key, value in data.items():
        flat |= _flat(value, f"{prefix}.{key}" if prefix else str(key))
    return flat


def config_differences(saved: dict[str, Any], current: RunConfig) -> list[str]:
    """What differs between a run's saved config and ``current``, outside :data:`RESUMABLE_KEYS`.

    Both sides are normalised through :func:`config_from_dict` when possible, so a key that an
    older config omitted but whose default equals the current value is not a difference.

    Returns:
        Lines ``"key: saved -> current"`` in key order (empty when the run may resume).
    """
    try:
        saved = config_from_dict(saved).to_dict()
    except TimError:  # written by another version: compare the raw data
        pass
    old, new = _flat(saved), _flat(current.to_dict())
    allowed = lambda key: any(key == k or key.startswith(f"{k}.") for k in RESUMABLE_KEYS)  # noqa: E731
    missing = object()
    return [
        f"{key}: {old.get(key, 'unset')!r} -> {new.get(key, 'unset')!r}"
        for key in sorted(old.keys() | new.keys())
        if not allowed(key) and old.get(key, missing) != new.get(key, missing)
    ]


def _prefixed(section: str, build: Callable[[], Any]) -> Any:
    """Run a constructor; its TimError gets the config section as prefix."""
    try:
        return build()
    except TimError as error:
        raise TimError(f"{section}: {error}") from None


def model_config(config: RunConfig) -> Any:
    """The network's ``TiMConfig``/``MLPConfig``: the preset with ``model`` overrides applied."""
    from tim.models import MLP_PRESETS, TIM_PRESETS

    preset = {**TIM_PRESETS, **MLP_PRESETS}[config.model.preset]
    return _prefixed("model", lambda: dataclasses.replace(preset, **config.model.overrides))


def build_objective_from_config(config: RunConfig) -> Any:
    """The objective (with its path) that the ``path`` and ``objective`` sections describe."""
    from tim.objective import build_objective
    from tim.paths import build_path

    path = _prefixed("path", lambda: build_path(config.path.name, **config.path.options))
    return _prefixed(
        "objective", lambda: build_objective(config.objective.name, path, **config.objective.options)
    )


# ----------------------------------------------------------------------------------------------
# Overrides, files and presets.


def _merge(base: dict[str, Any], dotted: str, raw: str) -> None:
    """Set ``base[a][b]... = raw`` for ``dotted = "a.b..."`` (value typed later by the loader)."""
    parts = dotted.split(".")
    node = base
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            outer = ".".join(parts[: depth + 1])
            raise TimError(
                f"override '{dotted}' goes inside '{outer}', which is not a section",
                f"override '{outer}' itself, e.g. {outer}=VALUE",
            )
        node = child
    node[parts[-1]] = raw


def _parse_override_value(raw: str) -> Any:
    """Turn an override's text into data: YAML scalars/lists, except that plain words stay text."""
    import yaml

    try:
        value = safe_yaml(raw, "override")
    except yaml.YAMLError:
        return raw
    return raw if isinstance(value, (dict, type(None))) and raw.strip() not in ("null", "~") else value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply dotted ``key.sub=value`` overrides to plain config data (returns a new dict).

    Args:
        data: nested plain config data.
        overrides: strings like ``"optim.lr=3e-4"`` or ``"sample.steps=1,2,4"``.

    Returns:
        The merged data; values are typed when the config is built.
    """
    merged = json.loads(json.dumps(data))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key or any(not part for part in key.split(".")):
            raise TimError(
                f"override '{item}' is not of the form key.sub=value", "write overrides like optim.lr=3e-4"
            )
        _merge(merged, key, _parse_override_value(raw.strip()))
    return merged


def _unique_keys(pairs: list[tuple[str, Any]], path: Path) -> dict[str, Any]:
    """A JSON object's dict; a key given twice is an error (json would silently keep the last)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        if key in data:
            raise TimError(
                f"config file '{path}' has the key '{key}' twice in one object",
                "keep one of them (JSON would silently use the last)",
            )
        data[key] = value
    return data


def _read_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TimError(f"config file '{path}' does not exist", "pass the path of a YAML or JSON config file")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise TimError(
            f"config file '{path}' is not a text file", "pass a YAML or JSON config file"
        ) from None
    if path.suffix == ".json":
        try:
            return json.loads(text, object_pairs_hook=lambda pairs: _unique_keys(pairs, path))
        except json.JSONDecodeError as error:
            raise TimError(
                f"config file '{path}' is not valid JSON ({error.msg}, line {error.lineno})",
                "fix the JSON syntax",
            ) from None
        except RecursionError:
            raise TimError(
                f"config file '{path}' is nested too deeply", "write a flat config of sections and keys"
            ) from None
    import yaml

    try:
        data = safe_yaml(text, f"config file '{path}'")
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise TimError(f"config file '{path}' is not valid YAML{where}", "fix the YAML syntax") from None
    if data is None:
        raise TimError(
            f"config file '{path}' is empty (nothing but blank lines or comments)",
            "write at least one section, e.g. 'train: {steps: 1000}', or pass a preset such as --config digits",
        )
    return data


def safe_yaml(text: str, what: str) -> Any:
    """``yaml.safe_load`` that also refuses duplicate keys and documents that expand past a size limit.

    Anchors and aliases stay allowed (``base: &b {...}`` then ``<<: *b``), but the composed node
    graph is measured with aliases expanded before any Python object is built, so a ten-line
    "billion laughs" document fails in milliseconds instead of filling the memory.

    Args:
        text: the YAML document.
        what: names the source in errors (``"config file 'run.yaml'"``, ``"override"``).

    Returns:
        The plain data (None for an empty document).

    Raises:
        TimError: a duplicate key, a recursive alias, or more than :data:`MAX_YAML_NODES` nodes.
        yaml.YAMLError: a syntax error (the caller words it).
    """
    import yaml

    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise TimError(
                f"{what} is nested too deeply", "write a flat config of sections and keys"
            ) from None
        if node is None:
            return None
        _check_yaml_nodes(node, what)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _check_yaml_nodes(root: Any, what: str) -> None:
    """Count the nodes of a composed YAML graph with aliases expanded; find duplicate mapping keys."""
    import yaml

    sizes: dict[int, int] = {}
    in_progress: set[int] = set()

    def size(node: Any) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in in_progress:
            raise TimError(
                f"{what} has a recursive YAML alias (line {node.start_mark.line + 1})",
                "write the values out instead of referring to an enclosing node",
            )
        in_progress.add(id(node))
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if (key.tag, key.value) in seen:
                        raise TimError(
                            f"{what} has the key '{key.value}' twice in one mapping (lines "
                            f"{seen[key.tag, key.value] + 1} and {key.start_mark.line + 1})",
                            "keep one of them (YAML would silently use the last)",
                        )
                    seen[key.tag, key.value] = key.start_mark.line
                total += size(key) + size(value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(item) for item in node.value)
        in_progress.discard(id(node))
        sizes[id(node)] = total
        if total > MAX_YAML_NODES:
            raise TimError(
                f"{what} expands to more than {MAX_YAML_NODES} YAML nodes through its aliases (*name)",
                "write the config out without nested aliases; a run config has a few hundred entries",
            )
        return total

    try:
        size(root)
    except RecursionError:
        raise TimError(f"{what} is nested too deeply", "write a flat config of sections and keys") from None


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load a run configuration strictly from a YAML/JSON file or a named preset.

    Args:
        path: a ``.yaml``/``.yml``/``.json`` file, the name of a preset in :data:`RUN_PRESETS`
            (e.g. ``"digits"``), or None for the defaults.
        overrides: dotted ``key.sub=value`` strings applied on top, typed by the dataclass fields.

    Returns:
        The validated :class:`RunConfig`.

    Raises:
        TimError: unknown key, wrong type, out-of-range value, missing file or bad syntax.
    """
    if path is None:
        data: dict[str, Any] = {}
    elif isinstance(path, str) and path in RUN_PRESETS:
        data = RUN_PRESETS[path]().to_dict()
    else:
        data = _read_file(Path(path))
    return config_from_dict(apply_overrides(data, list(overrides or [])))


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as indented JSON (read back by :func:`load_config`), atomically."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    temporary.replace(path)  # a kill mid-write never leaves a truncated config.json


def _preset(**sections: dict[str, Any]) -> Callable[[], RunConfig]:
    return lambda: config_from_dict(sections)


# Named run presets; configs/<name>.yaml mirrors each one (tests/training/test_config.py checks it).
RUN_PRESETS: dict[str, Callable[[], RunConfig]] = {
    "digits": _preset(
        model={"preset": "TiM-digits", "patch_size": 4},  # 4 tokens per digit: ~3x cheaper than 2x2 patches
        data={"name": "digits"},
        optim={"lr": 1e-3, "warmup_steps": 100},
        ema={"decay": 0.999},
        train={"steps": 6000, "batch_size": 32, "time_limit": 7.0, "checkpoint_every": 1000, "log_every": 25},
        sample={"steps": [1, 2, 4, 8], "num": 64},
    ),
    "scenes_t2i": _preset(
        # Text-to-image on the synthetic scenes (issue 10): TiM-scenes on 32x32 RGB, captions
        # encoded once by the embedded all-MiniLM-L6-v2; the longest scene caption is 10 tokens.
        # 0.77 CPU-seconds per step at batch 64 on one thread (configs/scenes_t2i.yaml).
        model={"preset": "TiM-scenes"},
        data={"name": "scenes", "text_encoder": "minilm", "max_text_length": 16, "num_images": 4096},
        optim={"lr": 1e-3, "warmup_steps": 100},
        ema={"decay": 0.999},
        train={
            "steps": 4000,
            "batch_size": 64,
            "label_dropout": 0.1,
            "time_limit": 12.0,
            "checkpoint_every": 500,
            "log_every": 25,
        },
        sample={"steps": [1, 2, 4, 8], "num": 64, "guidance_scale": 2.0},
    ),
    "toy2d": _preset(
        model={"preset": "MLP-toy"},
        data={"name": "checkerboard"},
        # On 2-D vectors the per-sample cosine term and 1/(L_i + c) normalisation of the image
        # recipe hurt badly (scripts/toy_2d_comparison.py: 1-step energy distance 0.118 vs 0.0067).
        objective={"direction_loss": False, "adaptive": False},
        optim={"lr": 1e-3},
        ema={"decay": 0.999},
        train={"steps": 2000, "batch_size": 256, "label_dropout": 0.0, "checkpoint_every": 500},
        sample={"steps": [1, 2, 4, 8], "num": 1024},
    ),
}
