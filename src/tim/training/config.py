"""Run configuration: OmegaConf structured configs over nested frozen dataclasses (docs/internals.md).

:class:`RunConfig` is the schema of a training run. ``tim.training.strict`` reads YAML/JSON files,
dotted overrides (``model.depth=4 sample.steps=1,2,4``) and a run's ``config.json`` onto it with
OmegaConf and one-line :class:`tim.errors.TimError` messages; this module adds the schema itself,
the rules across fields and the builders. ``model``, ``path`` and ``objective`` name a preset or
class and list every option of what they may name (``TiMConfig``/``MLPConfig``, the path
constructors, the objective dataclasses); an option left ``None`` means "its own default" (one
definition). The sampling knobs are bounded by the one table of limits in :mod:`tim.samplers`.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tim.data.config import DataConfig
from tim.errors import TimError
from tim.models import MLP_PRESETS, TIM_PRESETS
from tim.models.layers import AttentionBackend, RopePositions
from tim.models.tim import Conditioning, TimeCondition
from tim.objective import OBJECTIVES, Derivative, DerivativePrecision, TimeFunction, TimeTransform
from tim.paths import PATHS
from tim.samplers import (
    DEFAULT_GUIDANCE_INTERVAL,
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_STOCHASTICITY,
    MAX_GUIDANCE_SCALE,
    MAX_STEPS,
    MAX_STOCHASTICITY,
)
from tim.training import strict
from tim.training.checkpoint import write_json_atomic
from tim.training.repa import RepaConfig
from tim.training.strict import bounded, flat

MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer
_CODE_ONLY = ("path", "alignment")  # objective fields that are Python objects, not config data


def _init_fields(cls: type) -> dict[str, tuple[Any, Any]]:
    """Keyword -> (annotation, range metadata) of the constructor of ``cls`` (a dataclass or a class)."""
    is_dataclass = dataclasses.is_dataclass(cls)
    hints = typing.get_type_hints(cls if is_dataclass else cls.__init__)
    metadata = {f.name: f.metadata for f in dataclasses.fields(cls)} if is_dataclass else {}
    keys = [key for key in inspect.signature(cls).parameters if key not in _CODE_ONLY]
    return {key: (hints[key], metadata.get(key, {})) for key in keys}


# ----------------------------------------------------------------------------------------------
# The sections that name a class or preset (model, path, objective): the name field, then every
# option of what they may name, each ``None`` by default ("the named class's own default": one
# definition of every default). tests/training/test_config.py checks that the options are exactly
# those of the sources (names, order, types, bounds), so they cannot drift apart.


@dataclass(frozen=True)
class ModelConfig:
    """preset, then the fields of TiMConfig, MLPConfig (None: its default)."""

    preset: str = "TiM-digits"  # a name of tim.models.TIM_PRESETS or MLP_PRESETS
    # TiMConfig (tim.models.tim; docs/architecture.md)
    in_channels: int | None = None  # channels of the (latent) image
    input_size: int | None = None  # side of the (latent) image in pixels
    patch_size: int | None = None  # side of a patch token
    hidden_size: int | None = None  # token width (MLPConfig: hidden width)
    depth: int | None = None  # transformer blocks (MLPConfig: hidden layers)
    num_heads: int | None = None  # attention heads
    mlp_ratio: float | None = None  # feed-forward width / hidden_size
    modulation_rank: int | None = None  # rank of the low-rank adaLN modulation
    conditioning: Conditioning | None = None  # "class", "text" or "none"
    num_classes: int | None = None  # class labels (the null class is extra)
    text_dim: int | None = None  # width of the text encoder's features
    mask_context: bool | None = None  # mask padded text tokens in cross-attention
    pooled_text: bool | None = None  # add the pooled text feature to the time embedding
    decoupled_time_embedding: bool | None = None  # separate embeddings of t and of the interval
    interval_attention: bool | None = None  # interval-aware attention (paper Sec. 3.3)
    time_condition: TimeCondition | None = None  # which times the network is conditioned on
    qk_norm: bool | None = None  # per-head LayerNorm on q and k
    rope_positions: RopePositions | None = None  # "grid" or the released code's "wrapped"
    rope_theta: float | None = None  # RoPE base
    rope_scale: float | None = None  # multiplies RoPE positions
    encoder_depth: int | None = None  # alignment features after this many blocks
    z_dim: int | None = None  # projector output width; 0 = no projector
    projector_dim: int | None = None  # projector hidden width
    attention_backend: AttentionBackend | None = None  # "auto", "sdpa", "flash" or "math"
    checkpointing: bool | None = None  # activation checkpointing per block
    # MLPConfig only (tim.models.mlp)
    dim: int | None = None  # data dimension of the point-cloud MLP
    zero_init_output: bool | None = None  # zero-initialise the output layer


@dataclass(frozen=True)
class PathConfig:
    """name, then the fields of LinearPath, TrigFlowPath, EDMPath, VPPath, VEPath (None: its default)."""

    name: str = "linear"  # a name of tim.paths.PATHS
    P_mean: float | None = None  # mean of the log-normal training-time distribution
    P_std: float | None = bounded(None, gt=0.0)  # its standard deviation
    sigma_d: float | None = bounded(None, gt=0.0)  # data standard deviation (TrigFlow, EDM)
    t_max: float | None = bounded(None, gt=0.0)  # largest time (TrigFlow, EDM)
    t_min: float | None = None  # smallest time (EDM, VP)
    beta_min: float | None = None  # VP noise schedule: beta at t = 0
    beta_d: float | None = None  # VP noise schedule: beta(1) - beta(0)
    T: int | None = None  # VP: discrete steps of the schedule
    sigma_min: float | None = bounded(None, gt=0.0)  # VE: smallest noise level
    sigma_max: float | None = bounded(None, gt=0.0)  # VE: largest noise level


@dataclass(frozen=True)
class ObjectiveConfig:
    """name, then the fields of TransitionLoss, FlowMatchingLoss, MeanFlowLoss (None: its default)."""

    name: str = "tim"  # a name of tim.objective.OBJECTIVES
    diffusion_share: float | None = bounded(None, ge=0.0, le=1.0)  # rows trained at r = 0
    consistency_share: float | None = bounded(None, ge=0.0, le=1.0)  # rows trained at r = t
    derivative: Derivative | None = None  # "dde" (paper Sec. 3.3) or "jvp"
    epsilon: float | None = bounded(None, gt=0.0)  # DDE finite-difference step
    derivative_precision: DerivativePrecision | None = None  # precision of the DDE passes (None: auto)
    time_transform: TimeTransform | None = None  # transform of the time weighting
    time_function: TimeFunction | None = None  # loss weight as a function of time
    weight_sigma_d: float | None = bounded(None, gt=0.0)  # sigma_d of the time weighting
    weight_interval: bool | None = None  # weight by the interval t - r as well
    adaptive: bool | None = None  # adaptive loss weighting
    adaptive_c: float | None = bounded(None, gt=0.0)  # constant of the adaptive weighting
    adaptive_power: float | None = bounded(None, ge=0.0)  # power of the adaptive weighting
    direction_loss: bool | None = None  # add the direction (cosine) term
    guidance_scale: float | None = bounded(None, ge=0.0)  # model-guidance scale of the target
    guidance_window: tuple[float, float] | None = None  # times at which the target is guided
    guidance_w_gt: float | None = None  # weight of the data target in the guided target
    alignment_weight: float | None = bounded(None, ge=0.0)  # weight of representation alignment
    shift_base: tuple[int, int] | None = None  # (H0, W0) of the resolution time shift
    # MeanFlowLoss only
    share_r_neq_t: float | None = bounded(None, ge=0.0, le=1.0)  # rows with r != t
    P_mean: float | None = None  # mean of the log-normal time distribution
    P_std: float | None = None  # its standard deviation


# Section -> (its schema, what its name field chooses from, the key that older runs' config.json nested its options under).
_MIRRORED: dict[str, tuple[type, dict[str, Any], str]] = {
    "model": (ModelConfig, {**TIM_PRESETS, **MLP_PRESETS}, "overrides"),
    "path": (PathConfig, dict(PATHS), "options"),
    "objective": (ObjectiveConfig, dict(OBJECTIVES), "options"),
}


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with a constant learning rate and optional linear warm-up (published TiM configs, github.com/WZDTHU/TiM)."""

    lr: float = bounded(1e-4, gt=0.0)  # learning rate after warm-up
    betas: tuple[float, float] = (0.9, 0.95)  # AdamW (beta1, beta2), published TiM configs
    weight_decay: float = bounded(0.01, ge=0.0)  # AdamW decoupled weight decay, published TiM configs
    eps: float = bounded(1e-6, gt=0.0)  # AdamW denominator epsilon, published TiM configs
    warmup_steps: int = bounded(0, ge=0)  # linear warm-up from 0 to lr over this many steps
    grad_clip: float = bounded(1.0, ge=0.0)  # max global gradient norm; 0 disables clipping
    accumulation: int = bounded(1, ge=1)  # micro-batches per optimizer step (per process)


