"""Resolution buckets (issue 7 item 1): sizes, batch sizes, determinism, resume, two ranks."""

from __future__ import annotations

import pytest
import torch

from tim.data import DataConfig, DataInfo, build_data_source
from tim.data.buckets import BucketedSource, bucket_batch_size, round_down_size, tokens_per_item
from tim.data.shapes import render_shapes, shape_sizes
from tim.errors import TimError


def test_round_down_matches_the_paper_example() -> None:
    assert round_down_size(1025, 513, 32) == (1024, 512)  # arXiv 2509.04394, App. C.2
    assert round_down_size(31, 64, 32) == (0, 64)  # too small: must be skipped by the caller
    assert round_down_size(37, 22, 4) == (36, 20)


def test_batch_size_follows_the_papers_token_budget() -> None:
    # arXiv 2509.04394, App. C.2: B = round(16 * 1024^2 / (H W)); with DC-AE f32 and patch 1 one token = 32x32 pixels.
    budget = 16 * (1024 // 32) ** 2
    expected = {
        (512, 512): 64,
        (1024, 1024): 16,
        (2048, 2048): 4,
        (4096, 4096): 1,
        (1024, 4096): 4,
        (768, 1024): 21,
    }
    for size, batch in expected.items():
        assert bucket_batch_size(size, budget, 32) == batch
    assert tokens_per_item((4096, 4096), 32) == 16384
    assert bucket_batch_size((64, 64), 1, 8) == 1  # never below one item


def _buckets(counts: dict[tuple[int, int], int]) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
    """Items whose label is a global id and whose pixels encode that id (to check x/y pairing)."""
    out, start = {}, 0
    for (h, w), n in counts.items():
        ids = torch.arange(start, start + n)
        x = ids.view(n, 1, 1, 1).expand(n, 1, h, w).to(torch.float32).clone()
        x[..., 0] += 0.25  # asymmetric rows: flips are visible
        out[(h, w)] = (x, ids)
        start += n
    return out


COUNTS = {(4, 4): 37, (4, 8): 20, (8, 4): 9, (8, 8): 16, (8, 12): 5}
INFO = DataInfo(kind="image", shape=(1, 0, 0), num_classes=1000)


def _source(**kwargs: object) -> BucketedSource:
    defaults = {"token_budget": 16, "batch_size": 1, "patch_multiple": 2}
    return BucketedSource(_buckets(COUNTS), INFO, **{**defaults, **kwargs})


def test_one_epoch_covers_every_item_once_with_one_bucket_per_batch() -> None:
    source = _source()
    assert source.batch_sizes == {
        (4, 4): 4,
        (4, 8): 2,
        (8, 4): 2,
        (8, 8): 1,
        (8, 12): 1,
    }  # 16 tokens / (H/2 W/2)
    assert source.info.sizes == tuple(sorted(COUNTS)) and source.info.shape == (
        1,
        4,
        4,
    )  # most populated bucket
    assert source.info.num_items == sum(COUNTS.values())
    expected_batches = sum(-(-n // source.batch_sizes[s]) for s, n in COUNTS.items())
    assert source.batches_per_epoch == expected_batches
    seen = []
    for _ in range(expected_batches):
        batch = source.next_batch()
        size = tuple(batch["x"].shape[-2:])
        assert size in COUNTS and len(batch["y"]) <= source.batch_sizes[size]
        assert torch.equal(batch["x"][:, 0, 0, -1], batch["y"].float())  # pixels belong to their label
        assert all(COUNTS_RANGE[size][0] <= int(i) < COUNTS_RANGE[size][1] for i in batch["y"])
        seen += batch["y"].tolist()
    assert sorted(seen) == list(range(sum(COUNTS.values())))
    assert source.state_dict()["epoch"] == 1


COUNTS_RANGE = {}
_start = 0
for _size, _n in COUNTS.items():
    COUNTS_RANGE[_size] = (_start, _start + _n)
    _start += _n


def test_same_seed_same_order_other_seed_other_order() -> None:
    a, b, c = _source(seed=1), _source(seed=1), _source(seed=2)
    ya = [a.next_batch()["y"] for _ in range(30)]
    assert all(torch.equal(u, b.next_batch()["y"]) for u in ya)
    assert not all(torch.equal(u, c.next_batch()["y"]) for u in ya)
    # A later epoch is a different order (plan drawn from (seed, epoch)).
    assert [b[1].tolist() for b in a.epoch_plan(0)] != [b[1].tolist() for b in a.epoch_plan(1)]


def test_resume_reproduces_the_rest_of_the_stream_across_epochs() -> None:
    reference = _source(seed=3, hflip=True)
    want = [reference.next_batch() for _ in range(70)]  # 70 > one epoch (47 batches)
    partial = _source(seed=3, hflip=True)
    for _ in range(40):
        partial.next_batch()
    resumed = _source(seed=0, hflip=True)
    resumed.load_state_dict(partial.state_dict())
    for batch in want[40:]:
        got = resumed.next_batch()
        assert torch.equal(got["x"], batch["x"]) and torch.equal(got["y"], batch["y"])


def test_two_ranks_take_disjoint_batches_of_the_single_process_stream() -> None:
    single = _source(seed=4)
    ranks = [_source(seed=4, rank=k, world_size=2) for k in range(2)]
    different_buckets = 0
    for _ in range(40):  # crosses an epoch boundary (47 batches / 2 ranks)
        want = [single.next_batch(), single.next_batch()]
        got = [source.next_batch() for source in ranks]  # exactly one batch per rank per step
        for g, w in zip(got, want, strict=True):
            assert torch.equal(g["x"], w["x"]) and torch.equal(g["y"], w["y"])
        different_buckets += got[0]["x"].shape != got[1]["x"].shape
    assert different_buckets > 0, "ranks may and should sit in different buckets at the same step"
    assert ranks[0].state_dict() == ranks[1].state_dict() == single.state_dict()
    # Resume a 2-rank run in one process: the stream continues where both ranks stopped.
    resumed = _source(seed=0)
    resumed.load_state_dict(ranks[0].state_dict())
    assert torch.equal(resumed.next_batch()["y"], single.next_batch()["y"])


def test_default_token_budget_gives_the_largest_bucket_the_rank_batch() -> None:
    source = _source(token_budget=0, batch_size=4, world_size=2)
    assert source.token_budget == 2 * tokens_per_item((8, 12), 2)
    assert source.batch_sizes[(8, 12)] == 2 and source.batch_sizes[(4, 4)] == 12


def test_hflip_in_buckets_mirrors_whole_items() -> None:
    source = _source(hflip=True, seed=5)
    flipped = total = 0
    for _ in range(source.batches_per_epoch):
        batch = source.next_batch()
        last_column_is_id = batch["x"][:, 0, 0, -1] == batch["y"].float()
        first_column_is_id = batch["x"][:, 0, 0, 0] == batch["y"].float()
        assert bool((last_column_is_id ^ first_column_is_id).all())
        flipped += int(first_column_is_id.sum())
        total += len(batch["y"])
    assert 0.3 * total < flipped < 0.7 * total  # Binomial(87, 1/2): 4.7 std from either bound


def test_bucket_errors() -> None:
    with pytest.raises(TimError, match="not positive multiples"):
        BucketedSource(_buckets({(5, 4): 3}), INFO, token_budget=4, batch_size=1, patch_multiple=2)
    with pytest.raises(TimError, match="empty"):
        BucketedSource({}, INFO, token_budget=4, batch_size=1, patch_multiple=2)
    with pytest.raises(TimError, match="not a valid bucketed"):
        _source().load_state_dict({"rows": 3, "seed": 0})


def test_bucketed_shapes_dataset() -> None:
    cfg = DataConfig(
        name="shapes",
        bucketed=True,
        patch_multiple=8,
        min_side=8,
        max_side=32,
        max_aspect=3.0,
        num_images=300,
    )
    source = build_data_source(cfg, batch_size=4, seed=0)
    sizes = shape_sizes(8, 32, 8, 3.0)
    assert set(source.info.sizes) == set(sizes) and (8, 24) in sizes and (8, 32) not in sizes
    assert source.info.num_classes == 4 and source.info.num_items == 300
    for _ in range(20):
        batch = source.next_batch()
        h, w = batch["x"].shape[-2:]
        assert (h, w) in sizes and batch["x"].shape[1] == 3
        assert len(batch["x"]) == source.batch_sizes[(h, w)] or len(batch["x"]) < source.batch_sizes[(h, w)]
        assert batch["x"].min() >= -1 and batch["x"].max() <= 1 and batch["y"].max() < 4
    # Token budget default: 4 images of 32x32 -> 16 tokens each at multiple 8, so 8x8 batches hold 64.
    assert source.batch_sizes[(32, 32)] == 4 and source.batch_sizes[(8, 8)] == 64


def test_fixed_size_shapes_dataset() -> None:
    source = build_data_source(DataConfig(name="shapes", num_images=64, image_size=12), batch_size=8)
    batch = source.next_batch()
    assert batch["x"].shape == (8, 3, 12, 12) and source.info.shape == (3, 12, 12)
    # Dark background, bright shape: every image has both ends of the range.
    assert bool((batch["x"].flatten(1).min(1).values < -0.3).all()) and bool(
        (batch["x"].flatten(1).max(1).values > 0.05).all()
    )


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_stand_out_from_background(channels: int) -> None:
    # Background <= 0.15 and shape >= 0.85 of full scale in every channel, and every shape covers
    # whole pixels, so each image spans >= 0.7 * 255 (minus rounding) per channel.
    for image, _ in render_shapes([(16, 16), (16, 48), (48, 16)], 60, seed=3, channels=channels):
        spread = image.reshape(channels, -1).max(1).astype(int) - image.reshape(channels, -1).min(1)
        assert spread.min() >= 0.7 * 255 - 1
