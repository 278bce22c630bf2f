"""``tim sample``: generate images from a run, a pipeline folder or a released checkpoint.

``--checkpoint`` is a training run directory (``tim train --out``), a pipeline folder
(``TiMPipeline.save_pretrained`` / ``tim convert``) or a released ``.safetensors`` file (then
``--preset`` and ``--autoencoder`` too); everything goes through :func:`tim.generation.load_backend`
(:meth:`tim.generation.pipeline.TiMPipeline.load`, or the vector MLP of 2-D toy runs).

For every step count k the job writes (see :mod:`tim.generation.job` for the layout, streaming and
resume): ``steps_<k>.npz`` (or numbered shards ``steps_<k>-<j>.npz`` for large jobs), one PNG per
sample under ``steps_<k>/``, a preview grid ``steps_<k>.png`` and ``index.json``. The ``.npz`` holds
``samples`` (N, C, H, W) float32: the images in the data range [-1, 1] **as generated, not
clipped** (the sampler's output, decoded by the autoencoder for latent models; a few percent of
values usually lie slightly outside [-1, 1]); the PNGs clip to [-1, 1] before mapping to 0..255.
Every step count starts from the SAME noise, so the files differ only by the number of steps.

The argument checks (:mod:`tim.cli.sample_checks`: :func:`parse_steps`, :func:`parse_class_ids`, :func:`check_guidance_scale`,
:func:`check_image_size`, :func:`prepare_output_dir`) are shared with ``tim demo``. This module only
parses and checks arguments; the work is done by :mod:`tim.generation`.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

import torch

from tim.cli.parsing import HelpFormatter

# The argument checks, and the limits they use (imported from here by tim demo and older scripts).
from tim.cli.sample_checks import (  # noqa: F401 - re-exported
    DEFAULT_BATCH_SIZE,
    DEFAULT_PER_CONDITION,
    MAX_GUIDANCE_SCALE,
    MAX_PROMPTS,
    MAX_PROMPTS_BYTES,
    MAX_SAMPLES,
    MAX_SEED,
    MAX_SIDE,
    MAX_STEPS,
    MAX_STOCHASTICITY,
    check_device,
    check_dtype,
    check_guidance_scale,
    check_image_size,
    check_positive,
    check_sampler_options,
    check_seed,
    parse_class_ids,
    parse_interval,
    parse_steps,
    prepare_output_dir,
    read_prompts,
    resolve_counts,
)
from tim.errors import TimError

# The library names this command used to define (tim demo and older scripts import them from here).
from tim.generation.backends import (  # noqa: F401 - re-exported
    Generated,
    PipelineBackend,
    VectorBackend,
    generate,
    weights_fingerprint,
)
from tim.generation.folders import RunInfo, load_for_sampling  # noqa: F401 - re-exported
from tim.samplers import DEFAULT_GUIDANCE_INTERVAL, DEFAULT_GUIDANCE_SCALE, DEFAULT_STOCHASTICITY


def load_backend(args: argparse.Namespace, device: torch.device) -> Any:
    """The backend for ``--checkpoint``: :func:`tim.generation.load_backend` with the command's options."""
    from tim.generation.backends import load_backend as load

    return load(
        args.checkpoint,
        device=device,
        weights=args.weights,
        preset=args.preset,
        autoencoder=args.autoencoder,
        text_encoder=args.text_encoder,
        dtype=args.dtype,
        compile=getattr(args, "compile", False),
    )


