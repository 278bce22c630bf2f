"""Text-conditioned runs: model/data agreement, the null prompt, grid prompts, the run's text encoder.

The loop stays free of text logic: it calls :func:`check_text_model` and :func:`with_null_prompt`
when it builds the network, and the sample grids call :func:`grid_condition`. A text run's
``config.json`` names its encoder (``data.text_encoder``, ``data.max_text_length``), so
:func:`run_text_encoder` rebuilds it for sampling; the null prompt's features are a buffer of the
model (``cond_embedder.null_context``) and travel with the weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from tim.errors import TimError
from tim.io import write_text

GRID_PROMPTS_FILE = "grid_prompts.txt"  # beside the sample grids: the caption of each grid row


def is_text_model(config: Any) -> bool:
    """Whether a model config conditions on caption features."""
    return getattr(config, "conditioning", None) == "text"


def check_text_model(config: Any, info: Any) -> None:
    """One-line errors when a model and its data disagree about captions.

    Args:
        config: the network's TiMConfig / MLPConfig.
        info: the data source's DataInfo (``text_dim`` > 0 for captioned data).
    """
    text_dim = getattr(info, "text_dim", 0)
    if is_text_model(config) and not text_dim:
        raise TimError(
            "model.conditioning='text' needs captions, but the data has none",
            "set data.text_encoder=minilm with data.name=scenes or a captioned image_folder",
        )
    if text_dim and not is_text_model(config):
        raise TimError(
            f"the data carries caption features but model.conditioning="
            f"{getattr(config, 'conditioning', 'class')!r}",
            f"set model.conditioning=text and model.text_dim={text_dim}, or data.text_encoder=''",
        )
    if text_dim and config.text_dim != text_dim:
        raise TimError(
            f"model.text_dim={config.text_dim} but the text encoder {info.text.encoder!r} gives "
            f"{text_dim}-d features",
            f"set model.text_dim={text_dim}",
        )


def with_null_prompt(model: nn.Module, info: Any) -> nn.Module:
    """Store the encoder's features of ``""`` as the model's CFG null caption (text data only)."""
    text = getattr(info, "text", None)
    if text is not None and is_text_model(model.config):
        model.set_null_context(text.null_context)
    return model


NULL_CONTEXT_KEY = "cond_embedder.null_context"  # TextConditioning's buffer in a TiM state dict


def adopt_null_prompt(model: nn.Module, weights: dict[str, Tensor]) -> None:
    """Give a freshly built text model the saved null caption (its length depends on the encoder)."""
    stored = weights.get(NULL_CONTEXT_KEY)
    if (
        stored is not None
        and is_text_model(model.config)
        and stored.ndim == 2
        and stored.shape[1] == model.config.text_dim
    ):
        model.set_null_context(stored)


def grid_condition(
    info: Any, num: int, device: torch.device, folder: Path | None = None
) -> dict[str, Tensor]:
    """Caption features for a sample grid of ``num`` images: one training caption per grid row.

    The captions are spread over the data's distinct captions (fixed for the whole run) and
    written to ``folder/grid_prompts.txt`` (one line per row) so that a grid can be read.
    """
    text = info.text
    per_row = int(math.sqrt(num)) or 1
    prompts = text.grid_prompts(math.ceil(num / per_row), per_row)[:num]
    if folder is not None:
        rows = prompts[::per_row]
        write_text(folder / GRID_PROMPTS_FILE, "".join(f"row {k + 1}: {p}\n" for k, p in enumerate(rows)))
    if text.encode is None:
        raise TimError(
            "the captioned data source gives no way to encode prompts for the sample grids",
            "build it with tim.data.build_data_source, or set sample.num=0",
        )
    return {key: value.to(device) for key, value in text.encode(prompts).items()}


def run_text_encoder(
    cfg: Any, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> Any:
    """The TextEncoder a text run was trained with (from its config), or None for other runs.

    Args:
        cfg: a RunConfig, e.g. from :func:`tim.training.load_run`.
        device: where the encoder runs.
        dtype: encoder weights dtype (None = float32).
    """
    from tim.training.config import model_config

    if not is_text_model(model_config(cfg)):
        return None
    if not cfg.data.text_encoder:
        raise TimError(
            "this text-conditioned run names no text encoder (data.text_encoder is empty)",
            "pass a TextEncoder explicitly, e.g. tim.text.TextEncoder('minilm')",
        )
    from tim.text import TextEncoder

    return TextEncoder(cfg.data.text_encoder, max_length=cfg.data.max_text_length, device=device, dtype=dtype)
