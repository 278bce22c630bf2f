"""Deprecated: ``tim bench quality`` moved to :mod:`tim.experiments.quality` (docs/internals.md, "Layers").

Every name of that module is still importable from here for one release, with a
``DeprecationWarning``; :func:`machine_info` lives on in :mod:`tim.evaluation.machine`.
"""

from tim.deprecation import moved_names
from tim.evaluation.machine import machine_info

__all__ = ["machine_info"]
__getattr__, __dir__ = moved_names(__name__, ["tim.experiments.quality"])