# ------------------------------------------------------------------------------------------------
# The command


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim sample``."""
    parser = subparsers.add_parser(
        "sample",
        help="generate images from a run, a pipeline folder or a released checkpoint",
        description="Generate samples with every given step count, all from the same noise. For each k it writes "
        "steps_<k>.npz (samples (N,C,H,W) float32 in the data range [-1, 1], NOT clipped; labels (N,) "
        "int64, -1 when not class-conditioned; prompts (N,) for text models; index (N,) sample numbers; "
        "latents for latent models), numbered shards steps_<k>-<j>.npz instead when N exceeds "
        "--shard-size, one PNG per sample in steps_<k>/ (clipped to [-1, 1]), a preview grid "
        "steps_<k>.png and index.json. Work runs in batches and is written as it goes: memory is "
        "bounded, and rerunning the same command after an interruption resumes where it stopped.",
        formatter_class=HelpFormatter,
    )
    _add_model_options(parser)
    _add_job_options(parser)
    _add_sampler_options(parser)
    _add_output_options(parser)
    parser.set_defaults(run=run)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    """The "model" group: what to load and where to run it."""
    source = parser.add_argument_group("model")
    source.add_argument(
        "--checkpoint",
        required=True,
        metavar="PATH",
        help="a run folder (tim train --out), a pipeline folder (tim convert / save_pretrained), a "
        "bundled model (bundled:scenes, bundled:digits; tim models lists them) or a released "
        ".safetensors file (then also --preset and --autoencoder)",
    )
    source.add_argument(
        "--preset", default=None, help="TiM preset of a released .safetensors file, e.g. TiM-XL/2"
    )
    source.add_argument(
        "--autoencoder",
        default=None,
        metavar="DIR",
        help="local diffusers autoencoder folder (required for a released file; replaces a stored one)",
    )
    source.add_argument(
        "--text-encoder",
        default=None,
        metavar="DIR",
        help="local transformers text-encoder folder or 'minilm' (text models; replaces a stored one)",
    )
    source.add_argument(
        "--weights", choices=("ema", "model"), default="ema", help="which weights of a training run"
    )
    source.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda or cuda:1")
    source.add_argument(
        "--compile",
        action="store_true",
        help="sample through torch.compile (each batch shape compiles once; pays off for long jobs)",
    )
    source.add_argument(
        "--dtype",
        choices=("auto", "fp32", "bf16", "fp16"),
        default="auto",
        help="inference precision: auto = bf16 (fp16 without bf16) on CUDA, fp32 on CPU; half "
        "precision needs a GPU",
    )


def _add_job_options(parser: argparse.ArgumentParser) -> None:
    """The "what to generate" group: step counts, conditions, counts, seed and size."""
    what = parser.add_argument_group("what to generate")
    what.add_argument(
        "--steps",
        default=None,
        metavar="K,K,...",
        help=f"comma-separated step counts in [1, {MAX_STEPS}], e.g. 1,2,4,8 (default: the model's "
        "recipe, or the run's largest sample.steps)",
    )
    what.add_argument(
        "--class",
        dest="class_ids",
        default=None,
        metavar="ID,ID,...",
        help="class ids to sample (class models; default: every class)",
    )
    what.add_argument(
        "--prompt",
        action="append",
        default=None,
        metavar="TEXT",
        help="a caption (text models); repeat for several",
    )
    what.add_argument(
        "--prompts",
        dest="prompts_file",
        default=None,
        metavar="FILE",
        help="text file with one caption per line (blank lines ignored); after any --prompt",
    )
    count = what.add_mutually_exclusive_group()
    count.add_argument(
        "--num",
        type=int,
        default=None,
        metavar="N",
        help="TOTAL samples per step count, spread evenly over the classes or prompts (the first ones "
        "get one more when N does not divide). Give --num, --per-class or --per-prompt; with none of "
        f"them: {DEFAULT_PER_CONDITION} per class or prompt ({DEFAULT_PER_CONDITION} in all when "
        "unconditional)",
    )
    count.add_argument(
        "--per-class", type=int, default=None, metavar="M", help="samples per class (class models)"
    )
    count.add_argument(
        "--per-prompt", type=int, default=None, metavar="M", help="samples per prompt (text models)"
    )
    what.add_argument("--seed", type=int, default=0, help="sample i starts from noise seeded seed + i")
    what.add_argument(
        "--height", type=int, default=None, help="image height in pixels (default: the model's size)"
    )
    what.add_argument(
        "--width", type=int, default=None, help="image width in pixels (default: the model's size)"
    )


def _add_sampler_options(parser: argparse.ArgumentParser) -> None:
    """The sampler group (defaults: the model's recipe)."""
    sampler = parser.add_argument_group("sampler (defaults: the model's recipe)")
    sampler.add_argument(
        "--cfg",
        type=float,
        default=None,
        help=f"classifier-free guidance scale in [0, {MAX_GUIDANCE_SCALE:g}] (1 = none)",
    )
    sampler.add_argument(
        "--guidance-interval",
        default=None,
        metavar="LO,HI",
        help="guide only when LO <= t <= HI (fractions of t_max, 0 <= LO <= HI <= 1)",
    )
    sampler.add_argument(
        "--stochasticity",
        type=float,
        default=None,
        help=f"rho in [0, {MAX_STOCHASTICITY:g}] of the stochastic sampler (0 = deterministic)",
    )


def _add_output_options(parser: argparse.ArgumentParser) -> None:
    """The "output" group: the folder, batching, sharding, PNGs and progress."""
    output = parser.add_argument_group("output")
    output.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="output folder: new or empty, or the folder of an interrupted run of the SAME command "
        "(then it resumes)",
    )
    output.add_argument(
        "--overwrite",
        action="store_true",
        help="start again in a non-empty --out (its files of the same names are replaced)",
    )
    output.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="samples per network batch (bounds memory; checked against free memory before starting)",
    )
    output.add_argument(
        "--shard-size",
        type=int,
        default=None,
        metavar="N",
        help="samples per .npz file (default: as many as fit in 256 MiB of float32, at most 1000)",
    )
    output.add_argument(
        "--no-png",
        dest="png",
        action="store_false",
        help="do not write one PNG per sample (default: write them)",
    )
    output.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar (default: a bar over batches with the ETA, on stderr)",
    )


