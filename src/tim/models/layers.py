"""Building blocks of the TiM network.

Time embedding, SwiGLU, adaLN modulation, 2-D RoPE, attention kernels and patchify/unpatchify.

Every layer here is plain PyTorch; the published network's exact conventions (cos-first timestep
features, interleaved-pair RoPE, ``(p_row, p_col, C)`` unpatchify order, LayerNorm qk-norm with
eps 1e-5) are reproduced so that released checkpoints load into :class:`tim.models.TiM`
(the published code, github.com/WZDTHU/TiM).
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from dataclasses import dataclass
from typing import Literal, cast

import torch
import torch.nn.functional as F_nn
from torch import Tensor, nn
from torch.autograd import forward_ad

from tim.network import conditioning_in_float32

TIME_FREQUENCY_DIM = 256  # sinusoidal feature width of every time embedder (published code)
MAX_PERIOD = 10000.0  # sinusoid period range (as in the published code)
BLOCK_NORM_EPS = 1e-6  # block and final LayerNorms (published code)
QK_NORM_EPS = 1e-5  # per-head LayerNorm on q and k: PyTorch default, as released

AttentionBackend = Literal["auto", "sdpa", "flash", "math"]


def timestep_features(s: Tensor, dim: int = TIME_FREQUENCY_DIM) -> Tensor:
    """Sinusoidal features of a scalar time input (De-TE, arXiv 2509.04394, Sec. 3.4; cos-first as published).

    ``f_k = exp(-ln(10000) k / (dim/2))``, ``a_k = s f_k`` and ``TE(s) = [cos(a) | sin(a)]``
    (cos first). ``s`` is used as is (no x1000 scaling), so for the linear path all angles stay
    at most 1 rad, which keeps the finite-difference derivative smooth.

    Args:
        s: times, shape (B,).
        dim: feature width (even).

    Returns:
        Features in float32 (float64 for float64 ``s``), shape (B, dim).
    """
    half = dim // 2
    dtype = torch.promote_types(s.dtype, torch.float32)  # at least float32, float64 stays float64
    k = torch.arange(half, device=s.device, dtype=dtype)
    frequencies = torch.exp(-math.log(MAX_PERIOD) * k / half)
    angles = s.to(dtype)[:, None] * frequencies[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedder(nn.Module):
    """``E(s) = Linear(SiLU(Linear(TE(s))))``: one of the two decoupled time embedders (arXiv 2509.04394, Sec. 3.4)."""

    def __init__(self, hidden_size: int, frequency_dim: int = TIME_FREQUENCY_DIM) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.mlp = nn.Sequential(
            nn.Linear(frequency_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, s: Tensor) -> Tensor:
        """Embed times ``s`` (B,) into (B, hidden_size)."""
        features = timestep_features(s, self.frequency_dim)  # (B, 256) float32
        return self.mlp(features.to(cast(nn.Linear, self.mlp[0]).weight.dtype))  # (B, D)


class SwiGLU(nn.Module):
    """``fc_out(SiLU(fc_gate(x)) * fc_value(x))`` (Shazeer 2020; the FFN and adaLN of arXiv 2509.04394, App. C.1)."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc_gate = nn.Linear(in_features, hidden_features)
        self.fc_value = nn.Linear(in_features, hidden_features)
        self.fc_out = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the gated MLP on the last dimension."""
        return self.fc_out(F_nn.silu(self.fc_gate(x)) * self.fc_value(x))


def swiglu_hidden_size(hidden_size: int, mlp_ratio: float) -> int:
    """FFN width ``int(D * mlp_ratio) * 2 // 3`` keeping SwiGLU's cost equal to a GELU MLP (arXiv 2509.04394, App. C.1)."""
    return int(hidden_size * mlp_ratio) * 2 // 3


def modulate(x: Tensor, shift: Tensor, scale: Tensor) -> Tensor:
    """adaLN modulation ``x (1 + scale) + shift`` (DiT, Peebles & Xie 2023); shift/scale (B, 1, D)."""
    return x * (1 + scale) + shift


def float32_conditioning_active(like: Tensor) -> bool:
    """Whether :func:`tim.network.float32_conditioning` is on inside an autocast region of ``like``'s device.

    Then the input embedding, the time embeddings, the adaLN / interval modulation and the output
    layer run in float32
    (autocast off) while the trunk's matmuls stay in the autocast dtype; otherwise False and the
    network runs exactly as without the switch.
    """
    return conditioning_in_float32() and torch.is_autocast_enabled(like.device.type)


