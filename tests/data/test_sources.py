"""Fixed-size sources: digits, generic in-memory tensors, 2-D toys; determinism, ranks, resume."""

from __future__ import annotations

import math

import pytest
import torch

from tim.data import DataConfig, DataInfo, TensorSource, build_data_source, sample_toy
from tim.errors import TimError


def _digits_reference() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return torch.as_tensor(bunch.images, dtype=torch.float64) / 8.0 - 1.0, torch.as_tensor(bunch.target)


def test_digits_one_epoch_is_every_real_digit_once() -> None:
    images, labels = _digits_reference()
    source = build_data_source(DataConfig(), batch_size=1797)
    assert source.info.shape == (1, 8, 8) and source.info.num_classes == 10 and source.info.num_items == 1797
    batch = source.next_batch()
    assert batch["x"].shape == (1797, 1, 8, 8) and batch["x"].dtype == torch.float32
    assert batch["y"].dtype == torch.int64
    assert batch["x"].min() == -1.0 and batch["x"].max() == 1.0
    # Same multiset of (image, label) pairs as sklearn, in a shuffled order.
    got = torch.cat([batch["x"].double().flatten(1), batch["y"][:, None].double()], 1)
    want = torch.cat([images.flatten(1), labels[:, None].double()], 1)
    assert not torch.equal(got, want), "not shuffled"
    order = torch.rand(65, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

    def key(rows: torch.Tensor) -> torch.Tensor:  # sort rows by a random projection
        return rows[torch.argsort(rows @ order)]

    torch.testing.assert_close(key(got), key(want), rtol=0, atol=1e-6)


def _tensor_source(n: int = 10, batch_size: int = 4, **kwargs: object) -> TensorSource:
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 1, 2, 3).contiguous()
    x[:, :, :, 0] += 0.5  # makes each row asymmetric, so a flip is visible
    info = DataInfo(kind="image", shape=(1, 2, 3), num_classes=n, num_items=n)
    return TensorSource(x, torch.arange(n), info, batch_size=batch_size, **kwargs)


def test_every_epoch_is_a_permutation_and_stream_continues_across_epochs() -> None:
    source = _tensor_source(n=10, batch_size=4)
    ids = torch.cat([source.next_batch()["y"] for _ in range(5)])  # 20 rows = 2 epochs exactly
    assert sorted(ids[:10].tolist()) == list(range(10)) and sorted(ids[10:].tolist()) == list(range(10))
    assert not torch.equal(ids[:10], ids[10:]), "each epoch needs a fresh permutation"
    assert source.state_dict() == {"rows": 20, "seed": 0, "epoch": 2, "position": 0}


def test_same_seed_same_batches_other_seed_other_batches() -> None:
    a, b, c = (build_data_source(DataConfig(), batch_size=16, seed=s) for s in (3, 3, 4))
    for _ in range(3):
        xa, xb, xc = a.next_batch()["x"], b.next_batch()["x"], c.next_batch()["x"]
        assert torch.equal(xa, xb) and not torch.equal(xa, xc)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ranks_split_the_single_process_batch(world_size: int) -> None:
    # 600 x 4 steps crosses the 1,797-image epoch boundary.
    single = build_data_source(DataConfig(), batch_size=600, seed=7)
    ranks = [
        build_data_source(DataConfig(), batch_size=600, rank=k, world_size=world_size, seed=7)
        for k in range(world_size)
    ]
    for _ in range(4):
        full = single.next_batch()
        parts = [source.next_batch() for source in ranks]
        assert torch.equal(full["x"], torch.cat([p["x"] for p in parts]))
        assert torch.equal(full["y"], torch.cat([p["y"] for p in parts]))