def run(args: argparse.Namespace) -> int:
    """Run ``tim sample`` (see :func:`add_parser` for the options)."""
    from tim.generation.job import check_job_dir, check_writable_out

    # Everything that can be checked without the model, first (the message must not wait for loading).
    steps_list = None if args.steps is None else parse_steps(args.steps)
    batch_size = check_positive("--batch-size", args.batch_size)
    check_positive("--shard-size", args.shard_size)
    for name in ("num", "per_class", "per_prompt"):
        check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    interval = parse_interval(args.guidance_interval)
    check_sampler_options(args.cfg, args.stochasticity)
    prompts = read_prompts(args.prompt, args.prompts_file)
    for name, value in (("--height", args.height), ("--width", args.width)):
        if value is not None and not 1 <= value <= MAX_SIDE:
            raise TimError(
                f"{name} {value} is outside [1, {MAX_SIDE}]", f"pass {name} between 1 and {MAX_SIDE} pixels"
            )
    device = check_device(args.device)
    check_dtype(args.dtype, device)
    out = Path(args.out)
    check_job_dir(out, args.overwrite)  # nothing is created before the job starts
    check_writable_out(out)
    from tim.training.preemption import EXIT_PREEMPTED, SignalStop, StopRequest

    # SIGTERM/SIGINT stop every phase at once (loading the model, a batch, a file write: every file
    # goes through a temporary that is removed), exit 75: the finished shards stay and the same
    # command resumes. A second signal aborts (the default action).
    phase = {"started": False}
    try:
        with StopRequest(immediate=True):
            return _load_and_run(args, out, device, steps_list, batch_size, interval, prompts, phase)
    except SignalStop as stopped:
        kept = (
            f"the finished shards in {out} are kept"
            if phase["started"]
            else "nothing was written (the model was loading)"
        )
        print(f"stopped on {stopped.signal_name}; {kept}; rerun the same command to resume", file=sys.stderr)
        return EXIT_PREEMPTED


