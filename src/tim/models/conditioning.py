"""Conditioning adapters: class labels, caption features, or nothing.

The conditioning type is a constructor choice of :class:`tim.models.TiM` (docs/internals.md, tim.models): the
model holds exactly one of these adapters. Each adapter embeds the batch's ``cond`` dict, builds
the classifier-free-guidance null version of it, and applies CFG dropout.

``cond`` keys (docs/internals.md): ``{"y": LongTensor (B,)}`` for class labels,
``{"context": (B, M, D_text), "context_mask": (B, M) bool (optional)}`` for text, ``{}`` for none.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from tim.errors import TimError
from tim.models.layers import SwiGLU

LABEL_INIT_STD = 0.02  # class embedding init (published code: nn.Embedding(1001, D), std 0.02)
CAPTION_MLP_INIT_STD = 0.02  # caption SwiGLU weights (published code)
CAPTION_NORM_EPS = 1e-5  # caption LayerNorm, affine, PyTorch default (published code)


@dataclass
class Embedded:
    """Embedded conditioning: a vector added to the time embedding and/or tokens to cross-attend.

    Attributes:
        pooled: (B, D) added to the modulation input ``c``, or None.
        context: (B, M, D) caption tokens for cross-attention, or None.
        context_mask: (B, M) bool, True = attend, or None (attend to all).
    """

    pooled: Tensor | None = None
    context: Tensor | None = None
    context_mask: Tensor | None = None


def check_keys(cond: dict[str, Tensor], required: set[str], optional: set[str], kind: str) -> None:
    """Raise TimError unless ``cond`` has every required key and nothing outside required | optional."""
    keys = set(cond)
    if not required <= keys or not keys <= required | optional:
        allowed = sorted(required) + [f"{k} (optional)" for k in sorted(optional)]
        raise TimError(
            f"a '{kind}'-conditioned model got cond keys {sorted(keys)}",
            f"pass exactly {allowed or 'no conditioning keys'}",
        )


def drop_mask(batch: int, p: float, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """Bool (B,) on ``device``, True with probability ``p`` (rows whose condition is dropped)."""
    if not 0.0 <= p <= 1.0:
        raise TimError(f"condition dropout probability {p} is outside [0, 1]", "pass a probability in [0, 1]")
    draw_device = generator.device if generator is not None else device
    return (torch.rand(batch, generator=generator, device=draw_device) < p).to(device)


class Conditioned:
    """Mixin for networks holding one conditioning adapter as ``cond_embedder`` (TiM, TiMMLP)."""

    cond_embedder: Adapter

    def null_cond(self, cond: dict[str, Tensor]) -> dict[str, Tensor]:
        """The unconditional (CFG null) version of ``cond``, same batch size and keys."""
        return self.cond_embedder.null(cond)

    def drop_cond(
        self, cond: dict[str, Tensor], p: float, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        """CFG dropout: each row's condition replaced by the null one with probability ``p``."""
        return self.cond_embedder.drop(cond, p, generator)

    def embed_cond(self, cond: dict[str, Tensor], batch: int) -> Embedded:
        """Embed ``cond`` and check that it has one row per sample of a batch of ``batch``."""
        embedded: Embedded = self.cond_embedder.embed(cond)
        rows = {len(v) for v in (embedded.pooled, embedded.context) if v is not None}
        if rows - {batch}:
            raise TimError(
                f"the condition has {sorted(rows)} rows for a batch of {batch}",
                "pass one condition per sample",
            )
        return embedded


class NoConditioning(nn.Module):
    """Unconditional model: ``cond`` must be empty."""

    def embed(self, cond: dict[str, Tensor]) -> Embedded:
        """Check that ``cond`` is empty."""
        check_keys(cond, set(), set(), "none")
        return Embedded()

    def null(self, cond: dict[str, Tensor]) -> dict[str, Tensor]:
        """The null condition of an unconditional model is the empty dict."""
        check_keys(cond, set(), set(), "none")
        return {}

    def drop(self, cond: dict[str, Tensor], p: float, generator: torch.Generator | None) -> dict[str, Tensor]:
        """Nothing to drop."""
        check_keys(cond, set(), set(), "none")
        return {}


class ClassConditioning(nn.Module):
    """Label embedding table with one extra row, the null class ``num_classes``, for CFG (as published)."""

    def __init__(self, num_classes: int, hidden_size: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, hidden_size)

    def embed(self, cond: dict[str, Tensor]) -> Embedded:
        """Look up labels ``y`` (B,) -> pooled (B, D)."""
        check_keys(cond, {"y"}, set(), "class")
        y = cond["y"]
        if y.ndim != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
            raise TimError(
                f"labels y are {y.dtype} of shape {tuple(y.shape)}", "pass integer class labels of shape (B,)"
            )
        # A clear error instead of an IndexError. Only on CPU tensors, where the check is free: on an
        # accelerator it would cost a device sync per forward pass (several per training step), so
        # there the data sources and `tim sample` validate class ids before they reach the model.
        # Skipped while torch.compile traces (a data-dependent branch is a graph break).
        if (
            y.device.type == "cpu"
            and not torch.compiler.is_compiling()
            and bool(((y < 0) | (y > self.num_classes)).any())
        ):
            raise TimError(
                f"labels y lie outside [0, {self.num_classes}]",
                f"use class ids 0..{self.num_classes - 1} (or {self.num_classes}, the CFG null class)",
            )
        return Embedded(pooled=self.table(y))

    def null(self, cond: dict[str, Tensor]) -> dict[str, Tensor]:
        """Every label replaced by the null class ``num_classes`` (same batch size)."""
        check_keys(cond, {"y"}, set(), "class")
        return {"y": torch.full_like(cond["y"], self.num_classes)}

    def drop(self, cond: dict[str, Tensor], p: float, generator: torch.Generator | None) -> dict[str, Tensor]:
        """Replace each label by the null class with probability ``p`` (CFG training, Ho & Salimans 2022)."""
        check_keys(cond, {"y"}, set(), "class")
        y = cond["y"]
        dropped = drop_mask(y.shape[0], p, generator, y.device)
        return {"y": torch.where(dropped, torch.full_like(y, self.num_classes), y)}


