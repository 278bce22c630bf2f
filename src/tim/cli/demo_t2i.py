"""Deprecated: ``tim demo t2i`` is :mod:`tim.experiments.t2i` (parsed by :mod:`tim.cli.demo`).

Every name of that module is still importable from here for one release, with a
``DeprecationWarning``; ``save_png(image, path)`` is :func:`tim.io.save_png` (path first).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from tim.deprecation import moved_names


def save_png(image: Any, path: Path) -> None:
    """Deprecated: write a PIL image atomically; use ``tim.io.save_png(path, image)``."""
    from tim.io import save_png as write_png

    warnings.warn(
        "tim.cli.demo_t2i.save_png moved to tim.io.save_png(path, image)", DeprecationWarning, stacklevel=2
    )
    write_png(path, image)


__getattr__, __dir__ = moved_names(__name__, ["tim.experiments.t2i"])