def _load_and_run(
    args: argparse.Namespace,
    out: Path,
    device: torch.device,
    steps_list: list[int] | None,
    batch_size: int | None,
    interval: tuple[float, float] | None,
    prompts: list[str],
    phase: dict[str, bool],
) -> int:
    """Load the model, build the job and run it (under the command's stop request)."""
    from tim.generation.job import Job, default_shard_size, run_job

    backend = load_backend(args, device)
    conditions = _conditions(args, backend, prompts)
    counts = resolve_counts(args.num, args.per_class, args.per_prompt, backend.conditioning, len(conditions))
    height, width = _size(backend, args.height, args.width)
    options, steps_list = _sampler_options(backend, args, interval, steps_list)
    total = sum(counts)
    check_seed(args.seed, total)
    numel = math.prod((3, height, width)) if height else math.prod(backend.noise_shape(None, None))
    shard_size = args.shard_size or default_shard_size(numel)
    identity = {
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "weights": args.weights,
        "preset": args.preset,
        "autoencoder": args.autoencoder,
        "text_encoder": args.text_encoder,
        "dtype": args.dtype,
        "fingerprint": backend.fingerprint(),
        "steps": list(steps_list),
        "conditions": list(conditions),
        "counts": list(counts),
        "seed": args.seed,
        "height": height,
        "width": width,
        "batch_size": min(batch_size, total),
        "shard_size": shard_size,
        "png": args.png,
        **{key: list(value) if isinstance(value, tuple) else value for key, value in options.items()},
    }
    job = Job(
        steps=tuple(steps_list),
        conditions=tuple(conditions),
        counts=counts,
        seed=args.seed,
        batch_size=min(batch_size, total),
        shard_size=shard_size,
        height=height,
        width=width,
        options=options,
        png=args.png,
        identity=identity,
    )
    phase["started"] = True
    try:
        result = run_job(backend, job, out, overwrite=args.overwrite, progress=args.progress, device=device)
    except KeyboardInterrupt as error:
        if type(error) is not KeyboardInterrupt:
            raise  # a stop signal: reported by run()
        print(
            f"interrupted: the finished shards in {out} are kept; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130  # 128 + SIGINT, the shell convention
    _report(result, job, out)
    return 0


def _conditions(args: argparse.Namespace, backend: Any, prompts: list[str]) -> list:
    """Class ids or prompts to sample, checked against the model's conditioning."""
    kind = backend.conditioning
    if prompts and kind != "text":
        fix = "use --class ID,ID,... instead" if kind == "class" else "drop --prompt/--prompts"
        raise TimError(
            f"--prompt/--prompts was given but the model is {'class-conditioned' if kind == 'class' else 'unconditional'}",
            fix,
        )
    if kind == "text":
        if args.class_ids is not None:
            raise TimError(
                "--class was given but this is a text-to-image model", "pass --prompt TEXT or --prompts FILE"
            )
        if not prompts:
            raise TimError(
                "this is a text-to-image model and no prompt was given",
                'pass --prompt "a red circle" (repeatable) or --prompts FILE',
            )
        return prompts
    return parse_class_ids(args.class_ids, backend.num_classes)


def _size(backend: Any, height: int | None, width: int | None) -> tuple[int | None, int | None]:
    """Output size in pixels (None for vectors), checked against the model's size multiple."""
    if backend.kind == "vector":
        if height is not None or width is not None:
            raise TimError(
                "--height/--width were given but the model generates vectors", "drop --height and --width"
            )
        return None, None
    default_h, default_w = backend.default_size()
    height, width = default_h if height is None else height, default_w if width is None else width
    return check_image_size(height, width, backend.pipe.model.config.patch_size, backend.pipe.factor)


def _sampler_options(
    backend: Any, args: argparse.Namespace, interval: tuple[float, float] | None, steps_list: list[int] | None
) -> tuple[dict[str, Any], list[int]]:
    """Sampler options with the model's defaults filled in, and the step counts."""
    if backend.kind == "image":
        recipe = backend.pipe.recipe
        defaults = {
            "guidance_scale": recipe.guidance_scale,
            "guidance_interval": tuple(recipe.guidance_interval),
            "stochasticity": recipe.stochasticity,
        }
        default_steps = [recipe.steps]
    else:
        defaults = {
            "guidance_scale": DEFAULT_GUIDANCE_SCALE,
            "guidance_interval": DEFAULT_GUIDANCE_INTERVAL,
            "stochasticity": DEFAULT_STOCHASTICITY,
        }
        default_steps = [max(backend.info.default_steps)] if backend.info.default_steps else [1]
    given = {"guidance_scale": args.cfg, "guidance_interval": interval, "stochasticity": args.stochasticity}
    options = {key: defaults[key] if value is None else value for key, value in given.items()}
    check_guidance_scale(
        options["guidance_scale"],
        backend.num_classes
        if backend.conditioning == "class"
        else (1 if backend.conditioning == "text" else 0),
    )
    return options, steps_list or default_steps


def _report(result: Any, job: Any, out: Path) -> None:
    """Print one line per step count and a summary."""
    for steps in job.steps:
        record = result.index["steps"][str(steps)]
        files = (
            job.npz_name(steps, 0)
            if job.num_shards == 1
            else f"steps_{steps:03d}-*.npz ({job.num_shards} shards)"
        )
        print(f"{steps:4d} steps (NFE {record['nfe']}): {out / record['grid']}, {files}")
    resumed = f", resumed after {result.resumed} finished shard(s)" if result.resumed else ""
    if result.generated == 0 and result.resumed:
        print(f"{out} already holds this job, complete; nothing to do")
    print(f"wrote {result.generated:,} samples ({job.total:,} per step count) to {out}{resumed}")
