"""Generation pipeline: a TiM network + its sampling recipe + an autoencoder + a text encoder -> images.

The diffusers-style front end of the library (docs/internals.md, "Layers": ``tim.generation``)::

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
  (:mod:`tim.generation.memory`, ``Autoencoder.decode_bytes``) and compared with the free memory
  of the device; too large a request is refused with one line giving both numbers, and the default
  batch size is the largest that fits (at most :data:`tim.generation.memory.DEFAULT_MAX_BATCH`).
* **Precision.** fp32 on CPU; ``dtype="auto"`` picks bf16 on a CUDA GPU that supports it (fp16
  otherwise). Half precision on CPU is refused (slow and untested there).

The folder written by :meth:`TiMPipeline.save_pretrained` is described in :mod:`tim.generation.folders`.

``from_pretrained("hf:owner/name")`` fetches a Hub repo with huggingface_hub (only with that explicit
prefix; untested here, the test machine has no network). Images only: the vector MLP (``TiMMLP``,
2-D toys) has no pipeline; use :func:`tim.samplers.sample`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from tim.errors import TimError
from tim.generation import folders
from tim.generation.memory import plan_batch
from tim.generation.recipe import SamplingRecipe
from tim.samplers import MAX_STEPS

__all__ = ["OUTPUT_TYPES", "OutputType", "PipelineOutput", "TiMPipeline"]

OutputType = Literal["pil", "pt", "np", "latent"]
OUTPUT_TYPES = ("pil", "pt", "np", "latent")
# What a NaN or Inf sample tells the user to check (tim.samplers.sample_batches raises it).
NAN_FIX = "check the weights, the dtype (try fp32) and the guidance scale"


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
        started = time.perf_counter()
        # Requests, size and sampler settings (recipe defaults), all checked before any work.
        labels, prompts = self._requests(class_labels, prompt, num_images_per_prompt)
        requests = labels if labels is not None else prompts
        n = len(requests) if requests is not None else num_images_per_prompt
        height, width = self._check_size(height, width)
        h, w = height // self.factor, width // self.factor
        steps, scale, interval, rho = self._settings(
            steps, guidance_scale, guidance_interval, stochasticity, output_type
        )
        seeds, generators, noise = self._noise(n, h, w, seed, generator, noise)
        batch_size = self._plan_batch(n, h, w, batch_size, scale != 1.0, output_type)
        sampler = self._sampler_options(steps, scale, interval, rho, h, w)
        chunks = self._chunks(n, batch_size, prompts)
        images, nfe = self._generate(
            chunks, labels, prompts, noise, generators, seed, sampler, (h, w), output_type, progress
        )
        return PipelineOutput(
            images=self._collate(images, output_type, [i for chunk in chunks for i in chunk]),
            nfe=nfe,
            seconds=time.perf_counter() - started,
            labels=labels,
            prompts=prompts,
            seeds=seeds or None,
            height=h if output_type == "latent" else height,
            width=w if output_type == "latent" else width,
        )

    def _sampler_options(
        self, steps: int, scale: float, interval: tuple[float, float], rho: float, h: int, w: int
    ) -> dict[str, Any]:
        """The :func:`tim.samplers.sample_batches` keywords of a call: the recipe's path, the settings, the shift."""
        from tim.paths import build_path

        recipe = self.recipe
        return {
            "path": build_path(recipe.path, **recipe.path_options),
            "steps": steps,
            "guidance_scale": scale,
            "guidance_interval": interval,
            "interval": recipe.interval,
            "stochasticity": rho,
            "shift": recipe.shift_at(h, w),
        }

    def _generate(
        self,
        chunks: list[list[int]],
        labels: list[int] | None,
        prompts: list[str] | None,
        noise: Tensor,
        generators: list[torch.Generator],
        seed: int,
        sampler: dict[str, Any],
        latent_size: tuple[int, int],
        output_type: str,
        progress: bool,
    ) -> tuple[list[Tensor], int]:
        """Sample every chunk through :func:`tim.samplers.sample_batches`; the finished chunks and the NFE.

        The recipe's RoPE scale for ``latent_size`` holds during the call (restored after). Stochastic
        steps draw from image i's generator, past its starting noise; without per-image generators
        (explicit ``noise``), from a fresh generator seeded ``seed`` on the device, per chunk.
        """
        from tim.samplers import sample_batches

        images, nfe = [], 0
        previous_rope = self.model.config.rope_scale
        self.model.set_rope_scale(self.recipe.rope_scale_at(*latent_size) * previous_rope)
        try:
            for chunk in self._progress(chunks, progress):
                step_noise = (
                    [generators[i] for i in chunk]
                    if generators
                    else torch.Generator(device=self.device).manual_seed(seed)
                )
                result = sample_batches(
                    getattr(self, "_compiled", None) or self.model,
                    noise[chunk].to(self.device, self.dtype),
                    cond=self._condition(labels, prompts, chunk),
                    generator=step_noise,
                    check_finite=NAN_FIX,
                    **sampler,
                )
                nfe = result.nfe
                images.append(self._finish(result.x, output_type))
        finally:
            self.model.set_rope_scale(previous_rope)
        return images, nfe

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
        interval = (
            recipe.guidance_interval if interval is None else cast("tuple[float, float]", tuple(interval))
        )
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
        """Check the request against free memory; the batch size to use (:func:`tim.generation.memory.plan_batch`)."""
        return plan_batch(self, n, h, w, batch_size, guided, output_type)

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
            embedder: Any = self.model.cond_embedder
            return int(embedder.null_context.shape[0])
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
        return folders.load_pipeline(
            cls,
            x,
            preset=preset,
            autoencoder=autoencoder,
            text_encoder=text_encoder,
            device=device,
            dtype=dtype,
            weights=weights,
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
        return folders.pipeline_from_released(
            cls,
            file,
            preset=preset,
            autoencoder=autoencoder,
            text_encoder=text_encoder,
            device=device,
            dtype=dtype,
            text_max_length=text_max_length,
        )

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
        return folders.pipeline_from_folder(
            cls, folder, device=device, dtype=dtype, autoencoder=autoencoder, text_encoder=text_encoder
        )

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
        return folders.pipeline_from_run(
            cls, run_dir, weights=weights, device=device, autoencoder=autoencoder, text_encoder=text_encoder
        )

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
        return folders.save_pretrained(self, folder, reference=reference)

    def cast(self, dtype: torch.dtype) -> TiMPipeline:
        """Put the network in ``dtype`` (from :func:`resolve_dtype`); the autoencoder stays float32."""
        if dtype != self.dtype:
            self.model.to(dtype)
        return self

    _cast = cast  # the name tim.cli.sample first used