def test_resume_continues_the_stream_exactly() -> None:
    reference = _tensor_source(n=7, batch_size=3, hflip=True, seed=5)
    batches = [reference.next_batch() for _ in range(6)]
    resumed = _tensor_source(n=7, batch_size=3, hflip=True, seed=0)
    source = _tensor_source(n=7, batch_size=3, hflip=True, seed=5)
    for _ in range(4):
        source.next_batch()
    resumed.load_state_dict(dict(source.state_dict()))
    for want in batches[4:]:
        got = resumed.next_batch()
        assert torch.equal(got["x"], want["x"]) and torch.equal(got["y"], want["y"])


def test_hflip_mirrors_about_half_the_rows_and_nothing_else() -> None:
    source = _tensor_source(n=400, batch_size=400, hflip=True)
    batch = source.next_batch()
    plain = _tensor_source(n=400, batch_size=400).x[batch["y"]]
    same = (batch["x"] == plain).flatten(1).all(1)
    mirrored = (batch["x"] == plain.flip(-1)).flatten(1).all(1)
    assert bool((same ^ mirrored).all())
    assert 150 < int(mirrored.sum()) < 250  # Binomial(400, 0.5): mean 200, std 10


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"batch_size": 5, "world_size": 2}, "not divisible by world_size"),
        ({"batch_size": 4, "rank": 2, "world_size": 2}, "rank=2"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": 4, "seed": -1}, "seed=-1"),
    ],
)
def test_bad_batch_settings_are_one_line_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(TimError, match=fragment):
        build_data_source(DataConfig(), **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "cifar"}, "unknown data.name"),
        ({"name": "image_folder"}, "needs data.root"),
        ({"hflip": True}, "hflip"),
        ({"image_size": 16}, "digits are 8x8"),
        ({"bucketed": True}, "bucketed"),
        ({"channels": 4}, "channels=4"),
        ({"max_bad_fraction": 1.5}, "max_bad_fraction"),
        ({"patch_multiple": 0}, "patch_multiple=0"),
        ({"token_budget": -1}, "token_budget=-1"),
        ({"name": "shapes", "image_size": 15, "patch_multiple": 2}, "not a multiple"),
        ({"name": "shapes", "min_side": 40}, "min_side=40"),
        ({"name": "shapes", "max_aspect": 0.5}, "max_aspect"),
        ({"name": "shapes", "bucketed": True, "image_size": 16}, "no effect with data.bucketed=true"),
    ],
)
def test_bad_config_is_one_line_error(kwargs: dict, fragment: str) -> None:
    with pytest.raises(TimError, match=fragment) as info:
        DataConfig(**kwargs)
    assert "\n" not in str(info.value) and "; " in str(info.value)  # problem; fix


def test_bad_resume_state_is_rejected() -> None:
    with pytest.raises(TimError, match="not a valid"):
        _tensor_source().load_state_dict({"step": 3})


# ---- 2-D toys ---------------------------------------------------------------------------


def test_checkerboard_is_uniform_on_the_dark_cells() -> None:
    x = sample_toy("checkerboard", 200_000, torch.Generator().manual_seed(0)).double()
    i, j = torch.floor(x[:, 1] + 2), torch.floor(x[:, 0] + 2)
    assert bool(((i + j) % 2 == 0).all()) and x.abs().max() <= 2
    # Each column holds two dark cells, so each marginal is U[-2, 2]: mean 0, variance 16/12.
    torch.testing.assert_close(x.mean(0), torch.zeros(2, dtype=torch.float64), atol=0.01, rtol=0)
    torch.testing.assert_close(x.var(0), torch.full((2,), 4 / 3, dtype=torch.float64), atol=0.015, rtol=0)


