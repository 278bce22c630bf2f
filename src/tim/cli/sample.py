"""``tim sample``: generate from a trained run with any list of step counts.

For every step count k it writes ``steps_<k>.png`` (a grid, one row per class) and ``steps_<k>.npz``
with ``samples`` (N, C, H, W) float32 in the data's range ([-1, 1] for images) and ``labels`` (N,)
int64 (-1 for an unconditional model). Every step count starts from the SAME noise, so the files
differ only by the number of steps.

The argument checks here (:func:`parse_steps`, :func:`parse_class_ids`, :func:`check_guidance_scale`,
:func:`check_image_size`, :func:`prepare_output_dir`) are shared with ``tim demo``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tim.cli.main import HelpFormatter
from tim.errors import TimError


def parse_steps(text: str) -> list[int]:
    """Parse a comma-separated list of step counts such as ``"1,2,4"``.

    Args:
        text: the command-line value.

    Returns:
        The step counts, each >= 1, in the given order, duplicates removed.
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise TimError(f"--steps is empty ({text!r})", "pass step counts such as --steps 1,2,4")
    steps: list[int] = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            raise TimError(f"--steps value {item!r} is not an integer",
                           "pass whole step counts such as --steps 1,2,4") from None
        if value < 1:
            raise TimError(f"--steps value {value} is < 1", "every step count must be at least 1")
        if value not in steps:
            steps.append(value)
    return steps


def parse_class_ids(text: str | None, num_classes: int) -> list[int]:
    """Parse ``--class 3,7`` against the model's number of classes.

    Args:
        text: the command-line value, or None for "every class" (none for an unconditional model).
        num_classes: classes the model was trained on (0 = unconditional).

    Returns:
        The class ids; ``[]`` means unconditional sampling.
    """
    if text is None:
        return list(range(num_classes))
    if num_classes == 0:
        raise TimError("--class was given but the model is unconditional", "drop --class")
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise TimError(f"--class is empty ({text!r})", f"pass class ids in [0, {num_classes - 1}] such as --class 3,7")
    ids: list[int] = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            raise TimError(f"--class value {item!r} is not an integer",
                           f"pass class ids in [0, {num_classes - 1}]") from None
        if not 0 <= value < num_classes:
            raise TimError(f"--class id {value} is out of range for a model with {num_classes} classes",
                           f"pass class ids in [0, {num_classes - 1}]")
        ids.append(value)
    return ids


def check_guidance_scale(scale: float, num_classes: int) -> float:
    """Check a classifier-free guidance scale (1 = no guidance).

    Args:
        scale: the ``--cfg`` value.
        num_classes: classes of the model (0 = unconditional, which cannot be guided).

    Returns:
        ``scale`` unchanged.
    """
    if not np.isfinite(scale) or scale < 0:
        raise TimError(f"--cfg {scale} is negative or not finite", "pass a guidance scale >= 0 (1 = no guidance)")
    if scale != 1.0 and num_classes == 0:
        raise TimError(f"--cfg {scale} needs a class-conditional model but this one is unconditional",
                       "use --cfg 1")
    return scale


