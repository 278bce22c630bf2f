"""What a ``tim sample`` job samples from, and the in-memory sampling of ``tim demo``.

* :class:`PipelineBackend`: a :class:`~tim.generation.TiMPipeline` (images; runs, pipeline folders,
  released files, bundled models);
* :class:`VectorBackend`: a training run of the vector MLP (2-D toys), sampled with
  :func:`tim.samplers.sample_batches`;
* :func:`load_backend`: the backend for a ``--checkpoint`` (see :mod:`tim.generation.folders`);
* :func:`sample_classes` / :func:`generate`: class-major samples with one / every step count from the
  same noise, in memory (:class:`Generated`; the demos, benchmarks and learning curves use them).

Every backend follows the seed rule of :func:`tim.samplers.seeded_noise`: sample ``i`` starts from
noise seeded ``seed + i``, whatever the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tim.errors import TimError
from tim.generation.folders import RunInfo, _is_vector_run, load_for_sampling
from tim.generation.job_spec import BatchOutput
from tim.generation.memory import pipeline_batch_bytes, vector_batch_bytes
from tim.samplers import DEFAULT_GUIDANCE_SCALE, sample_batches, seeded_noise

__all__ = [
    "Generated",
    "PipelineBackend",
    "VectorBackend",
    "generate",
    "load_backend",
    "sample_classes",
    "weights_fingerprint",
]


class PipelineBackend:
    """A :class:`~tim.generation.TiMPipeline` as a sampling-job backend (images)."""

    kind = "image"

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.conditioning = pipe.conditioning
        self.num_classes = pipe.num_classes if self.conditioning == "class" else 0

    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels when --height/--width are not given."""
        return tuple(self.pipe.default_size)

    def noise_shape(self, height: int | None, width: int | None) -> tuple[int, ...]:
        """One sample's noise in latent (model-input) units."""
        factor = self.pipe.factor
        return (self.pipe.model.config.in_channels, height // factor, width // factor)

    def fingerprint(self) -> str:
        """Digest of the network weights."""
        return weights_fingerprint(self.pipe.model)

    def batch_bytes(self, batch_size: int, height: int | None, width: int | None, guided: bool) -> int:
        """The pipeline's own estimate (network + sampler state) or decoding, whichever is larger."""
        assert height is not None and width is not None  # images always have a size
        return pipeline_batch_bytes(self.pipe, batch_size, height, width, guided)

    def generate(
        self,
        indices: range,
        *,
        seed: int,
        labels: torch.Tensor | None,
        prompts: list[str] | None,
        steps: int,
        height: int | None,
        width: int | None,
        options: dict[str, Any],
    ) -> BatchOutput:
        """One batch through the pipeline: latents, then (unclipped) pixels in [-1, 1]."""
        pipe = self.pipe
        out = pipe(
            class_labels=None if labels is None else labels.tolist(),
            prompt=prompts,
            num_images_per_prompt=1 if labels is not None or prompts is not None else len(indices),
            steps=steps,
            height=height,
            width=width,
            seed=seed + indices.start,
            batch_size=len(indices),
            output_type="latent",
            **options,
        )
        x = out.images.float()  # model units; pixels for a pixel-space model
        latents = None
        if pipe.autoencoder is not None:  # decode as TiMPipeline does, but keep values outside the range
            latents = x
            with torch.no_grad():
                decoded = pipe.autoencoder.decode(
                    (x / pipe.recipe.latent_scale + pipe.recipe.latent_shift).to(pipe.device)
                )
            x = decoded.float().cpu()
        low, high = pipe.recipe.value_range
        if (low, high) != (-1.0, 1.0):
            x = (x - low) / (high - low) * 2 - 1
        return BatchOutput(samples=x, latents=latents, nfe=out.nfe)


class VectorBackend:
    """A training run of the vector MLP (2-D toys), sampled with :func:`tim.samplers.sample`."""

    kind = "vector"

    def __init__(self, model: torch.nn.Module, info: RunInfo, device: torch.device, dtype: str) -> None:
        self.model, self.info, self.device = model, info, device
        self.conditioning = "class" if info.num_classes else "none"
        self.num_classes = info.num_classes
        # Half precision through autocast (the sampler keeps its state in float64 anyway).
        self.autocast = (
            {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype) if device.type == "cuda" else None
        )

    def default_size(self) -> None:
        """Vectors have no size."""
        return None

    def noise_shape(self, height: int | None, width: int | None) -> tuple[int, ...]:
        """(D,)."""
        return self.info.data_shape

    def fingerprint(self) -> str:
        """Digest of the network weights."""
        return weights_fingerprint(self.model)

    def batch_bytes(self, batch_size: int, height: int | None, width: int | None, guided: bool) -> int:
        """Hidden activations of every layer (an over-estimate) and the float64 sampler state."""
        return vector_batch_bytes(self.model.config, batch_size, guided)

    @torch.no_grad()
    def generate(
        self,
        indices: range,
        *,
        seed: int,
        labels: torch.Tensor | None,
        prompts: list[str] | None,
        steps: int,
        height: int | None,
        width: int | None,
        options: dict[str, Any],
    ) -> BatchOutput:
        """One batch from per-sample seeded noise (:func:`tim.samplers.seeded_noise`)."""
        sampler = dict(options)
        scale = sampler.pop("guidance_scale", DEFAULT_GUIDANCE_SCALE)
        noise, generators = seeded_noise(indices, self.info.data_shape, seed)
        cond = {} if labels is None else {"y": labels.to(self.device)}
        with torch.autocast("cuda", dtype=self.autocast, enabled=self.autocast is not None):
            result = sample_batches(
                self.model,
                noise.to(self.device),
                cond=cond,
                guidance_scale=scale,
                generator=generators,
                path=self.info.path,
                steps=steps,
                **sampler,
            )
        return BatchOutput(samples=result.x.float().cpu(), latents=None, nfe=result.nfe)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short digest of a network's weights: names, shapes and float64 sums per tensor.

    Cheap (one reduction per tensor, no copy of the weights) and enough to tell that a resumed job
    would sample another checkpoint (a run trained further, another file at the same path).
    """
    import hashlib

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            values = tensor.detach().double()
            digest.update(
                f"{name}:{tuple(tensor.shape)}:{values.sum().item():.9e}:{values.abs().sum().item():.9e}".encode()
            )
    return digest.hexdigest()[:16]


def load_backend(
    checkpoint: str | Path,
    *,
    device: torch.device,
    weights: str = "ema",
    preset: str | None = None,
    autoencoder: str | None = None,
    text_encoder: str | None = None,
    dtype: str = "auto",
    compile: bool = False,
) -> PipelineBackend | VectorBackend:
    """The backend for ``tim sample --checkpoint`` (the options are those of the command).

    Args:
        checkpoint: a run folder, a pipeline folder, a released ``.safetensors`` or ``bundled:NAME``.
        device: where the network runs.
        weights: ``"ema"`` or ``"model"`` (training runs only).
        preset: the preset of a released file.
        autoencoder: a local autoencoder folder (replaces a stored one).
        text_encoder: a text-encoder folder or ``"minilm"`` (replaces a stored one).
        dtype: ``auto``, ``fp32``, ``bf16`` or ``fp16``.
        compile: sample through ``torch.compile``.
    """
    from tim.pretrained import is_bundled

    bundled = is_bundled(checkpoint)
    source = Path(checkpoint)
    if not bundled and not source.exists():
        raise TimError(
            f"--checkpoint {source} does not exist",
            "pass a run folder (tim train --out), a pipeline folder or a released .safetensors file",
        )
    is_run = not bundled and source.is_dir() and (source / "checkpoints").is_dir()
    if not is_run and weights != "ema":
        raise TimError("--weights model applies to training runs only", "drop --weights")
    if is_run and preset is not None:
        raise TimError("--preset applies to released .safetensors files only", "drop --preset")
    if is_run and _is_vector_run(source):
        if autoencoder or text_encoder:
            raise TimError(
                "the run trained the vector MLP; it has no autoencoder or text encoder",
                "drop --autoencoder and --text-encoder",
            )
        model, info = load_for_sampling(source, weights=weights, device=str(device))
        return VectorBackend(model, info, device, dtype)
    from tim.generation.pipeline import TiMPipeline

    if bundled and preset is not None:
        raise TimError("--preset applies to released .safetensors files only", "drop --preset")
    pipe = TiMPipeline.load(
        checkpoint if bundled else source,
        preset=preset,
        autoencoder=autoencoder,
        text_encoder=text_encoder,
        device=device,
        dtype=dtype,
        weights=weights,
    )
    return PipelineBackend(pipe.compile() if compile else pipe)


@dataclass(frozen=True)
class Generated:
    """Samples for one step count."""

    steps: int
    samples: torch.Tensor  # (N, *data_shape) float32, data range
    labels: torch.Tensor  # (N,) int64, -1 for unconditional
    nfe: int  # network evaluations per sample


@torch.no_grad()
def sample_classes(
    model: torch.nn.Module,
    path: Any,
    data_shape: Sequence[int],
    steps: int,
    *,
    class_ids: Sequence[int],
    per_class: int,
    seed: int = 0,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    batch_size: int = 500,
    **sampler_options: Any,
) -> Generated:
    """``per_class`` samples of each class (class-major) with ``steps`` steps; sample i seeded ``seed + i``.

    Args:
        model: the network F(x_t, t, r, y=...), in eval mode.
        path: the :class:`tim.paths.Path` the model was trained with.
        data_shape: shape of one sample, e.g. (1, 8, 8).
        steps: sampling steps.
        class_ids: classes to sample; empty = unconditional (``per_class`` samples in all).
        per_class: samples per class.
        seed: seeds the noise and any sampler randomness (:func:`tim.samplers.seeded_noise`).
        guidance_scale: classifier-free guidance scale (1 = none).
        batch_size: samples per network call (bounds memory).
        **sampler_options: other :func:`tim.samplers.sample` keywords.
    """
    device = next(model.parameters()).device
    labels = (
        torch.tensor(class_ids, dtype=torch.long).repeat_interleave(per_class)
        if class_ids
        else torch.full((per_class,), -1, dtype=torch.long)
    )
    noise, generators = seeded_noise(range(len(labels)), data_shape, seed)
    result = sample_batches(
        model,
        noise.to(device),
        cond={"y": labels.to(device)} if class_ids else {},
        guidance_scale=guidance_scale,
        batch_size=batch_size,
        generator=generators,
        check_finite="check the checkpoint (was training stable?) and the guidance scale",
        path=path,
        steps=steps,
        **sampler_options,
    )
    return Generated(steps, result.x.float().cpu(), labels.clone(), result.nfe)


def generate(
    model: torch.nn.Module,
    path: Any,
    data_shape: Sequence[int],
    steps_list: Sequence[int],
    *,
    class_ids: Sequence[int],
    per_class: int,
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE,
    seed: int = 0,
    batch_size: int = 500,
    **sampler_options: Any,
) -> list[Generated]:
    """:func:`sample_classes` for every step count, all from the same noise (sample i seeded ``seed + i``).

    Returns:
        One :class:`Generated` per step count, in order; sample i has label ``labels[i]``.
    """
    return [
        sample_classes(
            model,
            path,
            data_shape,
            steps,
            class_ids=class_ids,
            per_class=per_class,
            seed=seed,
            guidance_scale=guidance_scale,
            batch_size=batch_size,
            **sampler_options,
        )
        for steps in steps_list
    ]
