"""Captioned images: an image folder with captions, and the synthetic scenes, as text batches.

Both sources store every item's caption as an integer id into the list of distinct captions and
reuse the fixed-size (or bucketed) stream of :mod:`tim.data.sources`, so shuffling, rank splits
and exact resume are unchanged (the state is the same plain ints). :class:`CaptionedSource` turns
the ids of a batch into caption features from a :class:`tim.text.TextEncoder`:

``{"x": (B, C, H, W) in [-1, 1], "context": (B, M, D) float32, "context_mask": (B, M) bool}``

with ``M = data.max_text_length`` and ``D`` the encoder's width. Every distinct caption is
encoded once, when the source is built (the encoder's cache serves every later batch); the cost
is in ``info.text.encode_seconds``. The training loop passes every non-``"x"`` key as ``cond``
and ``model.drop_cond`` replaces a caption by the null prompt's features with probability
``train.label_dropout`` (10%, as published) for classifier-free guidance.

Captions of an image folder (``data.name=image_folder`` with ``data.text_encoder`` set):

- ``root/captions.jsonl``: one JSON object per line, ``{"file": "<path relative to root>",
  "caption": "<text>"}``; an image named on several lines is one item per line (several captions);
- otherwise a ``.txt`` sidecar per image with the same stem (``cat.png`` + ``cat.txt``).

A line that is not a JSON object with string ``file`` and ``caption`` is an error naming the line,
and so is a ``file`` that leads out of the data root: an absolute path, one with a ``..`` part, or
one whose resolved path (symbolic links followed) is not inside the resolved ``data.root``. A
captions file can therefore never make training read an image from elsewhere on the machine.
Lines naming missing files or giving an empty caption, images without a caption and unreadable
images are skipped, reported in one warning and counted against ``data.max_bad_fraction`` as the
plain image folder does.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from tim.data.buckets import BucketedSource, group_by_size
from tim.data.config import DataConfig, DataInfo
from tim.data.images import FolderScan, check_one_size, check_skipped, load_images, scan_image_folder
from tim.data.sources import TensorSource, stream_options
from tim.errors import TimError

CAPTIONS_FILE = "captions.jsonl"
DEFAULT_SCENE_SIZE = 32  # scenes are RGB 32x32 by default
SCENE_SEED = (
    0  # the training scenes are render_scenes(..., seed=0): the dataset is fixed, train.seed orders it
)
_SHOWN = 60  # characters of a caption or line shown in a message


@dataclass(frozen=True, eq=False)
class CaptionInfo:
    """What a captioned source tells the model, the samplers and the sample grids.

    Attributes:
        encoder: the text encoder's name or folder, as in ``data.text_encoder``.
        max_length: tokens per caption M (``data.max_text_length``).
        dim: feature width D of the encoder (the model's ``text_dim``).
        captions: the distinct captions, in first-seen order (a caption id indexes this).
        null_context: (M0, D) float32 features of the empty prompt, for ``model.set_null_context``.
        encode_seconds: time spent encoding ``captions`` when the source was built.
        encode: the (cached) TextEncoder: prompts -> ``{"context", "context_mask"}``, e.g. for
            the training sample grids.
    """

    encoder: str
    max_length: int
    dim: int
    captions: tuple[str, ...]
    null_context: Tensor
    encode_seconds: float = 0.0
    encode: Any = None

    def grid_prompts(self, rows: int, per_row: int) -> list[str]:
        """``rows`` captions spread over the list, each repeated ``per_row`` times (one caption per grid row)."""
        count = len(self.captions)
        picks = [self.captions[(k * count) // max(rows, 1)] for k in range(rows)]
        return [caption for caption in picks for _ in range(per_row)]


class CaptionedSource:
    """Wraps a source whose ``"y"`` are caption ids; yields caption features instead (module docstring).

    Args:
        inner: a TensorSource / BucketedSource with ``y`` = caption ids.
        captions: the distinct captions (id -> text).
        encoder: the :class:`tim.text.TextEncoder` (its cache makes repeated captions free).
        info: the DataInfo to report (``info.text`` set).
    """

    def __init__(self, inner: Any, captions: list[str], encoder: Any, info: DataInfo) -> None:
        self.inner, self.captions, self.encoder, self.info = inner, captions, encoder, info
        self.skipped_files: list[tuple[str, str]] = getattr(inner, "skipped_files", [])

    def next_batch(self) -> dict[str, Tensor]:
        """``{"x", "context", "context_mask"}`` of the inner source's next batch."""
        batch = self.inner.next_batch()
        ids = batch.pop("y").tolist()
        cond = self.encoder([self.captions[i] for i in ids])
        return batch | {key: value.cpu() for key, value in cond.items()}

    def batch_captions(self, batch_ids: Tensor) -> list[str]:
        """Caption texts of caption ids (for inspection and tests)."""
        return [self.captions[i] for i in batch_ids.tolist()]

    def state_dict(self) -> dict[str, int]:
        """The inner stream's plain-int position (caption features are a pure function of it)."""
        return self.inner.state_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the inner stream exactly where ``state`` was taken."""
        self.inner.load_state_dict(state)


def caption_ids(captions: list[str]) -> tuple[list[str], list[int]]:
    """Distinct captions in first-seen order, and each item's id into them."""
    index: dict[str, int] = {}
    ids = [index.setdefault(caption, len(index)) for caption in captions]
    return list(index), ids


def make_text_encoder(cfg: DataConfig) -> Any:
    """The TextEncoder that ``data.text_encoder`` and ``data.max_text_length`` name (CPU, float32)."""
    from tim.text import TextEncoder

    return TextEncoder(cfg.text_encoder, max_length=cfg.max_text_length)


def captioned(
    inner: Any, captions: list[str], cfg: DataConfig, info: DataInfo, encoder: Any = None
) -> CaptionedSource:
    """Encode every distinct caption once and wrap ``inner`` (whose ``y`` are ids into ``captions``)."""
    encoder = encoder or make_text_encoder(cfg)
    started = time.perf_counter()
    encoder(captions)  # fills the cache: training batches are cache hits from here on
    seconds = time.perf_counter() - started
    text = CaptionInfo(
        encoder=cfg.text_encoder,
        max_length=encoder.max_length,
        dim=encoder.dim,
        captions=tuple(captions),
        null_context=encoder.null_context().cpu(),
        encode_seconds=seconds,
        encode=encoder,
    )
    return CaptionedSource(inner, captions, encoder, dataclasses.replace(info, text=text))


# ------------------------------------------------------------------------------------------ scenes


def build_scenes_source(
    cfg: DataConfig,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    encoder: Any = None,
) -> Any:
    """The "scenes" source: ``data.num_images`` synthetic scenes (:mod:`tim.data.scenes`) with captions.

    With ``data.text_encoder`` empty the scenes come without captions (an unconditional image source).
    """
    from tim.data.scenes import render_scenes

    size = cfg.image_size or DEFAULT_SCENE_SIZE
    images, captions, _ = render_scenes(cfg.num_images, seed=SCENE_SEED, size=size, split="train")
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))  # (N, 3, H, W) uint8
    distinct, ids = caption_ids(captions)
    info = DataInfo(kind="image", shape=(3, size, size), num_items=len(x))
    # uint8 -> [-1, 1]: x * 2/255 - 1.
    common = stream_options(
        cfg, rank=rank, world_size=world_size, seed=seed, value_scale=2.0 / 255.0, value_offset=-1.0
    )
    if not cfg.text_encoder:
        return TensorSource(x, None, info, batch_size=batch_size, **common)
    inner = TensorSource(x, torch.tensor(ids, dtype=torch.int64), info, batch_size=batch_size, **common)
    return captioned(inner, distinct, cfg, info, encoder)


