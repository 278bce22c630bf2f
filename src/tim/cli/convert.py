"""``tim convert``: a released TiM checkpoint + its autoencoder (+ text encoder) -> a pipeline folder.

    tim convert --released TiM-XL-2-256.safetensors --preset TiM-XL/2 --autoencoder sd-vae-ft-ema --out pipelines/xl2-256
    tim sample --checkpoint pipelines/xl2-256 --class 207,360 --out samples

The folder holds the network (our layout, strictly checked against the preset: the first
mismatched keys are named), the paper's sampling recipe for that checkpoint
(``tim.generation.RELEASED_RECIPES``, every number cited there), the autoencoder (copied, or
referenced with ``--reference``) and, for TiM-T2I, the text encoder. It is written into a temporary
folder and renamed into place, so ``--out`` never holds a half-written pipeline.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tim.cli.parsing import HelpFormatter
from tim.errors import TimError


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim convert``."""
    from tim.generation import RELEASED_RECIPES

    parser = subparsers.add_parser(
        "convert",
        help="turn a released checkpoint and its autoencoder into a pipeline folder",
        description="Convert a released TiM checkpoint (.safetensors, github.com/WZDTHU/TiM) with its diffusers "
        "autoencoder folder (and text encoder folder for TiM-T2I) into a pipeline folder with the paper's "
        "sampling recipe; then run `tim sample --checkpoint OUT` or load it with TiMPipeline.load(OUT).",
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--released", required=True, metavar="FILE", help="the released .safetensors checkpoint"
    )
    parser.add_argument(
        "--preset",
        required=True,
        choices=sorted(RELEASED_RECIPES),
        help="the checkpoint's architecture (TiM-XL/2: ImageNet-256, TiM-XL/1: ImageNet-512, "
        "TiM-B/4: ablation model, TiM-T2I: text-to-image)",
    )
    parser.add_argument(
        "--autoencoder",
        required=True,
        metavar="DIR",
        help="local diffusers autoencoder folder (sd-vae-ft-ema for 256, dc-ae-f32c32-sana-1.1 otherwise)",
    )
    parser.add_argument(
        "--text-encoder",
        default=None,
        metavar="DIR",
        help="TiM-T2I only: local transformers folder of the caption encoder (gemma-3-1b-it)",
    )
    parser.add_argument(
        "--text-max-length",
        type=int,
        default=None,
        metavar="N",
        help="TiM-T2I only: caption tokens (default: the released 256)",
    )
    parser.add_argument(
        "--class-names", default=None, metavar="FILE", help="optional text file, one class name per line"
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="pipeline folder to write (must be new or empty)"
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="reference the autoencoder/text encoder folders by absolute path instead of copying them",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing pipeline folder at --out"
    )
    parser.set_defaults(run=run)
    return parser


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse a non-empty ``--out`` (before any loading), unless it is a pipeline folder and --overwrite is set."""
    from tim.generation.folders import PIPELINE_NAME

    if out.exists() and not out.is_dir():
        raise TimError(f"--out {out} exists and is a file", "pass a new folder with --out")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise TimError(
                f"--out {out} already exists and is not empty",
                "pass a new folder, or --overwrite to replace a pipeline",
            )
        if not (out / PIPELINE_NAME).is_file():
            raise TimError(
                f"--out {out} is not empty and is not a pipeline folder (--overwrite replaces pipelines only)",
                "pass a new folder with --out",
            )


def read_class_names(path: str | None, num_classes: int) -> list[str]:
    """One name per non-empty line; the count must match the model's classes."""
    if path is None:
        return []
    file = Path(path)
    if not file.is_file():
        raise TimError(
            f"--class-names {file} does not exist", "pass a text file with one class name per line"
        )
    names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    if len(names) != num_classes:
        raise TimError(
            f"--class-names {file} has {len(names)} names but the model has {num_classes} classes",
            "give exactly one name per class, one per line",
        )
    return names


def run(args: argparse.Namespace) -> int:
    """Run ``tim convert`` (see :func:`add_parser` for the options)."""
    from tim.generation import TiMPipeline

    released = Path(args.released)
    if not released.exists():
        raise TimError(
            f"--released {released} does not exist", "pass the path of the downloaded released checkpoint"
        )
    if not released.is_file() or released.suffix != ".safetensors":
        raise TimError(
            f"--released {released} is not a .safetensors file", "pass the downloaded released checkpoint"
        )
    if not Path(args.autoencoder).is_dir():
        raise TimError(
            f"--autoencoder {args.autoencoder} is not a folder",
            "pass the local diffusers autoencoder folder (config.json + weights)",
        )
    if args.text_encoder is not None and not Path(args.text_encoder).is_dir():
        raise TimError(
            f"--text-encoder {args.text_encoder} is not a folder", "pass a local transformers folder"
        )
    out = Path(args.out)
    check_out(out, args.overwrite)
    if args.text_max_length is not None and args.text_max_length < 1:
        raise TimError(
            f"--text-max-length {args.text_max_length} is < 1", "pass a positive number of caption tokens"
        )
    pipe = TiMPipeline.from_released(
        released,
        preset=args.preset,
        autoencoder=args.autoencoder,
        text_encoder=args.text_encoder,
        text_max_length=args.text_max_length,
    )
    if pipe.conditioning == "class":
        pipe.recipe.class_names = read_class_names(args.class_names, pipe.num_classes)
    elif args.class_names is not None:
        raise TimError(
            f"--class-names was given but {args.preset} is not a class-conditioned model",
            "drop --class-names",
        )
    pipe.save_pretrained(out, reference=args.reference)
    r = pipe.recipe
    params = sum(p.numel() for p in pipe.model.parameters()) / 1e6
    ae = pipe.autoencoder
    print(
        f"wrote {out}: {args.preset} ({params:.2f}M parameters), {ae.kind} f{ae.factor} with {ae.latent_channels} "
        f"latent channels ({'referenced' if args.reference else 'copied'}), default {r.height}x{r.width}"
    )
    print(
        f"recipe: {r.steps} step(s), CFG {r.guidance_scale:g} on {tuple(r.guidance_interval)} ({r.interval}), "
        f"stochasticity {r.stochasticity:g}, shift rule {r.shift_rule}, latent scale {r.latent_scale:g}"
    )
    print(
        f"sample with: tim sample --checkpoint {out} --out DIR  (or TiMPipeline.load({str(out)!r}) in Python)"
    )
    return 0
