"""Load released TiM checkpoints (github.com/WZDTHU/TiM) into :class:`tim.models.TiM`.

Accepted files:
- ``.safetensors`` (read with safetensors; a ``config`` JSON entry in its metadata, in the
  released constructor's keys, is used when no config is given);
- ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt`` through ``torch.load(weights_only=True)`` only (no
  arbitrary unpickling).
Accepted layouts: a flat state dict, or one nested under ``"ema"``, ``"ema_model"``, ``"model"``,
``"state_dict"``, ``"module"`` or ``"model_state_dict"`` (EMA weights are preferred when both EMA
and raw weights are present); a prefix ``module.`` (DDP), ``_orig_mod.`` (torch.compile) or
``ema.``/``model.`` shared by every key is stripped. Keys are renamed from the released names
(the published checkpoints, github.com/WZDTHU/TiM) to ours with :data:`RELEASED_TO_OURS`; any missing,
unexpected or mis-shaped key raises one :class:`tim.errors.TimError` line naming them.

A ``.safetensors`` file is checked from its header alone before anything large happens: its keys,
shapes and dtypes against the layout of the requested model (built on the meta device), and the
config's size against the free memory, so a file of a smaller model loaded as ``TiM-XL/2`` is
refused before the 672M-parameter network is built or any tensor is read.

The converted model uses the released RoPE positions (``rope_positions="wrapped"``) and attends
padded caption tokens (``mask_context=False``), so it reproduces the released outputs.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any, TypeGuard, TypeVar

from torch import Tensor

from tim.errors import TimError
from tim.models.conditioning import TextConditioning
from tim.models.tim import TIME_CONDITIONS, TiM, TiMConfig
from tim.models.weights import (
    TensorInfo,
    check_layout,
    check_model_fits,
    expected_layout,
    load_state_dict_strict,
    read_safetensors,
    read_safetensors_header,
    tensor_layout,
    torch_load_weights_only,
)

# (released pattern, our replacement), applied in order to every key.
RELEASED_TO_OURS: list[tuple[str, str]] = [
    (r"^x_embedder\.proj\.", "patch_embed."),
    (r"^delta_embedder\.", "dt_embedder."),
    (r"^y_embedder\.embedding_table\.", "cond_embedder.table."),
    (r"^y_embedder\.", "cond_embedder."),
    (r"\.qkv_d\.", ".qkv_interval."),
    (r"\.adaLN_modulation\.", ".modulation."),
    (r"\.fc1_g\.", ".fc_gate."),
    (r"\.fc1_x\.", ".fc_value."),
    (r"\.fc2\.", ".fc_out."),
]
NESTING_KEYS = ("ema", "ema_model", "model", "state_dict", "module", "model_state_dict")
STRIPPED_PREFIXES = ("module.", "_orig_mod.", "ema.", "model.")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
NULL_CONTEXT_KEY = "cond_embedder.null_context"
ValueT = TypeVar("ValueT")


def released_to_ours(key: str) -> str:
    """Our parameter name for a released one (e.g. ``blocks.3.attn.qkv_d.weight`` -> ``...qkv_interval...``)."""
    for pattern, replacement in RELEASED_TO_OURS:
        key = re.sub(pattern, replacement, key)
    return key


def ours_to_released(key: str) -> str:
    """Inverse of :func:`released_to_ours` (for exporting in the released layout)."""
    inverse = [
        (r"^patch_embed\.", "x_embedder.proj."),
        (r"^dt_embedder\.", "delta_embedder."),
        (r"^cond_embedder\.table\.", "y_embedder.embedding_table."),
        (r"^cond_embedder\.", "y_embedder."),
        (r"\.qkv_interval\.", ".qkv_d."),
        (r"\.modulation\.", ".adaLN_modulation."),
        (r"\.fc_gate\.", ".fc1_g."),
        (r"\.fc_value\.", ".fc1_x."),
        (r"\.fc_out\.", ".fc2."),
    ]
    for pattern, replacement in inverse:
        key = re.sub(pattern, replacement, key)
    return key


def released_config(released: dict[str, Any]) -> TiMConfig:
    """Our config for a released constructor config (``TiM(input_size=..., lora_hidden_size=..., ...)``).

    Args:
        released: the released keyword arguments (``tiny_c2i_weights`` metadata or a YAML's
            ``model.network`` section); ``cap_feat_dim`` selects text conditioning.
    """
    condition = released.get("new_condition", "t-r")
    if condition not in TIME_CONDITIONS:  # the published code raises NotImplementedError here
        raise TimError(
            f"released new_condition={condition!r} is unknown", f"use one of {list(TIME_CONDITIONS)}"
        )
    if "cap_feat_dim" not in released and released.get("class_dropout_prob", 0.1) <= 0:
        raise TimError(
            "released model has no null class (class_dropout_prob <= 0)", "convert a CFG-trained checkpoint"
        )
    D = released.get("hidden_size", 1152)
    text = "cap_feat_dim" in released
    return TiMConfig(
        in_channels=released.get("in_channels", 4),
        input_size=released.get("input_size", 32),
        patch_size=released.get("patch_size", 2),
        hidden_size=D,
        depth=released.get("depth", 28),
        num_heads=released.get("num_heads", 16),
        mlp_ratio=released.get("mlp_ratio", 4.0),
        # Released default when absent: (hidden_size // 4) * 3 (published code).
        modulation_rank=released.get("lora_hidden_size") or (D // 4) * 3,
        conditioning="text" if text else "class",
        num_classes=released.get("num_classes", 1000),
        text_dim=released.get("cap_feat_dim", 1152),
        mask_context=False,
        decoupled_time_embedding=released.get("use_new_embed", False),
        interval_attention=released.get("distance_aware", False),
        time_condition=condition,
        qk_norm=released["qk_norm"],
        rope_positions="wrapped",
        encoder_depth=released.get("encoder_depth", 8),
        z_dim=released.get("z_dim", 768),
        projector_dim=released.get("projector_dim", 2048),
    )


def read_checkpoint(path: str | Path, prefer_ema: bool = True) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors (released names, prefixes stripped) and safetensors metadata of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise TimError(f"checkpoint {path} does not exist", "pass the path of a local .safetensors/.pt file")
    metadata: dict[str, str] = {}
    if path.suffix == ".safetensors":
        state, metadata = read_safetensors(path)
    elif path.suffix in PICKLE_SUFFIXES:
        state = torch_load_weights_only(path)
    else:
        raise TimError(
            f"checkpoint {path} has an unknown suffix", f"use .safetensors or one of {PICKLE_SUFFIXES}"
        )
    return strip_prefixes(unnest(state, prefer_ema, path)), metadata


def read_checkpoint_layout(
    path: Path, prefer_ema: bool = True
) -> tuple[dict[str, TensorInfo], dict[str, str], dict[str, Tensor] | None]:
    """Layout (released names, prefixes stripped) and metadata of a checkpoint, reading as little as possible.

    Returns:
        ``(layout, metadata, tensors)``: for ``.safetensors`` only the header is read and
        ``tensors`` is None; a pickle-format file must be read whole (``weights_only=True``), so
        its tensors come back too.
    """
    if not path.is_file():
        raise TimError(f"checkpoint {path} does not exist", "pass the path of a local .safetensors/.pt file")
    if path.suffix == ".safetensors":
        layout, metadata = read_safetensors_header(path)
        if not layout:
            raise TimError(f"checkpoint {path} holds no tensors", "pass a TiM weights file")
        return strip_prefixes(layout), metadata, None
    state, metadata = read_checkpoint(path, prefer_ema)
    return tensor_layout(state), metadata, state


def unnest(state: Any, prefer_ema: bool, path: Path) -> dict[str, Tensor]:
    """Descend into ``{"ema": {...}}``-style wrappers until a flat name -> tensor dict remains."""
    order = (
        NESTING_KEYS
        if prefer_ema
        else tuple(k for k in NESTING_KEYS if "ema" not in k) + ("ema", "ema_model")
    )
    while _is_dict(state) and not all(isinstance(v, Tensor) for v in state.values()):
        key = next((k for k in order if _is_dict(state.get(k))), None)
        if key is None:
            raise TimError(
                f"checkpoint {path} holds no state dict (top-level keys {sorted(state)[:8]})",
                f"pass a file whose weights are flat or nested under one of {NESTING_KEYS}",
            )
        state = state[key]
    if not _is_dict(state) or not state:
        raise TimError(f"checkpoint {path} holds no tensors", "pass a TiM weights file")
    return state


def _is_dict(value: object) -> TypeGuard[dict[str, Any]]:
    """A dict (of a loaded checkpoint: str keys, values not yet known)."""
    return isinstance(value, dict)


def strip_prefixes(state: dict[str, ValueT]) -> dict[str, ValueT]:
    """Remove wrapper prefixes (``module.``, ``_orig_mod.``, ``ema.``, ``model.``) shared by all keys."""
    changed = True
    while changed:
        changed = False
        for prefix in STRIPPED_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def resolve_config(
    config_or_preset: TiMConfig | str | None, metadata: dict[str, str], path: Path
) -> TiMConfig:
    """The config to convert into: given, a preset name, or the file's ``config`` metadata."""
    if config_or_preset is None:
        if "config" not in metadata:
            raise TimError(
                f"checkpoint {path} carries no config", "pass a preset name (e.g. 'TiM-XL/2') or a TiMConfig"
            )
        try:
            released: object = json.loads(metadata["config"])
        except (json.JSONDecodeError, RecursionError):
            released = None
        if not _is_dict(released) or "qk_norm" not in released:
            raise TimError(
                f"the config in the metadata of {path} is not a JSON object of TiM constructor arguments "
                "with qk_norm",
                "pass a preset name (e.g. 'TiM-XL/2') or a TiMConfig",
            )
        return released_config(released)
    if isinstance(config_or_preset, str):
        from tim.models import TIM_PRESETS

        if config_or_preset not in TIM_PRESETS:
            raise TimError(f"unknown preset {config_or_preset!r}", f"use one of {sorted(TIM_PRESETS)}")
        config_or_preset = TIM_PRESETS[config_or_preset]
    return dataclasses.replace(config_or_preset, rope_positions="wrapped", mask_context=False)


