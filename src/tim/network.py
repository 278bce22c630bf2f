"""The network interface that the objective and the samplers share: ``F(x_t, t, r, **cond) -> Tensor``.

A leaf of the core (torch only), so that :mod:`tim.objective` and :mod:`tim.samplers` type their
network alike without importing each other or :mod:`tim.models`. Any callable of this shape is a
``Network``: a TiM, a TiMMLP, a DDP/compiled wrapper of one, or a closed-form test function.
"""

from __future__ import annotations

from typing import Any, Protocol

from torch import Tensor

__all__ = ["Network"]


class Network(Protocol):
    """A network F(x_t, t, r, **cond) -> Tensor of the shape of x_t (paper.md §3.2: f_theta(x_t, t, r)).

    ``t`` and ``r`` are the path's network time inputs c_noise(t), c_noise(r), shape ``(B,)``;
    ``cond`` holds the condition tensors (``y`` labels, caption features...), each of batch ``B``.
    """

    def __call__(self, x_t: Tensor, t: Tensor, r: Tensor, **cond: Any) -> Tensor: ...  # noqa: D102