class TextConditioning(nn.Module):
    """Caption features from any text encoder -> tokens for cross-attention (arXiv 2509.04394, App. C.1).

    ``embed = SwiGLU(LayerNorm(context))`` (D_text -> 4D -> D). The CFG null caption is the
    ``null_context`` buffer (M0, D_text), zero features by default; set it from your encoder's
    features of the empty prompt with :meth:`set_null_context` (the released T2I model was trained
    with Gemma features of ``""``). It is saved with the weights.

    With ``pooled=True`` the masked mean of the normalised caption features also gives a global
    vector ``pooled = SwiGLU_p(mean_m LayerNorm(context))`` (D_text -> D -> D) that the network adds
    to its modulation input ``c``, as class labels are. An addition of ours, off by default: the
    paper's T2I model uses cross-attention only (docs/benchmarks.md measures it on the scenes).
    """

    def __init__(
        self, text_dim: int, hidden_size: int, mask_context: bool, null_length: int = 1, pooled: bool = False
    ) -> None:
        super().__init__()
        self.text_dim = text_dim
        self.mask_context = mask_context
        self.norm = nn.LayerNorm(text_dim, eps=CAPTION_NORM_EPS)
        self.mlp = SwiGLU(text_dim, 4 * hidden_size, hidden_size)
        self.pool_mlp = SwiGLU(text_dim, hidden_size, hidden_size) if pooled else None
        self.null_context: Tensor
        self.register_buffer("null_context", torch.zeros(null_length, text_dim))

    def set_null_context(self, features: Tensor) -> None:
        """Use ``features`` (M0, D_text) or (1, M0, D_text) as the null caption.

        Typically the text encoder's output for the empty prompt ``""``.
        """
        features = features.detach().reshape(-1, features.shape[-1])
        if features.shape[-1] != self.text_dim or features.shape[0] == 0:
            raise TimError(
                f"null caption features have shape {tuple(features.shape)}",
                f"pass (M, {self.text_dim}) features with M >= 1",
            )
        self.null_context = features.to(self.null_context)

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        # The null caption's length depends on the text encoder; adopt the stored length.
        stored = state_dict.get(prefix + "null_context")
        if stored is not None and stored.ndim == 2 and stored.shape[1] == self.text_dim:
            self.null_context = torch.zeros_like(stored, device=self.null_context.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # pyright: ignore[reportUnknownMemberType]  -- untyped in torch

    def embed(self, cond: dict[str, Tensor]) -> Embedded:
        """Caption features (B, M, D_text) -> tokens (B, M, D) and the mask (if masking is on)."""
        check_keys(cond, {"context"}, {"context_mask"}, "text")
        context = cond["context"]
        if context.ndim != 3 or context.shape[-1] != self.text_dim:
            raise TimError(
                f"caption features have shape {tuple(context.shape)}",
                f"pass context of shape (B, M, {self.text_dim})",
            )
        normed = self.norm(context.to(self.norm.weight.dtype))  # (B, M, D_text)
        tokens = self.mlp(normed)  # (B, M, D)
        mask = cond.get("context_mask") if self.mask_context else None
        return Embedded(
            pooled=self._pool(normed, cond.get("context_mask")), context=tokens, context_mask=mask
        )

    def _pool(self, normed: Tensor, mask: Tensor | None) -> Tensor | None:
        """Masked mean of the normalised caption features -> (B, D), or None without ``pooled``."""
        if self.pool_mlp is None:
            return None
        if mask is None:
            return self.pool_mlp(normed.mean(dim=1))
        weights = mask.to(normed.dtype)[..., None]  # (B, M, 1)
        mean = (normed * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # an all-False row -> 0
        return self.pool_mlp(mean)

    def null(self, cond: dict[str, Tensor]) -> dict[str, Tensor]:
        """The null caption, cut or zero-padded to the batch's caption length M (same keys as ``cond``)."""
        check_keys(cond, {"context"}, {"context_mask"}, "text")
        B, M, _ = cond["context"].shape
        length = min(M, self.null_context.shape[0])
        context = torch.zeros_like(cond["context"])
        context[:, :length] = self.null_context[:length].to(context)
        out = {"context": context}
        if "context_mask" in cond:
            mask = torch.zeros(B, M, dtype=torch.bool, device=context.device)
            mask[:, :length] = True
            out["context_mask"] = mask
        return out

    def drop(self, cond: dict[str, Tensor], p: float, generator: torch.Generator | None) -> dict[str, Tensor]:
        """Replace each caption (and its mask) by the null caption with probability ``p``."""
        null = self.null(cond)
        dropped = drop_mask(cond["context"].shape[0], p, generator, cond["context"].device)
        return {k: torch.where(dropped.view(-1, *[1] * (v.ndim - 1)), null[k], v) for k, v in cond.items()}


# The conditioning adapters a network can hold as ``cond_embedder`` (embed, null, drop).
Adapter = NoConditioning | ClassConditioning | TextConditioning
