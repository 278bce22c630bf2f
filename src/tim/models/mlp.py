"""TiMMLP: a small transition network for vector data (2-D toys, tests).

Same interface as :class:`tim.models.TiM` — ``F(x_t, t, r, **cond)`` with ``x_t`` of shape (B, D)
— and the same decoupled sinusoidal time embeddings ``c = E_t(t) + E_Δ(t - r) [+ E_y(y)]``
(De-TE, arXiv 2509.04394, Sec. 3.4). The body is a stack of residual SiLU MLP blocks, each modulated by ``c``
(adaLN, DiT), so the time and class information reaches every layer.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, cast

from torch import Tensor, nn

from tim.errors import TimError
from tim.models.common import batch_times, config_from_dict
from tim.models.conditioning import ClassConditioning, Conditioned, NoConditioning
from tim.models.layers import TimestepEmbedder, float32_conditioning_active, float32_region, modulate


@dataclass(frozen=True)
class MLPConfig:
    """Architecture of a :class:`TiMMLP`.

    Attributes:
        dim: data dimension D of x (2 for the 2-D toys).
        hidden_size: width of the hidden layers and the time embedding.
        depth: number of residual blocks.
        num_classes: > 0 enables class conditioning (null class = num_classes); 0 = unconditional.
        decoupled_time_embedding: separate Δt embedder; False reuses the t embedder for Δt.
        zero_init_output: zero the output layer so F = 0 at initialisation.
    """

    dim: int = 2
    hidden_size: int = 256
    depth: int = 4
    num_classes: int = 0
    decoupled_time_embedding: bool = True
    zero_init_output: bool = True

    def __post_init__(self) -> None:
        sizes = (self.dim, self.hidden_size, self.depth, self.num_classes)
        if (
            not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes)  # pyright: ignore[reportUnnecessaryIsInstance]  -- checks what users pass at runtime
            or min(sizes[:3]) < 1
            or sizes[3] < 0
        ):
            raise TimError(
                "MLPConfig sizes must be positive integers",
                "check dim, hidden_size, depth and num_classes >= 0",
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of all fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MLPConfig:
        """Build from :meth:`to_dict` output; unknown keys raise TimError."""
        return config_from_dict(cls, data)


class ResidualBlock(nn.Module):
    """``h += gate * MLP(LN(h) (1 + scale) + shift)`` with (shift, scale, gate) = Linear(SiLU(c))."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden_size, elementwise_affine=False)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(hidden_size, 3 * hidden_size))

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        """h, c: (B, hidden) -> (B, hidden)."""
        with float32_region(c):  # adaLN in float32 under tim.network.float32_conditioning
            shift, scale, gate = self.modulation(c).chunk(3, dim=-1)
        return h + gate * self.mlp(modulate(self.norm(h), shift, scale))


class TiMMLP(Conditioned, nn.Module):
    """Transition network for vectors: ``F(x_t, t, r, **cond) -> (B, dim)``."""

    def __init__(self, config: MLPConfig) -> None:
        super().__init__()
        self.config = config
        H = config.hidden_size
        self.input = nn.Linear(config.dim, H)
        self.t_embedder = TimestepEmbedder(H)
        self.dt_embedder = TimestepEmbedder(H) if config.decoupled_time_embedding else None
        self.cond_embedder = (
            ClassConditioning(config.num_classes, H) if config.num_classes > 0 else NoConditioning()
        )
        self.blocks = nn.ModuleList(ResidualBlock(H) for _ in range(config.depth))
        self.output = nn.Sequential(nn.LayerNorm(H), nn.Linear(H, config.dim))
        if config.zero_init_output:
            nn.init.zeros_(cast(nn.Linear, self.output[1]).weight)
            nn.init.zeros_(cast(nn.Linear, self.output[1]).bias)

    @property
    def sample_shape(self) -> tuple[int]:
        """Shape of one sample: ``(dim,)``."""
        return (self.config.dim,)

    def forward(self, x_t: Tensor, t: Tensor, r: Tensor, **cond: Tensor) -> Tensor:
        """Transition output F(x_t, t, r) for vectors x_t (B, dim); t, r (B,) network time inputs."""
        return self.forward_with_features(x_t, t, r, **cond)[0]

    def forward_with_features(self, x_t: Tensor, t: Tensor, r: Tensor, **cond: Tensor) -> tuple[Tensor, None]:
        """Same as :meth:`forward`; an MLP has no alignment features, so the second item is None."""
        if x_t.ndim != 2 or x_t.shape[1] != self.config.dim or not x_t.is_floating_point():
            raise TimError(
                f"x_t has shape {tuple(x_t.shape)} and dtype {x_t.dtype}",
                f"pass float (B, {self.config.dim}) vectors",
            )
        t, r = batch_times(x_t, t, r)
        dt_embedder = self.dt_embedder if self.dt_embedder is not None else self.t_embedder
        with float32_region(x_t):  # float32 under tim.network.float32_conditioning (mixed precision)
            c = self.t_embedder(t) + dt_embedder(t - r)  # (B, H), De-TE
            h = self.input(x_t)  # (B, H)
        pooled = self.embed_cond(cond, x_t.shape[0]).pooled
        c = c if pooled is None else c + pooled
        for block in self.blocks:
            h = block(h, c)
        if float32_conditioning_active(h):  # output layer in float32
            with float32_region(h):
                return self.output(h.to(c.dtype)), None  # (B, dim)
        return self.output(h), None  # (B, dim)
