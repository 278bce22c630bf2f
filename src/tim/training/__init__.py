"""Training: typed run configs, the training loop, crash-safe checkpoints, EMA and distributed setup.

Public API (docs/internals.md)::

    cfg = load_config("configs/digits.yaml", ["optim.lr=3e-4"])   # strict: bad keys are TimErrors
    run_dir = train(cfg, "runs/digits")                             # rerun to resume
    model, cfg = load_run(run_dir, which="ema")                     # for sampling / evaluation
"""

from tim.training.config import (
    RUN_PRESETS,
    RunConfig,
    config_from_dict,
    load_config,
    save_config,
)
from tim.training.loop import train
from tim.training.preemption import EXIT_PREEMPTED, Preempted
from tim.training.state import load_run

__all__ = [
    "EXIT_PREEMPTED",
    "RUN_PRESETS",
    "Preempted",
    "RunConfig",
    "config_from_dict",
    "load_config",
    "load_run",
    "save_config",
    "train",
]