def test_8gaussians_moments() -> None:
    x = sample_toy("8gaussians", 200_000, torch.Generator().manual_seed(0)).double()
    angle = torch.arange(8, dtype=torch.float64) * math.pi / 4
    centres = math.sqrt(2) * torch.stack([angle.cos(), angle.sin()], 1)
    offsets = x[:, None, :] - centres[None]
    nearest = offsets.norm(dim=-1).argmin(1)
    residual = offsets[torch.arange(len(x)), nearest]
    counts = torch.bincount(nearest, minlength=8).double() / len(x)
    torch.testing.assert_close(counts, torch.full((8,), 1 / 8, dtype=torch.float64), atol=0.005, rtol=0)
    torch.testing.assert_close(residual.std(0), torch.full((2,), 0.1, dtype=torch.float64), rtol=0.02, atol=0)
    # Per-coordinate second moment = R^2 / 2 + 0.1^2 = 1.01.
    torch.testing.assert_close((x**2).mean(0), torch.full((2,), 1.01, dtype=torch.float64), atol=0.01, rtol=0)


def _curve_distance(x: torch.Tensor, curve: torch.Tensor) -> torch.Tensor:
    return torch.cdist(x, curve).min(1).values


@pytest.mark.parametrize("name", ["moons", "spirals"])
def test_curve_toys_are_jittered_curves(name: str) -> None:
    x = sample_toy(name, 4000, torch.Generator().manual_seed(0)).double()
    a = torch.linspace(0, math.pi, 4001, dtype=torch.float64)
    if name == "moons":
        upper = torch.stack([a.cos(), a.sin()], 1)
        lower = torch.stack([1 - a.cos(), 0.5 - a.sin()], 1)
        curve, jitter = (
            1.1 * (torch.cat([upper, lower]) - torch.tensor([0.5, 0.25], dtype=torch.float64)),
            0.06,
        )
    else:
        a = 3 * a
        arm = 1.8 * a[:, None] / (3 * math.pi) * torch.stack([a.cos(), a.sin()], 1)
        curve, jitter = torch.cat([arm, -arm]), 0.04
    # The distance to the curve is about |normal jitter|: half-normal mean sigma sqrt(2/pi).
    mean_distance = _curve_distance(x, curve).mean().item()
    assert abs(mean_distance - jitter * math.sqrt(2 / math.pi)) < 0.15 * jitter * math.sqrt(2 / math.pi)


@pytest.mark.parametrize("name", ["checkerboard", "8gaussians", "moons", "spirals"])
def test_toy_source_ranks_resume_and_box(name: str) -> None:
    single = build_data_source(DataConfig(name=name), batch_size=64, seed=2)
    halves = [
        build_data_source(DataConfig(name=name), batch_size=64, rank=k, world_size=2, seed=2)
        for k in range(2)
    ]
    first = [single.next_batch()["x"] for _ in range(3)]
    for want in first:
        assert want.shape == (64, 2) and want.abs().max() < 2.0
        assert torch.equal(want, torch.cat([h.next_batch()["x"] for h in halves]))
    assert single.info.kind == "vector" and single.info.shape == (2,) and single.info.num_classes == 0
    resumed = build_data_source(DataConfig(name=name), batch_size=64)
    resumed.load_state_dict({"step": 1, "seed": 2})
    assert torch.equal(resumed.next_batch()["x"], first[1])


def test_batch_larger_than_the_dataset_spans_whole_epochs() -> None:
    source = _tensor_source(n=4, batch_size=10)
    ids = torch.cat([source.next_batch()["y"] for _ in range(2)])  # 20 rows = 5 epochs of 4
    for epoch in range(5):
        assert sorted(ids[4 * epoch : 4 * epoch + 4].tolist()) == [0, 1, 2, 3]
    assert source.state_dict() == {"rows": 20, "seed": 0, "epoch": 5, "position": 0}


@pytest.mark.parametrize("name", ["digits", "moons", "shapes"])
def test_sources_follow_the_protocol(name: str) -> None:
    from tim.data import DataSource

    source = build_data_source(DataConfig(name=name, num_images=16), batch_size=4)
    assert isinstance(source, DataSource)
    state = source.state_dict()
    assert all(type(v) is int for v in state.values())  # plain ints: JSON-safe, nothing pickled
