"""Helpers shared by the TiM transformer and the vector MLP (:mod:`tim.models.tim`, :mod:`tim.models.mlp`).

Both networks read a config dataclass strictly from plain data, take the time inputs ``t`` and ``r``
as a 0-d tensor or one per row, and expose ``forward_with_features`` (docs/internals.md). Neither
network module imports the other; both import this one.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Protocol, TypeVar

import torch
from torch import Tensor, nn

from tim.errors import TimError

ConfigT = TypeVar("ConfigT")


def config_from_dict(cls: type[ConfigT], data: dict[str, Any]) -> ConfigT:
    """Strictly build dataclass ``cls`` from ``data``: unknown keys raise TimError."""
    names = {f.name for f in fields(cls)}  # pyright: ignore[reportArgumentType]  -- cls is a dataclass
    unknown = sorted(set(data) - names)
    if unknown:
        raise TimError(f"unknown {cls.__name__} keys {unknown}", f"use only {sorted(names)}")
    return cls(**data)


def batch_times(x_t: Tensor, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
    """Time inputs as shape (B,) for a batch ``x_t`` (B, ...): a 0-d t or r is broadcast, others must be (B,)."""
    B = x_t.shape[0]
    t, r = (torch.as_tensor(s, device=x_t.device) for s in (t, r))
    t, r = (s.expand(B) if s.ndim == 0 else s for s in (t, r))
    if t.shape != (B,) or r.shape != (B,):
        raise TimError(
            f"t and r have shapes {tuple(t.shape)}, {tuple(r.shape)}", f"pass shape ({B},) time inputs"
        )
    return t, r


class FeatureNetwork(Protocol):
    """A network with the feature pass of :class:`tim.models.TiM` and :class:`tim.models.TiMMLP`."""

    def forward_with_features(
        self, x_t: Tensor, t: Tensor, r: Tensor, **cond: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """``(F, features)``: the network's output and its alignment features (None without a projector)."""
        ...


class WithFeatures(nn.Module):
    """``forward = model.forward_with_features``, so a DDP/FSDP wrapper sees the feature pass.

    DDP synchronises gradients only through ``forward``; wrap ``WithFeatures(model)`` (not
    ``model``) when the training step calls ``forward_with_features`` with gradient.
    """

    def __init__(self, model: FeatureNetwork) -> None:
        super().__init__()
        self.model = model

    def forward(self, x_t: Tensor, t: Tensor, r: Tensor, **cond: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(F, features)`` of the wrapped model."""
        return self.model.forward_with_features(x_t, t, r, **cond)