@dataclass(frozen=True)
class EMAConfig:
    """Exponential moving average of the weights (published TiM: 0.9999 every step)."""

    decay: float = bounded(0.9999, ge=0.0, lt=1.0)  # target decay per optimizer step
    warmup: bool = True  # use min(decay, (1 + n) / (10 + n)) so short runs get a useful EMA


@dataclass(frozen=True)
class TrainConfig:
    """Length, batch, precision and bookkeeping of the run."""

    steps: int = bounded(2000, ge=1)  # optimizer steps (ignored when images > 0)
    images: int = bounded(0, ge=0)  # if > 0: train until this many images have been seen
    time_limit: float = bounded(0.0, ge=0.0)  # if > 0: also stop (with a checkpoint) after this many minutes
    batch_size: int = bounded(64, ge=1)  # global batch per optimizer step (all processes)
    seed: int = bounded(0, ge=0, le=MAX_SEED)  # seeds model init, data order and every random draw
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16 = autocast where supported
    tf32: bool = True  # CUDA only: TF32 float32 matmuls and convolutions (as the published configs)
    label_dropout: float = bounded(0.1, ge=0.0, lt=1.0)  # CFG condition dropout, published TiM configs
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto = cuda when available
    parallel: Literal["ddp", "fsdp"] = "ddp"  # wrapping when launched with torchrun
    fsdp_param_dtype: Literal["fp32", "bf16"] = "fp32"  # FSDP2: dtype of the gathered weights (bf16 = faster)
    checkpoint_every: int = bounded(500, ge=1)  # optimizer steps between checkpoints
    keep_last: int = bounded(3, ge=1)  # checkpoints kept on disk
    sample_every: int = bounded(0, ge=0)  # steps between sample grids; 0 = only at the end
    log_every: int = bounded(10, ge=1)  # steps between metric lines
    max_bad_steps: int = bounded(20, ge=1)  # consecutive non-finite steps before stopping
    deterministic: bool = False  # torch.use_deterministic_algorithms for bit-exact reruns
    compile: bool = False  # torch.compile the network for the gradient and DDE passes (JVP stays eager)
    progress: bool = True  # tqdm progress bar on rank 0


