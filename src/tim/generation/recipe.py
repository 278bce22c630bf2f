"""The sampling recipe: how a model is sampled by default (``recipe.json`` of a pipeline folder).

:class:`SamplingRecipe` holds THE sampling knobs of a model (docs/internals.md, "Layers"); their
defaults are the sampler defaults of :mod:`tim.samplers`, and every value is checked when a recipe
is built against the sampler limits there (the one table). :data:`RELEASED_RECIPES` are the
paper's settings for the released checkpoints (arXiv 2509.04394, Tables 13-14 and App. C.2), used
by ``tim convert`` and ``TiMPipeline.from_released``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

from tim.errors import TimError
from tim.samplers import (
    DEFAULT_GUIDANCE_INTERVAL,
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_STEPS,
    DEFAULT_STOCHASTICITY,
    MAX_STEPS,
    MAX_STOCHASTICITY,
)

__all__ = ["RECIPE_NAME", "RELEASED_RECIPES", "SamplingRecipe", "released_recipe"]

RECIPE_NAME = "recipe.json"


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
    steps: int = DEFAULT_STEPS
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    guidance_interval: tuple[float, float] = DEFAULT_GUIDANCE_INTERVAL
    interval: Literal["inclusive", "strict"] = "inclusive"
    stochasticity: float = DEFAULT_STOCHASTICITY
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
        # JSON gives lists; the type checks above made them pairs.
        self.guidance_interval = cast("tuple[float, float]", tuple(float(v) for v in self.guidance_interval))
        self.value_range = cast("tuple[float, float]", tuple(float(v) for v in self.value_range))
        self.base_size = (
            None if self.base_size is None else cast("tuple[int, int]", tuple(int(v) for v in self.base_size))
        )
        self.class_names = [str(name) for name in self.class_names]
        for ok, problem, fix in self._sampler_checks() + self._size_checks():
            if not ok:
                raise TimError(f"sampling recipe: {problem} is invalid", fix)

    def _sampler_checks(self) -> list[tuple[bool, str, str]]:
        """(ok, problem, fix) of the sampler fields, against the limits of :mod:`tim.samplers`."""
        return [
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
                0 <= self.stochasticity <= MAX_STOCHASTICITY,
                f"stochasticity={self.stochasticity}",
                "use 0 for the deterministic sampler, at most 1 (the paper uses 0.2)",
            ),
            (self.shift > 0, f"shift={self.shift}", "use 1.0 for no shift"),
        ]

    def _size_checks(self) -> list[tuple[bool, str, str]]:
        """(ok, problem, fix) of the size rules, the latent mapping and the default size."""
        return [
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

        return self.shift * resolution_shift(height, width, *cast("tuple[int, int]", self.base_size))

    def rope_scale_at(self, height: int, width: int) -> float:
        """RoPE position scale for a latent of ``height x width`` (1 = positions as trained).

        Position interpolation (Chen et al. 2023, as scripts/native_resolution_demo.py used it): a
        grid longer than any trained one is squeezed into the trained range; smaller grids keep 1.
        """
        side = max(height, width)
        max_side = cast(int, self.max_side)  # set whenever rope_rule is not 'none' (checked)
        if self.rope_rule == "none" or side <= max_side:
            return 1.0
        return max_side / side

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