def float32_region(like: Tensor) -> contextlib.AbstractContextManager[object]:
    """Autocast off when :func:`float32_conditioning_active` (else a null context)."""
    if float32_conditioning_active(like):
        return torch.autocast(device_type=like.device.type, enabled=False)
    return contextlib.nullcontext()


def block_norm(hidden_size: int) -> nn.LayerNorm:
    """Pre-norm LayerNorm without affine parameters (adaLN supplies scale and shift)."""
    return nn.LayerNorm(hidden_size, elementwise_affine=False, eps=BLOCK_NORM_EPS)


# ---------------------------------------------------------------------------------------------
# Patches.


def patchify(x: Tensor, p: int) -> Tensor:
    """Cut images into non-overlapping ``p x p`` patches, inverse of :func:`unpatchify`.

    Args:
        x: images, shape (B, C, H, W) with H, W divisible by p.
        p: patch size.

    Returns:
        Tokens (B, N, p*p*C), token ``n = row * w + col``, feature ``(i * p + j) * C + c``.
    """
    B, C, H, W = x.shape
    h, w = H // p, W // p
    x = x.reshape(B, C, h, p, w, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(B, h * w, p * p * C)


def unpatchify(tokens: Tensor, p: int, h: int, w: int) -> Tensor:
    """Reassemble patch tokens into images in the released layout (the published code, github.com/WZDTHU/TiM).

    Args:
        tokens: shape (B, h*w, p*p*C), features ordered ``(p_row, p_col, C)`` (channel fastest).
        p: patch size.
        h: token rows.
        w: token columns.

    Returns:
        Images (B, C, h*p, w*p).
    """
    B = tokens.shape[0]
    C = tokens.shape[-1] // (p * p)
    x = tokens.reshape(B, h, w, p, p, C)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(B, C, h * p, w * p)


# ---------------------------------------------------------------------------------------------
# 2-D rotary position embedding.

RopePositions = Literal["grid", "wrapped"]


def rope_positions(h: int, w: int, convention: RopePositions, device: torch.device) -> Tensor:
    """Per-token 2-D positions (first, second axis) for an ``h x w`` token grid.

    ``"grid"`` (our default) gives ``(row, col)`` for token ``n = row * w + col``. ``"wrapped"``
    reproduces the released code, whose ``meshgrid(arange(h), arange(w), indexing='xy')`` yields
    ``(n mod h, n div h)``: ``(col, row)`` on square grids but neither on ``h != w`` grids
    (the published code, github.com/WZDTHU/TiM).

    Returns:
        Float64 positions, shape (h*w, 2).
    """
    n = torch.arange(h * w, device=device, dtype=torch.float64)
    if convention == "wrapped":
        return torch.stack([torch.remainder(n, h), torch.div(n, h, rounding_mode="floor")], dim=-1)
    return torch.stack([torch.div(n, w, rounding_mode="floor"), torch.remainder(n, w)], dim=-1)


class RotaryEmbedding2D(nn.Module):
    """Axial 2-D RoPE (Su et al. 2021; arXiv 2509.04394, App. C.1): half of each head's dims per grid axis.

    Frequencies ``f_j = theta^(-j / (hd/4))``, j < hd/4, each used for one interleaved pair of
    dims (GPT-J "rotate every two"); the first ``hd/2`` dims rotate with the first position
    coordinate, the rest with the second. Tables are computed for the actual token grid of each
    input and cached per (grid, device); there is no fixed-size position table.

    Attributes:
        scale: multiplies positions; ``scale < 1`` interpolates positions for grids larger than
            seen in training (position interpolation, Chen et al. 2023). 1.0 = released behaviour.
    """

    def __init__(self, head_dim: int, theta: float, convention: RopePositions, scale: float = 1.0) -> None:
        super().__init__()
        self.head_dim = head_dim
        self.theta = theta
        self.convention: RopePositions = convention
        self.scale = scale
        self._cache: dict[tuple[object, ...], tuple[Tensor, Tensor]] = {}
        self._tables: dict[tuple[object, ...], RopeTables] = {}

    def angles(self, h: int, w: int, device: torch.device) -> Tensor:
        """Rotation angles (h*w, head_dim) in float64, pairs repeated: ``[p0 f0, p0 f0, p0 f1, ...]``."""
        quarter = self.head_dim // 4
        j = torch.arange(quarter, device=device, dtype=torch.float64)
        frequencies = self.theta ** (-j / quarter)  # (hd/4,)
        positions = rope_positions(h, w, self.convention, device) * self.scale  # (N, 2)
        per_axis = positions[:, :, None] * frequencies  # (N, 2, hd/4)
        return per_axis.repeat_interleave(2, dim=-1).reshape(h * w, self.head_dim)

    def forward(
        self, h: int, w: int, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        """``(cos, sin)`` tables, each (h*w, head_dim) in ``dtype``, cached per grid, device and dtype."""
        key = (h, w, str(device), dtype, self.convention, self.scale, self.theta)
        if key not in self._cache:
            theta = self.angles(h, w, device)  # float64: exact angles, rounded once
            self._cache[key] = (torch.cos(theta).to(dtype), torch.sin(theta).to(dtype))
        return self._cache[key]

    def tables(self, h: int, w: int, device: torch.device, dtype: torch.dtype = torch.float32) -> RopeTables:
        """The fused tables every block uses for an ``h x w`` grid, cached like :meth:`forward`.

        Returns:
            :class:`RopeTables` in ``dtype`` (float32 or float64) for tokens laid out as
            (B, N, heads, head_dim).
        """
        if torch.compiler.is_compiling():
            # Traced into the graph (a few tiny ops; no cache mutation, no complex dtype for Inductor).
            theta = self.angles(h, w, device)
            return _rope_tables(torch.cos(theta).to(dtype), torch.sin(theta).to(dtype), with_rotation=False)
        key = (h, w, str(device), dtype, self.convention, self.scale, self.theta)
        if key not in self._tables:
            self._tables[key] = _rope_tables(*self(h, w, device, dtype), with_rotation=True)
        return self._tables[key]


def _rope_tables(cos: Tensor, sin: Tensor, *, with_rotation: bool) -> RopeTables:
    """Fused tables from the (N, hd) cos/sin tables (each pair's value repeated)."""
    signed = torch.stack([-sin[:, 0::2], sin[:, 1::2]], dim=-1).flatten(
        -2
    )  # (N, hd): [-s0, s0, -s1, s1, ...]
    rotation = (
        torch.complex(cos[:, 0::2], sin[:, 0::2])[:, None] if with_rotation else None
    )  # e^{i theta}, same rounding
    return RopeTables(cos[:, None], signed[:, None], rotation)


@dataclass(frozen=True)
class RopeTables:
    """Cached RoPE tables shaped to broadcast over tokens laid out as (B, N, heads, head_dim).

    Attributes:
        cos: (N, 1, head_dim), each pair's cosine repeated.
        sin_signed: (N, 1, head_dim), ``[-sin, +sin]`` per pair (the real two-multiply form).
        rotation: (N, 1, head_dim / 2) complex ``cos + i sin`` (the one-multiply form); None in
            tables built while ``torch.compile`` traces (the real form is used there).
    """

    cos: Tensor
    sin_signed: Tensor
    rotation: Tensor | None


def _pairs(x: Tensor) -> Tensor:
    """View the last dim (..., d) as (..., d/2, 2) interleaved pairs."""
    return x.unflatten(-1, (-1, 2))  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]  -- Tensor.unflatten is unannotated


def rotate_pairs(x: Tensor) -> Tensor:
    """Map each interleaved pair ``(a, b)`` of the last dim to ``(-b, a)``."""
    a, b = _pairs(x).unbind(-1)
    return torch.stack([-b, a], dim=-1).flatten(-2)


def rope_rotate(x: Tensor, tables: RopeTables) -> Tensor:
    """Rotate q or k laid out as (B, N, heads, head_dim) by the tables; float32 or wider, cast back.

    Eager: one complex multiply per pair on a complex view of ``x`` (no copies besides the
    output). Under ``torch.compile`` the real form ``x cos + swap(x) sin_signed`` is used, which
    Inductor fuses into one kernel (it has no complex code generation). Both equal
    :func:`apply_rope` up to float rounding.
    """
    xf = x.to(torch.promote_types(torch.promote_types(x.dtype, tables.cos.dtype), torch.float32))
    if torch.compiler.is_compiling() or tables.rotation is None:
        swapped = _pairs(xf).flip(-1).flatten(-2)  # (a, b) -> (b, a)
        return (xf * tables.cos + swapped * tables.sin_signed).to(x.dtype)
    pairs = torch.view_as_complex(_pairs(xf))  # a view: stride-1 pairs, even strides
    return torch.view_as_real(pairs * tables.rotation).flatten(-2).to(x.dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate q or k: ``x cos + rotate_pairs(x) sin`` in at least float32, cast back to x's dtype.

    Args:
        x: shape (B, heads, N, head_dim).
        cos: shape (N, head_dim).
        sin: shape (N, head_dim).
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    xf, cos, sin = x.to(dtype), cos.to(dtype), sin.to(dtype)
    return (xf * cos + rotate_pairs(xf) * sin).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# Attention kernels.


def needs_differentiable_attention(*tensors: Tensor) -> bool:
    """True when a forward-mode AD transform is tracing these tensors.

    ``torch.func.jvp`` (like every functorch transform) wraps its tensors; the forward-AD API of
    ``torch.autograd.forward_ad`` attaches a tangent instead. SDPA's CPU and flash kernels have no
    forward-AD rule, so :func:`attention` then uses :func:`math_attention`.
    Other functorch transforms (vmap, grad) also take the math kernel, which is always correct.
    Inside ``torch.compile`` this returns False (SDPA, no graph break): differentiate an eager
    model with ``torch.func.jvp``, not a compiled one.
    """
    if torch.compiler.is_compiling():
        return False
    for x in tensors:
        # no public predicate exists (torch 2.13), hence the private one
        if torch._C._functorch.is_functorch_wrapped_tensor(x):  # pyright: ignore[reportPrivateUsage, reportAttributeAccessIssue, reportUnknownMemberType]
            return True
        if forward_ad.unpack_dual(x).tangent is not None:  # pyright: ignore[reportUnknownMemberType]  -- unannotated in torch
            return True
    return False


def math_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """``softmax(q k^T / sqrt(hd)) v`` with plain ops (differentiable by ``torch.func.jvp``).

    Args:
        q: shape (B, heads, N, hd).
        k: shape (B, heads, M, hd).
        v: shape (B, heads, M, hd).
        mask: optional bool (B, 1, 1, M), True = attend.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, heads, N, M)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def flash_attn_available() -> bool:
    """Whether the optional ``flash-attn`` package is installed (checked without importing it)."""
    return importlib.util.find_spec("flash_attn") is not None


def select_kernel(
    backend: AttentionBackend, *, differentiable: bool, cuda_half: bool, masked: bool, flash_installed: bool
) -> Literal["math", "flash", "sdpa"]:
    """Which attention kernel runs.

    ``"math"`` under a forward-mode AD transform or when asked for; flash-attn for
    ``"flash"``/``"auto"`` on CUDA fp16/bf16 inputs without mask when it is installed (its only
    supported case); SDPA otherwise (on CPU the chunked flash kernel: no N x M score matrix).
    """
    if backend == "math" or differentiable:
        return "math"
    if backend in ("flash", "auto") and cuda_half and not masked and flash_installed:
        return "flash"
    return "sdpa"


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    backend: AttentionBackend,
    mask: Tensor | None = None,
    *,
    flash_installed: bool | None = None,
) -> Tensor:
    """Scaled dot-product attention with the kernel of :func:`select_kernel`.

    Args:
        q: shape (B, heads, N, hd); any strides (the layers pass transposed views).
        k: shape (B, heads, M, hd).
        v: shape (B, heads, M, hd).
        backend: "auto" | "sdpa" | "flash" | "math".
        mask: optional bool (B, 1, 1, M), True = attend.
        flash_installed: whether flash-attn is installed, resolved once by the caller (the
            layers do it when their backend is set); None looks it up (about 80 us a call).

    Returns:
        Shape (B, heads, N, hd).
    """
    if flash_installed is None:
        flash_installed = backend != "sdpa" and flash_attn_available()
    kernel = select_kernel(
        backend,
        differentiable=needs_differentiable_attention(q, k, v),
        cuda_half=q.is_cuda and q.dtype in (torch.float16, torch.bfloat16),
        masked=mask is not None,
        flash_installed=flash_installed,
    )
    if kernel == "math":
        return math_attention(q, k, v, mask)
    if kernel == "flash":
        from flash_attn import (  # pyright: ignore[reportMissingImports]  -- optional extra [flash], imported only when used
            flash_attn_func,  # pyright: ignore[reportUnknownVariableType]
        )

        out = cast(Tensor, flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)))
        return out.transpose(1, 2)
    return F_nn.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class _AttentionKernel(nn.Module):
    """Holds the attention backend; whether flash-attn is installed is resolved when it is set."""

    _backend: AttentionBackend

    def __init__(self) -> None:
        super().__init__()
        self.backend = "auto"

    @property
    def backend(self) -> AttentionBackend:
        """One of "auto", "sdpa", "flash", "math" (set by :meth:`tim.models.TiM.set_attention_backend`)."""
        return self._backend

    @backend.setter
    def backend(self, value: AttentionBackend) -> None:
        self._backend = value
        self._flash_installed = value in ("auto", "flash") and flash_attn_available()  # once, not per call

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        return attention(q, k, v, self._backend, mask, flash_installed=self._flash_installed)


class SelfAttention(_AttentionKernel):
    """Interval-aware self-attention with qk-norm and 2-D RoPE (IA-Attn, arXiv 2509.04394, Sec. 3.4).

    ``[q, k, v] = W u + b + W_Δ E_Δ(t - r)``: the bias-free projection of the Δt embedding is added
    to every token's q, k and v before qk-norm and RoPE (the paper's ``q = z W_q + b_q + E_Δt W'_q``).

    Layout: q, k and v stay views of the (B, N, 3, heads, hd) projection until attention, which
    takes them as (B, heads, N, hd) transposed views; SDPA's CPU kernel writes its output as
    (B, N, heads, hd), so the final reshape to (B, N, D) copies nothing.
    """

    def __init__(self, hidden_size: int, num_heads: int, qk_norm: bool, interval_aware: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.qkv_interval = nn.Linear(hidden_size, 3 * hidden_size, bias=False) if interval_aware else None
        self.q_norm = nn.LayerNorm(self.head_dim, eps=QK_NORM_EPS) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=QK_NORM_EPS) if qk_norm else nn.Identity()
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, u: Tensor, dt_emb: Tensor, rope: RopeTables) -> Tensor:
        """Attend over tokens ``u`` (B, N, D) given the Δt embedding (B, 1, D); returns (B, N, D)."""
        B, N, D = u.shape
        qkv = self.qkv(u)  # (B, N, 3D)
        if self.qkv_interval is not None:
            with float32_region(dt_emb):  # float32 under float32_conditioning, added in qkv's dtype
                interval = self.qkv_interval(dt_emb)
            qkv = qkv + interval.to(qkv.dtype)  # broadcast (B, 1, 3D) over tokens
        q, k, v = qkv.view(B, N, 3, self.num_heads, self.head_dim).unbind(2)  # (B, N, nh, hd) views
        q, k = rope_rotate(self.q_norm(q), rope), rope_rotate(self.k_norm(k), rope)
        o = self._attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))  # (B, nh, N, hd)
        return self.proj(o.transpose(1, 2).reshape(B, N, D))


class CrossAttention(_AttentionKernel):
    """Image tokens attend to caption tokens (arXiv 2509.04394, App. C.1); RoPE on the queries only."""

    def __init__(self, hidden_size: int, num_heads: int, qk_norm: bool) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.q = nn.Linear(hidden_size, hidden_size)
        self.kv = nn.Linear(hidden_size, 2 * hidden_size)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=QK_NORM_EPS) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=QK_NORM_EPS) if qk_norm else nn.Identity()
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, u: Tensor, context: Tensor, mask: Tensor | None, rope: RopeTables) -> Tensor:
        """``u`` (B, N, D) attends to ``context`` (B, M, D); ``mask`` (B, M) bool or None; returns (B, N, D)."""
        B, N, D = u.shape
        M = context.shape[1]
        q = rope_rotate(
            self.q_norm(self.q(u).view(B, N, self.num_heads, self.head_dim)), rope
        )  # (B, N, nh, hd)
        k, v = self.kv(context).view(B, M, 2, self.num_heads, self.head_dim).unbind(2)  # (B, M, nh, hd)
        attn_mask = None if mask is None else mask[:, None, None, :]  # (B, 1, 1, M)
        o = self._attend(q.transpose(1, 2), self.k_norm(k).transpose(1, 2), v.transpose(1, 2), attn_mask)
        return self.proj(o.transpose(1, 2).reshape(B, N, D))