@dataclass(frozen=True)
class SampleConfig:
    """How the periodic sample grids are drawn (tim.samplers.sample)."""

    steps: tuple[int, ...] = (1, 2, 4)  # one grid per step count, each in [1, tim.samplers.MAX_STEPS]
    num: int = bounded(16, ge=0)  # samples per grid; 0 = no grids
    # The defaults of the three knobs are THE sampler defaults of tim.samplers.
    guidance_scale: float = bounded(DEFAULT_GUIDANCE_SCALE, ge=0.0)  # in [0, MAX_GUIDANCE_SCALE]; 1 = none
    guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL  # CFG only for t in it (of t_max)
    stochasticity: float = bounded(DEFAULT_STOCHASTICITY, ge=0.0, le=MAX_STOCHASTICITY)  # rho (stochastic)
    seed: int = bounded(0, ge=0, le=MAX_SEED)  # noise seed of the grids (fixed across the run)


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
        """The config as plain JSON/YAML data; mirrored sections list only the options that are set."""
        data = json.loads(json.dumps(dataclasses.asdict(self)))
        return data | {name: {k: v for k, v in data[name].items() if v is not None} for name in _MIRRORED}


def set_options(section: Any) -> dict[str, Any]:
    """The options set in a mirrored section (``model``, ``path``, ``objective``), its name excluded."""
    name = dataclasses.fields(section)[0].name
    return {k: v for k, v in dataclasses.asdict(section).items() if v is not None and k != name}


