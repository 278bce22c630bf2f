"""What a run tells generation: its sampling recipe, written as ``recipe.json`` beside ``config.json``.

Training knows its data (dataset names, class names, latent scale and shift, the autoencoder and
text encoder used), so it writes the sampling recipe of the run once, at the start of every
sitting; :meth:`tim.generation.pipeline.TiMPipeline.from_run` reads it back (validated field by
field, like a pipeline folder's ``recipe.json``) and never re-derives training facts. Runs written
before this file existed are read through :func:`run_recipe` on their config.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

from tim.io import write_json

RUN_RECIPE_NAME = "recipe.json"


def run_recipe(cfg: Any) -> dict[str, Any]:
    """The recipe fields of a run (path, ``sample`` defaults, shift and RoPE rules) and its data facts.

    Returns:
        A JSON-ready dict of :class:`tim.generation.SamplingRecipe` fields, plus ``autoencoder`` /
        ``text_encoder`` locations when the data records them.
    """
    return json.loads(json.dumps({**run_recipe_fields(cfg), **run_data_facts(cfg)}))


def write_run_recipe(cfg: Any, run_dir: Path) -> None:
    """Write :func:`run_recipe` to ``run_dir/recipe.json`` (atomically)."""
    write_json(run_dir / RUN_RECIPE_NAME, run_recipe(cfg))


def read_run_recipe(run_dir: Path) -> dict[str, Any] | None:
    """The recipe a run wrote, or None for a run without one. A malformed file is one line."""
    from tim.errors import TimError

    path = run_dir / RUN_RECIPE_NAME
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise TimError(
            f"{path} cannot be read ({type(error).__name__})",
            "delete it; it is rewritten when training resumes",
        ) from None
    if not isinstance(data, dict):
        raise TimError(f"{path} is not a JSON object", "delete it; it is rewritten when training resumes")
    return data


def run_recipe_fields(cfg: Any) -> dict[str, Any]:
    """Recipe fields from a run config: path, cfg.sample defaults, resolution shift, RoPE rule."""
    from tim.training.config import set_options

    base = cfg.objective.shift_base
    fields: dict[str, Any] = {
        "path": cfg.path.name,
        "path_options": set_options(cfg.path),
        "steps": max(cfg.sample.steps) if cfg.sample.steps else 4,
        "guidance_scale": cfg.sample.guidance_scale,
        "guidance_interval": tuple(cfg.sample.guidance_interval),
        "stochasticity": cfg.sample.stochasticity,
    }
    if base is not None:
        fields.update(shift_rule="sqrt_area", base_size=tuple(base))
    if cfg.data.bucketed and cfg.data.name == "shapes":
        # Positions up to the largest training side were seen; interpolate beyond (native-resolution demo).
        fields.update(rope_rule="interpolate", rope_max_side=cfg.data.max_side)
    return fields


def run_data_facts(cfg: Any) -> dict[str, Any]:
    """What the run's data says about its outputs, without loading the dataset.

    Returns recipe fields (class_names, latent_scale, latent_shift, text_max_length) plus
    ``autoencoder`` / ``text_encoder`` locations when recorded.
    """
    data = cfg.data
    facts: dict[str, Any] = {}
    if data.name == "digits":
        facts["class_names"] = [str(k) for k in range(10)]
    elif data.name == "shapes":
        from tim.data.shapes import SHAPE_NAMES

        facts["class_names"] = list(SHAPE_NAMES)
    elif data.name == "image_folder":
        root = Path(data.root)
        if root.is_dir():
            facts["class_names"] = sorted(
                p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
    elif data.name == "latents":
        facts.update(latent_metadata(Path(data.root)))
    text = getattr(data, "text_encoder", "")
    if text:
        facts["text_encoder"] = text
        if getattr(data, "max_text_length", 0):
            facts["text_max_length"] = int(data.max_text_length)
    return facts


def latent_metadata(root: Path) -> dict[str, Any]:
    """Scale, shift, autoencoder and class names recorded in a latent-shard folder (tim.data.latents)."""
    from safetensors import safe_open

    shards = sorted(root.glob("*.safetensors")) if root.is_dir() else []
    if not shards:
        warnings.warn(
            f"the run's latent shards ({root}) are gone: latent scale 1 and shift 0 are assumed; "
            "pass autoencoder=DIR and check the recipe",
            stacklevel=4,
        )
        return {}
    with safe_open(str(shards[0]), framework="pt") as f:
        meta = f.metadata() or {}
    facts: dict[str, Any] = {
        "latent_scale": float(meta.get("scale", 1.0)),
        "latent_shift": float(meta.get("shift", 0.0)),
    }
    if meta.get("autoencoder"):
        facts["autoencoder"] = meta["autoencoder"]
    names = json.loads(meta.get("class_names", "[]"))
    if names:
        facts["class_names"] = names
    return facts
