"""Evaluation: distances between generated and real samples, and the benchmarks built on them.

- :mod:`tim.evaluation.metrics`: Fréchet distance, unbiased KID, energy distance, sliced Wasserstein.
- :mod:`tim.evaluation.digits`: the shipped digits classifier and :func:`evaluate_digits`.
- :mod:`tim.evaluation.toy`: distances for the 2-D toy distributions.
- :mod:`tim.evaluation.inception`: Inception-v3 FID features from user-supplied weights.
- :mod:`tim.evaluation.cost`: ``tim bench cost`` (``tim bench quality`` / ``geneval`` are experiments: :mod:`tim.experiments`).

Every number these functions return is labelled with its feature extractor, reference set and
sample count.
"""

from tim.evaluation.digits import evaluate_digits
from tim.evaluation.metrics import (
    energy_distance,
    frechet_distance,
    kernel_distance,
    sliced_wasserstein,
)

__all__ = ["energy_distance", "evaluate_digits", "frechet_distance", "kernel_distance", "sliced_wasserstein"]
