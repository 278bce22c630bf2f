"""Resolution buckets: train on every item at its own size (native resolution, arXiv 2509.04394, App. C.2).

- Each item keeps its size rounded down to a multiple of ``patch_multiple`` (autoencoder factor x
  patch size; the paper resizes 1025x513 to 1024x512 for DC-AE's factor 32).
- Items of equal size form a bucket; every batch comes from one bucket.
- A bucket's batch size keeps the tokens per step about constant: B = round(budget / tokens),
  tokens = (H / patch_multiple)(W / patch_multiple) (App. C.2 of the paper: B = round(16 * 1024^2 / (H W))
  per GPU, i.e. 512^2 -> 64, 1024^2 -> 16, 4096^2 -> 1).

Order (deterministic in ``(seed, epoch)``): per epoch, each bucket is shuffled and cut into
batches (the last one may be smaller, so no item is dropped), then all batches are shuffled
together. This gives a fixed number ``K`` of batches per epoch. Global batch ``g`` is batch
``g mod K`` of epoch ``g div K``; at step ``s`` rank ``k`` of ``W`` takes ``g = s W + k``. Every rank
therefore does exactly one batch per step (no rank waits for another: no deadlock), ranks may
be in different buckets at the same step (the paper does the same), and ``W`` ranks together
see the batches that one process sees in ``W`` consecutive steps. Under DDP each rank's loss
is its own batch mean and DDP averages ranks, exactly as in the paper's setup.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from tim.data.config import DataConfig, DataInfo
from tim.data.sources import check_distributed, check_state, derived_generator
from tim.errors import TimError

Size = tuple[int, int]


def round_down_size(height: int, width: int, multiple: int) -> Size:
    """(H, W) rounded down to multiples of ``multiple`` (arXiv 2509.04394, App. C.2: 32 floor(H / 32)).

    A side below ``multiple`` becomes 0: such an item cannot be patchified and must be skipped.
    """
    return (height // multiple) * multiple, (width // multiple) * multiple


def tokens_per_item(size: Size, patch_multiple: int) -> int:
    """Tokens of one item: (H / patch_multiple)(W / patch_multiple)."""
    return (size[0] // patch_multiple) * (size[1] // patch_multiple)


def bucket_batch_size(size: Size, token_budget: int, patch_multiple: int) -> int:
    """Per-rank batch for a bucket: max(1, round(token_budget / tokens)) (App. C.2 of the paper: B ∝ 1/(H W))."""
    return max(1, round(token_budget / tokens_per_item(size, patch_multiple)))


def group_by_size(items: list[tuple[np.ndarray, int]]) -> dict[Size, tuple[Tensor, Tensor]]:
    """(array (C, H, W), label) pairs -> {(H, W): (stacked (n, C, H, W), int64 labels (n,))}."""
    groups: dict[Size, list[tuple[np.ndarray, int]]] = {}
    for image, label in items:
        groups.setdefault((image.shape[1], image.shape[2]), []).append((image, label))
    return {
        size: (
            torch.from_numpy(np.stack([i for i, _ in group])),
            torch.tensor([lab for _, lab in group], dtype=torch.int64),
        )
        for size, group in groups.items()
    }


class BucketedSource:
    """Batches drawn one bucket at a time from items of mixed sizes (see module docstring).

    Args:
        buckets: (H, W) -> (x, y): x of shape (n, C, H, W) in compact storage, y int (n,) or None.
        info: what the source delivers; ``shape``/``sizes`` are filled in here.
        token_budget: tokens per rank per step; 0 = (batch_size // world_size) x tokens of the
            largest bucket, so no step holds more tokens than ``batch_size // world_size``
            images at the largest size.
        batch_size: GLOBAL batch, used only when ``token_budget == 0``.
        patch_multiple: tokens are counted in patch_multiple x patch_multiple cells.
        value_scale: stored values map to float32 by x * value_scale + value_offset.
        value_offset: see ``value_scale``.
    """

    @classmethod
    def from_config(
        cls,
        buckets: dict[Size, tuple[Tensor, Tensor | None]],
        info: DataInfo,
        cfg: DataConfig,
        *,
        batch_size: int,
        **options: Any,
    ) -> BucketedSource:
        """A source with ``cfg``'s token budget and patch multiple; ``options`` from ``stream_options``."""
        return cls(
            buckets,
            info,
            token_budget=cfg.token_budget,
            batch_size=batch_size,
            patch_multiple=cfg.patch_multiple,
            **options,
        )

    def __init__(
        self,
        buckets: dict[Size, tuple[Tensor, Tensor | None]],
        info: DataInfo,
        *,
        token_budget: int,
        batch_size: int,
        patch_multiple: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        hflip: bool = False,
        value_scale: float = 1.0,
        value_offset: float = 0.0,
    ) -> None:
        check_distributed(batch_size, rank, world_size, seed)
        buckets = {size: xy for size, xy in buckets.items() if len(xy[0])}
        if not buckets:
            raise TimError("the bucketed dataset is empty", "point data.root at a folder that holds data")
        bad = [size for size in buckets if size[0] % patch_multiple or size[1] % patch_multiple or 0 in size]
        if bad:
            raise TimError(
                f"bucket sizes {bad} are not positive multiples of patch_multiple={patch_multiple}",
                "round item sizes down with tim.data.buckets.round_down_size",
            )
        if token_budget == 0:
            if batch_size < world_size:
                raise TimError(
                    f"global batch_size={batch_size} is smaller than world_size={world_size}",
                    "raise the batch size or set data.token_budget",
                )
            token_budget = batch_size // world_size * max(tokens_per_item(s, patch_multiple) for s in buckets)
        self.sizes = sorted(buckets)
        self.buckets = buckets
        self.batch_sizes = {s: bucket_batch_size(s, token_budget, patch_multiple) for s in self.sizes}
        self.token_budget, self.patch_multiple = token_budget, patch_multiple
        self.rank, self.world_size, self.seed, self.hflip = rank, world_size, seed, hflip
        self.value_scale, self.value_offset = value_scale, value_offset
        most = max(self.sizes, key=lambda s: (len(buckets[s][0]), s))
        channels = buckets[most][0].shape[1]
        self.info = DataInfo(
            kind=info.kind,
            shape=(channels, *most),
            num_classes=info.num_classes,
            value_range=info.value_range,
            latent_scale=info.latent_scale,
            latent_shift=info.latent_shift,
            autoencoder=info.autoencoder,
            class_names=info.class_names,
            num_items=sum(len(x) for x, _ in buckets.values()),
            sizes=tuple(self.sizes),
        )
        self.batches_per_epoch = sum(-(-len(buckets[s][0]) // self.batch_sizes[s]) for s in self.sizes)
        self.batches = 0  # global batches consumed by all ranks together
        self.skipped_files: list[tuple[str, str]] = []  # (file, reason) for folder sources
        self._plan_cache: tuple[int, list[tuple[Size, Tensor, Tensor]]] | None = None

    def epoch_plan(self, epoch: int) -> list[tuple[Size, Tensor, Tensor]]:
        """All batches of one epoch, in order: (bucket size, item indices, flip bits)."""
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        generator = derived_generator(self.seed, epoch)
        plan = []
        for size in self.sizes:  # sorted, so the draws do not depend on dict order
            n = len(self.buckets[size][0])
            order = torch.randperm(n, generator=generator)
            flip = torch.rand(n, generator=generator) < 0.5
            chunk = self.batch_sizes[size]
            plan += [(size, order[i : i + chunk], flip[i : i + chunk]) for i in range(0, n, chunk)]
        plan = [plan[int(i)] for i in torch.randperm(len(plan), generator=generator)]
        self._plan_cache = (epoch, plan)
        return plan

    def next_batch(self) -> dict[str, Tensor]:
        """This rank's batch of the current step: ``{"x": (B_b, C, H, W), "y": (B_b,)}`` from one bucket."""
        epoch, index = divmod(self.batches + self.rank, self.batches_per_epoch)
        size, indices, flip = self.epoch_plan(epoch)[index]
        self.batches += self.world_size
        x_all, y_all = self.buckets[size]
        x = x_all[indices].to(torch.float32) * self.value_scale + self.value_offset
        if self.hflip:
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        batch = {"x": x}
        if y_all is not None:
            batch["y"] = y_all[indices].to(torch.int64)
        return batch

    def state_dict(self) -> dict[str, int]:
        """``{"batches", "seed", "epoch"}``: global batches consumed (all ranks), enough to resume.

        Counting global batches rather than steps keeps resume exact across a change of world size.
        """
        return {"batches": self.batches, "seed": self.seed, "epoch": self.batches // self.batches_per_epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume after ``state["batches"]`` global batches with ``state["seed"]``."""
        check_state(state, ("batches", "seed"), "bucketed data")
        self.batches, self.seed = int(state["batches"]), int(state["seed"])
        self._plan_cache = None
