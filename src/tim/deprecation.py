"""Moved names keep working for one release: THE helper behind every deprecated module alias.

A module whose contents moved keeps only its docstring and::

    __getattr__, __dir__ = moved_names(__name__, ["tim.generation.pipeline", ...], renamed={...})

Importing the old module warns about nothing; each access of a moved name warns once per call site
(``DeprecationWarning``, "OLD.NAME is deprecated; use NEW.NAME") and returns the very object of the
new module. The new modules are imported by name on first access, so an old module low in the
layers (``tim.evaluation.quality``) never imports a higher one at import time.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def moved_names(
    old: str, modules: Sequence[str], renamed: Mapping[str, tuple[str, str]] | None = None
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module ``__getattr__`` and ``__dir__`` that forward ``old``'s names to where they live now.

    Args:
        old: the deprecated module's name (``__name__``).
        modules: the modules that hold its names now, searched in order.
        renamed: ``{old name: (module, new name)}`` for names that changed too.
    """
    renamed = dict(renamed or {})

    def find(name: str) -> tuple[str, str] | None:
        if name in renamed:
            return renamed[name]
        for module in modules:
            if hasattr(importlib.import_module(module), name):
                return module, name
        return None

    def __getattr__(name: str) -> Any:  # noqa: N807 - a module's __getattr__
        found = None if name.startswith("__") else find(name)
        if found is None:
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        module, new = found
        warnings.warn(f"{old}.{name} is deprecated; use {module}.{new}", DeprecationWarning, stacklevel=2)
        return getattr(importlib.import_module(module), new)

    def __dir__() -> list[str]:  # noqa: N807 - a module's __dir__
        names = {n for m in modules for n in dir(importlib.import_module(m)) if not n.startswith("_")}
        return sorted(names | set(renamed))

    return __getattr__, __dir__
