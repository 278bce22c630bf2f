"""The run folder: checked, locked, an old run set aside on restart, the checkpoint to resume from (docs/reliability.md).

:func:`prepare_run_dir` is the first thing :func:`tim.training.train` does on the main process:
it checks the folder (:func:`tim.training.checkpoint.check_output_dir`), takes its lock
(:mod:`tim.training.lock`) before anything in it is read or changed, moves an old run's outputs
aside on ``--restart`` (renames only: nothing is deleted) and removes a killed run's half-written
checkpoint temporaries (only the lock holder may). :func:`latest_checkpoint` chooses the
checkpoint a run resumes from; a run whose checkpoints are all unusable is an error, never a
silent restart.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tim.data.sources import DataSource
from tim.errors import TimError, first_line
from tim.training import distributed
from tim.training.checkpoint import check_output_dir, list_checkpoints, load_latest, remove_stale_temporaries
from tim.training.config import RunConfig, migrate_layout
from tim.training.lock import RunLock
from tim.training.state import optimizer_state_problem


def prepare_run_dir(run_dir: Path, needed_bytes: int, restart: bool, keep_last: int) -> RunLock:
    """Check the run directory, take its lock, set an old run aside on restart, clear a killed run's leftovers.

    Returns:
        The held lock (released when training ends).
    """
    check_output_dir(run_dir, needed_bytes, keep_last=keep_last)
    lock = RunLock(run_dir)  # before anything in the directory is read or changed
    try:
        if restart:
            set_aside(run_dir)
        remove_stale_temporaries(run_dir)  # only the lock holder may: another writer's temporaries are live
    except BaseException:
        lock.release()
        raise
    return lock


RUN_OUTPUTS = (
    "checkpoints",
    "metrics.jsonl",
    "metrics.csv",
    "samples",
    "pretrained",
    "summary.json",
    "config.json",
    "recipe.json",
    "tensorboard",
)


def set_aside(run_dir: Path) -> Path | None:
    """Move a run's outputs into ``run_dir/previous-<UTC time>/`` (``--restart``: nothing is deleted)."""
    present = [run_dir / name for name in RUN_OUTPUTS if (run_dir / name).exists()]
    if not present:
        return None
    target = run_dir / time.strftime("previous-%Y%m%d-%H%M%S", time.gmtime())
    suffix = 0
    while target.exists():
        suffix += 1
        target = target.with_name(f"{target.name.split('.')[0]}.{suffix}")
    target.mkdir()
    for path in present:
        path.rename(target / path.name)
    return target


def latest_checkpoint(
    run_dir: Path,
    env: distributed.DistEnv,
    cfg: RunConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    source: DataSource,
) -> Any:
    """The newest good checkpoint; a run whose checkpoints are all unusable is an error, never a silent restart.

    A checkpoint whose data position does not fit ``source`` or whose optimizer state does not fit
    ``optimizer`` is unusable too (named and skipped). One of another model is returned: resuming it
    is refused with its own message (``state.check_resume_config``).
    """

    def fits(checkpoint: Any) -> str | None:
        if migrate_layout(checkpoint.config).get("model") != cfg.to_dict()["model"]:
            return None  # refused by check_resume_config, naming both models
        if "data" not in checkpoint.state:
            return "state.json has no data position ('data')"
        try:  # only sets a position; restore_state loads the chosen checkpoint's again
            source.load_state_dict(checkpoint.state["data"])
        except (TimError, TypeError, ValueError, KeyError, AttributeError) as error:
            return f"state.json's data position does not fit the data source ({first_line(error)})"
        updates = checkpoint.state.get("ema_updates", 0)
        return optimizer_state_problem(checkpoint.parts["optimizer"], model, optimizer, updates)

    checkpoint = load_latest(run_dir, report=env.is_main, check=fits)
    found = list_checkpoints(run_dir)
    if checkpoint is None and found:
        raise TimError(
            f"all {len(found)} checkpoint(s) in '{run_dir / 'checkpoints'}' are unusable (each one is named "
            "in a warning above); nothing was changed or deleted",
            "restore a checkpoint folder from a backup, or start again from step 0 with "
            "`tim train ... --restart` (train(..., restart=True)), which moves the old run aside",
        )
    return checkpoint


def newest_checkpoint(run_dir: Path, env: distributed.DistEnv) -> Path | None:
    """The newest checkpoint folder (named in the preemption message; rank 0 only)."""
    found = list_checkpoints(run_dir) if env.is_main else []
    return found[-1] if found else None
