"""FID with Inception-v3 pool features, from weights the user supplies as a local file.

The network is the "FID Inception" variant used by pytorch-fid (weights file
``pt_inception-2015-12-05-*.pth``, ported from the TensorFlow FID graph): torchvision's Inception-v3
layout with a 1008-way classifier and three differences in the pooling branches, marked below
(average pools that exclude padding; a max pool in the last block). Features are the 2048-d
global-average-pooled activations of ``Mixed_7c`` ("pool3"), computed on images bilinearly
resized to 299 x 299. Nothing is downloaded: pass the weights path (safetensors, or a PyTorch
state dict read with ``torch.load(weights_only=True)``; never unpickled).

The FID number is only comparable to published ones when the same weights, reference set and
sample count are used; :func:`compute_fid` labels its result with all three.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional

from tim.errors import TimError, first_line
from tim.evaluation.metrics import (
    GaussianStats,
    frechet_distance_from_stats,
    gaussian_stats,
)

FID_INPUT_SIZE = 299  # Inception-v3 input side (Szegedy et al. 2016; pytorch-fid resizes to it)
FEATURE_DIM = 2048  # width of the pool3 features


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3, as in the TF graph) + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C_in, H, W) -> (B, C_out, H', W'): conv, batch norm, ReLU."""
        return functional.relu(self.bn(self.conv(x)))


