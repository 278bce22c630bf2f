"""The training state that a checkpoint holds, and :func:`load_run` for sampling/evaluation.

What a checkpoint stores (everything needed for a bit-identical continuation on CPU):

* ``model``, ``ema``: full (unsharded) weights;
* ``optimizer``: AdamW moments and step counts, flattened into tensors + a JSON layout;
* ``rng``: the global torch RNG states at the time of the checkpoint, for the record. Training
  does not depend on them: the loop draws only from per-step generators derived from
  ``(seed, step, slot)``, and it re-seeds the global RNG (which dropout in a network uses) from
  ``(seed, step, rank)`` before every optimizer step, so nothing random has to be restored;
* ``state.json``: step, images seen, skipped/bad-step counters, EMA update count, the data
  source's position (``DataSource.state_dict``) and the world size it was written with.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tim.errors import TimError
from tim.training import distributed
from tim.training.checkpoint import (
    Checkpoint,
    UnusableCheckpoint,
    list_checkpoints,
    load_latest,
    read_checkpoint,
    save_checkpoint,
    verify_checkpoint,
)
from tim.training.config import (
    RunConfig,
    config_differences,
    config_from_dict,
    migrate_layout,
    model_config,
)
from tim.training.text import adopt_null_prompt


@dataclass
class TrainState:
    """Counters of a run.

    Attributes:
        step: optimizer steps attempted (skipped non-finite steps included: their data is consumed).
        images: training images seen (all processes).
        skipped: non-finite steps skipped so far.
        bad_streak: consecutive non-finite steps up to now.
        ema_updates: EMA updates done (drives the EMA warm-up).
    """

    step: int = 0
    images: int = 0
    skipped: int = 0
    bad_streak: int = 0
    ema_updates: int = 0


def _rng_state() -> dict[str, torch.Tensor]:
    state = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["torch_cuda"] = torch.cuda.get_rng_state()
    return state


def save_state(
    run_dir: Path,
    cfg: RunConfig,
    state: TrainState,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_state: dict[str, Any],
    env: distributed.DistEnv,
) -> Path | None:
    """Write a checkpoint (rank 0 writes; under FSDP every process helps gather the weights).

    Returns:
        The checkpoint directory on rank 0, None elsewhere.
    """
    parts = {
        "model": distributed.full_model_state(model),
        "ema": distributed.full_model_state(ema),
        "optimizer": distributed.full_optimizer_state(model, optimizer),
        "rng": _rng_state(),
    }
    extra = dataclasses.asdict(state) | {
        "data": data_state,
        "world_size": env.world_size,
        "micro_batch": cfg.train.batch_size // cfg.optim.accumulation,
    }
    extra.pop("step")
    return distributed.on_main(
        env,
        lambda: save_checkpoint(
            run_dir, state.step, parts, extra, cfg.to_dict(), keep_last=cfg.train.keep_last
        ),
    )


def _load_weights(model: nn.Module, weights: dict[str, torch.Tensor], what: str, where: Path) -> None:
    own = model.state_dict()  # under FSDP these are DTensors whose .shape is the full shape
    missing = sorted(set(own) - set(weights))
    unexpected = sorted(set(weights) - set(own))
    shapes = sorted(k for k in set(own) & set(weights) if tuple(own[k].shape) != tuple(weights[k].shape))
    if missing or unexpected or shapes:
        detail = (
            f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
            if unexpected
            else f"mis-shaped {shapes[:3]}"
        )
        raise TimError(
            f"the {what} weights in checkpoint '{where}' do not fit the configured model ({detail})",
            "resume with the model config the run was started with, or use a new run directory",
        )
    distributed.load_full_model_state(model, weights)


def check_resume_config(checkpoint: Checkpoint, cfg: RunConfig, *, allow_config_change: bool = False) -> None:
    """Refuse to resume with another config than the run's, except in the fields that may change.

    The model section must always match (its weights would not fit). Other differences outside
    :data:`tim.training.config.RESUMABLE_KEYS` are an error listing them, unless
    ``allow_config_change`` (``tim train --allow-config-change``) accepts them.
    """
    saved_model = migrate_layout(checkpoint.config).get("model")  # older runs: nested layout
    if saved_model != cfg.to_dict()["model"]:
        raise TimError(
            f"checkpoint '{checkpoint.path}' was trained with model {saved_model}, "
            f"not {cfg.to_dict()['model']}",
            "use the original model settings or a new run directory",
        )
    differences = [] if allow_config_change else config_differences(checkpoint.config, cfg)
    if differences:
        shown = ", ".join(differences[:6]) + (
            f" (+{len(differences) - 6} more)" if len(differences) > 6 else ""
        )
        raise TimError(
            f"the run in '{checkpoint.path.parent.parent}' was started with another config: {shown}",
            f"resume with the run's own settings (saved in '{checkpoint.path / 'config.json'}'), pass "
            "--allow-config-change (allow_config_change=True) to continue with the new ones, or use a new "
            "run directory",
        )


_ADAMW_KEYS = {"step", "exp_avg", "exp_avg_sq"}  # plus max_exp_avg_sq with amsgrad


def optimizer_state_problem(
    saved: Any, model: nn.Module, optimizer: torch.optim.Optimizer, ema_updates: int
) -> str | None:
    """Why a checkpoint's optimizer state does not fit the live optimizer, or None.

    ``torch`` loads an optimizer state whose parameter entries are missing without a word (the
    moments silently start again from zero), so the layout is checked first: the same parameter
    groups holding the same parameter names, a state entry only for a parameter of the model, with
    AdamW's keys and the parameter's shape, and, once an optimizer step was taken
    (``ema_updates`` > 0), at least one entry.
    """
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    shapes = {name: tuple(parameter.shape) for name, parameter in model.named_parameters()}
    if not isinstance(saved, dict) or not isinstance(saved.get("param_groups"), list):
        return "the optimizer state has no list of parameter groups"
    groups, state = saved["param_groups"], saved.get("state")
    if len(groups) != len(optimizer.param_groups):
        return f"the optimizer state has {len(groups)} parameter group(s), the optimizer {len(optimizer.param_groups)}"
    for number, (group, live) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
        wanted = [names.get(id(parameter)) for parameter in live["params"]]
        if not isinstance(group, dict) or group.get("params") != wanted:
            return f"parameter group {number} of the optimizer state does not list the model's parameters"
    if not isinstance(state, dict):
        return "the optimizer state has no per-parameter state object"
    keys = _ADAMW_KEYS | ({"max_exp_avg_sq"} if optimizer.defaults.get("amsgrad") else set())
    for name, entry in state.items():
        if name not in shapes:
            return f"the optimizer state has an entry for {str(name)[:60]!r}, which is not a model parameter"
        if not isinstance(entry, dict) or set(entry) != keys:
            return f"the optimizer state of {name} does not hold {', '.join(sorted(keys))}"
        for key in keys - {"step"}:
            if not isinstance(entry[key], torch.Tensor) or tuple(entry[key].shape) != shapes[name]:
                return f"the optimizer's {key} of {name} does not have the parameter's shape {shapes[name]}"
    if ema_updates > 0 and not state:
        return (
            f"the optimizer state is empty after {ema_updates} optimizer step(s) (the AdamW moments are lost)"
        )
    return None


def restore_state(
    checkpoint: Checkpoint,
    cfg: RunConfig,
    model: nn.Module,
    ema: nn.Module,
    optimizer: torch.optim.Optimizer,
    source: Any,
    *,
    allow_config_change: bool = False,
) -> TrainState:
    """Load a checkpoint into the live objects and return its counters (after :func:`check_resume_config`)."""
    check_resume_config(checkpoint, cfg, allow_config_change=allow_config_change)
    _load_weights(model, checkpoint.parts["model"], "model", checkpoint.path)
    _load_weights(ema, checkpoint.parts["ema"], "EMA", checkpoint.path)
    distributed.load_full_optimizer_state(model, optimizer, checkpoint.parts["optimizer"])
    micro_batch = cfg.train.batch_size // cfg.optim.accumulation
    if checkpoint.state.get("micro_batch", micro_batch) != micro_batch:
        # The data position counts global micro-batches: another size means other rows from here on.
        warnings.warn(
            f"checkpoint '{checkpoint.path}' was written with global micro-batches of "
            f"{checkpoint.state['micro_batch']} rows, this run uses {micro_batch}: training continues "
            "but does not replay the original data order",
            stacklevel=2,
        )
    source.load_state_dict(checkpoint.state["data"])
    counters = {f.name: int(checkpoint.state.get(f.name, 0)) for f in dataclasses.fields(TrainState)}
    return TrainState(**(counters | {"step": checkpoint.step}))


def _checkpoint_at(run_dir: str | Path, step: int, which: str) -> Any:
    """The verified checkpoint of ``step`` (its weights ``which`` only); one line when it is absent or bad."""
    path = next((p for p in list_checkpoints(run_dir) if p.name == f"step_{step:08d}"), None)
    problem = "it does not exist" if path is None else verify_checkpoint(path)
    if path is not None and problem is None:
        try:
            return read_checkpoint(path, (which,))
        except UnusableCheckpoint as error:
            problem = f"its contents cannot be read: {error}"
    raise TimError(f"checkpoint of step {step} in '{run_dir}' is unusable ({problem})", "pass another step")


def load_run(
    run_dir: str | Path, which: str = "ema", device: str | torch.device = "cpu", step: int | None = None
) -> tuple[nn.Module, RunConfig]:
    """Load the weights of a run's latest good checkpoint (or of ``step``) for sampling and evaluation.

    Args:
        run_dir: a directory written by :func:`tim.training.train`.
        which: ``"ema"`` (default; the averaged weights) or ``"model"`` (the raw weights).
        device: where to put the model.
        step: the checkpoint of this optimizer step instead of the latest (e.g. for a learning curve).

    Returns:
        ``(model, cfg)``: the network in eval mode and the run's resolved config.

    Raises:
        TimError: no usable checkpoint, or ``which`` is not "ema"/"model".
    """
    from tim.models import build_model

    if which not in ("ema", "model"):
        raise TimError(f"which = {which!r} is not a weight set", "use which='ema' or which='model'")
    checkpoint = (
        load_latest(run_dir, parts=(which,)) if step is None else _checkpoint_at(run_dir, step, which)
    )
    if checkpoint is None and list_checkpoints(run_dir):
        raise TimError(
            f"every checkpoint in '{run_dir}' is corrupt or partial (each one is named in a warning)",
            "restore a checkpoint folder from a backup or train again",
        )
    if checkpoint is None:
        raise TimError(
            f"'{run_dir}' has no usable checkpoint",
            "pass the directory of a training run (tim train --out DIR)",
        )
    cfg = config_from_dict(checkpoint.config)
    model = build_model(model_config(cfg))
    adopt_null_prompt(model, checkpoint.parts[which])  # text models: the saved null caption's length
    _load_weights(model, checkpoint.parts[which], which, checkpoint.path)
    return model.to(device).eval(), cfg