def load_released_checkpoint(
    path: str | Path,
    config_or_preset: TiMConfig | str | None = None,
    *,
    prefer_ema: bool = True,
    **overrides: object,
) -> TiM:
    """Build a :class:`TiM` holding a released checkpoint's weights (strict key/shape check).

    Args:
        path: local ``.safetensors`` (or ``.pt``/``.pth``/``.bin``/``.ckpt``, read with
            ``weights_only=True``) file.
        config_or_preset: a ``TIM_PRESETS`` name, a :class:`TiMConfig`, or None to read the
            released config from the file's metadata. The released RoPE positions and unmasked
            caption attention are switched on; a checkpoint without projector weights gets
            ``z_dim=0``.
        prefer_ema: take EMA weights when the file holds both EMA and raw weights.
        **overrides: TiMConfig fields to change after that (e.g. ``attention_backend="math"``).

    Returns:
        The model in eval mode, on CPU.

    Example:
        >>> model = load_released_checkpoint("TiM-XL-2-256.safetensors", "TiM-XL/2")
    """
    path = Path(path)
    config, released = check_released_checkpoint(path, config_or_preset, prefer_ema=prefer_ema, **overrides)
    if released is None:
        released = strip_prefixes(read_safetensors(path)[0])
    model = TiM(config)
    state = {released_to_ours(k): v for k, v in released.items()}
    if isinstance(model.cond_embedder, TextConditioning):  # the one adapter with a null_context buffer
        # Released T2I files have no null caption (the trainer encoded ""); keep ours (zeros).
        state.setdefault(NULL_CONTEXT_KEY, model.cond_embedder.null_context)
    load_state_dict_strict(model, state, source=str(path))
    return model.eval()