def _avg_pool(x: Tensor) -> Tensor:
    # FID variant: padding is excluded from the average (TF semantics), unlike torchvision.
    return functional.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 224 + pool_features, H, W): the four branches concatenated."""
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(_avg_pool(x))], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, C + 480, H', W'): stride-2 grid reduction."""
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat(
            [self.branch3x3(x), branch3x3dbl, functional.max_pool2d(x, kernel_size=3, stride=2)], 1
        )


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 768, H, W) -> (B, 768, H, W): the factorised 7x7 branches concatenated."""
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_avg_pool(x))], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        """(B, 768, H, W) -> (B, 1280, H', W'): stride-2 grid reduction."""
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([branch3x3, branch7x7x3, functional.max_pool2d(x, kernel_size=3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches; ``max_pool`` selects the FID variant of the last block."""

    def __init__(self, in_channels: int, *, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> (B, 2048, H, W): the expanded filter-bank branches concatenated."""
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        # FID variant: the last block max-pools (a quirk of the TF graph), the one before averages.
        pooled = (
            functional.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        )
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 (FID variant); ``forward`` maps images in [-1, 1] to 2048-d pool3 features.

    Module names follow torchvision / pytorch-fid so their state dicts load unchanged.
    """

    def __init__(self, num_classes: int = 1008) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = (
            InceptionA(192, 32),
            InceptionA(256, 64),
            InceptionA(288, 64),
        )
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b, self.Mixed_6c = InceptionC(768, 128), InceptionC(768, 160)
        self.Mixed_6d, self.Mixed_6e = InceptionC(768, 160), InceptionC(768, 192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b, self.Mixed_7c = InceptionE(1280, max_pool=False), InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURE_DIM, num_classes)  # unused for FID; present so the weights load strictly

    def forward(self, x: Tensor, resize_to: int | None = FID_INPUT_SIZE) -> Tensor:
        """Pool3 features (N, 2048) of images x (N, 1 or 3, H, W) in [-1, 1].

        pytorch-fid resizes [0, 1] images to 299 then maps them to [-1, 1]; resizing is linear,
        so resizing our [-1, 1] images gives the same input. Grey images are repeated to RGB.
        """
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if resize_to is not None:
            x = functional.interpolate(x, size=(resize_to, resize_to), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = functional.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = functional.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
            self.Mixed_6d,
            self.Mixed_6e,
            self.Mixed_7a,
            self.Mixed_7b,
            self.Mixed_7c,
        ):
            x = block(x)  # ... (N, 2048, 8, 8)
        return functional.adaptive_avg_pool2d(x, 1).flatten(1)  # (N, 2048)


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    from tim.models.weights import (  # one-line TimErrors for bad files
        read_safetensors,
        torch_load_weights_only,
    )

    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    state = torch_load_weights_only(path)  # never unpickle arbitrary objects
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise TimError(
            f"{path} is not a flat state dict of tensors", "pass the pytorch-fid pt_inception weights"
        )
    return state


def load_fid_inception(path: str | Path) -> FIDInceptionV3:
    """Build :class:`FIDInceptionV3` and load weights strictly (names and shapes must all match).

    BatchNorm ``num_batches_tracked`` counters (absent from some exports) are the only keys
    allowed to be missing.
    """
    path = Path(path)
    if not path.is_file():
        raise TimError(
            f"Inception weights not found at {path}",
            "download pt_inception-2015-12-05 weights yourself and pass the local file",
        )
    state = _read_state_dict(path)
    model = FIDInceptionV3()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise TimError(
            f"{path} does not match the FID Inception-v3 layout (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}, wrong shape {wrong[:3]})",
            "pass the pytorch-fid pt_inception-2015-12-05 weights",
        )
    model.load_state_dict({**expected, **state}, strict=True)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def inception_features(model: FIDInceptionV3, images: Tensor, batch_size: int = 50) -> np.ndarray:
    """Pool3 features (N, 2048) float64 of images (N, C, H, W) in [-1, 1], computed in batches."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise TimError(f"images have shape {tuple(images.shape)}", "pass (N, 1 or 3, H, W) in [-1, 1]")
    device = next(model.parameters()).device
    chunks = [model(chunk.to(device, torch.float32)).double().cpu() for chunk in images.split(batch_size)]
    return torch.cat(chunks).numpy()


def load_reference_stats(path: str | Path) -> GaussianStats:
    """Reference ``mu``/``sigma`` from an .npz (ADM / pytorch-fid layout; read without pickle)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "mu" not in data or "sigma" not in data:
                raise TimError(
                    f"{path} has no 'mu' and 'sigma' arrays",
                    "pass FID reference statistics (.npz with mu, sigma)",
                )
            count = int(data["count"]) if "count" in data else -1
            return GaussianStats(data["mu"].astype(np.float64), data["sigma"].astype(np.float64), count)
    except TimError:
        raise
    except (OSError, ValueError, EOFError) as error:  # missing, empty, not an .npz, or pickled object arrays
        raise TimError(
            f"cannot read reference statistics {path} ({first_line(error)})",
            "pass an .npz with float arrays mu and sigma (pickles are never loaded)",
        ) from None


def compute_fid(
    samples: Tensor,
    reference: Tensor | str | Path,
    weights: str | Path,
    *,
    reference_name: str = "",
    batch_size: int = 50,
) -> dict:
    """FID of ``samples`` against reference images or a reference-statistics .npz.

    Args:
        samples: generated images (N, C, H, W) in [-1, 1].
        reference: real images (M, C, H, W) in [-1, 1], or the path of an .npz with ``mu``, ``sigma``.
        weights: local pt_inception weights file.
        reference_name: how to describe the reference set in the label.
        batch_size: images per Inception call.

    Returns:
        {"fid", "num_samples", "num_reference", "feature_extractor", "reference_set"}.
    """
    model = load_fid_inception(weights)
    stats = gaussian_stats(inception_features(model, samples, batch_size))
    if isinstance(reference, Tensor):
        reference_stats = gaussian_stats(inception_features(model, reference, batch_size))
        reference_name = reference_name or f"{len(reference)} reference images"
    else:
        reference_stats = load_reference_stats(reference)
        reference_name = reference_name or f"statistics file {Path(reference).name}"
    return {
        "fid": frechet_distance_from_stats(stats.mu, stats.sigma, reference_stats.mu, reference_stats.sigma),
        "num_samples": stats.count,
        "num_reference": reference_stats.count,
        "feature_extractor": f"FID Inception-v3 pool3 (2048-d, bilinear 299x299), weights {Path(weights).name}",
        "reference_set": reference_name,
    }
