"""The network interface that the objective and the samplers share: ``F(x_t, t, r, **cond) -> Tensor``.

A leaf of the core (torch only), so that :mod:`tim.objective` and :mod:`tim.samplers` type their
network alike without importing each other or :mod:`tim.models`. Any callable of this shape is a
``Network``: a TiM, a TiMMLP, a DDP/compiled wrapper of one, or a closed-form test function.

It also holds the one precision switch that crosses the two layers without an import:
:func:`float32_conditioning`. The objective turns it on around a network call made under bf16
autocast (the ``"mixed"`` derivative precision); a network that honours it (:class:`tim.models.TiM`,
:class:`tim.models.TiMMLP`) computes its input embedding, its time and interval embeddings, its
adaLN modulation and its output layer in float32 (so its residual stream stays float32) while the
trunk's matmuls stay in bf16. A network that ignores it is still correct,
only less precise; outside autocast the switch changes nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator
from typing import Any, Protocol

from torch import Tensor

__all__ = ["Network", "conditioning_in_float32", "float32_conditioning"]


class Network(Protocol):
    """A network F(x_t, t, r, **cond) -> Tensor of the shape of x_t (arXiv 2509.04394, Sec. 3: f_theta(x_t, t, r)).

    ``t`` and ``r`` are the path's network time inputs c_noise(t), c_noise(r), shape ``(B,)``;
    ``cond`` holds the condition tensors (``y`` labels, caption features...), each of batch ``B``.
    """

    def __call__(self, x_t: Tensor, t: Tensor, r: Tensor, **cond: Any) -> Tensor: ...  # noqa: D102


class GuidedNetwork(Network, Protocol):
    """A :class:`Network` that can be guided: ``null_cond(cond)`` is the unconditional input (CFG)."""

    def null_cond(self, cond: dict[str, Any]) -> dict[str, Any]: ...  # noqa: D102


# A plain module global (not a ContextVar): torch.compile guards on it, so a compiled network
# traces one graph with the switch off and one with it on instead of breaking the graph.
_float32_conditioning = False


def conditioning_in_float32() -> bool:
    """Whether a network should compute its embeddings, modulation and output layer in float32.

    Read by the networks inside ``forward``; True only inside :func:`float32_conditioning`.
    """
    return _float32_conditioning


@contextlib.contextmanager
def float32_conditioning(enabled: bool = True) -> Generator[None, None, None]:
    """Ask the networks called inside to keep embeddings, modulation and output in float32.

    Meant for calls under bf16 autocast (the rCM-style mixed precision of the derivative passes:
    the time features are where bf16 rounding biases a finite difference, arXiv 2509.04394 Eq. (10)
    divides their change by 2 eps). Not thread-safe: one switch per process, restored on exit.

    Args:
        enabled: the value of the switch inside the block (False: a no-op block).
    """
    global _float32_conditioning
    previous = _float32_conditioning
    _float32_conditioning = enabled
    try:
        yield
    finally:
        _float32_conditioning = previous
