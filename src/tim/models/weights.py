"""Save and load our own networks: a directory with ``config.json`` + ``model.safetensors``.

This is the Hugging Face layout, so a directory works offline from a local path and can be
uploaded as is. ``config.json`` is ``{"model_type": "TiM" | "TiMMLP", "config": {...},
"format_version": 1}``. Loading is strict (every key and shape must match) and never unpickles.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from tim.errors import TimError, first_line

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model``'s config and weights to ``directory`` (created if needed).

    Args:
        model: a :class:`tim.models.TiM` or :class:`tim.models.TiMMLP`.
        directory: target folder.

    Returns:
        The directory path.
    """
    from safetensors.torch import save_file  # pyright: ignore[reportUnknownVariableType]  # [train] extra

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "model_type": type(model).__name__,
        "config": cast(Any, model).config.to_dict(),  # TiM or TiMMLP: a dataclass config
        "format_version": FORMAT_VERSION,
    }
    (directory / CONFIG_NAME).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    return directory


def model_from_config_json(meta: dict[str, Any]) -> nn.Module:
    """Build an (initialised) model from the contents of a ``config.json``."""
    from tim.models.mlp import MLPConfig, TiMMLP
    from tim.models.tim import TiM, TiMConfig

    kinds: dict[str, tuple[Callable[[Any], nn.Module], Any]] = {
        "TiM": (TiM, TiMConfig),
        "TiMMLP": (TiMMLP, MLPConfig),
    }
    if meta.get("model_type") not in kinds or "config" not in meta:
        raise TimError(
            f"config.json has model_type {meta.get('model_type')!r}",
            f"expected one of {sorted(kinds)} with a 'config' entry (written by save_pretrained)",
        )
    model_cls, config_cls = kinds[meta["model_type"]]
    return model_cls(config_cls.from_dict(meta["config"]))


def from_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a model written by :func:`save_pretrained` (strict), in eval mode.

    Args:
        directory: folder with ``config.json`` and ``model.safetensors``.
        device: where to put the weights.

    Returns:
        The model, bit-identical to the one saved.
    """
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise TimError(
            f"{directory} has no {CONFIG_NAME} + {WEIGHTS_NAME}", "pass a folder written by save_pretrained"
        )
    model = model_from_config_json(read_config_json(config_path))
    load_state_dict_strict(model, read_safetensors(weights_path)[0], source=str(weights_path))
    return model.to(device).eval()


def load_state_dict_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped key raises one TimError line."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if not shapes_compatible(k, state[k], expected[k])
    )
    if missing or unexpected or misshaped:
        raise TimError(
            f"weights in {source} do not match the model: missing {summarise(missing)}, "
            f"unexpected {summarise(unexpected)}, mis-shaped {summarise(misshaped)}",
            "check that the checkpoint and the model config (preset/overrides) belong together",
        )
    model.load_state_dict(state, strict=True)


def shapes_compatible(key: str, stored: Tensor, expected: Tensor) -> bool:
    """Equal shapes, except the null caption, whose length M0 follows the text encoder."""
    if key.endswith("null_context"):
        return stored.ndim == 2 and stored.shape[1] == expected.shape[1]
    return stored.shape == expected.shape


def summarise(names: list[str], limit: int = 6) -> str:
    """``[a, b, c, ... (+n more)]`` for error messages."""
    shown = ", ".join(names[:limit])
    more = f", ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return f"{len(names)} [{shown}{more}]"


def read_config_json(path: Path) -> dict[str, Any]:
    """The contents of a ``config.json``; a broken file is a one-line TimError."""
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TimError(
            f"{path} is not valid JSON ({first_line(error)})",
            "re-export the folder with save_pretrained or restore config.json",
        ) from None


def read_safetensors(path: Path) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a corrupt or foreign file is a one-line TimError."""
    from safetensors import SafetensorError, safe_open  # [train] extra

    _refuse_empty(path)
    try:
        with safe_open(str(path), framework="pt") as f:  # pyright: ignore[reportUnknownVariableType]  -- untyped
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
    except (SafetensorError, OSError) as error:
        raise TimError(
            f"{path} is not a valid safetensors file ({first_line(error)})",
            "re-download or re-export it (it is truncated, corrupt or in another format)",
        ) from None


def _refuse_empty(path: Path) -> None:
    """A zero-byte file (an interrupted download or copy) gets its own clear message."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise TimError(
            f"{path} is empty (0 bytes)", "re-download or copy it again (the transfer did not finish)"
        )


def torch_load_weights_only(path: Path) -> object:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickles."""
    import pickle

    _refuse_empty(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise TimError(
            f"{path} holds Python objects that are unsafe to unpickle (torch.load weights_only=True "
            "refused them; nothing was executed)",
            "get the weights as .safetensors, or re-save only the state dict of tensors",
        ) from None
    except Exception as error:  # noqa: BLE001 - any other failure: not a readable checkpoint
        raise TimError(
            f"{path} is not a readable PyTorch checkpoint ({first_line(error)})",
            "re-download it or convert it to .safetensors",
        ) from None
