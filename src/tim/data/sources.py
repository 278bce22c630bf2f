"""Data sources: deterministic, resumable, rank-aware batch streams.

Every source is a pure function of ``(seed, step)``: the rows of step ``s`` depend on nothing
else, so resuming only needs the step counter (``state_dict`` holds plain ints, never RNG objects).

Batch semantics (fixed-size sources): ``batch_size`` is the GLOBAL batch. The epoch stream is the
concatenation of per-epoch permutations; step ``s`` covers global rows ``[s B, (s + 1) B)`` of that
stream and rank ``k`` of ``W`` takes the contiguous slice ``[k B/W, (k + 1) B/W)``. A 2-rank run
therefore sees exactly the rows of a 1-rank run with the same global batch. Epochs do not drop a
partial last batch: the stream simply continues into the next epoch's permutation.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from tim.data.config import DataConfig, DataInfo
from tim.errors import TimError


@runtime_checkable
class DataSource(Protocol):
    """What the trainer consumes (docs/internals.md)."""

    info: DataInfo

    def next_batch(self) -> dict[str, Tensor]:
        """The next rank-local batch: ``{"x": float32 tensor, "y": int64 (B,) if labelled}``."""
        ...

    def state_dict(self) -> dict[str, int]:
        """Plain ints that reproduce the stream from here on."""
        ...

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue exactly where ``state`` was taken."""
        ...


def derived_generator(seed: int, *keys: int) -> torch.Generator:
    """A CPU generator seeded from ``(seed, *keys)`` through numpy's SeedSequence.

    SeedSequence mixes the integers so that nearby seeds/epochs/steps give unrelated streams
    (a plain ``seed + epoch`` would make run seed 1 epoch 0 equal run seed 0 epoch 1).
    """
    state = np.random.SeedSequence([seed, *keys]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)


def stream_options(
    cfg: DataConfig, *, rank: int, world_size: int, seed: int, value_scale: float, value_offset: float
) -> dict[str, Any]:
    """Keyword arguments shared by :class:`TensorSource` and ``BucketedSource`` for one rank.

    Stored values map to float32 as ``x * value_scale + value_offset``; ``hflip`` comes from ``cfg``.
    """
    return {
        "rank": rank,
        "world_size": world_size,
        "seed": seed,
        "hflip": cfg.hflip,
        "value_scale": value_scale,
        "value_offset": value_offset,
    }


def check_distributed(batch_size: int, rank: int, world_size: int, seed: int) -> None:
    """One-line errors for impossible batch/rank settings."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise TimError(
            f"rank={rank} is not in [0, world_size={world_size})",
            "launch with torchrun so that rank and world size agree",
        )
    if batch_size < 1:
        raise TimError(f"batch_size={batch_size} must be >= 1", "set a positive batch size")
    if seed < 0:
        raise TimError(f"seed={seed} must be >= 0", "use a non-negative seed")


def check_state(state: dict[str, int], keys: tuple[str, ...], name: str) -> None:
    """Reject a data state that does not belong to this kind of source."""
    missing = [key for key in keys if key not in state]
    if missing or any(int(state[key]) < 0 for key in keys if key in state):
        raise TimError(
            f"data state {state!r} is not a valid {name} state (needs {', '.join(keys)})",
            "resume with the checkpoint of a run that used the same data config",
        )


class TensorSource:
    """Fixed-size items held in memory, shuffled per epoch, split across ranks.

    Items are stored compactly (uint8 pixels, digit counts 0..16, raw latents) and mapped to
    float32 at batch time by ``x * value_scale + value_offset``.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor | None,
        info: DataInfo,
        *,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        hflip: bool = False,
        value_scale: float = 1.0,
        value_offset: float = 0.0,
    ) -> None:
        check_distributed(batch_size, rank, world_size, seed)
        if batch_size % world_size:
            raise TimError(
                f"global batch_size={batch_size} is not divisible by world_size={world_size}",
                "choose a batch size that is a multiple of the number of processes",
            )
        if len(x) == 0:
            raise TimError("the dataset is empty", "point data.root at a folder that holds data")
        self.info = info
        self.x, self.y = x, y
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.hflip = hflip
        self.value_scale, self.value_offset = value_scale, value_offset
        self.rows = 0  # global stream rows consumed by all ranks together
        self.skipped_files: list[tuple[str, str]] = []  # (file, reason) for folder sources
        self._epoch_cache: tuple[int, Tensor, Tensor] | None = None

    def _epoch(self, epoch: int) -> tuple[Tensor, Tensor]:
        """(permutation, flip mask) of one epoch; both drawn from (seed, epoch) only."""
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            generator = derived_generator(self.seed, epoch)
            order = torch.randperm(len(self.x), generator=generator)
            flip = torch.rand(len(self.x), generator=generator) < 0.5
            self._epoch_cache = (epoch, order, flip)
        return self._epoch_cache[1], self._epoch_cache[2]

    def _rows(self, start: int, count: int) -> tuple[Tensor, Tensor]:
        """Dataset indices and flip bits of global stream rows ``[start, start + count)``."""
        n = len(self.x)
        indices, flips = [], []
        while count > 0:
            epoch, offset = divmod(start, n)
            take = min(count, n - offset)
            order, flip = self._epoch(epoch)
            indices.append(order[offset : offset + take])
            flips.append(flip[offset : offset + take])
            start, count = start + take, count - take
        return torch.cat(indices), torch.cat(flips)

    def next_batch(self) -> dict[str, Tensor]:
        """The next rank-local batch of ``batch_size // world_size`` rows."""
        local = self.batch_size // self.world_size
        indices, flip = self._rows(self.rows + self.rank * local, local)
        self.rows += self.batch_size
        x = self.x[indices].to(torch.float32) * self.value_scale + self.value_offset
        if self.hflip:
            x = torch.where(flip.view(-1, *([1] * (x.dim() - 1))), x.flip(-1), x)
        batch = {"x": x}
        if self.y is not None:
            batch["y"] = self.y[indices].to(torch.int64)
        return batch

    @property
    def epoch(self) -> int:
        """Epochs completed so far (global rows consumed // dataset size)."""
        return self.rows // len(self.x)

    def state_dict(self) -> dict[str, int]:
        """``{"rows", "seed", "epoch", "position"}``; rows (global, all ranks) and seed suffice to resume.

        Counting rows rather than steps keeps resume exact even if the global batch size changes.
        """
        return {
            "rows": self.rows,
            "seed": self.seed,
            "epoch": self.rows // len(self.x),
            "position": self.rows % len(self.x),
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume after ``state["rows"]`` global rows with ``state["seed"]``."""
        check_state(state, ("rows", "seed"), "fixed-size data")
        self.rows, self.seed = int(state["rows"]), int(state["seed"])
        self._epoch_cache = None
