"""Latent shards: writer/reader round trip, normalisation, the encoder step (fake encoder), errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tim.data import DataConfig, build_data_source
from tim.data.latents import (
    encode_images_to_latents,
    load_autoencoder,
    read_latent_shards,
    write_latent_shards,
)
from tim.errors import TimError


def fake_encoder(images: torch.Tensor) -> torch.Tensor:
    """An f4, 4-channel 'autoencoder': 4x4 mean pooling, channels (R, G, B, mean) times 3."""
    pooled = torch.nn.functional.avg_pool2d(images, 4)
    return 3.0 * torch.cat([pooled, pooled.mean(1, keepdim=True)], 1)


def test_write_read_round_trip_and_normalisation(tmp_path: Path) -> None:
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(10, 4, 2, 3, generator=generator, dtype=torch.float64).float()
    labels = torch.tensor([0, 1, 2] * 3 + [1])
    paths = write_latent_shards(
        tmp_path,
        latents,
        labels,
        scale=0.5,
        shift=0.25,
        autoencoder="fake-f4",
        class_names=("a", "b", "c"),
        shard_size=4,
    )
    assert len(paths) == 3  # 4 + 4 + 2
    groups, metadata = read_latent_shards(tmp_path)
    ((x, y),) = groups.values()
    assert torch.equal(x, latents) and torch.equal(y, labels)
    assert metadata["autoencoder"] == "fake-f4" and json.loads(metadata["class_names"]) == ["a", "b", "c"]
    source = build_data_source(
        DataConfig(name="latents", root=str(tmp_path), patch_multiple=1), batch_size=10
    )
    info = source.info
    assert (info.shape, info.num_classes, info.latent_scale, info.latent_shift, info.value_range) == (
        (4, 2, 3),
        3,
        0.5,
        0.25,
        None,
    )
    assert info.class_names == ("a", "b", "c") and info.autoencoder == "fake-f4"
    batch = source.next_batch()
    # Each delivered row is (latent - shift) * scale of the stored latent with the same label.
    order = [
        int(torch.nonzero((latents - 0.25).mul(0.5).sub(row).abs().flatten(1).amax(1) < 1e-6)[0])
        for row in batch["x"]
    ]
    assert sorted(order) == list(range(10)) and torch.equal(labels[order], batch["y"])


def _image_folder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for k, (name, shape) in enumerate(
        [("cats", (16, 16)), ("cats", (16, 24)), ("dogs", (16, 16)), ("dogs", (24, 16)), ("dogs", (16, 16))]
    ):
        (root / name).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (*shape, 3), dtype=np.uint8)).save(root / name / f"{k}.png")


def test_encoder_step_writes_shards_the_source_reads(tmp_path: Path) -> None:
    _image_folder(tmp_path / "images")
    cfg = DataConfig(name="image_folder", root=str(tmp_path / "images"), bucketed=True, patch_multiple=8)
    paths = encode_images_to_latents(
        cfg, tmp_path / "latents", encoder=fake_encoder, scale=2.0, shift=0.0, batch_size=2
    )
    assert len(paths) == 3  # one shard per latent size: 4x4, 4x6, 6x4
    latent_cfg = DataConfig(
        name="latents", root=str(tmp_path / "latents"), bucketed=True, patch_multiple=2, token_budget=100
    )
    source = build_data_source(latent_cfg, batch_size=1)
    assert set(source.info.sizes) == {(4, 4), (4, 6), (6, 4)} and source.info.class_names == ("cats", "dogs")
    assert source.info.latent_scale == 2.0 and source.info.autoencoder == "custom encoder"
    rows = []
    for _ in range(source.batches_per_epoch):
        batch = source.next_batch()
        rows += [(tuple(batch["x"].shape[-2:]), int(y)) for y in batch["y"]]
    assert sorted(rows) == sorted([((4, 4), 0), ((4, 6), 0), ((4, 4), 1), ((6, 4), 1), ((4, 4), 1)])
    # The stored latents are exactly the encoder's output on the [-1, 1] images.
    groups, _ = read_latent_shards(tmp_path / "latents")
    image = np.array(Image.open(tmp_path / "images" / "cats" / "1.png"))
    expected = fake_encoder(torch.as_tensor(image).permute(2, 0, 1)[None].float() * (2 / 255) - 1)[0]
    torch.testing.assert_close(groups[(4, 6)][0][0], expected)


def test_fixed_size_latents_need_one_size(tmp_path: Path) -> None:
    write_latent_shards(tmp_path, [torch.zeros(4, 2, 2), torch.zeros(4, 4, 2)], [0, 1], scale=1.0)
    with pytest.raises(TimError, match=r"2 sizes .*; set data.bucketed=true"):
        build_data_source(DataConfig(name="latents", root=str(tmp_path), patch_multiple=1), batch_size=2)


def _write_raw(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None) -> None:
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)


GOOD_META = {
    "format": "tim-latents-v1",
    "scale": "1.0",
    "shift": "0.0",
    "autoencoder": "x",
    "num_classes": "2",
    "class_names": "[]",
}


@pytest.mark.parametrize(
    ("setup", "fragments"),
    [
        ("missing", ("is not a folder", "latent *.safetensors")),
        ("empty", ("no *.safetensors", "write_latent_shards")),
        ("garbage", ("not a readable safetensors", "rewrite or remove")),
        ("no_metadata", ("not a tim latent shard",)),
        ("three_dim", ("expected float (N, C, H, W)",)),
        ("nan", ("NaN or Inf", "re-encode")),
        ("label_too_big", ("label 5 but num_classes=2",)),
        ("scale_disagrees", ("disagree on scale",)),
        ("channels_disagree", ("latent channels",)),
    ],
)
def test_shard_errors(tmp_path: Path, setup: str, fragments: tuple[str, ...]) -> None:
    root = tmp_path / "shards"
    if setup != "missing":
        root.mkdir()
    good = {"latents": torch.zeros(2, 4, 2, 2), "labels": torch.tensor([0, 1])}
    if setup == "garbage":
        (root / "a.safetensors").write_bytes(b"not safetensors at all")
    if setup == "no_metadata":
        _write_raw(root / "a.safetensors", good, None)
    if setup == "three_dim":
        _write_raw(root / "a.safetensors", {"latents": torch.zeros(2, 4, 2)}, GOOD_META)
    if setup == "nan":
        _write_raw(root / "a.safetensors", {"latents": torch.full((2, 4, 2, 2), float("nan"))}, GOOD_META)
    if setup == "label_too_big":
        _write_raw(
            root / "a.safetensors",
            {"latents": torch.zeros(1, 4, 2, 2), "labels": torch.tensor([5])},
            GOOD_META,
        )
    if setup in ("scale_disagrees", "channels_disagree"):
        _write_raw(root / "a.safetensors", good, GOOD_META)
        other = {**GOOD_META, "scale": "2.0"} if setup == "scale_disagrees" else GOOD_META
        tensors = (
            good
            if setup == "scale_disagrees"
            else {"latents": torch.zeros(2, 3, 2, 2), "labels": torch.tensor([0, 1])}
        )
        _write_raw(root / "b.safetensors", tensors, other)
    with pytest.raises(TimError) as info:
        build_data_source(DataConfig(name="latents", root=str(root), patch_multiple=1), batch_size=2)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_autoencoder_errors(tmp_path: Path) -> None:
    with pytest.raises(TimError, match="does not exist"):
        load_autoencoder(tmp_path / "nowhere")
    with pytest.raises(TimError, match="has no config.json"):
        load_autoencoder(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    try:
        import diffusers  # noqa: F401
    except ImportError:
        with pytest.raises(TimError, match=r"needs diffusers.*pip install .transition-models\[latent\]."):
            load_autoencoder(tmp_path)
    else:
        with pytest.raises(TimError, match="not an autoencoder we support"):
            load_autoencoder(tmp_path)
