"""Deprecated: ``tim bench geneval`` moved to :mod:`tim.experiments.geneval` (docs/internals.md, "Layers").

Every name of that module is still importable from here for one release, with a
``DeprecationWarning``; ``write_atomic(path, text)`` is :func:`tim.io.write_text`.
"""

from tim.deprecation import moved_names

__getattr__, __dir__ = moved_names(
    __name__, ["tim.experiments.geneval"], renamed={"write_atomic": ("tim.io", "write_text")}
)
