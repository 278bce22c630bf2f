"""``tim autoencoder train``: train the small default autoencoder of the latent path.

``--data`` is an image folder (one class per sub-folder, or images directly in it), ``scenes``
(tim.data.scenes: coloured shapes on black with captions) or ``shapes`` (tim.data.shapes: one
shape on a flat background). The result is a diffusers ``AutoencoderKL`` folder (``save_pretrained``
layout, ``scaling_factor`` / ``shift_factor`` set from the latents) plus ``train_report.json``
with the held-out reconstruction PSNR; use it with ``encode_images_to_latents`` or a pipeline.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from tim.cli.parsing import HelpFormatter
from tim.errors import TimError

SYNTHETIC = ("scenes", "shapes")
HELDOUT_SHARE = 0.1  # image folders: this share (at least 1 image, at most HELDOUT_MAX) is held out
HELDOUT_MAX = 512
SYNTHETIC_HELDOUT = 256  # synthetic data: held-out images rendered from another seed


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim autoencoder`` (one action: ``train``)."""
    parser = subparsers.add_parser(
        "autoencoder",
        help="train the small default autoencoder for latent TiM (offline)",
        description="Train a small diffusers AutoencoderKL (4x down-sampling, 4 latent channels by default) with "
        "an L1 + small KL loss on an image folder or on synthetic data, set its latent scale/shift "
        "from the latents' statistics, save it with save_pretrained (atomically) and report the "
        "reconstruction PSNR on held-out images (printed and in DIR/train_report.json).",
        formatter_class=HelpFormatter,
    )
    actions = parser.add_subparsers(
        title="actions", dest="action", metavar="<action>", parser_class=type(parser)
    )
    actions.required = True
    train = actions.add_parser(
        "train",
        help="train and save an autoencoder",
        formatter_class=HelpFormatter,
        description="Train and save a small AutoencoderKL (see `tim autoencoder --help`).",
    )
    train.add_argument(
        "--data",
        required=True,
        metavar="FOLDER|scenes|shapes",
        help="an image folder, or `scenes` / `shapes` for the synthetic data (rendered here)",
    )
    train.add_argument(
        "--out", required=True, metavar="DIR", help="new (or empty) folder for the autoencoder"
    )
    train.add_argument(
        "--overwrite", action="store_true", help="replace an existing autoencoder folder in --out"
    )
    train.add_argument("--steps", type=int, default=3000, help="maximum optimizer steps")
    train.add_argument(
        "--minutes",
        type=float,
        default=5.0,
        help="stop training after this many minutes (a few minutes reach ~26 dB on 32-px scenes on "
        "2 busy CPU cores; pass a large value to train for --steps)",
    )
    train.add_argument("--batch-size", type=int, default=16, help="images per step")
    train.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (after a 50-step warm-up)")
    train.add_argument(
        "--image-size",
        type=int,
        default=32,
        help="side in pixels: synthetic data is rendered at it, folder images centre-cropped to it",
    )
    train.add_argument("--num-images", type=int, default=4096, help="synthetic training images to render")
    train.add_argument(
        "--widths",
        default="16,32,32",
        metavar="C,C,...",
        help="channels per encoder/decoder block; the down-sampling factor is 2**(blocks - 1)",
    )
    train.add_argument("--latent-channels", type=int, default=4, help="channels of the latent")
    train.add_argument("--seed", type=int, default=0, help="seed of the weights, batches and synthetic data")
    train.add_argument(
        "--threads", type=int, default=None, help="CPU threads for torch (default: idle cores)"
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    """Run ``tim autoencoder train``."""
    from tim.autoencoders import TrainSettings, check_train_settings, check_training_memory, train_autoencoder

    settings = TrainSettings(
        widths=_parse_widths(args.widths),
        latent_channels=args.latent_channels,
        steps=args.steps,
        minutes=args.minutes,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        progress=not args.no_progress,
    )
    check_train_settings(settings, args.image_size)
    # Synthetic data is rendered in memory (training + held-out images); a folder's image count is
    # known only once it is decoded, so for a folder this checks one image and one step.
    in_memory = args.num_images + SYNTHETIC_HELDOUT if args.data in SYNTHETIC else 1
    check_training_memory(settings, args.image_size, in_memory)
    if args.threads is not None and args.threads < 1:
        raise TimError(f"--threads {args.threads} is < 1", "pass a positive thread count")
    out = prepare_autoencoder_dir(args.out, args.overwrite)
    images, heldout, source = load_training_images(args.data, args.image_size, args.num_images, args.seed)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads or _idle_cores())
    try:
        print(
            f"training an f{2 ** (len(settings.widths) - 1)} AutoencoderKL (widths {args.widths}, "
            f"{settings.latent_channels} latent channels) on {len(images)} {source} images of "
            f"{images.shape[-2]}x{images.shape[-1]} for up to {settings.steps} steps"
            + (f" or {settings.minutes:g} min" if settings.minutes else ""),
            flush=True,
        )
        report = train_autoencoder(images, heldout, out, settings, source=source)
    finally:
        torch.set_num_threads(previous)
    print(
        f"held-out PSNR {report['heldout_psnr_db']:.2f} dB (min {report['heldout_psnr_db_min']:.2f}) on "
        f"{report['heldout_images']} images after {report['steps']} steps ({report['seconds'] / 60:.1f} min); "
        f"scaling_factor {report['latents']['scaling_factor']:.4f}, shift_factor {report['latents']['shift_factor']:.4f}"
    )
    print(f"wrote {out}/ (diffusers AutoencoderKL + train_report.json)")
    return 0


