"""Generation pipeline: a TiM network + its sampling recipe + an autoencoder + a text encoder -> images.

The diffusers-style front end of the library (docs/internals.md, "tim.pipeline")::

    pipe = TiMPipeline.load("runs/digits")                  # a training run, a pipeline folder, or
    pipe = TiMPipeline.load("TiM-XL-2-256.safetensors",      # a released checkpoint + its preset
                            preset="TiM-XL/2", autoencoder="sd-vae-ft-ema/")
    out = pipe(class_labels=[207, 360], steps=4, seed=0)     # out.images: list of PIL images
    pipe.save_pretrained("pipelines/tim-xl-256")             # one folder: JSON + safetensors

What the pipeline does for you:

* **Sizes.** Any ``height``/``width`` divisible by (autoencoder factor x patch size). The recipe's
  rules set the time shift (``shift_rule="sqrt_area"``: SD3's ``shift * sqrt(h w / (h0 w0))`` over
  the base size, arXiv 2509.04394, App. C.2) and the RoPE position scale (``rope_rule="interpolate"``:
  ``min(1, max_side / max(h, w))``, position interpolation for grids larger than trained) from the
  latent size; both in latent (model-input) units.
* **Seeds.** Image ``i`` of a call starts from noise drawn on the CPU by its own generator,
  ``torch.Generator().manual_seed(seed + i)``, which also draws that image's noise for stochastic
  steps. So image ``i`` does not depend on ``batch_size`` or on the other images of the call:
  ``pipe(class_labels=[3, 5], seed=0).images[1]`` equals ``pipe(class_labels=[5], seed=1).images[0]``
  (up to float rounding of differently sized matrix products). A ``generator`` argument instead
  draws one seed per image from it. ``noise`` gives the starting noise explicitly.
* **Guidance.** CFG with the network's own null condition (``model.null_cond``: the null class, or
  the stored null caption of a text model; no text-encoder call for it).
* **Memory.** Before starting, the activation + latent + decode memory of one batch is estimated
  (:func:`estimate_generation_bytes`, ``Autoencoder.decode_bytes``) and compared with the free memory
  of the device; too large a request is refused with one line giving both numbers, and the default
  batch size is the largest that fits (at most :data:`DEFAULT_MAX_BATCH`).
* **Precision.** fp32 on CPU; ``dtype="auto"`` picks bf16 on a CUDA GPU that supports it (fp16
  otherwise). Half precision on CPU is refused (slow and untested there).

Folder layout written by :meth:`TiMPipeline.save_pretrained` (nothing half-written: it is built in a
temporary sibling folder and renamed into place)::

    pipeline.json        {"format": "tim-pipeline", "format_version": 1, "autoencoder": ..., "text_encoder": ...}
    recipe.json          the SamplingRecipe
    model/               config.json + model.safetensors (tim.models.save_pretrained)
    autoencoder/         diffusers folder (copied), unless referenced by local path in pipeline.json
    text_encoder/        transformers folder (copied), unless referenced ("minilm" or a local path)

``from_pretrained("hf:owner/name")`` fetches a Hub repo with huggingface_hub (only with that explicit
prefix; untested here, the test machine has no network). Images only: the vector MLP (``TiMMLP``,
2-D toys) has no pipeline; use :func:`tim.samplers.sample`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from tim.errors import TimError
from tim.samplers import MAX_STEPS
from tim.system import available_memory, format_bytes

__all__ = [
    "SamplingRecipe",
    "TiMPipeline",
    "PipelineOutput",
    "estimate_generation_bytes",
    "available_memory_bytes",
    "released_recipe",
    "RELEASED_RECIPES",
]

PIPELINE_NAME = "pipeline.json"
RECIPE_NAME = "recipe.json"
MODEL_DIR = "model"
AUTOENCODER_DIR = "autoencoder"
TEXT_ENCODER_DIR = "text_encoder"
FORMAT = "tim-pipeline"
FORMAT_VERSION = 1
DEFAULT_MAX_BATCH = 64  # default images per network call when memory allows (streams larger requests)
MEMORY_HEADROOM = 0.8  # plan to use at most this share of the free memory (allocator slack, fragmentation)
# Peak resident growth / counted working set of a generation with glibc's default allocator: 0.93-1.22
# (narrow T2I-structured network, fp32 CPU, 256-9216 tokens; benchmarks/bench_pipeline.py; live tensors
# alone are about 0.6 of it), so the count is scaled up to stay an upper bound of what a process shows.
ACTIVATION_MARGIN = 1.25
OutputType = Literal["pil", "pt", "np", "latent"]
OUTPUT_TYPES = ("pil", "pt", "np", "latent")


# ------------------------------------------------------------------------------------------------
# Sampling recipe


def _json_shown(value: Any) -> str:
    """A recipe value as it reads in recipe.json (``"4"``, ``null``, ``Infinity``), at most 80 characters."""
    try:
        return json.dumps(value)[:80]
    except (TypeError, ValueError):
        return repr(value)[:80]


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _pair(test: Any) -> Any:
    return lambda value: isinstance(value, (list, tuple)) and len(value) == 2 and all(test(v) for v in value)


def _optional(test: Any) -> Any:
    return lambda value: value is None or test(value)


# What each SamplingRecipe field must be, checked before its value is (recipe.json is user input).
_RECIPE_TYPES: dict[str, tuple[Any, str]] = {
    "path": (lambda value: isinstance(value, str), "a string"),
    "path_options": (
        lambda value: isinstance(value, dict) and all(isinstance(key, str) for key in value),
        "an object",
    ),
    "steps": (_whole, "an integer"),
    "guidance_scale": (_finite, "a finite number"),
    "guidance_interval": (_pair(_finite), "a list of two finite numbers"),
    "interval": (lambda value: isinstance(value, str), "a string"),
    "stochasticity": (_finite, "a finite number"),
    "shift": (_finite, "a finite number"),
    "shift_rule": (lambda value: isinstance(value, str), "a string"),
    "base_size": (_optional(_pair(_whole)), "null or a list of two integers"),
    "rope_rule": (lambda value: isinstance(value, str), "a string"),
    "rope_max_side": (_optional(_whole), "null or an integer"),
    "latent_scale": (_finite, "a finite number"),
    "latent_shift": (_finite, "a finite number"),
    "value_range": (_pair(_finite), "a list of two finite numbers"),
    "height": (_whole, "an integer"),
    "width": (_whole, "an integer"),
    "class_names": (
        lambda value: (
            isinstance(value, (list, tuple)) and all(isinstance(name, str) or _whole(name) for name in value)
        ),
        "a list of strings",
    ),
    "text_max_length": (_whole, "an integer"),
}


@dataclass
class SamplingRecipe:
    """How a model is sampled by default; saved as ``recipe.json`` next to the weights.

    Attributes:
        path: the path the model was trained on (``tim.paths.build_path`` name).
        path_options: its constructor options (e.g. ``{"sigma_d": 0.5}``).
        steps: default number of sampling steps.
        guidance_scale: default CFG scale (1 = none).
        guidance_interval: ``(low, high)`` fractions of t_max where CFG applies.
        interval: ``"inclusive"`` (library default) or ``"strict"`` (the published sampler: the
            first step at t = t_max is never guided; github.com/WZDTHU/TiM).
        stochasticity: rho of the stochastic transition (0 = deterministic).
        shift: time shift at the base size (1 = uniform grid).
        shift_rule: ``"none"`` (always ``shift``) or ``"sqrt_area"`` (``shift * sqrt(h w / (h0 w0))``).
        base_size: ``(h0, w0)`` of ``shift_rule``, latent (model-input) units.
        rope_rule: ``"none"`` or ``"interpolate"`` (RoPE scale ``min(1, rope_max_side / max(h, w))``).
        rope_max_side: largest latent side seen in training (default ``max(base_size)``).
        latent_scale: model input ``x = (latent - latent_shift) * latent_scale``.
        latent_shift: see ``latent_scale``.
        value_range: range of the decoded (or pixel-space) images, mapped to [0, 1] for output.
        height: default image height in pixels (0 = the model's input size x autoencoder factor).
        width: default image width in pixels (0 = likewise).
        class_names: one name per class (may be empty).
        text_max_length: caption tokens of the text encoder (text models).
    """

    path: str = "linear"
    path_options: dict[str, Any] = field(default_factory=dict)
    steps: int = 4
    guidance_scale: float = 1.0
    guidance_interval: tuple[float, float] = (0.0, 1.0)
    interval: Literal["inclusive", "strict"] = "inclusive"
    stochasticity: float = 0.0
    shift: float = 1.0
    shift_rule: Literal["none", "sqrt_area"] = "none"
    base_size: tuple[int, int] | None = None
    rope_rule: Literal["none", "interpolate"] = "none"
    rope_max_side: int | None = None
    latent_scale: float = 1.0
    latent_shift: float = 0.0
    value_range: tuple[float, float] = (-1.0, 1.0)
    height: int = 0
    width: int = 0
    class_names: list[str] = field(default_factory=list)
    text_max_length: int = 32

    def __post_init__(self) -> None:
        # Types first (a recipe.json can hold anything JSON can), then the values: each refusal is one
        # line naming the field; from_dict names the file.
        for name, (ok, expected) in _RECIPE_TYPES.items():
            value = getattr(self, name)
            if not ok(value):
                raise TimError(
                    f"sampling recipe: {name} = {_json_shown(value)} is not {expected}",
                    f"write {name} as {expected}",
                )
        self.guidance_interval = tuple(float(v) for v in self.guidance_interval)  # JSON gives lists
        self.value_range = tuple(float(v) for v in self.value_range)
        self.base_size = None if self.base_size is None else tuple(int(v) for v in self.base_size)
        self.class_names = [str(name) for name in self.class_names]
        checks = [
            (self.steps >= 1, f"steps={self.steps}", "use at least 1 step"),
            (
                self.steps <= MAX_STEPS,
                f"steps={self.steps}",
                f"use at most {MAX_STEPS} steps (quality stops improving long before)",
            ),
            (self.guidance_scale >= 0, f"guidance_scale={self.guidance_scale}", "use 1 for no guidance"),
            (
                len(self.guidance_interval) == 2
                and 0 <= self.guidance_interval[0] <= self.guidance_interval[1] <= 1,
                f"guidance_interval={self.guidance_interval}",
                "use (low, high) fractions of t_max, 0 <= low <= high <= 1",
            ),
            (
                self.interval in ("inclusive", "strict"),
                f"interval={self.interval!r}",
                "use 'inclusive' or 'strict'",
            ),
            (
                0 <= self.stochasticity <= 1,
                f"stochasticity={self.stochasticity}",
                "use 0 for the deterministic sampler, at most 1 (the paper uses 0.2)",
            ),
            (self.shift > 0, f"shift={self.shift}", "use 1.0 for no shift"),
            (
                self.shift_rule in ("none", "sqrt_area"),
                f"shift_rule={self.shift_rule!r}",
                "use 'none' or 'sqrt_area'",
            ),
            (
                self.shift_rule == "none" or self.base_size is not None,
                "shift_rule='sqrt_area' without base_size",
                "set base_size=(h0, w0) in latent units",
            ),
            (
                self.base_size is None or (len(self.base_size) == 2 and min(self.base_size) > 0),
                f"base_size={self.base_size}",
                "use two positive latent sides",
            ),
            (
                self.rope_rule in ("none", "interpolate"),
                f"rope_rule={self.rope_rule!r}",
                "use 'none' or 'interpolate'",
            ),
            (
                self.rope_rule == "none" or self.max_side is not None,
                "rope_rule='interpolate' without a size",
                "set rope_max_side (or base_size)",
            ),
            (
                self.latent_scale > 0,
                f"latent_scale={self.latent_scale}",
                "use a positive scale (1 for pixels)",
            ),
            (
                len(self.value_range) == 2 and self.value_range[0] < self.value_range[1],
                f"value_range={self.value_range}",
                "use (low, high) with low < high, e.g. (-1, 1)",
            ),
            (
                self.height >= 0 and self.width >= 0,
                f"default size {self.height}x{self.width}",
                "use sizes >= 0",
            ),
            (self.text_max_length >= 1, f"text_max_length={self.text_max_length}", "use at least 1 token"),
        ]
        for ok, problem, fix in checks:
            if not ok:
                raise TimError(f"sampling recipe: {problem} is invalid", fix)

    @property
    def max_side(self) -> int | None:
        """The largest trained latent side used by ``rope_rule``."""
        if self.rope_max_side is not None:
            return self.rope_max_side
        return None if self.base_size is None else max(self.base_size)

    def shift_at(self, height: int, width: int) -> float:
        """Time shift for a latent of ``height x width`` (SD3 resolution shift, arXiv 2509.04394, App. C.2)."""
        if self.shift_rule == "none":
            return self.shift
        from tim.timesteps import resolution_shift

        return self.shift * resolution_shift(height, width, *self.base_size)

    def rope_scale_at(self, height: int, width: int) -> float:
        """RoPE position scale for a latent of ``height x width`` (1 = positions as trained).

        Position interpolation (Chen et al. 2023, as scripts/native_resolution_demo.py used it): a
        grid longer than any trained one is squeezed into the trained range; smaller grids keep 1.
        """
        side = max(height, width)
        if self.rope_rule == "none" or side <= self.max_side:
            return 1.0
        return self.max_side / side

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path = RECIPE_NAME) -> SamplingRecipe:
        """Strictly build a recipe; an unknown key, a wrong type or a bad value is a one-line error.

        Args:
            data: the parsed ``recipe.json``.
            source: what the errors name (the file's path).
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise TimError(f"{source} has unknown keys {unknown}", f"use only {sorted(names)}")
        try:
            return cls(**data)
        except TimError as error:
            raise TimError(f"{source}: {str(error).removeprefix('sampling recipe: ')}") from None


# Recipes of the released checkpoints (tim convert). Numbers: the TiM paper (arXiv 2509.04394) and the
# sampling scripts of the published code (github.com/WZDTHU/TiM); each is cited where it is used.
RELEASED_RECIPES: dict[str, dict[str, Any]] = {
    # ImageNet-256 (SD-VAE f8c4, latents 32x32x4). 250 steps: CFG 2.5 on (0, 0.6), rho 0.2 -> FID
    # 1.65; 1 step: no CFG -> FID 7.11 (arXiv 2509.04394, Table 13). With the strict interval, the 1-step
    # default is never guided (t = 1 lies outside (0, 0.6)), so one recipe reproduces both settings.
    "TiM-XL/2": dict(
        steps=1,
        guidance_scale=2.5,
        guidance_interval=(0.0, 0.6),
        interval="strict",
        stochasticity=0.2,
        height=256,
        width=256,
    ),
    # TiM-B/4 was only evaluated in the ablations (80 epochs, ImageNet-256, arXiv 2509.04394, Table 4); we use
    # the ImageNet-256 settings of TiM-XL/2 (same data, same autoencoder).
    "TiM-B/4": dict(
        steps=1,
        guidance_scale=2.5,
        guidance_interval=(0.0, 0.6),
        interval="strict",
        stochasticity=0.2,
        height=256,
        width=256,
    ),
    # ImageNet-512 (DC-AE f32c32, latents 16x16x32): 250 steps CFG 3.0 on (0, 0.7), rho 0.2 -> FID
    # 1.69; 1 step no CFG -> FID 5.07 (arXiv 2509.04394, Table 14).
    "TiM-XL/1": dict(
        steps=1,
        guidance_scale=3.0,
        guidance_interval=(0.0, 0.7),
        interval="strict",
        stochasticity=0.2,
        height=512,
        width=512,
    ),
    # Text-to-image: GenEval settings 4 steps, CFG 2.5, interval (0, 1), first step unguided (strict),
    # rho 0 (published scripts); evaluated at 1024^2, the base of the SD3 resolution shift (n = 1024^2
    # -> 32x32 DC-AE latents); trained up to 4096^2 (128-latent sides; arXiv 2509.04394, App. C.2),
    # interpolated RoPE beyond that; Gemma captions of at most 256 tokens (published code).
    "TiM-T2I": dict(
        steps=4,
        guidance_scale=2.5,
        guidance_interval=(0.0, 1.0),
        interval="strict",
        stochasticity=0.0,
        shift_rule="sqrt_area",
        base_size=(32, 32),
        rope_rule="interpolate",
        rope_max_side=128,
        height=1024,
        width=1024,
        text_max_length=256,
    ),
}


def released_recipe(
    preset: str, *, latent_scale: float = 1.0, latent_shift: float = 0.0, class_names: Sequence[str] = ()
) -> SamplingRecipe:
    """The paper's sampling recipe for a released checkpoint's preset (see :data:`RELEASED_RECIPES`).

    Args:
        preset: ``"TiM-B/4"``, ``"TiM-XL/2"``, ``"TiM-XL/1"`` or ``"TiM-T2I"``.
        latent_scale: the autoencoder's scaling factor (the released VAE wrappers normalise latents
            as ``z * scaling_factor``, published code).
        latent_shift: the autoencoder's shift factor (0 for SD-VAE and DC-AE).
        class_names: optional label names (e.g. the 1000 ImageNet classes).
    """
    if preset not in RELEASED_RECIPES:
        raise TimError(
            f"no released sampling recipe for preset {preset!r}", f"use one of {sorted(RELEASED_RECIPES)}"
        )
    return SamplingRecipe(
        **RELEASED_RECIPES[preset],
        latent_scale=latent_scale,
        latent_shift=latent_shift,
        class_names=list(class_names),
    )


# ------------------------------------------------------------------------------------------------
# Memory


def estimate_generation_bytes(
    config: Any,
    batch: int,
    height: int,
    width: int,
    *,
    dtype_bytes: int = 4,
    guided: bool = False,
    context_length: int = 0,
) -> int:
    """Peak memory (bytes) of sampling one batch with a TiM network, excluding its weights.

    No-grad forward passes keep only the current block's activations alive, so the peak is one
    block's working set: the residual stream, the modulated input, q/k/v with their normalised and
    rotated copies (~8 D per token in all) and the SwiGLU MLP's gate, value and product (3 Hm per
    token), plus the attention scores when the "math" kernel is used (fused SDPA/flash kernels keep
    O(N) memory), plus the caption cross-attention scores of text models (N x M per head, kept by
    masked SDPA), times :data:`ACTIVATION_MARGIN`, plus the sampler's float64 state (x, F, noise
    and one temporary).

    Args:
        config: the model's :class:`tim.models.TiMConfig`.
        batch: images per network call.
        height: latent height (model-input units).
        width: latent width.
        dtype_bytes: bytes per activation element (4 fp32, 2 bf16/fp16).
        guided: CFG doubles the network batch.
        context_length: caption tokens M (text models: cross-attention scores for the math kernel).

    Returns:
        The estimate in bytes.
    """
    p = config.patch_size
    tokens = (height // p) * (width // p)
    rows = batch * (2 if guided else 1)
    mlp_hidden = int(config.hidden_size * config.mlp_ratio) * 2 // 3
    per_token = 8 * config.hidden_size + 3 * mlp_hidden
    activations = rows * tokens * per_token * dtype_bytes
    if config.attention_backend == "math":
        activations += 2 * rows * config.num_heads * tokens * tokens * dtype_bytes
    if config.conditioning == "text":
        # Cross-attention scores and their softmax (B, heads, N, M): masked SDPA falls back to a
        # materialised score matrix (measured with benchmarks/bench_pipeline.py).
        activations += 2 * rows * config.num_heads * tokens * context_length * dtype_bytes
    state = 4 * batch * config.in_channels * height * width * 8
    return int(ACTIVATION_MARGIN * activations + state)


def available_memory_bytes(device: torch.device) -> int:
    """Free memory of ``device`` (:func:`tim.system.available_memory`)."""
    return available_memory(device)[0]


# ------------------------------------------------------------------------------------------------
# Output


@dataclass
class PipelineOutput:
    """What a pipeline call returns.

    Attributes:
        images: ``output_type="pil"``: list of PIL images; ``"pt"``: float32 tensor (N, C, H, W) in
            [0, 1] on the CPU; ``"np"``: float32 array (N, H, W, C) in [0, 1]; ``"latent"``: the
            sampler's output (N, C, h, w) in model units (normalised latents, not decoded).
        nfe: network evaluations per image (a CFG pair counts 2).
        seconds: wall time of the call.
        labels: class label of every image (class models), else None.
        prompts: prompt of every image (text models), else None.
        seeds: the noise seed of every image (None when ``noise`` was given).
        height: image height in pixels (latent height for ``"latent"``).
        width: image width.
    """

    images: Any
    nfe: int
    seconds: float
    labels: list[int] | None = None
    prompts: list[str] | None = None
    seeds: list[int] | None = None
    height: int = 0
    width: int = 0


# ------------------------------------------------------------------------------------------------
# The pipeline


class TiMPipeline:
    """A TiM network with its recipe, autoencoder and text encoder; call it to get images.

    Args:
        model: a :class:`tim.models.TiM` (images only).
        recipe: its :class:`SamplingRecipe`.
        autoencoder: a :class:`tim.autoencoders.Autoencoder` (or any object with ``decode``,
            ``latent_channels``, ``factor``); None for pixel-space models.
        text_encoder: a :class:`tim.text.TextEncoder` for text models (``__call__(prompts)``).

    Attributes:
        conditioning: ``"class"``, ``"text"`` or ``"none"``.
        num_classes: class count of a class model (0 otherwise).
        memory_limit: bytes the planner may use; None = the device's free memory.
    """

    def __init__(
        self, model: nn.Module, recipe: SamplingRecipe, *, autoencoder: Any = None, text_encoder: Any = None
    ) -> None:
        from tim.models import TiM

        if not isinstance(model, TiM):
            raise TimError(
                f"TiMPipeline needs a TiM image network, got {type(model).__name__}",
                "sample vector models (TiMMLP) with tim.samplers.sample",
            )
        if not isinstance(recipe, SamplingRecipe):
            raise TimError(
                f"recipe must be a SamplingRecipe, got {type(recipe).__name__}",
                "build one with SamplingRecipe(...)",
            )
        self.model = model.eval()
        self.recipe = recipe
        self.autoencoder = autoencoder
        self.text_encoder = text_encoder
        self.memory_limit: int | None = None
        config = model.config
        self.conditioning: str = config.conditioning
        self.num_classes: int = config.num_classes if config.conditioning == "class" else 0
        if autoencoder is not None and autoencoder.latent_channels != config.in_channels:
            raise TimError(
                f"the autoencoder makes {autoencoder.latent_channels}-channel latents but the model takes "
                f"{config.in_channels} channels",
                "pass the autoencoder the model was trained with",
            )
        if recipe.class_names and self.num_classes and len(recipe.class_names) != self.num_classes:
            raise TimError(
                f"the recipe names {len(recipe.class_names)} classes but the model has {self.num_classes}",
                "fix recipe.class_names (one name per class) or leave it empty",
            )
        if text_encoder is not None and self.conditioning == "text" and text_encoder.dim != config.text_dim:
            raise TimError(
                f"the text encoder gives {text_encoder.dim}-d features but the model takes {config.text_dim}",
                "pass the text encoder the model was trained with",
            )

    # -------------------------------------------------------------------------------- properties

    @property
    def device(self) -> torch.device:
        """Where the network's weights live."""
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The network's weight dtype (the sampler calls it in this dtype)."""
        return next(self.model.parameters()).dtype

    @property
    def factor(self) -> int:
        """Spatial down-sampling of the autoencoder (1 without one)."""
        return 1 if self.autoencoder is None else int(self.autoencoder.factor)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this: autoencoder factor x patch size."""
        return self.factor * self.model.config.patch_size

    @property
    def default_size(self) -> tuple[int, int]:
        """Default (height, width) in pixels."""
        side = self.model.config.input_size * self.factor
        return (self.recipe.height or side, self.recipe.width or side)

    def compile(self) -> TiMPipeline:
        """Sample through ``torch.compile(model, dynamic=False)``: each batch shape compiles once.

        The weights stay those of ``self.model`` (saving, ``to`` and dtype changes act on it);
        the first call per shape pays the compilation (seconds to minutes).
        """
        self._compiled = torch.compile(self.model, dynamic=False)
        return self

    def to(self, device: str | torch.device) -> TiMPipeline:
        """Move the network (and autoencoder, when it supports ``to``) to ``device``."""
        self.model.to(device)
        if self.autoencoder is not None and hasattr(self.autoencoder, "to"):
            self.autoencoder.to(device)
        return self

    # -------------------------------------------------------------------------------- generation

    @torch.no_grad()
    def __call__(
        self,
        class_labels: int | Sequence[int] | Tensor | None = None,
        prompt: str | Sequence[str] | None = None,
        *,
        num_images_per_prompt: int = 1,
        steps: int | None = None,
        height: int | None = None,
        width: int | None = None,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
        stochasticity: float | None = None,
        seed: int = 0,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
        batch_size: int | None = None,
        output_type: OutputType = "pil",
        progress: bool = False,
    ) -> PipelineOutput:
        """Generate images (the paper's Alg. 2 sampler with the saved recipe).

        Args:
            class_labels: class ids (class models); one image per label and per ``num_images_per_prompt``.
            prompt: caption(s) (text models).
            num_images_per_prompt: images per label / prompt (an unconditional model: images in total).
            steps: sampling steps (default: the recipe's).
            height: image height in pixels, a multiple of :attr:`size_multiple` (default: the recipe's).
            width: image width in pixels.
            guidance_scale: CFG scale (default: the recipe's; 1 = none).
            guidance_interval: CFG interval (default: the recipe's).
            stochasticity: rho of the stochastic sampler (default: the recipe's).
            seed: image i uses seed ``seed + i`` (see the module docstring).
            generator: draw the per-image seeds from this generator instead.
            noise: explicit starting noise (N, C, h, w) in latent units (overrides the seeds).
            batch_size: images per network call (default: as many as fit, at most 64).
            output_type: ``"pil"``, ``"pt"``, ``"np"`` or ``"latent"``.
            progress: show a progress bar over batches.

        Returns:
            :class:`PipelineOutput`.
        """
        from tim.paths import build_path
        from tim.samplers import sample

        started = time.perf_counter()
        recipe = self.recipe
        # Requests, size and sampler settings (recipe defaults), all checked before any work.
        labels, prompts = self._requests(class_labels, prompt, num_images_per_prompt)
        n = (
            len(labels)
            if labels is not None
            else len(prompts)
            if prompts is not None
            else num_images_per_prompt
        )
        height, width = self._check_size(height, width)
        h, w = height // self.factor, width // self.factor
        steps, scale, interval, rho = self._settings(
            steps, guidance_scale, guidance_interval, stochasticity, output_type
        )
        guided = scale != 1.0
        seeds, generators, noise = self._noise(n, h, w, seed, generator, noise)
        batch_size = self._plan_batch(n, h, w, batch_size, guided, output_type)
        path = build_path(recipe.path, **recipe.path_options)
        shift = recipe.shift_at(h, w)
        images, nfe = [], 0
        # Size rules of the recipe: time shift and RoPE scale for this latent size (restored after).
        previous_rope = self.model.config.rope_scale
        self.model.set_rope_scale(recipe.rope_scale_at(h, w) * previous_rope)
        try:
            chunks = self._chunks(n, batch_size, prompts)
            order = [i for chunk in chunks for i in chunk]
            for chunk in self._progress(chunks, progress):
                cond = self._condition(labels, prompts, chunk)
                uncond = self.model.null_cond(cond) if guided else None
                z = noise[chunk].to(self.device, self.dtype)
                # Stochastic steps: image i's generator continues after its starting noise.
                step_noise = (
                    [generators[i] for i in chunk]
                    if generators
                    else torch.Generator(device=self.device).manual_seed(seed)
                )
                result = sample(
                    getattr(self, "_compiled", None) or self.model,
                    z,
                    path=path,
                    steps=steps,
                    cond=cond,
                    uncond=uncond,
                    guidance_scale=scale,
                    guidance_interval=interval,
                    interval=recipe.interval,
                    stochasticity=rho,
                    shift=shift,
                    generator=step_noise,
                )
                nfe = result.nfe
                if not torch.isfinite(result.x).all():
                    raise TimError(
                        f"sampling with {steps} steps produced NaN or Inf",
                        "check the weights, the dtype (try fp32) and the guidance scale",
                    )
                images.append(self._finish(result.x, output_type))
        finally:
            self.model.set_rope_scale(previous_rope)
        return PipelineOutput(
            images=self._collate(images, output_type, order),
            nfe=nfe,
            seconds=time.perf_counter() - started,
            labels=labels,
            prompts=prompts,
            seeds=seeds or None,
            height=h if output_type == "latent" else height,
            width=w if output_type == "latent" else width,
        )

    def _settings(
        self,
        steps: int | None,
        scale: float | None,
        interval: tuple[float, float] | None,
        rho: float | None,
        output_type: str,
    ) -> tuple[int, float, tuple[float, float], float]:
        """Steps, CFG scale, CFG interval and stochasticity: the given ones or the recipe's."""
        recipe = self.recipe
        steps = recipe.steps if steps is None else steps
        scale = recipe.guidance_scale if scale is None else float(scale)
        interval = recipe.guidance_interval if interval is None else tuple(interval)
        rho = recipe.stochasticity if rho is None else float(rho)
        if output_type not in OUTPUT_TYPES:
            raise TimError(f"output_type={output_type!r} is unknown", f"use one of {', '.join(OUTPUT_TYPES)}")
        if not isinstance(steps, int) or isinstance(steps, bool) or not 1 <= steps <= MAX_STEPS:
            raise TimError(f"steps={steps!r} is invalid", f"pass a whole number of steps in [1, {MAX_STEPS}]")
        if scale != 1.0 and self.conditioning == "none":
            raise TimError(
                f"guidance_scale={scale} needs a conditional model but this one is unconditional",
                "use guidance_scale=1",
            )
        if (
            output_type != "latent"
            and self.autoencoder is None
            and self.model.config.in_channels not in (1, 3)
        ):
            raise TimError(
                f"the model makes {self.model.config.in_channels}-channel latents and this pipeline has no "
                "autoencoder to decode them",
                "load it with autoencoder=DIR, or use output_type='latent'",
            )
        return steps, scale, interval, rho

    def _requests(
        self, class_labels: Any, prompt: Any, per: int
    ) -> tuple[list[int] | None, list[str] | None]:
        """Expand labels / prompts to one entry per image, checking them against the model."""
        if not isinstance(per, int) or per < 1:
            raise TimError(f"num_images_per_prompt={per!r} is invalid", "pass a whole number >= 1")
        kind = {"class": "a class-conditioned", "text": "a text-conditioned", "none": "an unconditional"}[
            self.conditioning
        ]
        if prompt is not None and self.conditioning != "text":
            raise TimError(
                f"a prompt was given but this is {kind} model",
                "pass class_labels=... for a class model (or nothing for an unconditional one)",
            )
        if class_labels is not None and self.conditioning != "class":
            raise TimError(
                f"class labels were given but this is {kind} model",
                "pass prompt=... for a text model (or nothing for an unconditional one)",
            )
        if self.conditioning == "class":
            if class_labels is None:
                raise TimError(
                    "a class-conditioned model needs class_labels", f"pass ids in [0, {self.num_classes - 1}]"
                )
            ids = torch.as_tensor(class_labels).reshape(-1)
            if ids.is_floating_point() or ids.dtype == torch.bool or ids.numel() == 0:
                raise TimError(
                    f"class_labels {class_labels!r} are not integer ids",
                    f"pass ids in [0, {self.num_classes - 1}]",
                )
            values = ids.tolist()
            bad = [v for v in values if not 0 <= v < self.num_classes]
            if bad:
                raise TimError(
                    f"class label {bad[0]} is out of range for a model with {self.num_classes} classes",
                    f"pass ids in [0, {self.num_classes - 1}]",
                )
            return [v for v in values for _ in range(per)], None
        if self.conditioning == "text":
            if prompt is None:
                raise TimError(
                    "a text-conditioned model needs a prompt", "pass prompt='a red circle' (or a list)"
                )
            prompts = [prompt] if isinstance(prompt, str) else list(prompt)
            if not prompts or not all(isinstance(p, str) for p in prompts):
                raise TimError(
                    f"prompt {prompt!r} is not a string or a list of strings",
                    "pass prompt='...' or ['...', ...]",
                )
            if self.text_encoder is None and any(prompts):
                raise TimError(
                    "this text model's pipeline has no text encoder",
                    "load it with text_encoder=DIR (or 'minilm' for the embedded default)",
                )
            return None, [p for p in prompts for _ in range(per)]
        return None, None

    def _check_size(self, height: int | None, width: int | None) -> tuple[int, int]:
        default_h, default_w = self.default_size
        height = default_h if height is None else height
        width = default_w if width is None else width
        m = self.size_multiple
        if not (isinstance(height, int) and isinstance(width, int)) or height < 1 or width < 1:
            raise TimError(
                f"image size {height}x{width} is invalid", f"pass positive whole sizes, multiples of {m}"
            )
        if height % m or width % m:
            what = (
                f"autoencoder factor {self.factor} x patch {self.model.config.patch_size}"
                if self.factor > 1
                else "the patch size"
            )
            raise TimError(
                f"image size {height}x{width} is not divisible by {m} ({what})",
                f"pass a height and width that are multiples of {m}, e.g. "
                f"{max(m, height // m * m)}x{max(m, width // m * m)}",
            )
        return height, width

    def _noise(
        self, n: int, h: int, w: int, seed: int, generator: torch.Generator | None, noise: Tensor | None
    ) -> tuple[list[int], list[torch.Generator], Tensor]:
        """Per-image seeds, their CPU generators (past the noise draw) and the starting noise (N, C, h, w) float32."""
        shape = (self.model.config.in_channels, h, w)
        if not isinstance(seed, int) or seed < 0:
            raise TimError(f"seed={seed!r} is invalid", "pass a whole number >= 0")
        if noise is not None:
            if tuple(noise.shape) != (n, *shape) or not noise.is_floating_point():
                raise TimError(
                    f"noise has shape {tuple(noise.shape)}", f"pass float noise of shape {(n, *shape)}"
                )
            return [], [], noise.float().cpu()
        if generator is not None:  # one derived seed per image, drawn in order
            seeds = torch.randint(0, 2**62, (n,), generator=generator, device=generator.device).tolist()
        else:
            seeds = [seed + i for i in range(n)]
        generators = [torch.Generator().manual_seed(s) for s in seeds]
        return seeds, generators, torch.stack([torch.randn(shape, generator=g) for g in generators])

    def _plan_batch(
        self, n: int, h: int, w: int, batch_size: int | None, guided: bool, output_type: str
    ) -> int:
        """Check the request against free memory; the batch size to use."""
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise TimError(f"batch_size={batch_size!r} is invalid", "pass a whole number >= 1")
        limit = (
            self.memory_limit
            if self.memory_limit is not None
            else int(MEMORY_HEADROOM * available_memory_bytes(self.device))
        )
        dtype_bytes = torch.finfo(self.dtype).bits // 8
        context = self.recipe.text_max_length if self.conditioning == "text" else 0

        def need(b: int) -> tuple[int, int]:
            net = estimate_generation_bytes(
                self.model.config, b, h, w, dtype_bytes=dtype_bytes, guided=guided, context_length=context
            )
            decode = 0
            if (
                output_type != "latent"
                and self.autoencoder is not None
                and hasattr(self.autoencoder, "decode_bytes")
            ):
                decode = int(
                    self.autoencoder.decode_bytes(h * self.factor, w * self.factor)
                )  # one image at a time
            return net, decode

        net, decode = need(1)
        if max(net, decode) > limit:
            size = f"{h * self.factor}x{w * self.factor}"
            raise TimError(
                f"generating one {size} image needs about {format_bytes(net)} for the network"
                + (f" and {format_bytes(decode)} to decode" if decode else "")
                + f" but only {format_bytes(limit)} are available",
                "choose a smaller height/width, free memory, or use a device with more memory",
            )
        if batch_size is None:
            batch_size = 1
            while batch_size < min(n, DEFAULT_MAX_BATCH) and need(batch_size * 2)[0] <= limit:
                batch_size *= 2
            batch_size = min(batch_size, n)
        elif need(batch_size)[0] > limit:
            raise TimError(
                f"batch_size={batch_size} at {h * self.factor}x{w * self.factor} needs about "
                f"{format_bytes(need(batch_size)[0])} but only {format_bytes(limit)} are available",
                "pass a smaller batch_size (or leave it unset to choose one that fits)",
            )
        return batch_size

    def _chunks(self, n: int, batch_size: int, prompts: list[str] | None) -> list[list[int]]:
        """Image indices per network batch: consecutive runs of ``batch_size``.

        A text model that attends padded caption tokens (``mask_context=False``, the released
        T2I model) sees each caption cut to its own token count, as the published trainer cut
        captions to the longest real one of a batch; so images are batched by caption length
        (each group in order), which keeps image i independent of the other prompts.
        """
        if prompts is None or self.model.config.mask_context or self.text_encoder is None:
            groups = [list(range(n))]
        else:
            by_length: dict[int, list[int]] = {}
            for i, p in enumerate(prompts):
                by_length.setdefault(self._caption_length(p), []).append(i)
            groups = list(by_length.values())
        return [group[k : k + batch_size] for group in groups for k in range(0, len(group), batch_size)]

    def _caption_length(self, prompt: str) -> int:
        """Real tokens of a caption (the null caption's length for ``""``)."""
        if not prompt:
            return int(self.model.cond_embedder.null_context.shape[0])
        return int(self.text_encoder([prompt])["context_mask"].sum())

    @staticmethod
    def _progress(chunks: list[list[int]], progress: bool) -> Any:
        if not progress:
            return chunks
        from tim.progress import progress_bar

        return progress_bar(chunks, desc="generating", unit="batch")

    def _condition(
        self, labels: list[int] | None, prompts: list[str] | None, chunk: list[int]
    ) -> dict[str, Tensor]:
        """The network's cond dict for the images ``chunk``."""
        if labels is not None:
            return {"y": torch.tensor([labels[i] for i in chunk], dtype=torch.long, device=self.device)}
        if prompts is None:
            return {}
        texts = [prompts[i] for i in chunk]
        unmasked = not self.model.config.mask_context
        if not any(texts):  # only empty prompts: the stored null caption, no encoder call
            M = self._caption_length("") if unmasked else self.recipe.text_max_length
            blank = {
                "context": torch.zeros(
                    len(texts), M, self.model.config.text_dim, device=self.device, dtype=self.dtype
                ),
                "context_mask": torch.ones(len(texts), M, dtype=torch.bool, device=self.device),
            }
            return self.model.null_cond(blank)
        encoded = self.text_encoder(texts)
        if unmasked:  # every caption of this chunk has the same real length (see _chunks)
            length = int(encoded["context_mask"].sum(1).max())
            encoded = {k: v[:, :length] for k, v in encoded.items()}
        return {
            k: (v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device))
            for k, v in encoded.items()
        }

    def _finish(self, x: Tensor, output_type: str) -> Tensor:
        """Sampler output (model units) -> latents, or images in [0, 1] (float32, CPU)."""
        if output_type == "latent":
            return x.float().cpu()
        if self.autoencoder is not None:
            latents = x.float() / self.recipe.latent_scale + self.recipe.latent_shift
            x = self.autoencoder.decode(latents)
        low, high = self.recipe.value_range
        return ((x.float().cpu() - low) / (high - low)).clamp(0.0, 1.0)

    @staticmethod
    def _collate(chunks: list[Tensor], output_type: str, order: list[int]) -> Any:
        """Concatenate the batches and put image ``order[k]`` back at position ``order[k]``."""
        x = torch.cat(chunks)
        if order != sorted(order):
            x[order] = x.clone()
        if output_type in ("pt", "latent"):
            return x
        array = x.permute(0, 2, 3, 1).numpy()
        if output_type == "np":
            return array
        from PIL import Image

        pixels = (array * 255).round().astype(np.uint8)
        return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in pixels]

    # -------------------------------------------------------------------------------- loading

    @classmethod
    def load(
        cls,
        x: str | Path,
        *,
        preset: str | None = None,
        autoencoder: Any = None,
        text_encoder: Any = None,
        device: str | torch.device = "cpu",
        dtype: Any = None,
        weights: str = "ema",
    ) -> TiMPipeline:
        """A pipeline from a training run, a pipeline folder, a bundled model or a released ``.safetensors``.

        Args:
            x: the run folder (``tim train --out``), pipeline folder (``save_pretrained``/``tim
                convert``), ``"bundled:<name>"`` (a model shipped with the package, :mod:`tim.pretrained`)
                or released checkpoint file (then ``preset`` and ``autoencoder`` are needed).
            preset: ``TIM_PRESETS`` name of a released file (e.g. ``"TiM-XL/2"``).
            autoencoder: a local autoencoder folder or an ``Autoencoder`` (replaces the stored one).
            text_encoder: a text encoder folder / ``"minilm"`` / ``TextEncoder`` (replaces the stored one).
            device: torch device.
            dtype: None/"auto", "fp32", "bf16", "fp16" or a torch dtype (half precision needs a GPU).
            weights: training runs only: ``"ema"`` (default) or ``"model"``.
        """
        from tim.pretrained import is_bundled

        if is_bundled(x):  # a model shipped inside the package (tim.pretrained)
            return cls.from_pretrained(
                str(x), device=device, dtype=dtype, autoencoder=autoencoder, text_encoder=text_encoder
            )
        source = Path(x)
        if source.is_file():
            if source.suffix != ".safetensors":
                raise TimError(
                    f"{source} is a file but not a .safetensors checkpoint",
                    "pass a released .safetensors file, a pipeline folder or a run folder",
                )
            if preset is None or autoencoder is None:
                raise TimError(
                    f"loading the released checkpoint {source.name} needs its preset and autoencoder",
                    "pass preset='TiM-XL/2' (or --preset) and autoencoder=DIR (or --autoencoder)",
                )
            return cls.from_released(
                source,
                preset=preset,
                autoencoder=autoencoder,
                text_encoder=text_encoder,
                device=device,
                dtype=dtype,
            )
        if source.is_dir() and (source / PIPELINE_NAME).is_file():
            return cls.from_pretrained(
                source, device=device, dtype=dtype, autoencoder=autoencoder, text_encoder=text_encoder
            )
        if source.is_dir() and (source / "checkpoints").is_dir():
            pipe = cls.from_run(
                source, weights=weights, device=device, autoencoder=autoencoder, text_encoder=text_encoder
            )
            return pipe.cast(resolve_dtype(dtype, pipe.device))
        if source.is_dir():
            raise TimError(
                f"{source} is neither a pipeline folder (no {PIPELINE_NAME}) nor a training run (no checkpoints/)",
                "pass a folder written by tim convert / save_pretrained, or by tim train",
            )
        return cls.from_pretrained(
            source, device=device, dtype=dtype, autoencoder=autoencoder, text_encoder=text_encoder
        )

    @classmethod
    def from_released(
        cls,
        file: str | Path,
        *,
        preset: str,
        autoencoder: Any,
        text_encoder: Any = None,
        device: str | torch.device = "cpu",
        dtype: Any = None,
        text_max_length: int | None = None,
    ) -> TiMPipeline:
        """A released checkpoint (strict key check) + its autoencoder, with the paper's recipe for ``preset``.

        ``text_max_length`` replaces the recipe's caption length (256 Gemma tokens for TiM-T2I).
        """
        from tim.models import TIM_PRESETS, load_released_checkpoint

        if preset not in TIM_PRESETS or preset not in RELEASED_RECIPES:
            raise TimError(
                f"preset {preset!r} is not a released TiM model", f"use one of {sorted(RELEASED_RECIPES)}"
            )
        device, config = torch.device(device), TIM_PRESETS[preset]
        dtype = resolve_dtype(dtype, device)
        # The cheap checks first (autoencoder class and channels, text encoder), then the big file.
        text_model = config.conditioning == "text"
        if not text_model and text_encoder is not None:
            raise TimError(
                f"a text encoder was given but {preset} is a class-conditioned model", "drop the text encoder"
            )
        if text_model and text_encoder is None:
            raise TimError(
                f"{preset} is a text-to-image model and needs its text encoder",
                "pass text_encoder=DIR (a local transformers folder, e.g. gemma-3-1b-it)",
            )
        ae = load_autoencoder(autoencoder, device)
        if ae.latent_channels != config.in_channels:
            raise TimError(
                f"the autoencoder makes {ae.latent_channels}-channel latents but {preset} takes "
                f"{config.in_channels} channels",
                "pass the autoencoder the checkpoint was trained with "
                "(SD-VAE ft-EMA for TiM-XL/2 and TiM-B/4, DC-AE f32c32-sana-1.1 for TiM-XL/1 and TiM-T2I)",
            )
        recipe = released_recipe(
            preset, latent_scale=float(ae.scaling_factor), latent_shift=float(ae.shift_factor)
        )
        if text_max_length is not None:
            recipe.text_max_length = text_max_length
        text = load_text_encoder(text_encoder, recipe.text_max_length, device) if text_model else None
        model = load_released_checkpoint(file, preset)
        if text is not None:
            model.set_null_context(text.null_context())
        return cls(model.to(device), recipe, autoencoder=ae, text_encoder=text).cast(dtype)

    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: Any = None,
        autoencoder: Any = None,
        text_encoder: Any = None,
    ) -> TiMPipeline:
        """Load a folder written by :meth:`save_pretrained` (or ``"hf:owner/name"``, via huggingface_hub).

        Args:
            folder: the pipeline folder.
            device: torch device.
            dtype: None/"auto", "fp32", "bf16", "fp16" or a torch dtype.
            autoencoder: replaces the stored autoencoder (folder or object).
            text_encoder: replaces the stored text encoder.
        """
        from tim.models import from_pretrained as model_from_pretrained

        folder = resolve_pipeline_folder(folder)
        device = torch.device(device)
        meta = read_json(folder / PIPELINE_NAME, "pipeline index")
        if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
            raise TimError(
                f"{folder / PIPELINE_NAME} is not a tim pipeline index of version <= {FORMAT_VERSION}",
                "re-create the folder with tim convert or TiMPipeline.save_pretrained",
            )
        if not (folder / RECIPE_NAME).is_file():
            raise TimError(
                f"pipeline folder {folder} has no {RECIPE_NAME}",
                "re-create it with tim convert or save_pretrained",
            )
        recipe = SamplingRecipe.from_dict(read_json(folder / RECIPE_NAME, "recipe"), folder / RECIPE_NAME)
        if (
            not (folder / MODEL_DIR / "config.json").is_file()
            or not (folder / MODEL_DIR / "model.safetensors").is_file()
        ):
            raise TimError(
                f"pipeline folder {folder} has no {MODEL_DIR}/ (config.json + model.safetensors)",
                "re-create it with tim convert or save_pretrained",
            )
        model = model_from_pretrained(folder / MODEL_DIR, device=device)
        ae = load_autoencoder(
            autoencoder if autoencoder is not None else part_location(folder, meta, "autoencoder"), device
        )
        text = None
        if model.config.conditioning == "text":
            text = load_text_encoder(
                text_encoder if text_encoder is not None else part_location(folder, meta, "text_encoder"),
                recipe.text_max_length,
                device,
            )
        return cls(model, recipe, autoencoder=ae, text_encoder=text).cast(resolve_dtype(dtype, device))

    @classmethod
    def from_run(
        cls,
        run_dir: str | Path,
        *,
        weights: str = "ema",
        device: str | torch.device = "cpu",
        autoencoder: Any = None,
        text_encoder: Any = None,
    ) -> TiMPipeline:
        """A training run's weights (EMA by default) with a recipe built from its config.

        The recipe takes the run's path, the sampling defaults of ``cfg.sample`` (the largest step
        count), the resolution shift of ``objective.shift_base``, RoPE interpolation above the largest
        bucket side of bucketed data, and the data facts (class names; for latent runs the latent
        scale/shift and the autoencoder recorded in the shards).

        Args:
            run_dir: a folder written by ``tim train``.
            weights: ``"ema"`` or ``"model"``.
            device: torch device.
            autoencoder: override the autoencoder of a latent run (folder or object).
            text_encoder: override the text encoder of a text run.
        """
        from tim.training import load_run

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise TimError(
                f"run folder {run_dir} does not exist", "pass the folder written by tim train --out"
            )
        device = torch.device(device)
        model, cfg = load_run(run_dir, which=weights, device=device)
        from tim.models import TiM

        if not isinstance(model, TiM):
            raise TimError(
                f"run {run_dir} trained a {type(model).__name__} (vectors); the pipeline makes images",
                "sample it with tim sample or tim.samplers.sample",
            )
        facts = run_data_facts(cfg)
        recorded_ae, recorded_text = facts.pop("autoencoder", None), facts.pop("text_encoder", None)
        if (
            model.config.conditioning != "class"
            or len(facts.get("class_names", ())) != model.config.num_classes
        ):
            facts.pop("class_names", None)
        ae_source = autoencoder if autoencoder is not None else recorded_ae
        if autoencoder is None and recorded_ae is not None and not Path(recorded_ae).is_dir():
            warnings.warn(
                f"the autoencoder recorded by the run ({recorded_ae}) is not a local folder: the pipeline "
                "returns latents only; pass autoencoder=DIR to decode",
                stacklevel=2,
            )
            ae_source = None
        ae = load_autoencoder(ae_source, device)
        text_source = text_encoder if text_encoder is not None else recorded_text
        recipe = SamplingRecipe(**run_recipe_fields(cfg), **facts)
        text = None
        if model.config.conditioning == "text" and text_source is not None:
            text = load_text_encoder(text_source, recipe.text_max_length, device)
        return cls(model, recipe, autoencoder=ae, text_encoder=text)

    def save_pretrained(self, folder: str | Path, *, reference: bool = False) -> Path:
        """Write the pipeline as one folder (see the module docstring); atomic.

        Args:
            folder: the target; an existing pipeline folder there is replaced, any other non-empty
                folder is refused.
            reference: store the autoencoder / text encoder as references to their local folders
                instead of copies (smaller; the folder then depends on those paths).

        Returns:
            The folder.
        """
        from tim.models import save_pretrained as model_save_pretrained

        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise TimError(f"{folder} exists and is a file", "pass a folder path")
        if folder.is_dir() and any(folder.iterdir()) and not (folder / PIPELINE_NAME).is_file():
            raise TimError(
                f"{folder} already exists, is not empty and is not a pipeline folder",
                "pass a new or empty folder (an existing pipeline folder is replaced)",
            )
        temporary = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
        shutil.rmtree(temporary, ignore_errors=True)
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            temporary.mkdir()
            meta = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "autoencoder": None,
                "text_encoder": None,
            }
            model_save_pretrained(self.model, temporary / MODEL_DIR)
            (temporary / RECIPE_NAME).write_text(json.dumps(self.recipe.to_dict(), indent=2) + "\n")
            if self.autoencoder is not None:
                meta["autoencoder"] = save_part(
                    self.autoencoder, temporary / AUTOENCODER_DIR, reference, "autoencoder"
                )
            if self.text_encoder is not None:
                meta["text_encoder"] = save_text_part(
                    self.text_encoder, temporary / TEXT_ENCODER_DIR, reference
                )
            for part in (
                "autoencoder",
                "text_encoder",
            ):  # a reference into the folder being replaced would dangle
                entry = meta[part]
                if (
                    isinstance(entry, dict)
                    and "path" in entry
                    and Path(entry["path"]).is_relative_to(folder.resolve())
                ):
                    raise TimError(
                        f"the {part} to reference lies inside {folder}, which is being replaced",
                        "save a copy (reference=False) or save to another folder",
                    )
            (temporary / PIPELINE_NAME).write_text(json.dumps(meta, indent=2) + "\n")
            replace_folder(temporary, folder)
        except OSError as error:  # disk full, permissions: nothing was replaced
            raise TimError(
                f"cannot write the pipeline folder {folder} ({error.strerror or error}); nothing was changed",
                "free disk space or pass a writable folder",
            ) from None
        finally:
            shutil.rmtree(temporary, ignore_errors=True)
        return folder

    def cast(self, dtype: torch.dtype) -> TiMPipeline:
        """Put the network in ``dtype`` (from :func:`resolve_dtype`); the autoencoder stays float32."""
        if dtype != self.dtype:
            self.model.to(dtype)
        return self

    _cast = cast  # the name tim.cli.sample first used


# ------------------------------------------------------------------------------------------------
# Helpers: parts, dtypes, run facts


def resolve_dtype(dtype: Any, device: torch.device | str) -> torch.dtype:
    """The inference dtype: fp32 on CPU; ``"auto"``/None on CUDA -> bf16 (fp16 without bf16 support)."""
    device = torch.device(device)
    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in names:
            raise TimError(f"dtype {dtype!r} is unknown", "use auto, fp32, bf16 or fp16")
        dtype = names[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TimError(f"dtype {dtype} is not supported for inference", "use fp32, bf16 or fp16")
    if dtype != torch.float32 and device.type == "cpu":
        raise TimError(
            f"{dtype} inference on the CPU is not supported (slow and untested)",
            "use dtype fp32 on the CPU; bf16/fp16 are for GPUs",
        )
    return dtype


def resolve_pipeline_folder(folder: str | Path) -> Path:
    """A local pipeline folder, ``"bundled:<name>"`` (checked against its card), or ``"hf:owner/name"``.

    ``"hf:owner/name"`` is a Hub repo fetched with huggingface_hub.

    The Hub is used only with the explicit ``hf:`` prefix (a mistyped local path never goes to the
    network); that path needs huggingface_hub installed and is untested here (no network).
    """
    from tim.pretrained import is_bundled, resolve

    text = str(folder)
    if is_bundled(text):
        return resolve(text)
    if text.startswith("hf:"):
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise TimError(
                f"{text} names a Hub repo but huggingface_hub is not installed",
                "pip install huggingface_hub, or download the folder and pass its local path",
            ) from None
        try:
            return Path(snapshot_download(text[3:]))
        except Exception as error:  # noqa: BLE001 - network, auth, unknown repo: one line
            raise TimError(
                f"cannot fetch pipeline {text[3:]} from the Hub ({str(error).splitlines()[0]})",
                "download it yourself and pass the local folder",
            ) from None
    path = Path(folder)
    if not path.is_dir():
        raise TimError(
            f"pipeline folder {path} does not exist",
            "pass a folder written by tim convert or save_pretrained (or hf:owner/name for a Hub repo)",
        )
    return path


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a broken file is a one-line error."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TimError(
            f"{path} ({what}) is missing", "re-create the folder with tim convert or save_pretrained"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TimError(
            f"{path} ({what}) is not valid JSON ({str(error).splitlines()[0]})",
            "re-create the folder with tim convert or save_pretrained",
        ) from None
    if not isinstance(data, dict):
        raise TimError(
            f"{path} ({what}) is not a JSON object",
            "re-create the folder with tim convert or save_pretrained",
        )
    return data


def part_location(folder: Path, meta: dict[str, Any], part: str) -> str | None:
    """Where a pipeline folder's autoencoder / text encoder is: its sub-folder, a referenced path or None."""
    entry = meta.get(part)
    if entry is None:
        return None
    if entry == "copy":
        location = folder / (AUTOENCODER_DIR if part == "autoencoder" else TEXT_ENCODER_DIR)
        if not (location / "config.json").is_file():
            raise TimError(
                f"pipeline folder {folder} has no {location.name}/ (config.json missing)",
                f"restore it, or pass {part}=DIR when loading",
            )
        return str(location)
    if isinstance(entry, dict) and "name" in entry:  # e.g. the embedded text encoder "minilm"
        return str(entry["name"])
    if isinstance(entry, dict) and "path" in entry:
        location = Path(entry["path"])
        if not location.is_dir():
            raise TimError(
                f"pipeline folder {folder} references the {part} {location}, which does not exist",
                f"restore that folder, or pass {part}=DIR when loading",
            )
        return str(location)
    raise TimError(f"{folder / PIPELINE_NAME} has an invalid {part} entry {entry!r}", "re-create the folder")


def load_autoencoder(source: Any, device: torch.device) -> Any:
    """An Autoencoder from a local folder (or an object that already is one); None stays None."""
    if source is None or not isinstance(source, (str, Path)):
        return source
    from tim.autoencoders import Autoencoder

    return Autoencoder.from_pretrained(source, device=device)


def load_text_encoder(source: Any, max_length: int, device: torch.device) -> Any:
    """A TextEncoder from ``"minilm"`` / a local folder (or an object that already is one)."""
    if source is None or not isinstance(source, (str, Path)):
        return source
    from tim.text import TextEncoder

    return TextEncoder(str(source), max_length=max_length, device=str(device))


def save_part(part: Any, target: Path, reference: bool, name: str) -> Any:
    """Copy (or reference) an autoencoder into a pipeline folder; the pipeline.json entry."""
    source = getattr(part, "folder", None)
    if reference:
        if source is None or not Path(source).is_dir():
            raise TimError(
                f"the {name} has no local folder to reference", "save it as a copy (reference=False)"
            )
        return {"path": str(Path(source).resolve())}
    if hasattr(part, "save_pretrained"):
        part.save_pretrained(target)
    elif source is not None and Path(source).is_dir():
        shutil.copytree(source, target)
    else:
        raise TimError(
            f"the {name} can neither be saved nor copied", "pass an Autoencoder loaded from a local folder"
        )
    return "copy"


def save_text_part(text_encoder: Any, target: Path, reference: bool) -> Any:
    """The text encoder: the embedded default by name, otherwise its local folder copied (or referenced)."""
    name = str(getattr(text_encoder, "name", ""))
    if name == "minilm":  # shipped by a package, located at load time (tim.text.default_text_encoder_path)
        return {"name": name}
    source = getattr(text_encoder, "folder", None) or (name if Path(name).is_dir() else None)
    if source is None:
        raise TimError(
            f"the text encoder {name!r} has no local folder", "load it from a local transformers folder"
        )
    if reference:
        return {"path": str(Path(source).resolve())}
    shutil.copytree(source, target)
    return "copy"


def replace_folder(temporary: Path, folder: Path) -> None:
    """Move ``temporary`` to ``folder`` (replacing an old pipeline there) with renames only.

    The old folder is renamed aside first (``.old-<name>-<pid>``) and deleted last, so a crash
    between the two renames leaves the complete old version there, never a half-written folder.
    """
    if not folder.exists():
        os.replace(temporary, folder)
        return
    old = folder.parent / f".old-{folder.name}-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    os.replace(temporary, folder)
    shutil.rmtree(old, ignore_errors=True)


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
            stacklevel=3,
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
