"""Image decoding keeps information (issue 13 item 5), checked on real files written by Pillow.

Before issue 13 a 16-bit grey PNG became all white (Pillow's ``convert("L")`` clips 16-bit values
at 255) and RGBA, CMYK and transparent palette images were refused. Now 16-bit is scaled by
255/65535, palette/CMYK become RGB and alpha is composited over black; every expected value
below is computed from the pixels written, not copied from a run.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tim.data import DataConfig, build_data_source
from tim.data.images import decode_to_8bit


def _decoded(root: Path, channels: int, **config: object) -> np.ndarray:
    """The folder's only image as the data source delivers it: uint8 (H, W, C)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = build_data_source(
            DataConfig(name="image_folder", root=str(root), channels=channels, **config), batch_size=1
        )
    x = source.next_batch()["x"][0]
    return ((x + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _gradient16() -> np.ndarray:
    return (np.arange(48, dtype=np.uint32).reshape(6, 8) * 1393).astype(np.uint16)  # 0 .. 65471


def _want8(pixels: np.ndarray) -> np.ndarray:
    return np.round(pixels.astype(np.float64) * 255 / 65535).astype(np.uint8)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_is_scaled_not_clipped(suffix: str, tmp_path: Path) -> None:
    pixels = _gradient16()
    Image.fromarray(pixels).save(tmp_path / f"deep{suffix}")
    assert Image.open(tmp_path / f"deep{suffix}").mode.startswith("I")
    decoded = _decoded(tmp_path, 1)[..., 0]
    np.testing.assert_array_equal(decoded, _want8(pixels))
    assert decoded.min() == 0 and 0 < decoded.mean() < 255  # not the all-white image of before


def test_32_bit_integer_image_within_16_bits_is_scaled(tmp_path: Path) -> None:
    pixels = _gradient16().astype(np.int32)
    Image.fromarray(pixels, mode="I").save(tmp_path / "wide.tif")
    assert Image.open(tmp_path / "wide.tif").mode == "I"
    np.testing.assert_array_equal(_decoded(tmp_path, 1)[..., 0], _want8(pixels))


def test_images_without_a_defined_range_are_skipped_and_named(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((4, 4), 70000, dtype=np.int32), mode="I").save(tmp_path / "a" / "huge.tif")
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "a" / "float.tif")
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "a" / "ok.png")
    with pytest.warns(UserWarning, match=r"2 of 3 images .*(huge|float).tif"):
        source = build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), channels=1, max_bad_fraction=0.9),
            batch_size=1,
        )
    reasons = dict(source.skipped_files)
    assert "outside the 16-bit range" in reasons[str(tmp_path / "a" / "huge.tif")]
    assert "no defined range" in reasons[str(tmp_path / "a" / "float.tif")]


def test_palette_image_becomes_its_rgb_colours(tmp_path: Path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    palette = Image.fromarray(rgb).quantize(colors=256, method=Image.Quantize.MAXCOVERAGE)
    palette.save(tmp_path / "pal.png")
    assert Image.open(tmp_path / "pal.png").mode == "P"
    np.testing.assert_array_equal(_decoded(tmp_path, 3), np.asarray(palette.convert("RGB")))


def test_transparent_palette_entry_is_composited_over_black(tmp_path: Path) -> None:
    image = Image.new("P", (4, 2))
    image.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    image.putdata([0, 1, 0, 1, 1, 0, 1, 0])
    image.save(tmp_path / "t.png", transparency=1)  # palette entry 1 (green) is fully transparent
    decoded = _decoded(tmp_path, 3)
    red = np.array([0, 1, 0, 1, 1, 0, 1, 0]).reshape(2, 4) == 0
    np.testing.assert_array_equal(decoded[red], np.tile([255, 0, 0], (red.sum(), 1)))
    np.testing.assert_array_equal(decoded[~red], np.zeros(((~red).sum(), 3)))


def test_rgba_and_la_are_composited_over_black(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 256, (5, 7, 4), dtype=np.uint8)
    rgba[0, 0, 3], rgba[0, 1, 3] = 0, 255  # one transparent and one opaque pixel
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    want = np.round(rgba[..., :3].astype(np.float64) * rgba[..., 3:] / 255).astype(np.uint8)
    decoded = _decoded(tmp_path, 3)
    np.testing.assert_array_equal(decoded, want)
    assert (decoded[0, 0] == 0).all() and (decoded[0, 1] == rgba[0, 1, :3]).all()
    la_dir = tmp_path / "la"
    la_dir.mkdir()
    Image.fromarray(rgba[..., [0, 3]], mode="LA").save(la_dir / "la.png")
    np.testing.assert_array_equal(_decoded(la_dir, 1)[..., 0], want[..., 0])


def test_cmyk_becomes_rgb(tmp_path: Path) -> None:
    cmyk = np.zeros((2, 3, 4), dtype=np.uint8)
    cmyk[0, 0] = (255, 0, 0, 0)  # cyan
    cmyk[0, 1] = (0, 255, 0, 0)  # magenta
    cmyk[0, 2] = (0, 0, 0, 255)  # black
    cmyk[1, :] = (0, 0, 0, 0)  # white
    Image.fromarray(cmyk, mode="CMYK").save(tmp_path / "print.tif")
    assert Image.open(tmp_path / "print.tif").mode == "CMYK"
    want = np.array([[[0, 255, 255], [255, 0, 255], [0, 0, 0]], [[255, 255, 255]] * 3], dtype=np.uint8)
    np.testing.assert_array_equal(_decoded(tmp_path, 3), want)


def test_grey_looking_rgb_and_one_bit_images_are_grey(tmp_path: Path) -> None:
    grey = np.random.default_rng(2).integers(0, 256, (4, 4), dtype=np.uint8)
    Image.fromarray(np.stack([grey] * 3, axis=-1)).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(_decoded(tmp_path, 1)[..., 0], grey)
    bits = tmp_path / "bits"
    bits.mkdir()
    Image.fromarray(grey > 128).convert("1").save(bits / "b.png")
    np.testing.assert_array_equal(_decoded(bits, 1)[..., 0], np.where(grey > 128, 255, 0))


def test_decode_to_8bit_modes() -> None:
    assert decode_to_8bit(Image.new("I;16", (2, 2), 65535)).getpixel((0, 0)) == 255
    assert decode_to_8bit(Image.new("I;16", (2, 2), 32768)).getpixel((0, 0)) == 128
    assert decode_to_8bit(Image.new("YCbCr", (2, 2))).mode == "RGB"
    with pytest.raises(ValueError, match="not a grey or RGB image"):
        decode_to_8bit(Image.new("HSV", (2, 2)))