def _parse_widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise TimError(
            f"--widths {text!r} is not a comma-separated list of integers", "pass e.g. --widths 16,32,32"
        ) from None
    if len(widths) < 2:
        raise TimError(
            f"--widths {text!r} has {len(widths)} block(s), so the autoencoder would not down-sample",
            "pass at least two widths (three give 4x down-sampling)",
        )
    return widths


def _idle_cores() -> int:
    from tim.experiments.engine import idle_cores

    return idle_cores()


def prepare_autoencoder_dir(out: str | Path, overwrite: bool) -> Path:
    """Check ``--out``: new or empty; with --overwrite an existing autoencoder folder is removed.

    Returns:
        The path (not created: the trainer writes a temporary folder and renames it).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TimError(f"--out {str(out)!r} is a file", "pass a folder path")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise TimError(
                f"--out {str(out)!r} is not empty", "pass a new folder, or --overwrite to replace it"
            )
        if not (out / "config.json").is_file():
            raise TimError(
                f"--out {str(out)!r} is not an autoencoder folder (no config.json), so --overwrite "
                "will not delete it",
                "move it away or pass another --out",
            )
        shutil.rmtree(out)
    return out


def load_training_images(
    data: str, image_size: int, num_images: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(training images, held-out images, description), both (N, 3, S, S) float in [-1, 1]."""
    if image_size < 8:
        raise TimError(f"--image-size {image_size} is too small", "pass 8 or more (a multiple of the factor)")
    if data in SYNTHETIC:
        if num_images < 2:
            raise TimError(f"--num-images {num_images} is < 2", "render at least a few images")
        train = render_synthetic(data, num_images, image_size, seed)
        heldout = render_synthetic(data, SYNTHETIC_HELDOUT, image_size, seed + 1_000_003)  # disjoint seed
        return train, heldout, data
    folder = Path(data)
    if not folder.is_dir():
        raise TimError(
            f"--data {data!r} is neither a folder nor one of {', '.join(SYNTHETIC)}",
            "pass an image folder, `scenes` or `shapes`",
        )
    from tim.data import DataConfig
    from tim.data.images import images_to_unit_range, load_image_items

    loaded, _ = load_image_items(DataConfig(name="image_folder", root=str(folder), image_size=image_size))
    images = torch.stack([images_to_unit_range(image) for image in loaded.images])
    if images.shape[1] != 3:
        raise TimError(f"images in {data!r} have {images.shape[1]} channels", "use RGB images")
    if len(images) < 2:
        raise TimError(f"{data!r} holds {len(images)} usable image(s)", "give at least two (one is held out)")
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    count = min(HELDOUT_MAX, max(1, round(HELDOUT_SHARE * len(images))))
    return images[order[count:]], images[order[:count]], f"image-folder {folder.name}"


def render_synthetic(name: str, num: int, size: int, seed: int) -> torch.Tensor:
    """``num`` synthetic images at ``size`` x ``size``, float in [-1, 1] (N, 3, size, size)."""
    if name == "scenes":
        from tim.data.scenes import MIN_SIZE, scene_tensor

        if size < MIN_SIZE:
            raise TimError(
                f"--image-size {size} is below the scenes' minimum {MIN_SIZE}", f"pass {MIN_SIZE} or more"
            )
        return scene_tensor(num, seed=seed, size=size)
    else:
        from tim.data.shapes import render_shapes

        array = np.stack([image for image, _ in render_shapes([(size, size)], num, seed=seed)])
    return torch.from_numpy(array).float() * (2 / 255) - 1


def read_report(folder: str | Path) -> dict:
    """``train_report.json`` of a trained autoencoder folder ({} when absent)."""
    path = Path(folder) / "train_report.json"
    return json.loads(path.read_text()) if path.is_file() else {}


__all__ = [
    "add_parser",
    "run",
    "load_training_images",
    "prepare_autoencoder_dir",
    "render_synthetic",
    "read_report",
]