# ----------------------------------------------------------------------------- captioned image folder


def _shown(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def inside_root(name: str, root: Path, where: str) -> Path:
    """``root / name`` when ``name`` is a relative path that stays inside ``root``, else a one-line TimError.

    Refused: an absolute path, a ``..`` part, and a path whose resolved form (symbolic links
    followed) lies outside the resolved ``root`` (a link inside the root that leads out of it).

    Args:
        name: the path as the captions file gives it.
        root: ``data.root``.
        where: what the error names (the captions file and line).
    """
    relative = Path(name)
    file = root / relative
    try:
        inside = (
            not relative.is_absolute()
            and ".." not in relative.parts
            and file.resolve().is_relative_to(root.resolve())
        )
    except (OSError, ValueError, RuntimeError):  # a NUL byte, a link loop
        inside = False
    if not inside:
        raise TimError(
            f"{where} names {name!r}, which is not inside data.root '{root}'",
            "give each image as a path relative to data.root, without a leading '/', '..' or a "
            "symbolic link leading out of it (copy the image into data.root)",
        )
    return file


def read_captions_file(path: Path, root: Path) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]]]:
    """Parse ``captions.jsonl``.

    Returns:
        ``(pairs, skipped)``: (image file, caption) per usable line, and (file, reason) for lines
        that name files which do not exist or give an empty caption.

    Raises:
        TimError: a line that is not a JSON object with string ``file`` and ``caption``, or whose
            ``file`` is not inside ``root`` (see :func:`inside_root`).
    """
    fix = (
        'write one JSON object per line: {"file": "<image path relative to data.root>", "caption": "<text>"}'
    )
    pairs, missing = [], []
    try:
        lines = path.read_text(
            encoding="utf-8-sig"
        ).splitlines()  # -sig: a BOM from Windows editors is not JSON
    except (OSError, UnicodeDecodeError) as error:
        raise TimError(f"cannot read '{path}' ({type(error).__name__})", "save it as UTF-8 text") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise TimError(
                f"'{path}' line {number} is not JSON ({error.msg}): {_shown(line.strip())!r}", fix
            ) from None
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("file"), str)
            or not isinstance(entry.get("caption"), str)
        ):
            raise TimError(
                f'\'{path}\' line {number} needs string "file" and "caption" keys: {_shown(line.strip())!r}',
                fix,
            )
        file = inside_root(entry["file"], root, f"'{path}' line {number}")
        if not file.is_file():
            missing.append((file, f"named on line {number} of {CAPTIONS_FILE} but does not exist"))
            continue
        if not entry["caption"].strip():  # "" is the CFG null prompt, not a caption
            missing.append((file, f"empty caption on line {number} of {CAPTIONS_FILE}"))
            continue
        pairs.append((file, entry["caption"].strip()))
    return pairs, missing


