"""What a ``tim sample`` job is: its description, its backend, one batch, its conditions and shards.

:class:`Job` describes the job, :class:`Backend` is what it samples from, :class:`BatchOutput` one
batch; :func:`split_count` and :func:`default_shard_size` split samples into conditions and shards.

Data only (no files, no running): :mod:`tim.generation.job` runs a job, :mod:`tim.generation.job_files`
keeps its folder and index, :mod:`tim.generation.memory` plans its memory; all three build on this.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

SHARD_BYTES = 256 * 2**20  # default shard budget: float32 samples held before a shard is written
MAX_SHARD_SAMPLES = 1000  # and at most this many samples per shard (a 50,000-sample FID set = 50 files)


# ------------------------------------------------------------------------------------------------
# What a backend (a run's network, or a TiMPipeline) must provide


@dataclass
class BatchOutput:
    """One generated batch, on the CPU.

    Attributes:
        samples: (n, C, H, W) images in the data range [-1, 1], NOT clipped (raw sampler or decoder
            output), or (n, D) vectors; float32.
        latents: (n, C_z, h, w) the sampler's latent output for latent models, else None; float32.
        nfe: network evaluations per sample for this step count.
    """

    samples: torch.Tensor
    latents: torch.Tensor | None
    nfe: int


class Backend(Protocol):
    """A network that turns noise into samples.

    Implemented by :class:`tim.generation.backends.PipelineBackend` and :class:`tim.generation.backends.VectorBackend`.
    """

    conditioning: str  # "class" | "text" | "none"
    num_classes: int  # 0 unless conditioning == "class"
    kind: str  # "image" | "vector"

    def noise_shape(self, height: int | None, width: int | None) -> tuple[int, ...]:
        """Shape of one sample's starting noise (model-input units)."""
        ...

    def fingerprint(self) -> str:
        """A short digest of the weights (a resumed job must use the same ones)."""
        ...

    def batch_bytes(self, batch_size: int, height: int | None, width: int | None, guided: bool) -> int:
        """Estimated peak bytes on the device for one batch (network passes, and the decoder)."""
        ...

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
        """Sample ``indices`` (noise seeded ``seed + i``, see :func:`tim.samplers.seeded_noise`) with ``steps`` steps."""
        ...


# ------------------------------------------------------------------------------------------------
# The job


@dataclass(frozen=True)
class Job:
    """Everything that decides the samples and the files of one ``tim sample`` call.

    Attributes:
        steps: step counts, in order.
        conditions: class ids or prompts (condition-major sample order); empty = unconditional.
        counts: samples per condition (one entry when unconditional).
        seed: noise seed.
        batch_size: samples per network batch.
        shard_size: samples per ``.npz`` shard.
        height, width: output size in pixels (None for vectors).
        options: sampler options (guidance_scale, guidance_interval, stochasticity).
        png: write one PNG per sample (images only).
        identity: what a resumed run must match (the options above plus checkpoint, weights, dtype).
    """

    steps: tuple[int, ...]
    conditions: tuple
    counts: tuple[int, ...]
    seed: int
    batch_size: int
    shard_size: int
    height: int | None
    width: int | None
    options: dict[str, Any]
    png: bool = True
    identity: dict[str, Any] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Samples per step count."""
        return sum(self.counts)

    @property
    def num_shards(self) -> int:
        """Shards per step count."""
        return -(-self.total // self.shard_size)

    def shard_range(self, shard: int) -> range:
        """Global sample indices of one shard."""
        return range(shard * self.shard_size, min(self.total, (shard + 1) * self.shard_size))

    def condition_of(self, indices: range) -> np.ndarray:
        """Condition number (position in ``conditions``) of each sample index, condition-major."""
        bounds = np.cumsum(self.counts)
        return np.searchsorted(bounds, np.arange(indices.start, indices.stop), side="right")

    def npz_name(self, steps: int, shard: int) -> str:
        """File name of one shard."""
        return f"steps_{steps:03d}.npz" if self.num_shards == 1 else f"steps_{steps:03d}-{shard:05d}.npz"

    def png_name(self, steps: int, index: int) -> str:
        """Relative path of one sample's PNG."""
        return f"steps_{steps:03d}/{index:0{max(6, len(str(self.total - 1)))}d}.png"


def split_count(total: int, num_conditions: int) -> tuple[int, ...]:
    """Spread ``total`` samples over conditions as evenly as possible (the first ones get the rest).

    Args:
        total: samples in all.
        num_conditions: classes or prompts (>= 1).

    Returns:
        Samples per condition, summing to ``total``.
    """
    base, rest = divmod(total, num_conditions)
    return tuple(base + (1 if i < rest else 0) for i in range(num_conditions))


def default_shard_size(sample_numel: int) -> int:
    """Samples per shard: as many float32 samples as fit in SHARD_BYTES, at most MAX_SHARD_SAMPLES."""
    return max(1, min(MAX_SHARD_SAMPLES, SHARD_BYTES // max(1, 4 * sample_numel)))
