"""Experiments: train within a budget, sample every step count, score with a judge, report.

- :mod:`tim.experiments.engine`: THE engine (time budget, train-or-reuse, the step-count sweep,
  metrics.json / report.md / plots / the printed table).
- :mod:`tim.experiments.digits`, :mod:`~tim.experiments.t2i`, :mod:`~tim.experiments.latent`: the
  demos of ``tim demo digits|t2i|latent`` (docs/demos.md).
- :mod:`tim.experiments.quality`, :mod:`~tim.experiments.geneval`: the comparisons of ``tim bench
  quality`` and ``tim bench geneval`` (TiM vs flow matching vs MeanFlow, docs/benchmarks.md).

Submodules are imported on use: importing this package loads nothing heavy.
"""

DEMOS = ("digits", "t2i", "latent")  # the modules of `tim demo <name>`, each with an EXPERIMENT