def check_released_checkpoint(
    path: str | Path,
    config_or_preset: TiMConfig | str | None = None,
    *,
    prefer_ema: bool = True,
    **overrides: object,
) -> tuple[TiMConfig, dict[str, Tensor] | None]:
    """The cheap half of :func:`load_released_checkpoint`: the config and the file checked against it.

    Keys, shapes, dtypes and the model's size are checked reading only the header of a
    ``.safetensors`` file, so a wrong file is refused before anything large is built or read.

    Returns:
        ``(config, tensors)``; ``tensors`` is None for ``.safetensors`` (not read yet) and the
        tensors of a pickle-format file (which must be read whole to be checked).
    """
    path = Path(path)
    layout, metadata, released = read_checkpoint_layout(path, prefer_ema)
    config = resolve_config(config_or_preset, metadata, path)
    if config.z_dim > 0 and not any(k.startswith("projector.") for k in layout):
        config = dataclasses.replace(config, z_dim=0)
    config = dataclasses.replace(config, **overrides)
    # Size, keys, shapes and dtypes first: nothing large is built or read for a file that cannot fit.
    check_model_fits(config, path)
    expected = expected_layout(lambda: TiM(config))
    found = {released_to_ours(k): v for k, v in layout.items()}
    if NULL_CONTEXT_KEY in expected:  # released T2I files have no null caption; ours (zeros) is kept
        found.setdefault(NULL_CONTEXT_KEY, expected[NULL_CONTEXT_KEY])
    check_layout(found, expected, str(path))
    return config, released
