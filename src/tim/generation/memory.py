"""Every generation memory estimate and check (docs/internals.md, "Layers": ``tim.generation.memory``).

Before any work, a request is compared with the free memory of its device
(:func:`tim.system.available_memory`), leaving :data:`MEMORY_HEADROOM` for allocator slack:

* :func:`estimate_generation_bytes`: one batch of a TiM network (activations + sampler state);
* :func:`plan_batch`: a :class:`~tim.generation.TiMPipeline` call (refuse, or choose the batch size);
* :func:`pipeline_batch_bytes` / :func:`vector_batch_bytes`: a ``tim sample`` backend's batch;
* :func:`host_bytes` / :func:`check_memory`: a whole ``tim sample`` job (batch + the shard held on
  the host).

Too large a request is refused with one line giving both numbers.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch

from tim.errors import TimError
from tim.system import available_memory, format_bytes

if TYPE_CHECKING:
    from tim.generation.job_spec import Backend, Job

__all__ = [
    "ACTIVATION_MARGIN",
    "DEFAULT_MAX_BATCH",
    "MEMORY_HEADROOM",
    "available_memory_bytes",
    "check_memory",
    "estimate_generation_bytes",
    "host_bytes",
    "pipeline_batch_bytes",
    "plan_batch",
    "vector_batch_bytes",
]

DEFAULT_MAX_BATCH = 64  # default images per network call when memory allows (streams larger requests)
MEMORY_HEADROOM = 0.8  # plan to use at most this share of the free memory (allocator slack, fragmentation)
# Peak resident growth / counted working set of a generation with glibc's default allocator: 0.93-1.22
# (narrow T2I-structured network, fp32 CPU, 256-9216 tokens; benchmarks/bench_pipeline.py; live tensors
# alone are about 0.6 of it), so the count is scaled up to stay an upper bound of what a process shows.
ACTIVATION_MARGIN = 1.25


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


def plan_batch(
    pipe: Any, n: int, h: int, w: int, batch_size: int | None, guided: bool, output_type: str
) -> int:
    """Check a :class:`~tim.generation.TiMPipeline` request against free memory; the batch size to use.

    Args:
        pipe: the pipeline (its ``memory_limit``, network, dtype, autoencoder and recipe).
        n: images requested.
        h: latent height.
        w: latent width.
        batch_size: the requested images per network call (None: the largest that fits, at most
            :data:`DEFAULT_MAX_BATCH`).
        guided: CFG doubles the network batch.
        output_type: ``"latent"`` skips the decoder.
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise TimError(f"batch_size={batch_size!r} is invalid", "pass a whole number >= 1")
    limit = (
        pipe.memory_limit
        if pipe.memory_limit is not None
        else int(MEMORY_HEADROOM * available_memory_bytes(pipe.device))
    )
    dtype_bytes = torch.finfo(pipe.dtype).bits // 8
    context = pipe.recipe.text_max_length if pipe.conditioning == "text" else 0

    def need(b: int) -> tuple[int, int]:
        net = estimate_generation_bytes(
            pipe.model.config, b, h, w, dtype_bytes=dtype_bytes, guided=guided, context_length=context
        )
        decode = 0
        if (
            output_type != "latent"
            and pipe.autoencoder is not None
            and hasattr(pipe.autoencoder, "decode_bytes")
        ):
            decode = int(
                pipe.autoencoder.decode_bytes(h * pipe.factor, w * pipe.factor)
            )  # one image at a time
        return net, decode

    net, decode = need(1)
    if max(net, decode) > limit:
        size = f"{h * pipe.factor}x{w * pipe.factor}"
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
            f"batch_size={batch_size} at {h * pipe.factor}x{w * pipe.factor} needs about "
            f"{format_bytes(need(batch_size)[0])} but only {format_bytes(limit)} are available",
            "pass a smaller batch_size (or leave it unset to choose one that fits)",
        )
    return batch_size


def pipeline_batch_bytes(pipe: Any, batch_size: int, height: int, width: int, guided: bool) -> int:
    """A ``tim sample`` batch through a pipeline: its network estimate, or decoding, whichever is larger."""
    h, w = height // pipe.factor, width // pipe.factor
    context = pipe.recipe.text_max_length if pipe.conditioning == "text" else 0
    net = estimate_generation_bytes(
        pipe.model.config,
        batch_size,
        h,
        w,
        guided=guided,
        context_length=context,
        dtype_bytes=torch.finfo(pipe.dtype).bits // 8,
    )
    decode = 0
    if pipe.autoencoder is not None and hasattr(pipe.autoencoder, "decode_bytes"):
        decode = int(pipe.autoencoder.decode_bytes(height, width))  # the pipeline decodes one image at a time
    return max(net, decode)


def vector_batch_bytes(config: Any, batch_size: int, guided: bool) -> int:
    """A batch of the vector MLP: hidden activations of every layer (an over-estimate), float64 state."""
    rows = batch_size * (2 if guided else 1)
    return rows * 4 * config.hidden_size * (config.depth + 2) * 4


def host_bytes(job: Job, backend: Backend) -> int:
    """Bytes held on the host: the current shard (float32 samples + latents) and one batch in flight.

    The batch: its float32 noise, the decoded float32 images and their uint8 copies for the PNGs
    (the network's own working set is ``Backend.batch_bytes``).
    """
    latent_numel = math.prod(backend.noise_shape(job.height, job.width))
    pixels = math.prod((3, job.height, job.width)) if job.height and job.width else latent_numel
    shard = job.shard_size * 4 * (pixels + latent_numel)
    return shard + job.batch_size * (4 * latent_numel + 4 * pixels + pixels)


def check_memory(job: Job, backend: Backend, device: torch.device) -> int:
    """Refuse (one-line TimError) a job whose batch or shard will not fit; returns the estimate.

    Args:
        job: the job.
        backend: gives the per-batch device estimate.
        device: where the network runs.

    Returns:
        Estimated peak bytes on ``device`` (host bytes included when that is the CPU).
    """
    guided = job.options.get("guidance_scale", 1.0) != 1.0
    batch = backend.batch_bytes(job.batch_size, job.height, job.width, guided)
    host = host_bytes(job, backend)
    needed = batch + host if device.type == "cpu" else batch
    free, source = available_memory(device)
    size = f"{job.height}x{job.width}" if job.height else "vector"
    if needed > MEMORY_HEADROOM * free:
        single = backend.batch_bytes(1, job.height, job.width, guided)
        hint = (
            f"lower --batch-size (a batch of 1 needs about {format_bytes(single)})"
            if single + (host if device.type == "cpu" else 0) <= MEMORY_HEADROOM * free
            else "lower --height/--width or use a device with more memory"
        )
        raise TimError(
            f"sampling {job.batch_size} {size} samples per batch needs about {format_bytes(needed)} "
            f"but only {format_bytes(free)} is available ({source})",
            hint,
        )
    if device.type != "cpu":
        host_free, host_source = available_memory(torch.device("cpu"))
        if host > MEMORY_HEADROOM * host_free:
            raise TimError(
                f"holding a shard of {job.shard_size} {size} samples needs about {format_bytes(host)} "
                f"but only {format_bytes(host_free)} is available ({host_source})",
                "lower --shard-size",
            )
    return needed
