"""What the user asks for (:class:`DataConfig`) and what a source delivers (:class:`DataInfo`).

``DataConfig`` is the ``data:`` section of the run configuration. Every field is a plain scalar
(str, int, float, bool) so that the strict YAML loader of ``tim.training`` can map it 1:1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from tim.errors import TimError

TOY_NAMES = ("checkerboard", "8gaussians", "moons", "spirals")
IMAGE_NAMES = ("digits", "image_folder", "latents", "shapes", "scenes")
DATA_NAMES = IMAGE_NAMES + TOY_NAMES
# Sources whose items may have different sizes, hence the only ones that can be bucketed.
BUCKETABLE = ("image_folder", "latents", "shapes")
# Sources that can carry captions (data.text_encoder): tim.data.captions.
CAPTIONED = ("image_folder", "scenes")


@dataclass(frozen=True)
class DataConfig:
    """The dataset and how it is read (the ``data:`` section of a run config).

    Batch semantics: the trainer's ``batch_size`` is the GLOBAL batch; each of ``world_size``
    ranks receives its own disjoint ``batch_size // world_size`` rows, so a 2-rank run sees exactly
    the rows a 1-rank run sees. Bucketed sources instead give each rank whole batches from one
    resolution bucket, sized from ``token_budget`` (arXiv 2509.04394, App. C.2: per-GPU batch ∝ 1/(H·W)).
    """

    name: str = "digits"  # one of DATA_NAMES: "digits" (default, sklearn 8x8), "image_folder", "latents", "shapes", "scenes" (captioned), or a 2-D toy
    root: str = ""  # folder of images (class per sub-folder) for "image_folder"; folder of *.safetensors shards for "latents"
    image_size: int = 0  # fixed side in pixels (centre-crop + resize); 0 = the data's own size (digits 8, shapes 16, scenes 32, folders: must all match)
    channels: int = 3  # image channels for "image_folder" (1 = grey, 3 = RGB); an image with another channel count is an error
    hflip: bool = False  # random horizontal flip (p = 0.5); wrong for digits and toys, so off by default
    bucketed: bool = False  # keep every item at its own size (rounded down to patch_multiple) and batch by resolution bucket
    patch_multiple: int = 2  # sides are rounded down to a multiple of this: autoencoder factor x patch size, in the stored data's units
    token_budget: int = 0  # bucketed only: tokens per rank per step, tokens = (H/patch_multiple)(W/patch_multiple); 0 = (batch_size // world_size) x tokens of the largest bucket
    max_pixels: int = 0  # bucketed image folders: downscale (aspect kept) any image with more than this many pixels; 0 = no cap
    max_bad_fraction: float = (
        0.01  # image folders: unreadable files are skipped and counted; fail if more than this share is bad
    )
    num_images: int = 2048  # "shapes" and "scenes": how many synthetic images to render
    min_side: int = 8  # "shapes" only (bucketed): smallest side in pixels
    max_side: int = 32  # "shapes" only (bucketed): largest side in pixels
    max_aspect: float = 3.0  # "shapes" only (bucketed): largest long/short side ratio
    text_encoder: str = ""  # captions -> features: "" = no captions, "minilm" (embedded all-MiniLM-L6-v2) or a local HF model folder
    max_text_length: int = 32  # tokens per caption (padded / truncated to it), special tokens included

    def __post_init__(self) -> None:
        if self.name not in DATA_NAMES:
            raise TimError(f"unknown data.name={self.name!r}", f"use one of {', '.join(DATA_NAMES)}")
        if self.name in ("image_folder", "latents") and not self.root:
            raise TimError(f"data.name={self.name!r} needs data.root", "set data.root to the dataset folder")
        self._check_ints()
        self._check_text()
        if self.channels not in (1, 3):
            raise TimError(
                f"data.channels={self.channels} is not supported", "set data.channels to 1 (grey) or 3 (RGB)"
            )
        if not 0.0 <= self.max_bad_fraction <= 1.0 or math.isnan(self.max_bad_fraction):
            raise TimError(
                f"data.max_bad_fraction={self.max_bad_fraction} is outside [0, 1]",
                "set a share between 0 and 1, e.g. 0.01",
            )
        if not self.max_aspect >= 1.0 or math.isinf(self.max_aspect):
            raise TimError(
                f"data.max_aspect={self.max_aspect} must be a finite ratio >= 1",
                "set e.g. data.max_aspect=3.0",
            )
        if self.bucketed and self.name not in BUCKETABLE:
            raise TimError(
                f"data.bucketed=true is not available for data.name={self.name!r}",
                f"use it with {', '.join(BUCKETABLE)} or set data.bucketed=false",
            )
        if self.bucketed and self.image_size:
            raise TimError(
                f"data.image_size={self.image_size} has no effect with data.bucketed=true (items keep their own sizes)",
                "set data.image_size=0, or data.bucketed=false for one fixed size",
            )
        if self.hflip and self.name == "digits":
            raise TimError(
                "data.hflip=true mirrors digits into shapes that are not digits",
                "set data.hflip=false for digits",
            )
        if self.hflip and self.name in TOY_NAMES:
            raise TimError(
                f"data.hflip=true has no meaning for the 2-D toy {self.name!r}", "set data.hflip=false"
            )
        if self.name == "digits" and self.image_size not in (0, 8):
            raise TimError(
                f"data.image_size={self.image_size} but the digits are 8x8",
                "set data.image_size=0 or 8 for digits",
            )
        if self.image_size and self.image_size % self.patch_multiple:
            raise TimError(
                f"data.image_size={self.image_size} is not a multiple of data.patch_multiple={self.patch_multiple}",
                "choose a size divisible by the patch multiple",
            )
        if self.min_side > self.max_side:
            raise TimError(
                f"data.min_side={self.min_side} is larger than data.max_side={self.max_side}",
                "set min_side <= max_side",
            )
        if self.name == "shapes" and self.bucketed and self.max_side < self.patch_multiple:
            raise TimError(
                f"data.max_side={self.max_side} is smaller than data.patch_multiple={self.patch_multiple}",
                "raise data.max_side",
            )

    def _check_text(self) -> None:
        if self.text_encoder and self.name not in CAPTIONED:
            raise TimError(
                f"data.text_encoder={self.text_encoder!r} needs captioned data, not data.name={self.name!r}",
                f"use data.name={' or '.join(CAPTIONED)}, or set data.text_encoder=''",
            )
        if self.name == "scenes" and self.channels != 3:
            raise TimError(f"data.channels={self.channels} but the scenes are RGB", "set data.channels=3")
        if self.name == "scenes" and self.hflip:
            raise TimError(
                "data.hflip=true mirrors scenes and breaks their 'left of' / 'right of' captions",
                "set data.hflip=false for scenes",
            )

    def _check_ints(self) -> None:
        positive = {
            "max_text_length": self.max_text_length,
            "patch_multiple": self.patch_multiple,
            "num_images": self.num_images,
            "min_side": self.min_side,
            "max_side": self.max_side,
        }
        for key, value in positive.items():
            if value < 1:
                raise TimError(f"data.{key}={value} must be >= 1", f"set data.{key} to a positive integer")
        non_negative = {
            "image_size": self.image_size,
            "token_budget": self.token_budget,
            "max_pixels": self.max_pixels,
        }
        for key, value in non_negative.items():
            if value < 0:
                raise TimError(
                    f"data.{key}={value} must be >= 0",
                    f"set data.{key} to 0 (automatic) or a positive integer",
                )


@dataclass(frozen=True)
class DataInfo:
    """What a data source delivers; the trainer sizes the model and the sample grids from it.

    Attributes:
        kind: "image" for (C, H, W) items (pixels or latents), "vector" for (D,) items.
        shape: item shape; for bucketed sources the most populated bucket's (C, H, W).
        num_classes: number of class labels; 0 = unlabelled (batches carry no "y").
        value_range: (low, high) bounds of the data, (-1, 1) for pixels; None = unbounded (latents).
        latent_scale: latents only: x = (latent - latent_shift) * latent_scale was applied.
        latent_shift: latents only: see ``latent_scale``.
        autoencoder: latents only: the autoencoder that produced them (name or path), "" otherwise.
        class_names: one name per class (empty when unlabelled).
        num_items: items in one epoch; 0 = unlimited fresh samples (2-D toys).
        sizes: bucketed sources: every bucket's (H, W), sorted; empty otherwise.
        text: captioned sources: a :class:`tim.data.captions.CaptionInfo` (encoder, feature width,
            distinct captions, null-prompt features); None otherwise.
    """

    kind: str
    shape: tuple[int, ...]
    num_classes: int = 0
    value_range: tuple[float, float] | None = (-1.0, 1.0)
    latent_scale: float = 1.0
    latent_shift: float = 0.0
    autoencoder: str = ""
    class_names: tuple[str, ...] = ()
    num_items: int = 0
    sizes: tuple[tuple[int, int], ...] = field(default=())
    text: Any = field(default=None, compare=False, repr=False)

    @property
    def text_dim(self) -> int:
        """Caption feature width D of a captioned source (batches carry "context"); 0 otherwise."""
        return self.text.dim if self.text is not None else 0

    @property
    def labelled(self) -> bool:
        """Whether batches carry class labels ``"y"``."""
        return self.num_classes > 0
