"""Transition Models (TiM): learn the jump x_t -> x_r between any two noise levels.

Time convention (stated once for the whole library): ``t = 0`` is data and larger ``t`` is
noisier; for the default linear path ``t = 1`` is pure noise. A transition goes from the
current time ``t`` to an earlier time ``r <= t``.

The names below are the public API; everything imports with torch and numpy alone.
"""

from tim.models import (
    TIM_PRESETS,
    MLPConfig,
    TiM,
    TiMConfig,
    TiMMLP,
    build_model,
    from_pretrained,
    load_released_checkpoint,
    save_pretrained,
)
from tim.objective import FlowMatchingLoss, MeanFlowLoss, TransitionLoss, build_objective
from tim.paths import EDMPath, LinearPath, TrigFlowPath, VEPath, VPPath, build_path
from tim.samplers import SampleResult, sample
from tim.timesteps import time_grid

__version__ = "0.1.0"

__all__ = [
    "TIM_PRESETS",
    "MLPConfig",
    "TiM",
    "TiMConfig",
    "TiMMLP",
    "build_model",
    "from_pretrained",
    "load_released_checkpoint",
    "save_pretrained",
    "FlowMatchingLoss",
    "MeanFlowLoss",
    "TransitionLoss",
    "build_objective",
    "EDMPath",
    "LinearPath",
    "TrigFlowPath",
    "VEPath",
    "VPPath",
    "build_path",
    "SampleResult",
    "sample",
    "time_grid",
    "__version__",
]
