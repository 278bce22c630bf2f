"""tim.autoencoders on tiny random AutoencoderKL / AutoencoderDC folders: load, shapes, ranges, errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("diffusers")

from helpers.autoencoders import tiny_dc, tiny_kl  # noqa: E402
from tim.autoencoders import ARCHITECTURES, Autoencoder, check_latent_channels  # noqa: E402
from tim.errors import TimError  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> object:
    """One torch thread: spinning OpenMP threads on a busy shared machine make these convs ~10x slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("autoencoders")
    return {"AutoencoderKL": tiny_kl(root / "kl", shift_factor=0.1), "AutoencoderDC": tiny_dc(root / "dc")}


@pytest.mark.parametrize(
    ("kind", "channels", "scale", "shift"), [("AutoencoderKL", 4, 0.5, 0.1), ("AutoencoderDC", 8, 0.4, 0.0)]
)
def test_load_encode_decode(
    folders: dict[str, Path], kind: str, channels: int, scale: float, shift: float
) -> None:
    ae = Autoencoder.from_pretrained(folders[kind])
    assert (ae.kind, ae.latent_channels, ae.factor, ae.scaling_factor, ae.shift_factor) == (
        kind,
        channels,
        4,
        scale,
        shift,
    )
    images = torch.rand(3, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = ae.encode(images)
    assert latents.shape == (3, channels, 4, 6) and latents.dtype == torch.float32
    assert torch.equal(latents, ae.encode(images))  # KL: the posterior mean, no sampling
    decoded = ae.decode(latents * 20)  # far outside the usual range: still clipped to [-1, 1]
    assert decoded.shape == images.shape and decoded.min() >= -1 and decoded.max() <= 1
    assert decoded.abs().max() == 1  # the clip did act
    x = ae.normalize(latents)
    torch.testing.assert_close(x, (latents - shift) * scale)
    torch.testing.assert_close(ae.denormalize(x), latents)


def test_save_pretrained_round_trip(folders: dict[str, Path], tmp_path: Path) -> None:
    ae = Autoencoder.from_pretrained(folders["AutoencoderKL"])
    ae.save_pretrained(tmp_path / "copy")
    again = Autoencoder.from_pretrained(tmp_path / "copy")
    latents = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(ae.decode(latents), again.decode(latents))
    assert [p.name for p in tmp_path.iterdir()] == ["copy"]  # no temporary folder left
    with pytest.raises(TimError, match="already exists and is not empty"):
        ae.save_pretrained(tmp_path / "copy")


def test_bad_folders_and_inputs(folders: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(TimError, match="does not exist"):
        Autoencoder.from_pretrained(tmp_path / "nowhere")
    with pytest.raises(TimError, match="has no config.json"):
        Autoencoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(TimError, match="holds a UNet2DModel, not an autoencoder we support"):
        Autoencoder.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(TimError, match="not readable JSON"):
        Autoencoder.from_pretrained(tmp_path)
    weightless = tmp_path / "weightless"
    weightless.mkdir()
    (weightless / "config.json").write_text((folders["AutoencoderKL"] / "config.json").read_text())
    with pytest.raises(TimError, match="cannot load the AutoencoderKL"):
        Autoencoder.from_pretrained(weightless)
    with pytest.raises(TimError, match="on the CPU is not supported"):
        Autoencoder.from_pretrained(folders["AutoencoderKL"], dtype=torch.bfloat16)
    ae = Autoencoder.from_pretrained(folders["AutoencoderDC"])
    with pytest.raises(TimError, match="do not match this autoencoder's 8 latent channels"):
        ae.decode(torch.zeros(1, 4, 4, 4))
    with pytest.raises(TimError, match="not a multiple of the autoencoder factor 4"):
        ae.encode(torch.zeros(1, 3, 10, 12))
    with pytest.raises(TimError, match=r"not \(B, 3, H, W\)"):
        ae.encode(torch.zeros(3, 16, 16))
    with pytest.raises(TimError, match="works on 4-channel latents but the autoencoder"):
        check_latent_channels(ae, 4)


@pytest.mark.parametrize("kind", ["AutoencoderKL", "AutoencoderDC"])
def test_tile_interiors_are_exact_untiled_decodes_of_their_tile(folders: dict[str, Path], kind: str) -> None:
    """Away from the blended overlaps, a tiled decode IS the untiled decode of that tile's latents.

    This pins our use of diffusers' tiling (tile size, stride, where each tile lands). Tile size 32
    px on a 96-px output: tile (0, 0) is kept whole up to the stride; tile (0, 1) starts one stride
    to the right and is blended with tile (0, 0) over the overlap only.
    """
    ae = Autoencoder.from_pretrained(folders[kind], tile_size=32)
    latents = torch.randn(1, ae.latent_channels, 24, 24, generator=torch.Generator().manual_seed(2))
    tiled = ae.decode(latents, tiled=True)
    stride, tile_l = ae._tile_stride(), 32 // ae.factor
    overlap = 32 - stride
    first = ae.decode(latents[..., :tile_l, :tile_l], tiled=False)
    second = ae.decode(latents[..., :tile_l, stride // ae.factor : stride // ae.factor + tile_l], tiled=False)
    torch.testing.assert_close(tiled[..., :stride, :stride], first[..., :stride, :stride], atol=1e-5, rtol=0)
    # Columns of tile (0, 1) past the overlap; rows above the next tile row's overlap.
    torch.testing.assert_close(
        tiled[..., :stride, stride + overlap : 2 * stride],
        second[..., :stride, overlap:stride],
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("kind", ["AutoencoderKL", "AutoencoderDC"])
def test_tiled_close_to_untiled_and_closer_with_bigger_tiles(folders: dict[str, Path], kind: str) -> None:
    """Tiled vs untiled decode of one 128x128 image (stationary random latents).

    They differ EVERYWHERE, not only at seams: the decoders' GroupNorm / RMSNorm statistics and
    mid-block attention see one tile instead of the image, and the receptive field of these f4
    decoders spans most of a 32-px tile. Measured on these tiny random models (mean |difference|,
    image std ~0.3-0.4): KL 0.16 (32-px tiles) -> 0.076 (64-px), DC-AE 0.15 -> 0.081. Stated
    tolerance: mean |difference| < 0.12 with 64-px tiles, and it falls as tiles grow. (A trained
    autoencoder does much better: see docs/benchmarks.md for the one `tim autoencoder train` makes.)
    """
    ae = Autoencoder.from_pretrained(folders[kind])
    latents = torch.randn(2, ae.latent_channels, 32, 32, generator=torch.Generator().manual_seed(0))
    untiled = ae.decode(latents, tiled=False)
    errors = []
    for tile in (32, 64):
        ae.tile_size = tile
        errors.append(float((ae.decode(latents, tiled=True) - untiled).abs().mean()))
    assert errors[1] < 0.12 and errors[1] < 0.7 * errors[0], errors


def _meta_autoencoder(kind: str) -> Autoencoder:
    """The released SD-VAE / DC-AE f32c32 architectures on the meta device (no memory, no weights)."""
    return Autoencoder.from_config(
        ARCHITECTURES["sd-vae" if kind == "AutoencoderKL" else "dc-ae-f32c32"], device="meta"
    )


def test_memory_estimate_4096_fits_only_in_tiles() -> None:
    """A 4096x4096 decode: tens of GB untiled, about 2.5 GB in 512-px tiles (SD-VAE and DC-AE)."""
    for kind in ("AutoencoderKL", "AutoencoderDC"):
        ae = _meta_autoencoder(kind)
        assert ae.factor == (8 if kind == "AutoencoderKL" else 32)
        tiled, untiled = ae.decode_bytes(4096, 4096, tiled=True), ae.decode_bytes(4096, 4096, tiled=False)
        assert 1e9 < tiled < 4e9 and untiled > 20e9, (kind, tiled, untiled)
        assert ae.decode_bytes(4096, 4096) == tiled  # above the threshold the default is tiled
        # Tiled memory grows with the output only (blending buffers), untiled with the widest activation.
        assert ae.decode_bytes(8192, 8192, tiled=True) < 4 * tiled
        assert ae.decode_bytes(1024, 1024, tiled=False) * 15 < untiled


def test_decode_refuses_when_it_will_not_fit(folders: dict[str, Path]) -> None:
    ae = Autoencoder.from_pretrained(folders["AutoencoderKL"], tile_size=32)
    latents = torch.zeros(1, 4, 16, 16)  # a 64x64 image
    untiled, tiled = ae.decode_bytes(64, 64, tiled=False), ae.decode_bytes(64, 64, tiled=True)
    assert tiled < untiled
    ae.memory_limit = (tiled + untiled) // 2  # only the tiled decode fits: chosen automatically
    assert ae.plan_decode(64, 64) is True and ae.decode(latents).shape == (1, 3, 64, 64)
    with pytest.raises(
        TimError,
        match=r"decoding a 64x64 image untiled needs about .* MB but .* MB is available on cpu; "
        r".*decode in tiles",
    ):
        ae.decode(latents, tiled=False)
    ae.memory_limit = tiled // 2
    with pytest.raises(TimError, match=r"decoding a 64x64 image in tiles needs about .*smaller tiles"):
        ae.decode(latents)


# Run in a fresh process whose peak RSS is reset just before the decode (Linux: writing 5 to
# /proc/self/clear_refs resets VmHWM), so the peak measured is the decode's own, whatever ran before.
TILED_DECODE = """
import json, sys
import torch
from tim.autoencoders import Autoencoder


def status(key):
    return next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith(key + ":"))


torch.set_num_threads(1)
ae = Autoencoder.from_pretrained(sys.argv[1], tile_size=int(sys.argv[4]))
height, width = int(sys.argv[2]), int(sys.argv[3])
latents = torch.randn(1, 4, height // ae.factor, width // ae.factor, generator=torch.Generator().manual_seed(0))
tiles = []
ae.vae.decoder.register_forward_hook(lambda module, args, output: tiles.append(list(args[0].shape[-2:])))
tiled = ae.plan_decode(height, width)
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
before = status("VmRSS")
image = ae.decode(latents)
grown = status("VmHWM") - before
print(json.dumps({"tiled": tiled, "tiles": tiles, "shape": list(image.shape), "finite": bool(torch.isfinite(image).all()),
                  "grown": grown, "estimate": ae.decode_bytes(height, width), "untiled": ae.decode_bytes(height, width, tiled=False)}))
"""


def _tiled_decode(folder: Path, height: int, width: int, tile: int) -> dict:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", TILED_DECODE, str(folder), str(height), str(width), str(tile)],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_decode_above_the_threshold_runs_in_small_tiles_within_the_estimate(folders: dict[str, Path]) -> None:
    """A 1024x1088 decode (just above the 1024^2 threshold: tiled by default) in 128-px tiles.

    Every decoder call sees at most one tile (32x32 latents), the calls cover the image at least once
    (>= 8x8 tiles), the output has the full, non-square size and is finite, and the peak memory of the
    decode stays under the tiled estimate, itself under half the untiled one (the estimates at 1280^2:
    179 vs 693 MB). The 4096x4096 decode is ``full``: 15x the pixels, minutes on one core.
    """
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure the decode's peak memory")
    result = _tiled_decode(folders["AutoencoderKL"], 1024, 1088, 128)
    assert result["tiled"] is True
    assert result["shape"] == [1, 3, 1024, 1088] and result["finite"]
    assert (
        len(result["tiles"]) >= (1024 // 128) * (1088 // 128)
        and max(max(t) for t in result["tiles"]) <= 128 // 4
    )
    output = 3 * 1024 * 1088 * 4  # the float32 image alone: a floor that shows the measurement works
    assert output < result["grown"] < result["estimate"] < result["untiled"] / 2, result | {
        "tiles": len(result["tiles"])
    }


@pytest.mark.full
def test_4096_decode_fits_in_tiles(folders: dict[str, Path]) -> None:
    """A real 4096x4096 decode (tiny KL, the default 512-px tiles): within the estimate, same size, finite.

    ``full``, not ``slow``: 15x the pixels of the slow test above (184 s on one busy core, docs/benchmarks.md).
    """
    if not os.access("/proc/self/clear_refs", os.W_OK):
        pytest.skip("needs Linux's /proc/self/clear_refs to measure the decode's peak memory")
    result = _tiled_decode(folders["AutoencoderKL"], 4096, 4096, 512)
    assert result["tiled"] is True  # above the threshold: tiled by default
    assert result["shape"] == [1, 3, 4096, 4096] and result["finite"]
    assert max(max(t) for t in result["tiles"]) <= 512 // 4
    assert 3 * 4096 * 4096 * 4 < result["grown"] < result["estimate"], result | {
        "tiles": len(result["tiles"])
    }