# ----------------------------------------------------------------------------------------------
# Plain data -> RunConfig (OmegaConf merges and types; errors are reworded with the key).


def migrate_layout(data: dict[str, Any]) -> dict[str, Any]:
    """Config data with the old ``model.overrides`` / ``objective.options`` / ``path.options`` lifted.

    Before the typed configuration the mirrored sections kept their options in a nested dict; config.json files of
    older runs may hold them so: their keys are lifted into the section (flat keys win).
    """
    data = dict(data)
    for section, (_, _, legacy) in _MIRRORED.items():
        old = data.get(section)
        if isinstance(old, dict) and isinstance(old.get(legacy), dict):
            data[section] = old[legacy] | {k: v for k, v in old.items() if k != legacy}
    return data


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Build a :class:`RunConfig` from plain data, strictly (unknown/mistyped keys are errors).

    Args:
        data: nested mapping with any subset of the sections; missing keys keep their defaults.
            The older nested layout of ``model``/``path``/``objective`` is migrated.

    Returns:
        The validated run configuration.
    """
    if not isinstance(data, dict):
        raise TimError(
            f"the config must be a mapping of sections, got {type(data).__name__}",
            "write sections like 'train:' and 'optim:' at the top level",
        )
    data = migrate_layout(data)
    for section, (mirror, _, _) in _MIRRORED.items():  # keys the named class lacks, before OmegaConf
        name = dataclasses.fields(mirror)[0]
        if isinstance(part := data.get(section), dict):
            _chosen(section, part.get(name.name, name.default), part)
    config = strict.merge(RunConfig, data)
    strict.check_values(config)
    _check_consistency(config)
    return config


def _check_consistency(config: RunConfig) -> None:
    """Rules that involve more than one field, and the named classes' own validation."""
    objective = build_objective_from_config(config)
    shares = objective.diffusion_share + objective.consistency_share
    if config.objective.name == "tim" and shares > 1.0:
        raise TimError(
            f"objective.diffusion_share + objective.consistency_share = {shares:g} exceeds 1",
            "lower one of them so that their sum is at most 1",
        )
    model_config(config)
    if not config.sample.steps or any(s < 1 for s in config.sample.steps):
        raise TimError(
            f"sample.steps = {list(config.sample.steps)} must be a non-empty list of integers >= 1",
            "use e.g. sample.steps=1,2,4",
        )
    if max(config.sample.steps) > MAX_STEPS:
        raise TimError(
            f"sample.steps = {list(config.sample.steps)} has {max(config.sample.steps)} steps, above the "
            f"maximum of {MAX_STEPS}",
            f"use step counts in [1, {MAX_STEPS}] (quality stops improving long before)",
        )
    if config.sample.guidance_scale > MAX_GUIDANCE_SCALE:
        raise TimError(
            f"sample.guidance_scale = {config.sample.guidance_scale:g} is above the maximum of {MAX_GUIDANCE_SCALE:g}",
            f"use a guidance scale in [0, {MAX_GUIDANCE_SCALE:g}] (1 = no guidance)",
        )
    if not all(0.0 <= beta < 1.0 for beta in config.optim.betas):
        raise TimError(
            f"optim.betas = {list(config.optim.betas)} must both lie in [0, 1)",
            "use e.g. optim.betas=[0.9,0.95] (the published TiM)",
        )
    low, high = config.sample.guidance_interval
    if not 0.0 <= low <= high <= 1.0:
        raise TimError(
            f"sample.guidance_interval = ({low}, {high}) is not an interval of fractions of t_max",
            "give two fractions with 0 <= low <= high <= 1, e.g. [0.0, 0.6] (the paper's 250-step setting)",
        )


def _chosen(section: str, name: Any, keys: Any) -> Any:
    """The class or preset that ``section`` names; an unknown name, or a key it lacks, is a TimError."""
    mirror, choices, _ = _MIRRORED[section]
    name_field = dataclasses.fields(mirror)[0].name
    if not isinstance(name, str) or name not in choices:
        raise TimError(
            f"{section}.{name_field} = {name!r} is unknown",
            f"use one of {', '.join(map(repr, sorted(choices)))}",
        )
    chosen = choices[name]
    valid = [*_init_fields(chosen if isinstance(chosen, type) else type(chosen)), name_field]
    for key in keys:
        if key not in valid:
            raise strict.unknown_key(f"{section}.{key}", valid)
    return chosen


