"""Deprecated: ``tim demo latent`` is :mod:`tim.experiments.latent` (parsed by :mod:`tim.cli.demo`).

Every name of that module is still importable from here for one release, with a
``DeprecationWarning``.
"""

from tim.deprecation import moved_names

__getattr__, __dir__ = moved_names(__name__, ["tim.experiments.latent"])