def check_image_size(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Check a sampling resolution against the model's patch size.

    Args:
        height: image height in pixels (or latent cells).
        width: image width.
        patch_size: the model's patch size p; the transformer needs H and W divisible by p.

    Returns:
        ``(height, width)`` unchanged.
    """
    if height < 1 or width < 1:
        raise TimError(f"image size {height}x{width} is not positive", "pass --height and --width >= 1")
    if height % patch_size or width % patch_size:
        raise TimError(f"image size {height}x{width} is not divisible by the patch size {patch_size}",
                       f"pass --height and --width that are multiples of {patch_size}")
    return height, width


def prepare_output_dir(out: str | Path, overwrite: bool) -> Path:
    """Create the output folder, refusing to mix new files into an old, non-empty one.

    Args:
        out: the ``--out`` folder.
        overwrite: allow an existing non-empty folder (its files of the same names are replaced).

    Returns:
        The folder, which exists afterwards.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TimError(f"--out {out} exists and is a file", "pass a folder path with --out")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise TimError(f"--out {out} already exists and is not empty",
                       "pass another --out folder or add --overwrite to replace its files")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TimError(f"cannot create --out {out} ({error.strerror})", "pass a writable folder") from None
    return out


@dataclass(frozen=True)
class Generated:
    """Samples for one step count."""

    steps: int
    samples: torch.Tensor  # (N, *data_shape) float32, data range
    labels: torch.Tensor  # (N,) int64, -1 for unconditional
    nfe: int  # network evaluations per sample


@torch.no_grad()
def generate(model: torch.nn.Module, path, data_shape: Sequence[int], steps_list: Sequence[int], *,
             class_ids: Sequence[int], per_class: int, guidance_scale: float = 1.0, seed: int = 0,
             batch_size: int = 500, **sampler_options) -> list[Generated]:
    """Sample ``per_class`` items for each class with every step count, from the same noise.

    Args:
        model: the network F(x_t, t, r, **cond), in eval mode.
        path: the :class:`tim.paths.Path` the model was trained with.
        data_shape: shape of one sample, e.g. (1, 8, 8) or (2,).
        steps_list: step counts to sample with.
        class_ids: classes to sample (rows of the grids); empty = unconditional.
        per_class: samples per class (or in total when unconditional).
        guidance_scale: classifier-free guidance scale (1 = none).
        seed: seeds the noise and any sampler randomness.
        batch_size: samples per network call (bounds memory).
        **sampler_options: passed on to :func:`tim.samplers.sample` (e.g. guidance_interval, shift).

    Returns:
        One :class:`Generated` per step count, in order; sample i has label ``labels[i]``.
    """
    from tim.samplers import sample

    device = next(model.parameters()).device
    labels = (torch.tensor(class_ids, dtype=torch.long).repeat_interleave(per_class) if class_ids
              else torch.full((per_class,), -1, dtype=torch.long))
    noise = torch.randn((len(labels), *data_shape), generator=torch.Generator().manual_seed(seed))
    results = []
    for steps in steps_list:
        chunks, nfe = [], 0
        generator = torch.Generator(device=device).manual_seed(seed + 1)  # for stochastic samplers
        for start in range(0, len(labels), batch_size):
            y = labels[start:start + batch_size].to(device)
            cond = {"y": y} if class_ids else {}
            uncond = model.null_cond(cond) if class_ids and guidance_scale != 1.0 else None
            result = sample(model, noise[start:start + batch_size].to(device), path=path, steps=steps, cond=cond,
                            uncond=uncond, guidance_scale=guidance_scale, generator=generator, **sampler_options)
            chunks.append(result.x.float().cpu())
            nfe = result.nfe
        samples = torch.cat(chunks)
        if not torch.isfinite(samples).all():
            raise TimError(f"sampling with {steps} steps produced NaN or Inf",
                           "check the checkpoint (was training stable?) and the guidance scale")
        results.append(Generated(steps, samples, labels.clone(), nfe))
    return results


def write_outputs(generated: Sequence[Generated], out: Path, *, nrow: int, scale: int = 4) -> list[Path]:
    """Write ``steps_<k>.png`` and ``steps_<k>.npz`` for every step count.

    Args:
        generated: from :func:`generate`.
        out: output folder.
        nrow: grid columns (samples per class).
        scale: nearest-neighbour upsampling of the PNG grids.

    Returns:
        The written files.
    """
    from tim import viz

    written = []
    for item in generated:
        stem = out / f"steps_{item.steps:03d}"
        np.savez(stem.with_suffix(".npz"), samples=item.samples.numpy().astype(np.float32),
                 labels=item.labels.numpy().astype(np.int64))
        if item.samples.ndim == 4:
            viz.save_grid(item.samples, stem.with_suffix(".png"), nrow=nrow, scale=scale)
        else:
            viz.scatter({f"{item.steps} steps": item.samples}, stem.with_suffix(".png"))
        written += [stem.with_suffix(".npz"), stem.with_suffix(".png")]
    return written


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim sample``."""
    parser = subparsers.add_parser(
        "sample", help="generate from a trained run with several step counts",
        description="Generate samples from a training run with every given step count (same noise for all). "
                    "Writes steps_<k>.png (one row per class) and steps_<k>.npz (samples (N,C,H,W) float32 in the "
                    "data range, labels (N,) int64, -1 when unconditional) for each k.",
        formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="DIR", help="run folder written by `tim train`")
    parser.add_argument("--steps", required=True, type=str, metavar="K,K,...",
                        help="comma-separated step counts, each >= 1, e.g. 1,2,4,8")
    parser.add_argument("--class", dest="class_ids", default=None, metavar="ID,ID,...",
                        help="class ids to sample (default: every class of a class-conditional model)")
    parser.add_argument("--cfg", type=float, default=1.0, help="classifier-free guidance scale (1 = none, >= 0)")
    parser.add_argument("--guidance-interval", default="0,1", metavar="LO,HI",
                        help="guide only when LO <= t <= HI (fractions of t_max)")
    parser.add_argument("--stochasticity", type=float, default=0.0,
                        help="rho of the stochastic transition sampler (0 = deterministic)")
    parser.add_argument("--num", type=int, default=8, help="samples per class (in total if unconditional)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise; same seed -> same samples")
    parser.add_argument("--height", type=int, default=None, help="image height (default: the training size)")
    parser.add_argument("--width", type=int, default=None, help="image width (default: the training size)")
    parser.add_argument("--weights", choices=("ema", "model"), default="ema", help="which weights to sample with")
    parser.add_argument("--batch-size", type=int, default=500, help="samples per network call")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (must be new or empty)")
    parser.add_argument("--overwrite", action="store_true", help="allow a non-empty --out (files are replaced)")
    parser.set_defaults(run=run)
    return parser


def _parse_interval(text: str) -> tuple[float, float]:
    try:
        low, high = (float(item) for item in text.split(","))
    except ValueError:
        raise TimError(f"--guidance-interval {text!r} is not two numbers", "pass LO,HI such as 0,1") from None
    if not 0.0 <= low <= high <= 1.0:
        raise TimError(f"--guidance-interval {text!r} is not 0 <= LO <= HI <= 1", "pass LO,HI such as 0,0.7")
    return low, high


def _check_positive(name: str, value: int) -> int:
    if value < 1:
        raise TimError(f"{name} {value} is < 1", f"pass {name} >= 1")
    return value


@dataclass(frozen=True)
class RunInfo:
    """What sampling needs to know about a trained run besides its weights."""

    path: object  # the tim.paths.Path the run was trained with
    num_classes: int  # 0 = unconditional
    data_shape: tuple[int, ...]  # one training item, e.g. (1, 8, 8) or (2,)
    patch_size: int  # 1 for vector models


def load_for_sampling(run_dir: str | Path, weights: str = "ema", device: str = "cpu") -> tuple[torch.nn.Module, RunInfo]:
    """Load a run's network (eval mode) and the facts sampling needs.

    Args:
        run_dir: folder written by ``tim train`` / ``tim demo``.
        weights: "ema" or "model".
        device: torch device for the network.

    Returns:
        ``(model, info)``.
    """
    from tim.paths import build_path
    from tim.training import load_run

    if not Path(run_dir).is_dir():
        raise TimError(f"--checkpoint {run_dir} is not a folder", "pass the run folder written by `tim train`")
    model, cfg = load_run(run_dir, which=weights, device=device)
    config = model.config
    conditional = getattr(config, "conditioning", "class") == "class"
    num_classes = config.num_classes if conditional else 0
    if hasattr(config, "patch_size"):  # TiM: images (C, H, W); any H, W divisible by p work
        shape, patch = (config.in_channels, config.input_size, config.input_size), config.patch_size
    else:  # TiMMLP: vectors (D,)
        shape, patch = (config.dim,), 1
    return model, RunInfo(build_path(cfg.path.name, **cfg.path.options), num_classes, shape, patch)


def check_device(name: str) -> torch.device:
    """Parse ``--device`` and check that this machine has it (before any checkpoint is loaded)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TimError(f"--device {name!r} is not a torch device", "pass e.g. --device cpu or --device cuda") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TimError(f"--device {name} was requested but no CUDA device is available", "pass --device cpu")
    return device


def run(args: argparse.Namespace) -> int:
    """Run ``tim sample`` (see :func:`add_parser` for the options)."""
    steps_list = parse_steps(args.steps)
    per_class = _check_positive("--num", args.num)
    batch_size = _check_positive("--batch-size", args.batch_size)
    interval = _parse_interval(args.guidance_interval)
    if args.stochasticity < 0:
        raise TimError(f"--stochasticity {args.stochasticity} is negative", "pass a value >= 0 (0 = deterministic)")
    if args.cfg < 0:  # checked before loading so the message does not wait for the checkpoint
        check_guidance_scale(args.cfg, 1)
    check_device(args.device)
    model, info = load_for_sampling(args.checkpoint, weights=args.weights, device=args.device)
    class_ids = parse_class_ids(args.class_ids, info.num_classes)
    guidance_scale = check_guidance_scale(args.cfg, info.num_classes)
    data_shape = _sample_shape(info, args.height, args.width)
    out = prepare_output_dir(args.out, args.overwrite)

    generated = generate(model, info.path, data_shape, steps_list, class_ids=class_ids, per_class=per_class,
                         guidance_scale=guidance_scale, seed=args.seed, batch_size=batch_size,
                         guidance_interval=interval, stochasticity=args.stochasticity)
    written = write_outputs(generated, out, nrow=per_class if class_ids else min(per_class, 16))
    for item in generated:
        print(f"{item.steps:4d} steps (NFE {item.nfe}): {out / f'steps_{item.steps:03d}.png'}")
    print(f"wrote {len(written)} files to {out}")
    return 0


def _sample_shape(info: RunInfo, height: int | None, width: int | None) -> tuple[int, ...]:
    """The shape of one sample: the training shape, or the requested image size."""
    if len(info.data_shape) != 3:
        if height is not None or width is not None:
            raise TimError("--height/--width were given but the model generates vectors", "drop --height and --width")
        return info.data_shape
    height = info.data_shape[1] if height is None else height
    width = info.data_shape[2] if width is None else width
    return (info.data_shape[0], *check_image_size(height, width, info.patch_size))