def _build(section: str, config: RunConfig, make: Callable[[Any, dict[str, Any]], Any]) -> Any:
    """``make(the named class or preset, the options set)``; its TimError gets the section as prefix."""
    part = getattr(config, section)
    options = set_options(part)
    chosen = _chosen(section, getattr(part, dataclasses.fields(part)[0].name), options)
    try:
        return make(chosen, options)
    except TimError as error:
        raise TimError(f"{section}: {error}") from None


def model_config(config: RunConfig) -> Any:
    """The network's ``TiMConfig``/``MLPConfig``: the preset with the ``model`` options that are set."""
    return _build("model", config, lambda preset, options: dataclasses.replace(preset, **options))


def build_path_from_config(config: RunConfig) -> Any:
    """The path that the ``path`` section describes."""
    return _build("path", config, lambda path_class, options: path_class(**options))


def build_objective_from_config(config: RunConfig) -> Any:
    """The objective (with its path) that the ``path`` and ``objective`` sections describe."""
    path = build_path_from_config(config)
    return _build("objective", config, lambda objective_class, options: objective_class(path=path, **options))


# What may differ between a run's saved config and the config it is resumed with: how long it
# runs, how often it logs, checkpoints and draws sample grids, where and on how many processes it
# runs (optim.accumulation keeps the global batch when the world size changes; the loop warns that
# the data order then differs). Everything else (data, seed, optimizer, objective, path, model,
# global batch, precision, EMA) changes the trajectory.
RESUMABLE_KEYS = tuple(
    "train.steps train.images train.time_limit train.checkpoint_every train.keep_last train.sample_every "
    "train.log_every train.max_bad_steps train.progress train.device train.parallel train.deterministic "
    "train.compile train.tf32 optim.accumulation logging sample".split()
)


def config_differences(saved: dict[str, Any], current: RunConfig) -> list[str]:
    """What differs between a run's saved config and ``current``, outside :data:`RESUMABLE_KEYS`.

    Both sides are normalised through :func:`config_from_dict` when possible, so a key that an
    older config omitted but whose default equals the current value is not a difference.

    Returns:
        Lines ``"key: saved -> current"`` in key order (empty when the run may resume).
    """
    try:
        saved = config_from_dict(saved).to_dict()
    except TimError:  # written by another version: compare the raw (migrated) data
        saved = migrate_layout(saved)
    old, new, missing = flat(saved), flat(current.to_dict()), object()
    resumable = tuple(f"{key}." for key in RESUMABLE_KEYS)  # the key or a key inside it
    return [
        f"{key}: {old.get(key, 'unset')!r} -> {new.get(key, 'unset')!r}"
        for key in sorted(old.keys() | new.keys())
        if not f"{key}.".startswith(resumable) and old.get(key, missing) != new.get(key, missing)
    ]


# ----------------------------------------------------------------------------------------------
# Overrides, files and presets.


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Plain run-config ``data`` with dotted overrides applied (:func:`tim.training.strict.apply_overrides`)."""
    return strict.apply_overrides(RunConfig, data, overrides)


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
    data = (
        {}
        if path is None
        else strict.read_file(PRESETS / f"{path}.yaml" if path in RUN_PRESETS else Path(path))
    )
    # config_from_dict names a file that is not a mapping
    return config_from_dict(apply_overrides(data, list(overrides or [])) if isinstance(data, dict) else data)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config as indented JSON (read back by :func:`load_config`), atomically."""
    write_json_atomic(Path(path), config.to_dict())  # a kill mid-write never leaves a truncated file


# Named run presets: the YAML files in tim/training/presets/ (configs/<name>.yaml link to them).
PRESETS = Path(__file__).with_name("presets")
RUN_PRESETS: dict[str, Callable[[], RunConfig]] = {
    path.stem: functools.partial(load_config, path) for path in sorted(PRESETS.glob("*.yaml"))
}
