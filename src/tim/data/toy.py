"""2-D toy distributions with unlimited fresh samples.

Each toy is a function ``sample(n, generator=None) -> Tensor`` of shape (n, 2), float32, scaled
so that every coordinate has a spread of about one unit and the noise-free shapes lie inside
[-1.8, 1.8]^2; the Gaussian jitter leaves the box [-2, 2]^2 (``TOY_BOX``) only beyond 4 standard
deviations, i.e. with probability < 1e-4. Evaluation code draws fresh
reference samples from the same functions (e.g. for an energy distance).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from tim.data.config import DataInfo
from tim.data.sources import check_distributed, check_state, derived_generator
from tim.errors import TimError

TOY_BOX = (-2.0, 2.0)  # bounding box of every toy (see module docstring)


def sample_checkerboard(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Uniform on the 8 dark cells of a 4x4 checkerboard covering [-2, 2]^2.

    Cell (i, j), i, j in 0..3, is dark when i + j is even; a point is a dark cell chosen
    uniformly plus a uniform offset inside it.

    Returns:
        Tensor of shape (n, 2).
    """
    cell = torch.randint(0, 8, (n,), generator=generator)
    i = cell // 2
    j = 2 * (cell % 2) + (i % 2)  # in row i the dark columns are i % 2 and i % 2 + 2
    offset = torch.rand(n, 2, generator=generator)
    return torch.stack([j, i], dim=1).to(torch.float32) + offset - 2.0


def sample_8gaussians(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Equal mixture of 8 isotropic Gaussians (std 0.1) on a circle of radius sqrt(2).

    The radius makes each coordinate's spread about 1 (a point on a circle of radius R has
    per-coordinate second moment R^2 / 2).

    Returns:
        Tensor of shape (n, 2).
    """
    k = torch.randint(0, 8, (n,), generator=generator).to(torch.float32)
    angle = k * (2 * math.pi / 8)
    centre = math.sqrt(2.0) * torch.stack([torch.cos(angle), torch.sin(angle)], dim=1)
    return centre + 0.1 * torch.randn(n, 2, generator=generator)


def sample_moons(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved half circles ("two moons"), Gaussian jitter std 0.06.

    Upper moon (cos a, sin a), lower moon (1 - cos a, 0.5 - sin a), a ~ U[0, pi]; then centred
    at (0.5, 0.25) and scaled by 1.1 so that the noise-free shape fits [-1.65, 1.65] x [-0.83, 0.83].

    Returns:
        Tensor of shape (n, 2).
    """
    a = math.pi * torch.rand(n, generator=generator)
    lower = torch.rand(n, generator=generator) < 0.5
    upper_xy = torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    lower_xy = torch.stack([1.0 - torch.cos(a), 0.5 - torch.sin(a)], dim=1)
    xy = torch.where(lower[:, None], lower_xy, upper_xy)
    xy = 1.1 * (xy - torch.tensor([0.5, 0.25]))
    return xy + 0.06 * torch.randn(n, 2, generator=generator)


def sample_spirals(n: int, generator: torch.Generator | None = None) -> Tensor:
    """Two interleaved Archimedean spirals of 1.5 turns, radius up to 1.8, jitter std 0.04.

    Angle a = 3 pi sqrt(u), u ~ U[0, 1] (sqrt spreads points evenly along the growing arm);
    radius 1.8 a / (3 pi); the second arm is the first rotated by pi.

    Returns:
        Tensor of shape (n, 2).
    """
    a = 3 * math.pi * torch.sqrt(torch.rand(n, generator=generator))
    radius = 1.8 * a / (3 * math.pi)
    arm = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0)
    xy = arm[:, None] * radius[:, None] * torch.stack([torch.cos(a), torch.sin(a)], dim=1)
    return xy + 0.04 * torch.randn(n, 2, generator=generator)


TOYS: dict[str, Callable[[int, torch.Generator | None], Tensor]] = {
    "checkerboard": sample_checkerboard,
    "8gaussians": sample_8gaussians,
    "moons": sample_moons,
    "spirals": sample_spirals,
}


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Draw ``n`` fresh samples of the toy ``name``.

    Returns:
        Tensor of shape (n, 2), float32.
    """
    if name not in TOYS:
        raise TimError(f"unknown 2-D toy {name!r}", f"use one of {', '.join(TOYS)}")
    return TOYS[name](n, generator)


class ToySource:
    """Unlimited fresh 2-D samples; step ``s`` draws the global batch from ``(seed, s)``.

    Every rank draws the same global batch and keeps its own contiguous slice, so the rows are
    independent of the number of processes.
    """

    def __init__(
        self, name: str, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0
    ) -> None:
        check_distributed(batch_size, rank, world_size, seed)
        if batch_size % world_size:
            raise TimError(
                f"global batch_size={batch_size} is not divisible by world_size={world_size}",
                "choose a batch size that is a multiple of the number of processes",
            )
        self.name = name
        self.sample = TOYS[name]
        self.info = DataInfo(kind="vector", shape=(2,), value_range=TOY_BOX)
        self.batch_size, self.rank, self.world_size, self.seed = batch_size, rank, world_size, seed
        self.step = 0

    def next_batch(self) -> dict[str, Tensor]:
        """``{"x": (batch_size // world_size, 2)}`` fresh samples."""
        x = self.sample(self.batch_size, derived_generator(self.seed, self.step))
        self.step += 1
        local = self.batch_size // self.world_size
        return {"x": x[self.rank * local : (self.rank + 1) * local]}

    def state_dict(self) -> dict[str, int]:
        """``{"step", "seed"}``."""
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Resume at ``state["step"]``."""
        check_state(state, ("step", "seed"), "2-D toy")
        self.step, self.seed = int(state["step"]), int(state["seed"])
