"""The :class:`Autoencoder` wrapper: load a local diffusers folder, encode, decode in tiles, plan decode memory.

See :mod:`tim.autoencoders` for the conventions (latent normalisation, tiling, lazy diffusers).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tim.errors import TimError
from tim.io import fsync_folder, replace_folder, write_json
from tim.system import available_memory, give_new_file_mode

KINDS = ("AutoencoderKL", "AutoencoderDC")
INSTALL_HINT = 'pip install "transition-models[latent]"'
# Tiles of 512 pixels: the tile the released SD-VAE and DC-AE were trained and tiled at (the
# DC-AE default in diffusers, tile_sample_min_height=512, stride 448).
TILE_SIZE = 512
# Overlap between neighbouring tiles, blended linearly: the diffusers defaults of each class
# (AutoencoderKL tile_overlap_factor=0.25 -> 128 px of 512; AutoencoderDC stride 448 -> 64 px).
KL_TILE_OVERLAP = 0.25
DC_TILE_OVERLAP_PIXELS = 64
# Decodes with more output pixels than this are tiled even when they would fit untiled: beyond
# 1024x1024 an untiled decode needs several GB (decode_bytes) and gains nothing visible.
TILE_THRESHOLD_PIXELS = 1024 * 1024
# Peak decode memory = (DECODE_FIXED_BYTES + PEAK_PER_WIDEST x widest activation x element size)
# x MEMORY_MARGIN, measured with scripts/autoencoder_memory.py on the CPU (peak RSS, random weights
# of the released SD-VAE and DC-AE f32c32 architectures, 128-1024 px; docs/benchmarks.md): the
# peak is 4.0-4.5x the widest activation at 256 px and above (4.53 the largest seen), plus a fixed
# ~60 MB of allocator and oneDNN scratch that dominates small decodes (135 MB at 128 px).
DECODE_FIXED_BYTES = 64 * 2**20
PEAK_PER_WIDEST = {"AutoencoderKL": 4.5, "AutoencoderDC": 4.5}
MEMORY_MARGIN = 1.25  # covers the spread of the measured ratios and load-dependent allocator slack
# Only this share of the memory reported free is planned for: the sampler, the Python process and
# other programs keep using some while the decode runs.
USABLE_SHARE = 0.9
HALF_DTYPES = (torch.float16, torch.bfloat16)
# The released autoencoders' architectures (diffusers configs of stabilityai/sd-vae-ft-ema and
# mit-han-lab/dc-ae-f32c32-sana-1.0), for memory estimates without their weights
# (Autoencoder.from_config(ARCHITECTURES[name], device="meta")) and random-weight benchmarks.
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "sd-vae": dict(
        _class_name="AutoencoderKL",
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=2,
        sample_size=256,
        scaling_factor=0.18215,
    ),
    "dc-ae-f32c32": dict(
        _class_name="AutoencoderDC",
        latent_channels=32,
        attention_head_dim=32,
        encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
        encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
        encoder_layers_per_block=(2, 2, 2, 3, 3, 3),
        decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
        encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
        upsample_block_type="interpolate",
        downsample_block_type="Conv",
        decoder_norm_types=("batch_norm",) * 3 + ("rms_norm",) * 3,
        decoder_act_fns=("relu",) * 3 + ("silu",) * 3,
        scaling_factor=0.41407,
    ),
}


def _diffusers() -> Any:
    try:
        import diffusers
    except ImportError as error:
        raise TimError(
            "loading a latent autoencoder needs diffusers, which is not installed", INSTALL_HINT
        ) from error
    return diffusers


def read_autoencoder_config(folder: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a local autoencoder folder, checked to be a class we support.

    Raises:
        TimError: missing folder or config, unreadable JSON, or another model class.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise TimError(
            f"autoencoder folder {str(folder)!r} does not exist",
            "pass a local diffusers autoencoder folder (written by save_pretrained or `tim autoencoder train`)",
        )
    path = folder / "config.json"
    if not path.is_file():
        raise TimError(
            f"autoencoder folder {str(folder)!r} has no config.json",
            "pass a local diffusers autoencoder folder (save_pretrained output)",
        )
    try:
        config = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TimError(
            f"{str(path)!r} is not readable JSON ({error})", "restore the autoencoder's config.json"
        ) from error
    kind = config.get("_class_name", "") if isinstance(config, dict) else ""
    if kind not in KINDS:
        raise TimError(
            f"{str(folder)!r} holds a {kind or 'model of unknown class'}, not an autoencoder we support",
            "use a diffusers AutoencoderKL (SD-VAE) or AutoencoderDC (DC-AE) folder",
        )
    return config


def spatial_factor(config: dict[str, Any]) -> int:
    """Down-sampling factor f of an autoencoder config (image side / latent side).

    KL: one 2x down-sampling between consecutive encoder blocks, ``2 ** (len(block_out_channels) - 1)``
    (diffusers' own rule for AutoencoderKL). DC-AE: the same rule on ``encoder_block_out_channels``
    (diffusers' ``spatial_compression_ratio``; the released f32c32 model has 6 blocks -> 32).
    """
    key = "block_out_channels" if config["_class_name"] == "AutoencoderKL" else "encoder_block_out_channels"
    default = (64,) if key == "block_out_channels" else (128, 256, 512, 512, 1024, 1024)  # diffusers defaults
    return 2 ** (len(config.get(key) or default) - 1)


def available_bytes(device: torch.device | str) -> int:
    """Memory free for a decode on ``device`` (:func:`tim.system.available_memory`)."""
    return available_memory(device)[0]


def _gigabytes(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.0f} MB"


class Autoencoder:
    """A diffusers AutoencoderKL / AutoencoderDC with tim's conventions (see the module docstring).

    Args:
        vae: the diffusers model (eval mode is set here).
        folder: where it was loaded from (recorded in pipelines and latent shards).
        tile_size: tile side in pixels for tiled decoding (a multiple of the factor).
        memory_limit: bytes a decode may use; default: what the device reports free.

    Attributes:
        kind: "AutoencoderKL" or "AutoencoderDC".
        latent_channels, factor: latent channels C and spatial down-sampling f.
        scaling_factor, shift_factor: x = (latent - shift_factor) * scaling_factor is what TiM sees.
    """

    def __init__(
        self,
        vae: torch.nn.Module,
        *,
        folder: str | Path | None = None,
        tile_size: int = TILE_SIZE,
        memory_limit: int | None = None,
    ) -> None:
        config = dict(vae.config)
        self.kind: str = type(vae).__name__
        if self.kind not in KINDS:
            raise TimError(
                f"a {self.kind} is not an autoencoder tim supports", "use AutoencoderKL or AutoencoderDC"
            )
        config["_class_name"] = self.kind
        self.vae = vae.eval().requires_grad_(False)
        self.folder = Path(folder) if folder is not None else None
        self.latent_channels = int(config["latent_channels"])
        self.factor = spatial_factor(config)
        self.scaling_factor = float(config.get("scaling_factor") or 1.0)
        self.shift_factor = float(config.get("shift_factor") or 0.0)
        if tile_size % self.factor or tile_size < 2 * self.factor:
            raise TimError(
                f"tile_size={tile_size} is not a multiple of the autoencoder factor {self.factor} (at least 2x)",
                f"pass a tile size such as {max(2, TILE_SIZE // self.factor) * self.factor}",
            )
        self.tile_size = tile_size
        self.memory_limit = memory_limit
        self._config = config

    # ----------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(
        cls,
        folder: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        **options: Any,
    ) -> Autoencoder:
        """Load a LOCAL diffusers autoencoder folder (``local_files_only``; no download is tried).

        Args:
            folder: a ``save_pretrained`` folder (config.json + weights) of an AutoencoderKL/DC.
            device: where it runs.
            dtype: float32 (default); bfloat16/float16 only on a GPU.
            **options: ``tile_size``, ``memory_limit`` (see the class).

        Raises:
            TimError: a missing or foreign folder, unreadable weights, half precision on the CPU.
        """
        config = read_autoencoder_config(folder)
        device = torch.device(device)
        dtype = _check_dtype(dtype, device, config)
        diffusers = _diffusers()
        try:
            # low_cpu_mem_usage=False: the default wants the optional `accelerate` and warns without it.
            vae = getattr(diffusers, config["_class_name"]).from_pretrained(
                str(folder), local_files_only=True, torch_dtype=dtype, low_cpu_mem_usage=False
            )
        except (OSError, ValueError, RuntimeError, TypeError) as error:
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise TimError(
                f"cannot load the {config['_class_name']} in {str(folder)!r} ({first})",
                "check that the folder holds the weights save_pretrained wrote",
            ) from error
        return cls(vae.to(device), folder=folder, **options)

    @classmethod
    def from_config(
        cls, config: dict[str, Any], *, device: str | torch.device = "cpu", **options: Any
    ) -> Autoencoder:
        """A randomly initialised autoencoder of a diffusers config (``_class_name`` picks the class).

        ``device="meta"`` builds it without memory, enough for :meth:`decode_bytes` estimates.
        """
        kind = config.get("_class_name", "")
        if kind not in KINDS:
            raise TimError(
                f"config class {kind or 'unknown'!r} is not an autoencoder we support",
                "use an AutoencoderKL or AutoencoderDC config",
            )
        diffusers = _diffusers()
        with torch.device(device):
            vae = getattr(diffusers, kind)(**{k: v for k, v in config.items() if not k.startswith("_")})
        return cls(vae, **options)

    def save_pretrained(self, folder: str | Path) -> Path:
        """Write the autoencoder with diffusers' ``save_pretrained``, atomically (temp folder, then rename).

        Raises:
            TimError: ``folder`` exists and is not empty.
        """
        folder = Path(folder)
        if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
            raise TimError(f"{str(folder)!r} already exists and is not empty", "pass a new folder")
        save_folder(self, folder, None)
        return folder

    # ----------------------------------------------------------------- properties
    @property
    def device(self) -> torch.device:
        """The device of the autoencoder's weights."""
        return next(self.vae.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the autoencoder's weights."""
        return next(self.vae.parameters()).dtype

    @property
    def config(self) -> dict[str, Any]:
        """The diffusers config (a copy)."""
        return dict(self._config)

    def __repr__(self) -> str:
        return (
            f"Autoencoder({self.kind}, f{self.factor}, {self.latent_channels} channels, "
            f"scale={self.scaling_factor:g}, shift={self.shift_factor:g}, folder={str(self.folder)!r})"
        )

    # ----------------------------------------------------------------- latents <-> model input
    def normalize(self, latents: Tensor) -> Tensor:
        """Raw latents -> TiM's input ``(latent - shift) * scale``."""
        return (latents - self.shift_factor) * self.scaling_factor

    def denormalize(self, x: Tensor) -> Tensor:
        """TiM's output -> raw latents ``x / scale + shift`` (the inverse of :meth:`normalize`)."""
        return x / self.scaling_factor + self.shift_factor

    def latent_size(self, height: int, width: int) -> tuple[int, int]:
        """Latent (h, w) of an image; TimError when a side is not a multiple of the factor."""
        if height % self.factor or width % self.factor or height <= 0 or width <= 0:
            raise TimError(
                f"image size {height}x{width} is not a multiple of the autoencoder factor {self.factor}",
                f"use a height and width divisible by {self.factor}",
            )
        return height // self.factor, width // self.factor

    # ----------------------------------------------------------------- encode / decode
    @torch.no_grad()
    def encode(self, images: Tensor) -> Tensor:
        """Encode images to raw latents.

        Args:
            images: (B, 3, H, W) in [-1, 1], H and W multiples of ``factor``.

        Returns:
            (B, C, H/f, W/f) float32 raw latents (KL: the posterior mean) on ``images``' device.
        """
        check_images(images, self.vae.config.in_channels)
        self.latent_size(*images.shape[-2:])
        self.vae.disable_tiling()  # latents never depend on an earlier decode's tiling
        output = self.vae.encode(images.to(self.device, self.dtype))
        latents = output.latent_dist.mean if self.kind == "AutoencoderKL" else output.latent
        return latents.float().to(images.device)

    @torch.no_grad()
    def decode(self, latents: Tensor, *, tiled: bool | None = None) -> Tensor:
        """Decode raw latents to images in [-1, 1] (values outside are clipped).

        Args:
            latents: (B, C, h, w) raw latents (``denormalize`` TiM's output first).
            tiled: force tiling on/off; default: tile above ``TILE_THRESHOLD_PIXELS`` output pixels
                or when an untiled decode will not fit in memory.

        Returns:
            (B, 3, h*f, w*f) float32 on ``latents``' device.

        Raises:
            TimError: wrong channels, or the decode will not fit in memory (size and limit named).
        """
        if latents.dim() != 4 or latents.shape[1] != self.latent_channels:
            raise TimError(
                f"latents of shape {tuple(latents.shape)} do not match this autoencoder's "
                f"{self.latent_channels} latent channels (B, {self.latent_channels}, h, w)",
                "decode latents made for this autoencoder (check the model's in_channels)",
            )
        height, width = latents.shape[-2] * self.factor, latents.shape[-1] * self.factor
        use_tiles = self.plan_decode(height, width, tiled=tiled)
        self._set_tiling(use_tiles)
        images = [
            self.vae.decode(chunk.to(self.device, self.dtype)).sample.float().clamp_(-1, 1).to(latents.device)
            for chunk in latents.split(1 if use_tiles else self._batch_that_fits(height, width))
        ]
        return torch.cat(images)

    def plan_decode(self, height: int, width: int, *, tiled: bool | None = None) -> bool:
        """Whether a decode of one ``height x width`` image is tiled; refuses when neither way fits.

        Raises:
            TimError: naming the size, the memory it needs and the memory available.
        """
        limit = self._memory_limit()
        if tiled is None:
            tiled = (
                height * width > TILE_THRESHOLD_PIXELS
                or self.decode_bytes(height, width, tiled=False) > limit
            )
        needed = self.decode_bytes(height, width, tiled=tiled)
        if needed > limit:
            how = "in tiles" if tiled else "untiled"
            raise TimError(
                f"decoding a {height}x{width} image {how} needs about {_gigabytes(needed)} but {_gigabytes(limit)} "
                f"is available on {self.device}",
                "generate a smaller image, free memory"
                + ("" if tiled else ", or decode in tiles (tiled=True)")
                + (f", or use smaller tiles (tile_size below {self.tile_size})" if tiled else ""),
            )
        return bool(tiled)

    def decode_bytes(self, height: int, width: int, *, tiled: bool | None = None) -> int:
        """Memory (bytes) one decode of a ``height x width`` image needs, weights excluded.

        Rule: ``(DECODE_FIXED_BYTES + PEAK_PER_WIDEST[kind] * widest activation * element size) *
        MEMORY_MARGIN`` plus the output, where the widest activation is the largest channels x pixels tensor of the decoder
        (computed from the config) at the decoded size, or at one tile's size when tiled (the tiles
        are decoded one after another; all decoded tiles are kept until they are blended, about
        (tile / stride)^2 times the output). The ratio was measured with
        scripts/autoencoder_memory.py (peak RSS on CPU, torch.cuda.max_memory_allocated on GPU).

        Args:
            height: output height in pixels.
            width: output width in pixels.
            tiled: as in :meth:`decode` (default: the same automatic choice, without the memory check).
        """
        if tiled is None:
            tiled = height * width > TILE_THRESHOLD_PIXELS
        element = torch.finfo(self.dtype).bits // 8
        output = 3 * height * width * 4  # the float32 result
        if tiled:
            stride = self._tile_stride()
            tile_h, tile_w = min(height, self.tile_size), min(width, self.tile_size)
            widest = self.widest_activation(tile_h, tile_w)
            kept = 3 * height * width * element * (self.tile_size / stride) ** 2 * 2  # tiles + blended rows
        else:
            widest = self.widest_activation(height, width)
            kept = 0
        peak = (DECODE_FIXED_BYTES + PEAK_PER_WIDEST[self.kind] * widest * element) * MEMORY_MARGIN
        return int(peak + kept + output)

    def widest_activation(self, height: int, width: int) -> int:
        """Elements of the decoder's largest activation for an output of ``height x width`` pixels.

        KL (diffusers Decoder): stage s of n runs at 1/2^(n-1-s) of the output side with
        ``reversed(block_out_channels)[s]`` channels, and its input is the previous stage's channels
        up-sampled to this size. DC-AE: stage i runs at 1/2^i of the side with
        ``decoder_block_out_channels[i]`` channels.
        """
        pixels = height * width
        if self.kind == "AutoencoderKL":
            channels = list(reversed(self._config.get("block_out_channels") or (64,)))
            n = len(channels)
            widths = [
                max(channels[s], channels[s - 1] if s else 0) * pixels // 4 ** (n - 1 - s) for s in range(n)
            ]
        else:
            channels = list(
                self._config.get("decoder_block_out_channels") or (128, 256, 512, 512, 1024, 1024)
            )
            widths = [c * pixels // 4**i for i, c in enumerate(channels)]
        return int(max(widths))

    # ----------------------------------------------------------------- internals
    def _memory_limit(self) -> int:
        if self.memory_limit is not None:
            return int(self.memory_limit)
        return int(available_bytes(self.device) * USABLE_SHARE)

    def _batch_that_fits(self, height: int, width: int) -> int:
        per_image = self.decode_bytes(height, width, tiled=False)
        return max(1, self._memory_limit() // max(1, per_image))

    def _tile_stride(self) -> int:
        if self.kind == "AutoencoderKL":
            return int(self.tile_size * (1 - KL_TILE_OVERLAP))
        return self.tile_size - DC_TILE_OVERLAP_PIXELS * self.tile_size // TILE_SIZE

    def _set_tiling(self, on: bool) -> None:
        """Configure diffusers' own tiling with this wrapper's tile size (or turn it off)."""
        if not on:
            self.vae.disable_tiling()
            return
        if self.kind == "AutoencoderKL":
            # AutoencoderKL.enable_tiling() takes no sizes; its tiles come from these attributes
            # (set from config.sample_size at construction).
            self.vae.tile_sample_min_size = self.tile_size
            self.vae.tile_latent_min_size = self.tile_size // self.factor
            self.vae.tile_overlap_factor = KL_TILE_OVERLAP
            self.vae.enable_tiling()
        else:
            self.vae.enable_tiling(
                tile_sample_min_height=self.tile_size,
                tile_sample_min_width=self.tile_size,
                tile_sample_stride_height=self._tile_stride(),
                tile_sample_stride_width=self._tile_stride(),
            )


def _check_dtype(dtype: torch.dtype | None, device: torch.device, config: dict[str, Any]) -> torch.dtype:
    """float32 on the CPU; half precision only on a GPU (float16 not for KL models that ask to upcast)."""
    dtype = dtype or torch.float32
    if dtype not in (torch.float32, *HALF_DTYPES):
        raise TimError(f"autoencoder dtype {dtype} is not supported", "use float32, bfloat16 or float16")
    if dtype in HALF_DTYPES and device.type == "cpu":
        raise TimError(
            f"autoencoder dtype {dtype} on the CPU is not supported (slow and inexact there)",
            "use float32 on the CPU; bfloat16/float16 on a GPU",
        )
    if (
        dtype == torch.float16
        and config["_class_name"] == "AutoencoderKL"
        and config.get("force_upcast", True)
    ):
        # The SD-VAE overflows in float16 (its config says force_upcast); bfloat16 has the range.
        raise TimError(
            "this AutoencoderKL's config has force_upcast=true: it overflows in float16",
            "use bfloat16 or float32",
        )
    return dtype


def check_images(images: Tensor, channels: int) -> None:
    """TimError unless ``images`` is a float batch (B, channels, H, W)."""
    if images.dim() != 4 or images.shape[1] != channels:
        raise TimError(
            f"images of shape {tuple(images.shape)} are not (B, {channels}, H, W)",
            f"pass a batch of {channels}-channel images",
        )
    if not images.is_floating_point():
        raise TimError(
            f"images have dtype {images.dtype}, expected float in [-1, 1]",
            "convert uint8 images with x / 127.5 - 1",
        )


def check_latent_channels(autoencoder: Autoencoder, channels: int, what: str = "the model") -> None:
    """TimError when ``what`` expects ``channels`` latent channels but the autoencoder makes others."""
    if channels != autoencoder.latent_channels:
        raise TimError(
            f"{what} works on {channels}-channel latents but the autoencoder in "
            f"{str(autoencoder.folder)!r} makes {autoencoder.latent_channels}-channel ones",
            "use the autoencoder the model was trained with",
        )


def save_folder(ae: Autoencoder, out: Path, report: dict[str, Any] | None) -> None:
    """save_pretrained (+ train_report.json) into a temporary folder, then one rename (:func:`tim.io.replace_folder`).

    ``out`` must be new or an empty folder (the callers check; a non-empty one fails the ``rmdir``).
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        ae.vae.save_pretrained(str(temp), safe_serialization=True)
        if report is not None:
            write_json(temp / "train_report.json", report)
        for path in [temp, *temp.rglob("*")]:  # mkdtemp makes 0700 and safetensors 0600: the umask's modes
            if not path.is_symlink():
                give_new_file_mode(path, folder=path.is_dir())
        if out.exists():
            out.rmdir()  # an empty folder (the caller checked)
        replace_folder(temp, out)
        fsync_folder(out.parent)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