def caption_pairs(root: Path) -> tuple[list[tuple[Path, str]], list[tuple[Path, str]], int]:
    """(image, caption) pairs of a folder, the skipped files with reasons, and the number of candidates.

    ``captions.jsonl`` wins when present; otherwise each image's ``.txt`` sidecar.
    """
    scan = scan_image_folder(root)
    jsonl = root / CAPTIONS_FILE
    if jsonl.is_file():
        pairs, skipped = read_captions_file(jsonl, root)
        named = {file.resolve() for file, _ in pairs + skipped}  # skipped lines are reported once, not twice
        reason = f"not named in {CAPTIONS_FILE}"
        skipped += [(file, reason) for file in scan.files if file.resolve() not in named]
    else:
        pairs, skipped = [], []
        for file in scan.files:
            sidecar = file.with_suffix(".txt")
            caption = (
                sidecar.read_text(encoding="utf-8", errors="replace").strip() if sidecar.is_file() else ""
            )
            if caption:
                pairs.append((file, caption))
            else:
                skipped.append((file, f"no caption ({sidecar.name} is missing or empty)"))
        if not pairs:
            raise TimError(
                f"no image under '{root}' has a caption",
                f'write {root / CAPTIONS_FILE} (lines of {{"file": ..., "caption": ...}}) '
                "or a .txt file beside each image",
            )
    return pairs, skipped, len(pairs) + len(skipped)


def build_captioned_folder_source(
    cfg: DataConfig,
    *,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    encoder: Any = None,
) -> CaptionedSource:
    """The "image_folder" source with captions (see module docstring); class sub-folders are ignored."""
    root = Path(cfg.root)
    pairs, skipped, total = caption_pairs(root)
    distinct, ids = caption_ids([caption for _, caption in pairs])
    scan = FolderScan(files=[file for file, _ in pairs], labels=ids, class_names=())
    loaded = load_images(scan, cfg)
    loaded.skipped = skipped + loaded.skipped
    check_skipped(loaded, total, cfg)
    if not loaded.images:
        raise TimError(
            f"none of the {total} captioned images under {cfg.root!r} could be used",
            "check that the files are valid images",
        )
    used, ids = caption_ids([distinct[k] for k in loaded.labels])  # captions of unreadable images drop out
    groups = group_by_size(list(zip(loaded.images, ids, strict=True)))
    info = DataInfo(kind="image", shape=(cfg.channels, 0, 0), num_items=len(loaded.images))
    common = stream_options(
        cfg, rank=rank, world_size=world_size, seed=seed, value_scale=2.0 / 255.0, value_offset=-1.0
    )
    if cfg.bucketed:
        inner: Any = BucketedSource.from_config(groups, info, cfg, batch_size=batch_size, **common)
        info = inner.info
    else:
        check_one_size(groups, loaded, cfg)
        (((height, width), (x, y)),) = groups.items()
        info = DataInfo(kind="image", shape=(cfg.channels, height, width), num_items=len(x))
        inner = TensorSource(x, y, info, batch_size=batch_size, **common)
    inner.skipped_files = [(str(f), reason) for f, reason in loaded.skipped]
    return captioned(inner, used, cfg, info, encoder)
