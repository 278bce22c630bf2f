"""Networks for Transition Models: the TiM transformer, a vector MLP, presets and weight I/O.

Every network is a callable ``F(x_t, t, r, **cond)`` returning a tensor shaped like ``x_t``
(docs/internals.md), with ``forward_with_features``, ``null_cond`` and ``drop_cond``.

Presets (``TIM_PRESETS``, ``MLP_PRESETS``; DiT-style registry). The released sizes match the
parameter counts of the published checkpoints (with the projector; set
``z_dim=0`` to drop it):

======================  =====================================================================
``TiM-B/4``             ImageNet-256, SD-VAE latents 32x32x4, 136.17M (128.83M w/o projector)
``TiM-XL/2``            ImageNet-256, SD-VAE latents 32x32x4, 672.26M (664.13M)
``TiM-XL/1``            ImageNet-512, DC-AE latents 16x16x32, 672.30M (664.16M)
``TiM-T2I``             text-to-image, DC-AE latents, Gemma-3-1B caption features, 873.11M (864.98M)
``TiM-digits``          8x8x1 scikit-learn digits, 10 classes: trains on 2 CPU cores in minutes
``TiM-tiny``            8x8x4, 10 classes, with projector: for tests
``TiM-scenes``          32x32x3 synthetic scenes, MiniLM caption features (384-d), 2.2M: text-to-image on CPU
``MLP-toy``             2-D toy data, unconditional (pass ``num_classes=...`` for labels)
======================  =====================================================================
"""

from __future__ import annotations

import dataclasses

from torch import nn

from tim.errors import TimError
from tim.models.common import WithFeatures
from tim.models.convert import load_released_checkpoint, released_config
from tim.models.mlp import MLPConfig, TiMMLP
from tim.models.tim import TiM, TiMConfig
from tim.models.weights import from_pretrained, save_pretrained

TIM_PRESETS: dict[str, TiMConfig] = {
    # Released configs (published code, github.com/WZDTHU/TiM), our default RoPE grid; the converter
    # switches to the released "wrapped" positions.
    "TiM-B/4": TiMConfig(
        in_channels=4,
        input_size=32,
        patch_size=4,
        hidden_size=768,
        depth=12,
        num_heads=12,
        modulation_rank=256,
        encoder_depth=4,
    ),
    "TiM-XL/2": TiMConfig(in_channels=4, input_size=32, patch_size=2),
    "TiM-XL/1": TiMConfig(in_channels=32, input_size=16, patch_size=1),
    # input_size 32 = 1024 px through DC-AE f32 (the paper's T2I evaluation size).
    "TiM-T2I": TiMConfig(in_channels=32, input_size=32, patch_size=1, conditioning="text", text_dim=1152),
    # Small presets. TiM-digits: 16 tokens, 1.39M parameters, 0.08 GFLOP per image for forward +
    # backward (benchmarks/bench_model.py), i.e. well under a second per batch of 64 on one core.
    "TiM-digits": TiMConfig(
        in_channels=1,
        input_size=8,
        patch_size=2,
        hidden_size=128,
        depth=4,
        num_heads=4,
        modulation_rank=64,
        num_classes=10,
        encoder_depth=2,
        z_dim=0,
    ),
    # TiM-scenes: 64 tokens (32x32 RGB, 4x4 patches), cross-attention to all-MiniLM-L6-v2 token
    # features (tim.text's default, 384-d); 2.22M parameters.
    "TiM-scenes": TiMConfig(
        in_channels=3,
        input_size=32,
        patch_size=4,
        hidden_size=128,
        depth=4,
        num_heads=4,
        modulation_rank=64,
        conditioning="text",
        num_classes=0,
        text_dim=384,
        encoder_depth=2,
        z_dim=0,
    ),
    "TiM-tiny": TiMConfig(
        in_channels=4,
        input_size=8,
        patch_size=2,
        hidden_size=32,
        depth=2,
        num_heads=2,
        modulation_rank=16,
        num_classes=10,
        encoder_depth=1,
        z_dim=16,
        projector_dim=32,
    ),
}

MLP_PRESETS: dict[str, MLPConfig] = {
    "MLP-toy": MLPConfig(dim=2, hidden_size=256, depth=4),
}


def build_model(name_or_config: str | TiMConfig | MLPConfig, **overrides: object) -> nn.Module:
    """Build a network from a preset name or a config, with field overrides.

    Args:
        name_or_config: a key of ``TIM_PRESETS`` / ``MLP_PRESETS``, or a ``TiMConfig`` / ``MLPConfig``.
        **overrides: config fields to replace, e.g. ``num_classes=10`` or ``z_dim=0``.

    Returns:
        A :class:`TiM` or :class:`TiMMLP` (train mode, released initialisation).

    Example:
        >>> model = build_model("TiM-digits")
        >>> model = build_model("TiM-B/4", z_dim=0, checkpointing=True)
    """
    config = name_or_config
    if isinstance(name_or_config, str):
        presets = {**TIM_PRESETS, **MLP_PRESETS}
        if name_or_config not in presets:
            raise TimError(f"unknown model preset {name_or_config!r}", f"use one of {sorted(presets)}")
        config = presets[name_or_config]
    if not isinstance(config, (TiMConfig, MLPConfig)):
        raise TimError(
            f"cannot build a model from {type(config).__name__}", "pass a preset name, TiMConfig or MLPConfig"
        )
    names = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TimError(f"unknown {type(config).__name__} fields {unknown}", f"use only {sorted(names)}")
    config = dataclasses.replace(config, **overrides)
    return TiM(config) if isinstance(config, TiMConfig) else TiMMLP(config)


__all__ = [
    "MLPConfig",
    "MLP_PRESETS",
    "TIM_PRESETS",
    "TiM",
    "TiMConfig",
    "TiMMLP",
    "WithFeatures",
    "build_model",
    "from_pretrained",
    "load_released_checkpoint",
    "released_config",
    "save_pretrained",
]
