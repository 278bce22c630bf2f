"""REPA: align one block's projected hidden states with a frozen vision encoder (published TiM code, github.com/WZDTHU/TiM).

The published trainers add ``proj_coeff * mean_tokens(1 - cos(h_proj, h_target))`` to the TiM loss,
where ``h_proj`` is the TiM projector's output after block ``encoder_depth`` and ``h_target`` the
patch features of a frozen RADIO-v2.5-B of the image, resized bicubically so that the encoder sees
one patch per TiM token (the published trainers use it; the paper, arXiv 2509.04394, never mentions it). Here the encoder is any
local Hugging Face vision model folder (DINOv2, ViT, SigLIP/CLIP vision towers...; RADIO's folder
runs its own code, allowed only with ``repa.trust_remote_code``). Settings:

* ``repa.encoder``: the folder ("" = REPA off);
* ``objective.alignment_weight``: ``proj_coeff`` (published 1.0);
* ``model.encoder_depth``: the block after which the projector taps (published 4 for B, 8 for XL);
* ``model.z_dim``: must equal the encoder's feature width (768 for RADIO-B and DINOv2-B).

The term is logged as ``alignment`` in ``metrics.jsonl``. It needs pixel images: latent data sets
carry no images to encode, so they are refused. The published code's ``nan_to_num`` is not
reproduced (non-finite values are never hidden, as in ``tim.objective``).
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as functional
from torch import Tensor

from tim.errors import TimError, first_line

# torchvision's ImageNet statistics, used by DINOv2/ViT processors; taken from the folder's
# preprocessor_config.json (image_mean/image_std) when it has one.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
COSINE_EPS = 1e-8  # torch.nn.functional.cosine_similarity's default, as in the published code


@dataclass(frozen=True)
class RepaConfig:
    """Representation alignment (REPA) during training; off unless ``encoder`` is set.

    Attributes:
        encoder: local Hugging Face vision model folder (``config.json`` + weights); "" = off.
        trust_remote_code: let the folder run its own model code (needed for RADIO); off by default.
    """

    encoder: str = ""  # a local folder, never a hub name: nothing is downloaded
    trust_remote_code: bool = False


def _transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise TimError(
            "REPA needs the transformers package", 'pip install "transition-models[repa]"'
        ) from None
    return transformers


class VisionEncoder:
    """A frozen local Hugging Face vision model giving one feature vector per TiM token.

    Args:
        folder: model folder with ``config.json`` (``save_pretrained`` output).
        device: where to run it.
        trust_remote_code: allow the folder's own code (RADIO); False refuses such folders.
    """

    def __init__(
        self, folder: str | Path, device: torch.device | str = "cpu", trust_remote_code: bool = False
    ) -> None:
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise TimError(
                f"repa.encoder '{folder}' is not a Hugging Face model folder (no config.json)",
                "pass a local folder written by save_pretrained, e.g. a DINOv2 checkpoint",
            )
        transformers = _transformers()
        logging = transformers.utils.logging
        bar, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
        logging.disable_progress_bar()  # a "Loading weights" bar would clutter every training run
        logging.set_verbosity_error()
        try:
            self.model = transformers.AutoModel.from_pretrained(
                str(folder), local_files_only=True, trust_remote_code=trust_remote_code
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            first = first_line(error)
            hint = (
                "set repa.trust_remote_code=true if you trust it"
                if "trust_remote_code" in first
                else "pass a complete vision model folder (config.json and its weights)"
            )
            raise TimError(f"repa.encoder '{folder}' could not be loaded ({first})", hint) from None
        finally:
            logging.set_verbosity(verbosity)
            if bar:
                logging.enable_progress_bar()
        config = getattr(self.model.config, "vision_config", self.model.config)
        self.patch_size = _config_int(config, "patch_size", folder)
        self.width = _config_int(config, "hidden_size", folder)
        self.channels = getattr(config, "num_channels", 3)
        mean, std = _statistics(folder, self.channels)
        self.model = self.model.vision_model if hasattr(self.model, "vision_model") else self.model
        self.model.requires_grad_(False).eval().to(device)
        # ViT-family models with a fixed position table need this for other sizes (DINOv2 always interpolates).
        accepts = inspect.signature(self.model.forward).parameters
        self._extra = {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in accepts else {}
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1)

    @torch.no_grad()
    def __call__(self, images: Tensor, grid: tuple[int, int]) -> Tensor:
        """Patch features of ``images`` (B, C, H, W) in [-1, 1] on an ``grid = (h, w)`` token grid -> (B, h w, width).

        The images are resized bicubically to ``(h p_enc, w p_enc)`` (published: RADIO's 16), a
        1-channel image is repeated to the encoder's 3 channels, then normalised with the folder's
        statistics. Leading CLS/register tokens are dropped: the last ``h w`` tokens are the patches.
        """
        h, w = grid
        if images.shape[1] != self.channels and images.shape[1] != 1:
            raise TimError(
                f"REPA got {images.shape[1]}-channel images for a {self.channels}-channel encoder",
                "use an encoder made for this data's channels",
            )
        x = images.float().expand(-1, self.channels, -1, -1) if images.shape[1] == 1 else images.float()
        x = functional.interpolate(
            x, size=(h * self.patch_size, w * self.patch_size), mode="bicubic", align_corners=False
        )
        x = ((x + 1.0) / 2.0 - self.mean) / self.std
        tokens = self.model(pixel_values=x, **self._extra).last_hidden_state  # (B, prefix + h w, width)
        if tokens.ndim != 3 or tokens.shape[1] < h * w:
            raise TimError(
                f"the REPA encoder returned features of shape {tuple(tokens.shape)} for a {h}x{w} grid",
                "use a ViT-style encoder whose last_hidden_state holds one token per patch",
            )
        return tokens[:, -h * w :]


def _config_int(config: Any, name: str, folder: Path) -> int:
    value = getattr(config, name, None)
    if not isinstance(value, int) or value < 1:
        raise TimError(
            f"repa.encoder '{folder}' has no integer {name} in its config",
            "use a ViT-style vision model (DINOv2, ViT, SigLIP/CLIP vision)",
        )
    return value


def _statistics(folder: Path, channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """image_mean/image_std of the folder's preprocessor_config.json, else ImageNet's."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        data = json.loads(processor.read_text())
        mean, std = tuple(data.get("image_mean", mean)), tuple(data.get("image_std", std))
    if len(mean) != channels or len(std) != channels:
        mean, std = (0.5,) * channels, (0.5,) * channels  # [-1, 1] <-> [0, 1] only
    return mean, std


def token_grid(features: Tensor, images: Tensor) -> tuple[int, int]:
    """The (h, w) token grid of ``features`` (B, N, d) for images (B, C, H, W): H / p, W / p with N = h w."""
    H, W = images.shape[-2:]
    patch = math.isqrt(H * W // features.shape[1]) if features.shape[1] else 0
    if patch < 1 or (H // patch) * (W // patch) != features.shape[1]:
        raise TimError(
            f"{features.shape[1]} alignment features do not tile {H}x{W} images", "use square patches"
        )
    return H // patch, W // patch


def repa_alignment(
    encoder: Callable[[Tensor, tuple[int, int]], Tensor],
) -> Callable[[Tensor, Tensor, dict], Tensor]:
    """The objective's alignment hook: ``(features (B, N, d), x (B, C, H, W), cond) -> (B,)`` REPA loss.

    ``mean_tokens(1 - cos(features, encoder(x)))``, the encoder without gradient (published
    ``proj_loss`` per sample; the objective multiplies by ``alignment_weight`` and averages).
    """

    def alignment(features: Tensor, x: Tensor, cond: dict) -> Tensor:
        target = encoder(x, token_grid(features, x))  # (B, N, width)
        if target.shape[-1] != features.shape[-1]:
            raise TimError(
                f"model.z_dim = {features.shape[-1]} but the REPA encoder gives {target.shape[-1]} features",
                f"set model.z_dim={target.shape[-1]}",
            )
        cosine = functional.cosine_similarity(features.float(), target.float(), dim=-1, eps=COSINE_EPS)
        return (1.0 - cosine).mean(1)

    return alignment


def build_repa(config: RepaConfig, model_config: Any, info: Any, device: torch.device) -> Callable | None:
    """The REPA alignment hook for a run, or None when ``repa.encoder`` is empty; checks the model and data."""
    if not config.encoder:
        return None
    if info.kind != "image" or info.value_range is None:
        raise TimError(
            "REPA needs pixel images, but this data set holds latents or vectors (nothing to encode)",
            "train on an image folder or the digits, or leave repa.encoder empty",
        )
    z_dim = getattr(model_config, "z_dim", 0)
    if z_dim <= 0:
        raise TimError(
            "repa.encoder is set but the model has no projector (model.z_dim = 0)",
            "set model.z_dim to the encoder's feature width",
        )
    encoder = VisionEncoder(config.encoder, device, config.trust_remote_code)
    if encoder.width != z_dim:
        raise TimError(
            f"model.z_dim = {z_dim} but the REPA encoder '{config.encoder}' gives {encoder.width} features",
            f"set model.z_dim={encoder.width}",
        )
    return repa_alignment(encoder)
