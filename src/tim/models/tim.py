"""The TiM transformer F(x_t, t, r, cond) (TiM paper, arXiv 2509.04394, Sec. 3.4, App. C.1).

A DiT-family backbone on patch tokens with
- decoupled time embeddings: ``c = E_t(t) + E_Δ(t - r) + E_y(y)`` (De-TE),
- interval-aware attention: a bias-free projection of ``E_Δ(t - r)`` added to q, k, v (IA-Attn),
- qk-norm, 2-D RoPE for the actual token grid, SwiGLU FFN,
- low-rank SwiGLU adaLN-Zero modulation and a zero-initialised final layer (output 0 at init),
- conditioning chosen at construction: class labels, caption features (cross-attention), or none.

Read top to bottom: :class:`TiMConfig`, :class:`TiMBlock`, :class:`FinalLayer`, :class:`TiM`.
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import asdict, dataclass
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint  # pyright: ignore[reportUnknownVariableType]  -- torch leaves `function` untyped

from tim.errors import TimError
from tim.models.common import batch_times, config_from_dict
from tim.models.conditioning import (
    CAPTION_MLP_INIT_STD,
    LABEL_INIT_STD,
    Adapter,
    ClassConditioning,
    Conditioned,
    NoConditioning,
    TextConditioning,
)
from tim.models.layers import (
    AttentionBackend,
    CrossAttention,
    RopePositions,
    RopeTables,
    RotaryEmbedding2D,
    SelfAttention,
    SwiGLU,
    TimestepEmbedder,
    block_norm,
    flash_attn_available,
    float32_conditioning_active,
    float32_region,
    modulate,
    needs_differentiable_attention,
    swiglu_hidden_size,
    unpatchify,
)

Conditioning = Literal["class", "text", "none"]
# What the second time embedder sees: the published code's ``new_condition`` options
# (github.com/WZDTHU/TiM); every released config uses "t-r".
TimeCondition = Literal["t-r", "r", "t,r", "t,t-r", "r,t-r", "t,r,t-r"]
TIME_CONDITIONS: tuple[str, ...] = ("t-r", "r", "t,r", "t,t-r", "r,t-r", "t,r,t-r")
TIME_INIT_STD = 0.02  # t-embedder MLP weights (published code; DiT)


@dataclass(frozen=True)
class TiMConfig:
    """Architecture of a TiM network. Defaults are TiM-XL/2 (ImageNet-256, SD-VAE latents).

    Attributes:
        in_channels: latent channels C.
        input_size: nominal latent side used to draw sampling noise; any H, W divisible by
            ``patch_size`` work (no fixed position table).
        patch_size: patch side p.
        hidden_size: token width D.
        depth: number of blocks.
        num_heads: attention heads; head dim D / heads must be divisible by 4 (2-D RoPE pairs).
        mlp_ratio: FFN width factor; SwiGLU hidden = int(D * mlp_ratio) * 2 // 3.
        modulation_rank: hidden width of the low-rank SwiGLU adaLN (LoRA-AdaLN; 256 for B, 384 for XL).
        conditioning: "class" (labels, null class = num_classes), "text" (caption cross-attention), "none".
        num_classes: labels for "class" conditioning.
        text_dim: caption feature width D_text for "text" conditioning (1152 = Gemma-3-1B).
        pooled_text: also add a pooled caption vector (masked mean of the caption features ->
            LayerNorm -> SwiGLU -> D) to the modulation input ``c``, as class labels are; off in
            the paper's T2I model (cross-attention only); docs/benchmarks.md measures it on the scenes.
        mask_context: use ``context_mask`` in cross-attention. False = released T2I behaviour
            (padded caption tokens are attended).
        decoupled_time_embedding: separate Δt embedder (De-TE); False reuses the t embedder for
            Δt (paper Table 4 row d).
        interval_attention: add the Δt projection to q, k, v (IA-Attn; paper Table 4 row f).
        time_condition: the interval embedding ``e`` (added to ``c`` and fed to IA-Attn), the
            published ``new_condition``: "t-r" E_Δ(t - r) (ours and every released config), "r"
            E_Δ(r), "t,r" E_t(t) + E_Δ(r), "t,t-r" E_t(t) + E_Δ(t - r), "r,t-r" E_t(r) + E_Δ(t - r),
            "t,r,t-r" E_t(t) + E_t(r) + E_Δ(t - r). ``c = E_t(t) + e [+ E_y(y)]``, so the "t,..."
            options count E_t(t) twice, as published. E_Δ is the separate embedder when
            ``decoupled_time_embedding`` (published ``use_new_embed``), else E_t itself: the
            parameter layout never depends on this option.
        qk_norm: per-head LayerNorm on q and k.
        rope_positions: "grid" = (row, col) token positions (ours); "wrapped" = the released
            code's (n mod h, n div h), equal to (col, row) on square grids (set by the converter).
        rope_theta: RoPE base.
        rope_scale: multiplies RoPE positions; < 1 interpolates for grids larger than in training.
        encoder_depth: representation-alignment features are taken after this many blocks.
        z_dim: projector output width; 0 = no projector (no alignment features).
        projector_dim: projector hidden width.
        attention_backend: "auto" (flash-attn on CUDA half inputs when installed, else SDPA),
            "sdpa", "flash" (same rule as auto), or "math". Under torch.func.jvp the math kernel
            is always used.
        checkpointing: activation checkpointing per block during gradient passes.
    """

    in_channels: int = 4
    input_size: int = 32
    patch_size: int = 2
    hidden_size: int = 1152
    depth: int = 28
    num_heads: int = 16
    mlp_ratio: float = 4.0
    modulation_rank: int = 384
    conditioning: Conditioning = "class"
    num_classes: int = 1000
    text_dim: int = 1152
    mask_context: bool = True
    pooled_text: bool = False
    decoupled_time_embedding: bool = True
    interval_attention: bool = True
    time_condition: TimeCondition = "t-r"
    qk_norm: bool = True
    rope_positions: RopePositions = "grid"
    rope_theta: float = 10000.0
    rope_scale: float = 1.0
    encoder_depth: int = 8
    z_dim: int = 768
    projector_dim: int = 2048
    attention_backend: AttentionBackend = "auto"
    checkpointing: bool = False

    def __post_init__(self) -> None:
        choices = {
            "conditioning": ("class", "text", "none"),
            "rope_positions": ("grid", "wrapped"),
            "time_condition": TIME_CONDITIONS,
            "attention_backend": ("auto", "sdpa", "flash", "math"),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise TimError(
                    f"TiMConfig.{name}={getattr(self, name)!r} is unknown", f"use one of {allowed}"
                )
        sizes = {
            "in_channels": 1,
            "input_size": 1,
            "patch_size": 1,
            "hidden_size": 1,
            "depth": 1,
            "num_heads": 1,
            "modulation_rank": 1,
            "num_classes": 0,
            "text_dim": 1,
            "z_dim": 0,
            "projector_dim": 1,
        }
        for name, least in sizes.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise TimError(
                    f"TiMConfig.{name}={value!r} is below {least} or not an integer", f"set {name} >= {least}"
                )
        if not self.mlp_ratio > 0 or not self.rope_theta > 0 or not self.rope_scale > 0:
            raise TimError(
                f"TiMConfig mlp_ratio={self.mlp_ratio}, rope_theta={self.rope_theta}, "
                f"rope_scale={self.rope_scale} must all be > 0",
                "set positive values",
            )
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 4:
            raise TimError(
                f"hidden_size {self.hidden_size} / num_heads {self.num_heads} is not a multiple-of-4 head dim",
                "choose sizes with (hidden_size / num_heads) % 4 == 0 (2-D RoPE rotates pairs per axis)",
            )
        if self.z_dim > 0 and not 1 <= self.encoder_depth <= self.depth:
            raise TimError(
                f"encoder_depth {self.encoder_depth} is outside [1, depth={self.depth}]",
                "set encoder_depth within the depth, or z_dim=0 to drop the projector",
            )

    @property
    def head_dim(self) -> int:
        """Per-head width D / heads."""
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TiMConfig:
        """Build from :meth:`to_dict` output; unknown keys raise TimError."""
        return config_from_dict(cls, data)


def _checkpointed(block: nn.Module, tokens: Tensor, inputs: BlockInputs) -> Tensor:
    """``block(tokens, inputs)`` whose activations are recomputed in backward."""
    return checkpoint(block, tokens, inputs, use_reentrant=False)  # pyright: ignore[reportUnknownVariableType]


@dataclass
class BlockInputs:
    """Per-forward quantities every block reads (not tokens).

    Attributes:
        c: modulation input ``E_t(t) + E_Δ(t - r) [+ E_y(y)]``, (B, 1, D).
        dt_emb: ``E_Δ(t - r)`` for interval-aware attention, (B, 1, D).
        rope: the grid's RoPE tables (:meth:`RotaryEmbedding2D.tables`).
        context: caption tokens (B, M, D) or None.
        context_mask: (B, M) bool or None.
    """

    c: Tensor
    dt_emb: Tensor
    rope: RopeTables
    context: Tensor | None
    context_mask: Tensor | None


class TiMBlock(nn.Module):
    """Transformer block with adaLN-Zero: self-attention, [cross-attention,] SwiGLU FFN (arXiv 2509.04394, App. C.1).

    ``x += gate * sublayer(LN(x) (1 + scale) + shift)`` for each sub-layer, the (shift, scale,
    gate) triples coming from a low-rank SwiGLU of ``c`` (LoRA-AdaLN; 6D outputs, 9D with text).
    """

    def __init__(self, config: TiMConfig) -> None:
        super().__init__()
        D = config.hidden_size
        with_text = config.conditioning == "text"
        self.norm1 = block_norm(D)
        self.attn = SelfAttention(D, config.num_heads, config.qk_norm, config.interval_attention)
        self.norm_cross = block_norm(D) if with_text else None
        self.norm_context = block_norm(D) if with_text else None
        self.cross_attn = CrossAttention(D, config.num_heads, config.qk_norm) if with_text else None
        self.norm2 = block_norm(D)
        self.mlp = SwiGLU(D, swiglu_hidden_size(D, config.mlp_ratio))
        self.modulation = SwiGLU(D, config.modulation_rank, (9 if with_text else 6) * D)

    def forward(self, x: Tensor, inputs: BlockInputs) -> Tensor:
        """Update tokens x (B, N, D)."""
        with float32_region(inputs.c):  # adaLN in float32 under tim.network.float32_conditioning
            mods = self.modulation(inputs.c).chunk(
                9 if self.cross_attn is not None else 6, dim=-1
            )  # each (B, 1, D)
        shift, scale, gate = mods[:3]
        x = x + gate * self.attn(modulate(self.norm1(x), shift, scale), inputs.dt_emb, inputs.rope)
        if self.cross_attn is not None and self.norm_context is not None and self.norm_cross is not None:
            shift, scale, gate = mods[3:6]
            context = self.norm_context(inputs.context)  # (B, M, D)
            u = modulate(self.norm_cross(x), shift, scale)
            x = x + gate * self.cross_attn(u, context, inputs.context_mask, inputs.rope)
        shift, scale, gate = mods[-3:]
        return x + gate * self.mlp(modulate(self.norm2(x), shift, scale))  # (B, N, D)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm then Linear to ``p*p*C`` per token (modulation SwiGLU D -> D/2 -> 2D)."""

    def __init__(self, config: TiMConfig) -> None:
        super().__init__()
        D, p = config.hidden_size, config.patch_size
        self.norm = block_norm(D)
        self.modulation = SwiGLU(D, D // 2, 2 * D)
        self.linear = nn.Linear(D, p * p * config.in_channels)

    def forward(self, x: Tensor, c: Tensor) -> Tensor:
        """Tokens (B, N, D), c (B, 1, D) -> patch outputs (B, N, p*p*C)."""
        shift, scale = self.modulation(c).chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


def build_conditioning(config: TiMConfig) -> Adapter:
    """The conditioning adapter chosen by ``config.conditioning``."""
    if config.conditioning == "class":
        return ClassConditioning(config.num_classes, config.hidden_size)
    if config.conditioning == "text":
        return TextConditioning(
            config.text_dim, config.hidden_size, config.mask_context, pooled=config.pooled_text
        )
    return NoConditioning()


def build_projector(config: TiMConfig) -> nn.Sequential | None:
    """Representation-alignment projector D -> P -> P -> z_dim (SiLU between), or None when z_dim = 0."""
    if config.z_dim <= 0:
        return None
    D, P = config.hidden_size, config.projector_dim
    return nn.Sequential(nn.Linear(D, P), nn.SiLU(), nn.Linear(P, P), nn.SiLU(), nn.Linear(P, config.z_dim))


class TiM(Conditioned, nn.Module):
    """Transition Model network ``F(x_t, t, r, **cond) -> (B, C, H, W)`` (arXiv 2509.04394, Sec. 3.4).

    Example:
        >>> model = TiM(TIM_PRESETS["TiM-tiny"])
        >>> F = model(torch.randn(2, 4, 8, 8), torch.rand(2), torch.zeros(2), y=torch.tensor([1, 2]))
    """

    def __init__(self, config: TiMConfig) -> None:
        super().__init__()
        self.config = config
        D, p = config.hidden_size, config.patch_size
        self.patch_embed = nn.Conv2d(config.in_channels, D, kernel_size=p, stride=p)
        self.t_embedder = TimestepEmbedder(D)
        self.dt_embedder = TimestepEmbedder(D) if config.decoupled_time_embedding else None
        self.cond_embedder = build_conditioning(config)
        self.rope = RotaryEmbedding2D(
            config.head_dim, config.rope_theta, config.rope_positions, config.rope_scale
        )
        self.blocks = nn.ModuleList(TiMBlock(config) for _ in range(config.depth))
        self.projector = build_projector(config)
        self.final_layer = FinalLayer(config)
        self.set_attention_backend(config.attention_backend)
        self.initialize_weights()

    # ----------------------------------------------------------------------------- set-up

    @torch.no_grad()
    def initialize_weights(self) -> None:
        """Released initialisation (published code, github.com/WZDTHU/TiM), making the output exactly 0.

        Xavier-uniform weights and zero biases for every Linear and the patch embedding (as a
        [D, C p p] matrix); labels ~ N(0, 0.02); t-embedder weights ~ N(0, 0.02) (the Δt embedder
        keeps Xavier, as released); caption SwiGLU ~ N(0, 0.02). adaLN-Zero: every block's and
        the final layer's modulation output layer, and the final linear, are zero.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:  # pyright: ignore[reportUnnecessaryComparison]  -- None when bias=False
                    nn.init.zeros_(module.bias)
        nn.init.xavier_uniform_(self.patch_embed.weight.view(self.patch_embed.weight.shape[0], -1))
        if self.patch_embed.bias is not None:
            nn.init.zeros_(self.patch_embed.bias)
        if isinstance(self.cond_embedder, ClassConditioning):
            nn.init.normal_(self.cond_embedder.table.weight, std=LABEL_INIT_STD)
        if isinstance(self.cond_embedder, TextConditioning):
            caption_mlps = [self.cond_embedder.mlp, self.cond_embedder.pool_mlp]
            for mlp in (m for m in caption_mlps if m is not None):
                for linear in (mlp.fc_gate, mlp.fc_value, mlp.fc_out):
                    nn.init.normal_(linear.weight, std=CAPTION_MLP_INIT_STD)
        nn.init.normal_(cast(nn.Linear, self.t_embedder.mlp[0]).weight, std=TIME_INIT_STD)
        nn.init.normal_(cast(nn.Linear, self.t_embedder.mlp[2]).weight, std=TIME_INIT_STD)
        # adaLN-Zero: all gates, the final shift/scale and the output projection start at 0.
        zeroed = [cast(TiMBlock, b).modulation.fc_out for b in self.blocks]
        zeroed += [self.final_layer.modulation.fc_out, self.final_layer.linear]
        for linear in zeroed:
            nn.init.zeros_(linear.weight)
            nn.init.zeros_(linear.bias)

    def set_attention_backend(self, backend: AttentionBackend) -> None:
        """Choose the attention kernel for every layer ("auto", "sdpa", "flash" or "math")."""
        if backend not in ("auto", "sdpa", "flash", "math"):
            raise TimError(
                f"attention backend {backend!r} is unknown", "use 'auto', 'sdpa', 'flash' or 'math'"
            )
        if backend == "flash" and not flash_attn_available():
            raise TimError(
                "attention backend 'flash' needs the flash-attn package",
                "pip install flash-attn, or use 'auto'",
            )
        for module in self.modules():
            if isinstance(module, (SelfAttention, CrossAttention)):
                module.backend = backend

    def set_rope_scale(self, scale: float) -> None:
        """Scale RoPE positions (``scale < 1`` interpolates, e.g. training grid side / sampling grid side).

        Position interpolation (Chen et al. 2023) for grids larger than seen in training; the
        config is updated so that :func:`save_pretrained` records it.
        """
        if not scale > 0:
            raise TimError(
                f"rope scale {scale} is not positive", "pass e.g. train_tokens_per_side / tokens_per_side"
            )
        self.rope.scale = scale
        self.config = dataclasses.replace(self.config, rope_scale=scale)

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        """Default (C, H, W) of one sample: ``(in_channels, input_size, input_size)``."""
        return (self.config.in_channels, self.config.input_size, self.config.input_size)

    # ----------------------------------------------------------------------------- conditioning

    def set_null_context(self, features: Tensor) -> None:
        """Text models: set the null caption, e.g. the text encoder's features of ``""`` (M0, D_text)."""
        if not isinstance(self.cond_embedder, TextConditioning):
            raise TimError(
                "set_null_context needs a text-conditioned model", "build it with conditioning='text'"
            )
        self.cond_embedder.set_null_context(features)

    # ----------------------------------------------------------------------------- forward

    def forward(self, x_t: Tensor, t: Tensor, r: Tensor, **cond: Tensor) -> Tensor:
        """Transition output F(x_t, t, r) (arXiv 2509.04394, Sec. 3), shape of ``x_t``.

        Args:
            x_t: noisy latents (B, C, H, W), H and W divisible by the patch size.
            t: current network time input c_noise(t), (B,).
            r: target network time input c_noise(r) <= t, (B,).
            **cond: ``y`` (B,) labels, or ``context`` (B, M, D_text) [+ ``context_mask``], or nothing.
        """
        tokens, inputs = self._embed(x_t, t, r, cond)  # (B, N, D)
        tokens = self._run_blocks(self.blocks, tokens, inputs)
        return self._output(tokens, inputs, x_t.shape)

    def forward_with_features(
        self, x_t: Tensor, t: Tensor, r: Tensor, **cond: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Like :meth:`forward`, also returning alignment features (B, N, z_dim), or None without projector.

        The features are ``projector(tokens)`` after ``encoder_depth`` blocks (REPA, Yu et al. 2025;
        the released TiM trains them against RADIO features, which the paper does not mention).
        """
        if self.projector is None:
            return self.forward(x_t, t, r, **cond), None
        tokens, inputs = self._embed(x_t, t, r, cond)
        tokens = self._run_blocks(self.blocks[: self.config.encoder_depth], tokens, inputs)
        features = self.projector(tokens)  # (B, N, z_dim)
        tokens = self._run_blocks(self.blocks[self.config.encoder_depth :], tokens, inputs)
        return self._output(tokens, inputs, x_t.shape), features

    def time_embeddings(self, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        """Time embeddings (De-TE, arXiv 2509.04394, Sec. 3.4): ``(E_t(t), e)``, each (B, D).

        ``e`` is E_Δ(t - r) by default; the other ``config.time_condition`` options combine
        E_t and E_Δ of t, r and t - r as the published ``get_delta_embed`` does.
        """
        dt_embedder = self.dt_embedder if self.dt_embedder is not None else self.t_embedder
        t_emb = self.t_embedder(t)
        condition = self.config.time_condition
        if condition == "t-r":
            return t_emb, dt_embedder(t - r)
        if condition == "r":
            return t_emb, dt_embedder(r)
        if condition == "t,r":
            return t_emb, t_emb + dt_embedder(r)
        if condition == "t,t-r":
            return t_emb, t_emb + dt_embedder(t - r)
        if condition == "r,t-r":
            return t_emb, self.t_embedder(r) + dt_embedder(t - r)
        return t_emb, t_emb + self.t_embedder(r) + dt_embedder(t - r)  # "t,r,t-r"

    def _embed(
        self, x_t: Tensor, t: Tensor, r: Tensor, cond: dict[str, Tensor]
    ) -> tuple[Tensor, BlockInputs]:
        """Patch tokens and the per-block inputs (conditioning vector, Δt embedding, RoPE tables)."""
        t, r = self._check_inputs(x_t, t, r)
        p = self.config.patch_size
        # Under tim.network.float32_conditioning (mixed precision) the input embedding and the
        # time embeddings run in float32, so the residual stream starts in float32.
        with float32_region(x_t):
            tokens = self.patch_embed(x_t).flatten(2).transpose(1, 2)  # (B, N, D), token n = row * w + col
            t_emb, dt_emb = self.time_embeddings(t, r)  # (B, D) each
        embedded = self.embed_cond(cond, x_t.shape[0])
        c = t_emb + dt_emb if embedded.pooled is None else t_emb + dt_emb + embedded.pooled  # (B, D)
        # RoPE is applied in at least float32, also under bf16 autocast (as in the published code).
        rope_dtype = torch.promote_types(self.patch_embed.weight.dtype, torch.float32)
        rope = self.rope.tables(x_t.shape[-2] // p, x_t.shape[-1] // p, x_t.device, rope_dtype)
        inputs = BlockInputs(c[:, None], dt_emb[:, None], rope, embedded.context, embedded.context_mask)
        return tokens, inputs

    def _run_blocks(self, blocks: nn.ModuleList, tokens: Tensor, inputs: BlockInputs) -> Tensor:
        """Apply blocks; with ``checkpointing`` recompute activations in backward (gradient passes only)."""
        remat = (
            self.config.checkpointing
            and torch.is_grad_enabled()
            and not needs_differentiable_attention(tokens)
        )
        for block in blocks:
            tokens = _checkpointed(block, tokens, inputs) if remat else block(tokens, inputs)
        return tokens

    def _output(self, tokens: Tensor, inputs: BlockInputs, shape: torch.Size) -> Tensor:
        """Final layer and unpatchify to (B, C, H, W)."""
        p = self.config.patch_size
        if float32_conditioning_active(tokens):  # output layer in float32 (tim.network.float32_conditioning)
            with float32_region(tokens):
                out = self.final_layer(tokens.to(inputs.c.dtype), inputs.c)  # (B, N, p*p*C)
        else:
            out = self.final_layer(tokens, inputs.c)  # (B, N, p*p*C)
        return unpatchify(out, p, shape[-2] // p, shape[-1] // p)

    def _check_inputs(self, x_t: Tensor, t: Tensor, r: Tensor) -> tuple[Tensor, Tensor]:
        """Validate shapes; a 0-d t or r is broadcast to the batch."""
        C, p = self.config.in_channels, self.config.patch_size
        if (
            x_t.ndim != 4
            or x_t.shape[1] != C
            or x_t.shape[2] % p
            or x_t.shape[3] % p
            or not x_t.is_floating_point()
        ):
            raise TimError(
                f"x_t has shape {tuple(x_t.shape)} and dtype {x_t.dtype}",
                f"pass float (B, {C}, H, W) with H and W divisible by the patch size {p}",
            )
        return batch_times(x_t, t, r)


def __getattr__(name: str) -> Any:
    """``WithFeatures`` moved to :mod:`tim.models.common` (import it from :mod:`tim.models`)."""
    if name == "WithFeatures":
        warnings.warn(
            "tim.models.tim.WithFeatures moved: import it from tim.models (tim.models.common)",
            DeprecationWarning,
            stacklevel=2,
        )
        from tim.models.common import WithFeatures

        return WithFeatures
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
