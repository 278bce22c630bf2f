"""scikit-learn's bundled handwritten digits: 1,797 real 8x8 grey images, 10 classes.

The data ship inside scikit-learn (no download). Pixels are counts 0..16 (the number of "on"
pixels in a 4x4 block of the original 32x32 bitmap, sklearn docs); they map to [-1, 1] by
x = count / 8 - 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tim.errors import TimError

DIGITS_MAX = 16.0  # largest pixel count in sklearn's load_digits (4x4 blocks of binary pixels)


def load_digits_tensors() -> tuple[Tensor, Tensor]:
    """The digits as compact tensors.

    Returns:
        (counts, labels): counts uint8 of shape (1797, 1, 8, 8) with values 0..16; labels int64 (1797,).
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise TimError(
            "the digits dataset needs scikit-learn, which is not installed",
            "pip install 'transition-models[train]' (or scikit-learn)",
        ) from error
    bunch = load_digits()
    counts = torch.as_tensor(bunch.images, dtype=torch.float32).round().to(torch.uint8).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.int64)
    return counts, labels


def digits_to_unit_range(counts: Tensor) -> Tensor:
    """Map digit counts 0..16 to [-1, 1]: x = 2 count / 16 - 1. Any shape."""
    return counts.to(torch.float32) * (2.0 / DIGITS_MAX) - 1.0
