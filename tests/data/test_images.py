"""Image folders: labels, sizes, unreadable files, channel and size errors, bucketing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tim.data import DataConfig, build_data_source
from tim.data.images import adm_center_crop, native_resize
from tim.errors import TimError


def _save(path: Path, array: np.ndarray, mode: str | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array, mode=mode).save(path)
    return array


def _random_rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _folder(
    root: Path, sizes: dict[str, list[tuple[int, int]]], seed: int = 0
) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    saved: dict[str, list[np.ndarray]] = {}
    for name, shapes in sizes.items():
        saved[name] = [
            _save(root / name / f"{k:03d}.png", _random_rgb(rng, h, w)) for k, (h, w) in enumerate(shapes)
        ]
    return saved


def test_labelled_folder_at_native_size_is_exact(tmp_path: Path) -> None:
    saved = _folder(tmp_path, {"cat": [(6, 10)] * 3, "dog": [(6, 10)] * 2})
    (tmp_path / "README.txt").write_text("not an image")  # ignored: not an image suffix
    source = build_data_source(DataConfig(name="image_folder", root=str(tmp_path)), batch_size=5)
    assert (
        source.info.shape == (3, 6, 10)
        and source.info.class_names == ("cat", "dog")
        and source.info.num_items == 5
    )
    batch = source.next_batch()
    want = {(label, arr.tobytes()) for label, name in enumerate(("cat", "dog")) for arr in saved[name]}
    pixels = ((batch["x"] + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert {(int(y), p.tobytes()) for y, p in zip(batch["y"], pixels, strict=True)} == want
    torch.testing.assert_close(
        batch["x"], torch.as_tensor(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1, rtol=0, atol=1e-6
    )


def test_unlabelled_folder_has_no_labels(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    for k in range(3):
        _save(tmp_path / f"{k}.png", _random_rgb(rng, 4, 4))
    source = build_data_source(DataConfig(name="image_folder", root=str(tmp_path)), batch_size=2)
    assert source.info.num_classes == 0 and "y" not in source.next_batch()


def test_fixed_size_centre_crop_and_flip(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": [(40, 60), (64, 32)], "b": [(17, 23)]})
    source = build_data_source(
        DataConfig(name="image_folder", root=str(tmp_path), image_size=16, hflip=True), batch_size=3
    )
    assert source.next_batch()["x"].shape == (3, 3, 16, 16) and source.info.shape == (3, 16, 16)


def test_adm_centre_crop_keeps_the_centre() -> None:
    # Left third red, middle third green, right third blue (90 x 30): the centre crop is green.
    array = np.zeros((30, 90, 3), dtype=np.uint8)
    array[:, :30, 0] = array[:, 30:60, 1] = array[:, 60:, 2] = 255
    out = np.asarray(adm_center_crop(Image.fromarray(array), 10))
    assert out.shape == (10, 10, 3)
    assert out[:, 2:8, 1].min() >= 250 and out[:, 2:8, 0].max() <= 5 and out[:, 2:8, 2].max() <= 5


def test_native_resize_rounds_down_and_caps_pixels() -> None:
    image = Image.new("RGB", (22, 37))  # PIL sizes are (W, H)
    assert native_resize(image, 4, 0).size == (20, 36)
    assert native_resize(image, 32, 0) is None
    capped = native_resize(
        Image.new("RGB", (400, 100)), 8, 10_000
    )  # 40,000 px -> at most 10,000 px, aspect 4:1
    assert capped.size == (200, 48)


def test_unreadable_files_are_skipped_counted_and_reported(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": [(8, 8)] * 9})
    (tmp_path / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    cfg = DataConfig(name="image_folder", root=str(tmp_path), max_bad_fraction=0.2)
    with pytest.warns(UserWarning, match="1 of 10 images .* skipped.*broken.png"):
        source = build_data_source(cfg, batch_size=3)
    assert source.info.num_items == 9 and len(source.skipped_files) == 1
    with pytest.raises(TimError, match=r"1 of 10 images.*max_bad_fraction=0.05; remove or repair"):
        build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), max_bad_fraction=0.05), batch_size=3
        )


def test_truncated_jpeg_is_skipped(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": [(8, 8)] * 4})
    rng = np.random.default_rng(0)
    Image.fromarray(_random_rgb(rng, 64, 64)).save(tmp_path / "a" / "cut.jpg")
    data = (tmp_path / "a" / "cut.jpg").read_bytes()
    (tmp_path / "a" / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.warns(UserWarning, match="cut.jpg"):
        source = build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), max_bad_fraction=0.5), batch_size=2
        )
    assert source.info.num_items == 4


@pytest.mark.parametrize(
    ("setup", "cfg_kwargs", "fragments"),
    [
        ("missing", {}, ("is not a folder", "set data.root")),
        ("empty", {}, ("no images", "sub-folder per class")),
        ("grey_in_rgb", {}, ("channel count other than data.channels=3", "mode L", "convert them to RGB")),
        ("rgba_in_grey", {"channels": 1}, ("mode RGBA", "3 colour channels", "convert them to grey")),
        ("rgb_in_grey", {"channels": 1}, ("data.channels=1", "convert them to grey")),
        ("mixed_sizes", {}, ("2 different sizes", "8x8", "data.image_size", "data.bucketed=true")),
        ("all_broken", {"max_bad_fraction": 1.0}, ("none of the 2 images",)),
    ],
)
def test_folder_errors(tmp_path: Path, setup: str, cfg_kwargs: dict, fragments: tuple[str, ...]) -> None:
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    if setup != "missing":
        (root / "a").mkdir(parents=True)
    if setup == "grey_in_rgb":
        _save(root / "a" / "ok.png", _random_rgb(rng, 8, 8))
        _save(root / "a" / "grey.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
    if setup == "rgba_in_grey":
        _save(root / "a" / "ok.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
        _save(root / "a" / "alpha.png", rng.integers(0, 256, (8, 8, 4), dtype=np.uint8))
    if setup == "rgb_in_grey":
        _save(root / "a" / "colour.png", _random_rgb(rng, 8, 8))
    if setup == "mixed_sizes":
        _save(root / "a" / "small.png", _random_rgb(rng, 8, 8))
        _save(root / "a" / "big.png", _random_rgb(rng, 8, 12))
    if setup == "all_broken":
        (root / "a" / "x.png").write_bytes(b"junk")
        (root / "a" / "y.jpg").write_bytes(b"")
    with pytest.raises(TimError) as info:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_data_source(DataConfig(name="image_folder", root=str(root), **cfg_kwargs), batch_size=2)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


def test_bucketed_folder_keeps_native_sizes(tmp_path: Path) -> None:
    _folder(tmp_path, {"a": [(37, 22), (36, 20), (16, 40)], "b": [(9, 9), (3, 50)]})
    cfg = DataConfig(
        name="image_folder",
        root=str(tmp_path),
        bucketed=True,
        patch_multiple=4,
        token_budget=64,
        max_bad_fraction=0.5,
    )
    with pytest.warns(UserWarning, match="smaller than data.patch_multiple=4"):  # the 3 x 50 image
        source = build_data_source(cfg, batch_size=1)
    assert set(source.info.sizes) == {(36, 20), (16, 40), (8, 8)}
    assert source.batch_sizes == {(8, 8): 16, (16, 40): 2, (36, 20): 1}  # round(64 / tokens)
    seen = []
    for _ in range(source.batches_per_epoch):
        batch = source.next_batch()
        seen += [(tuple(batch["x"].shape[-2:]), int(y)) for y in batch["y"]]
    assert sorted(seen) == sorted([((36, 20), 0), ((36, 20), 0), ((16, 40), 0), ((8, 8), 1)])
