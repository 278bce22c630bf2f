"""``tim sample``: generate images from a run, a pipeline folder or a released checkpoint.

``--checkpoint`` is a training run directory (``tim train --out``), a pipeline folder
(``TiMPipeline.save_pretrained`` / ``tim convert``) or a released ``.safetensors`` file (then
``--preset`` and ``--autoencoder`` too); everything goes through :meth:`tim.pipeline.TiMPipeline.load`,
except runs of the vector MLP (2-D toys), which the pipeline does not cover and which are sampled
with :func:`tim.samplers.sample` directly.

For every step count k the job writes (see :mod:`tim.cli.sample_job` for the layout, streaming and
resume): ``steps_<k>.npz`` (or numbered shards ``steps_<k>-<j>.npz`` for large jobs), one PNG per
sample under ``steps_<k>/``, a preview grid ``steps_<k>.png`` and ``index.json``. The ``.npz`` holds
``samples`` (N, C, H, W) float32: the images in the data range [-1, 1] **as generated, not
clipped** (the sampler's output, decoded by the autoencoder for latent models; a few percent of
values usually lie slightly outside [-1, 1]); the PNGs clip to [-1, 1] before mapping to 0..255.
Every step count starts from the SAME noise, so the files differ only by the number of steps.

The argument checks here (:func:`parse_steps`, :func:`parse_class_ids`, :func:`check_guidance_scale`,
:func:`check_image_size`, :func:`prepare_output_dir`) and :func:`generate` are shared with ``tim demo``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tim.cli.main import HelpFormatter
from tim.errors import TimError
from tim.samplers import MAX_STEPS  # the one step cap, shared with run configs and pipeline recipes

# Limits of the command line (every parameter with a range is checked before any work).
MAX_GUIDANCE_SCALE = 30.0  # 10x the largest CFG scale the paper uses (3.0 at 512, published sampling scripts)
MAX_STOCHASTICITY = 1.0  # rho = 1 is the full reverse SDE (noise scale rho * alpha_t, paper App. A.3)
MAX_SIDE = 16384  # pixels per side: 4x the largest size the paper samples (4096, arXiv 2509.04394, App. C.2)
MAX_SAMPLES = 10_000_000  # per step count: 200 FID sets of 50,000; more is almost surely a typo
MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; sample i uses seed + i
DEFAULT_PER_CONDITION = 8  # samples per class / prompt (in total when unconditional) if no count is given
DEFAULT_BATCH_SIZE = 64  # samples per network batch (a fixed default: a resumed job must batch the same way)


def parse_steps(text: str, max_steps: int = MAX_STEPS) -> list[int]:
    """Parse a comma-separated list of step counts such as ``"1,2,4"``.

    Args:
        text: the command-line value.
        max_steps: the largest allowed count (:data:`MAX_STEPS`).

    Returns:
        The step counts, each in [1, max_steps], in the given order, duplicates removed.
    """
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise TimError(f"--steps is empty ({text!r})", "pass step counts such as --steps 1,2,4")
    steps: list[int] = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            raise TimError(
                f"--steps value {item!r} is not an integer", "pass whole step counts such as --steps 1,2,4"
            ) from None
        if value < 1:
            raise TimError(f"--steps value {value} is < 1", "every step count must be at least 1")
        if value > max_steps:
            raise TimError(
                f"--steps value {value} is above the maximum of {max_steps}",
                f"pass step counts in [1, {max_steps}] (quality stops improving long before)",
            )
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
        raise TimError(
            f"--class is empty ({text!r})", f"pass class ids in [0, {num_classes - 1}] such as --class 3,7"
        )
    ids: list[int] = []
    for item in items:
        try:
            value = int(item)
        except ValueError:
            raise TimError(
                f"--class value {item!r} is not an integer", f"pass class ids in [0, {num_classes - 1}]"
            ) from None
        if not 0 <= value < num_classes:
            raise TimError(
                f"--class id {value} is out of range for a model with {num_classes} classes",
                f"pass class ids in [0, {num_classes - 1}]",
            )
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
        raise TimError(
            f"--cfg {scale} is negative or not finite", "pass a guidance scale >= 0 (1 = no guidance)"
        )
    if scale != 1.0 and num_classes == 0:
        raise TimError(
            f"--cfg {scale} needs a class-conditional model but this one is unconditional", "use --cfg 1"
        )
    return scale


def check_image_size(height: int, width: int, patch_size: int, factor: int = 1) -> tuple[int, int]:
    """Check a sampling resolution against the model's patch size (times the autoencoder's factor).

    Args:
        height: image height in pixels.
        width: image width.
        patch_size: the model's patch size p; the transformer needs latent H and W divisible by p.
        factor: the autoencoder's down-sampling (1 for pixel-space models).

    Returns:
        ``(height, width)`` unchanged.
    """
    multiple = patch_size * factor
    if height < 1 or width < 1:
        raise TimError(f"image size {height}x{width} is not positive", "pass --height and --width >= 1")
    if height % multiple or width % multiple:
        what = f"the patch size {patch_size}" + (f" x the autoencoder factor {factor}" if factor > 1 else "")
        raise TimError(
            f"image size {height}x{width} is not divisible by {what}",
            f"pass --height and --width that are multiples of {multiple}",
        )
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
        raise TimError(
            f"--out {out} already exists and is not empty",
            "pass another --out folder or add --overwrite to replace its files",
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise TimError(f"cannot create --out {out} ({error.strerror})", "pass a writable folder") from None
    return out


MAX_PROMPTS_BYTES = 10 * 2**20  # a --prompts file larger than this is not a caption list
MAX_PROMPTS = 100_000  # prompts per job (x samples per prompt); more is almost surely a mistake


def read_prompts(prompts: Sequence[str] | None, prompts_file: str | None) -> list[str]:
    """The prompts of ``--prompt`` (repeatable) followed by those of ``--prompts FILE``.

    Args:
        prompts: the ``--prompt`` values (None when not given).
        prompts_file: a UTF-8 text file with one prompt per line; blank lines are ignored. It must
            be a regular file or a pipe (``/dev/stdin``, ``<(...)``) and is read up to
            :data:`MAX_PROMPTS_BYTES` bytes and :data:`MAX_PROMPTS` prompts, so ``/dev/zero`` or a
            huge file is refused instead of read without end.

    Returns:
        The prompts in order (may be empty when neither option was given).
    """
    found = [text.strip() for text in prompts or []]
    if any(not text for text in found):
        raise TimError("--prompt is empty", 'pass a caption such as --prompt "a red circle"')
    if prompts_file is not None:
        found += _read_prompts_file(Path(prompts_file))
    if len(found) > MAX_PROMPTS:
        raise TimError(
            f"{len(found):,} prompts are more than the limit of {MAX_PROMPTS:,} per job",
            "split the prompts over several jobs",
        )
    return found


def _read_prompts_file(path: Path) -> list[str]:
    """The non-blank lines of a bounded ``--prompts`` file (see :func:`read_prompts`)."""
    import stat

    fix = "pass a UTF-8 text file with one prompt per line"
    try:
        mode = path.stat().st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            kind = "a folder" if stat.S_ISDIR(mode) else "a device or socket"
            raise TimError(f"--prompts file {path} is {kind}, not a regular file or a pipe", fix)
        with open(path, "rb") as handle:
            data = handle.read(MAX_PROMPTS_BYTES + 1)
    except FileNotFoundError:
        raise TimError(f"--prompts file {path} does not exist", fix) from None
    except OSError as error:
        raise TimError(f"--prompts file {path} cannot be read ({error.strerror})", fix) from None
    if len(data) > MAX_PROMPTS_BYTES:
        raise TimError(
            f"--prompts file {path} is larger than the limit of {MAX_PROMPTS_BYTES // 2**20} MiB",
            f"split it into files of at most {MAX_PROMPTS:,} prompts",
        )
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise TimError(f"--prompts file {path} is not UTF-8 text", fix) from None
    from_file = [line.strip() for line in lines if line.strip()]
    if not from_file:
        raise TimError(
            f"--prompts file {path} has no prompts (only blank lines)", "write one prompt per line"
        )
    return from_file


def resolve_counts(
    num: int | None, per_class: int | None, per_prompt: int | None, conditioning: str, num_conditions: int
) -> tuple[int, ...]:
    """Samples per condition from ``--num`` (total) or ``--per-class`` / ``--per-prompt``.

    Args:
        num: ``--num``, the total per step count, spread as evenly as possible over the conditions
            (the first ones get one more when it does not divide).
        per_class: ``--per-class`` (class models).
        per_prompt: ``--per-prompt`` (text models).
        conditioning: "class", "text" or "none".
        num_conditions: requested classes or prompts (0 when unconditional).

    Returns:
        Samples per condition (one entry when unconditional).
    """
    from tim.cli.sample_job import split_count

    given = [
        name
        for name, value in (("--num", num), ("--per-class", per_class), ("--per-prompt", per_prompt))
        if value is not None
    ]
    if len(given) > 1:
        raise TimError(
            f"{' and '.join(given)} were both given",
            "pass --num (the total) or the per-condition count, not both",
        )
    wrong = {"class": ("--per-prompt", "--per-class"), "text": ("--per-class", "--per-prompt")}.get(
        conditioning
    )
    if conditioning == "none" and (per_class is not None or per_prompt is not None):
        raise TimError(
            f"{given[0]} was given but the model is unconditional", "pass --num (the number of samples)"
        )
    if wrong and given and given[0] == wrong[0]:
        raise TimError(
            f"{wrong[0]} was given but this is a {conditioning}-conditioned model",
            f"pass {wrong[1]} or --num",
        )
    value = next((v for v in (num, per_class, per_prompt) if v is not None), None)
    if value is not None and value < 1:
        raise TimError(f"{given[0]} {value} is < 1", f"pass {given[0]} >= 1")
    if value is not None and value > MAX_SAMPLES:
        raise TimError(f"{given[0]} {value} is above the maximum of {MAX_SAMPLES:,}", "pass a smaller count")
    groups = max(1, num_conditions)
    if num is None:
        counts = (value or DEFAULT_PER_CONDITION,) * groups
        if sum(counts) > MAX_SAMPLES:
            raise TimError(
                f"{given[0]} {value} x {groups} conditions is above the maximum of {MAX_SAMPLES:,} samples",
                "pass a smaller count",
            )
        return counts
    if num < groups:
        what = "classes" if conditioning == "class" else "prompts"
        raise TimError(
            f"--num {num} is fewer than the {groups} requested {what}",
            f"pass --num >= {groups}, or fewer {what}",
        )
    return split_count(num, groups)


def check_seed(seed: int, total: int) -> int:
    """Check ``--seed``: sample i uses seed + i, which must fit a 64-bit generator seed."""
    if seed < 0 or seed + total - 1 > MAX_SEED:
        raise TimError(
            f"--seed {seed} is outside [0, 2^63 - 1 - N] for N = {total} samples",
            "pass a seed such as --seed 0",
        )
    return seed


def check_sampler_options(cfg: float | None, stochasticity: float | None) -> None:
    """Range checks of ``--cfg`` and ``--stochasticity`` (before any loading; the interval: _parse_interval)."""
    if cfg is not None and not (math.isfinite(cfg) and cfg >= 0):
        raise TimError(
            f"--cfg {cfg} is negative or not finite", "pass a guidance scale >= 0 (1 = no guidance)"
        )
    if cfg is not None and cfg > MAX_GUIDANCE_SCALE:
        raise TimError(
            f"--cfg {cfg} is above the maximum of {MAX_GUIDANCE_SCALE:g}",
            f"pass a guidance scale in [0, {MAX_GUIDANCE_SCALE:g}] such as --cfg 1.5",
        )
    if stochasticity is not None and stochasticity < 0:
        raise TimError(
            f"--stochasticity {stochasticity} is negative", "pass a value >= 0 (0 = deterministic)"
        )
    if stochasticity is not None and not (
        math.isfinite(stochasticity) and stochasticity <= MAX_STOCHASTICITY
    ):
        raise TimError(
            f"--stochasticity {stochasticity} is outside [0, {MAX_STOCHASTICITY:g}]",
            "pass a value in [0, 1] such as 0.2 (the paper's); 0 = deterministic",
        )


def check_device(name: str) -> torch.device:
    """Parse ``--device`` and check that this machine has it (before any checkpoint is loaded)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise TimError(
            f"--device {name!r} is not a torch device", "pass e.g. --device cpu or --device cuda"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise TimError(
                f"--device {name} was requested but no CUDA device is available", "pass --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise TimError(
                f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                f"pass --device cuda:0 ... cuda:{torch.cuda.device_count() - 1}",
            )
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise TimError(f"--device {name} was requested but MPS is not available", "pass --device cpu")
    elif device.type != "cpu":
        raise TimError(f"--device {name} cannot run sampling", "pass --device cpu or --device cuda")
    return device


def check_dtype(name: str, device: torch.device) -> str:
    """``--dtype``: auto (bf16/fp16 on CUDA, fp32 elsewhere), fp32, bf16, fp16 (half only on a GPU)."""
    if name in ("bf16", "fp16") and device.type != "cuda":
        raise TimError(
            f"--dtype {name} needs a CUDA GPU but --device is {device}",
            "use --dtype fp32 (or auto) on the CPU",
        )
    return name


# ------------------------------------------------------------------------------------------------
# Backends: what tim.cli.sample_job runs (a TiMPipeline, or a vector run's network)


class PipelineBackend:
    """A :class:`tim.pipeline.TiMPipeline` as a sampling-job backend (images)."""

    kind = "image"

    def __init__(self, pipe: Any) -> None:
        self.pipe = pipe
        self.conditioning = pipe.conditioning
        self.num_classes = pipe.num_classes if self.conditioning == "class" else 0

    def default_size(self) -> tuple[int, int]:
        """(height, width) in pixels when --height/--width are not given."""
        return tuple(self.pipe.default_size)

    def noise_shape(self, height: int | None, width: int | None) -> tuple[int, ...]:
        """One sample's noise in latent (model-input) units."""
        factor = self.pipe.factor
        return (self.pipe.model.config.in_channels, height // factor, width // factor)

    def fingerprint(self) -> str:
        """Digest of the network weights."""
        return weights_fingerprint(self.pipe.model)

    def batch_bytes(self, batch_size: int, height: int | None, width: int | None, guided: bool) -> int:
        """The pipeline's own estimate (network + sampler state) plus decoding the batch."""
        from tim.pipeline import estimate_generation_bytes

        pipe = self.pipe
        h, w = height // pipe.factor, width // pipe.factor
        context = pipe.recipe.text_max_length if self.conditioning == "text" else 0
        net = estimate_generation_bytes(
            pipe.model.config,
            batch_size,
            h,
            w,
            guided=guided,
            context_length=context,
            dtype_bytes=torch.finfo(pipe.dtype).bits // 8,
        )
        decode = 0
        if pipe.autoencoder is not None and hasattr(pipe.autoencoder, "decode_bytes"):
            decode = int(
                pipe.autoencoder.decode_bytes(height, width)
            )  # the pipeline decodes one image at a time
        return max(net, decode)

    def generate(
        self,
        indices: range,
        *,
        seed: int,
        labels: torch.Tensor | None,
        prompts: list[str] | None,
        steps: int,
        height: int | None,
        width: int | None,
        options: dict[str, Any],
    ) -> Any:
        """One batch through the pipeline: latents, then (unclipped) pixels in [-1, 1]."""
        from tim.cli.sample_job import BatchOutput

        pipe = self.pipe
        out = pipe(
            class_labels=None if labels is None else labels.tolist(),
            prompt=prompts,
            num_images_per_prompt=1 if labels is not None or prompts is not None else len(indices),
            steps=steps,
            height=height,
            width=width,
            seed=seed + indices.start,
            batch_size=len(indices),
            output_type="latent",
            **options,
        )
        x = out.images.float()  # model units; pixels for a pixel-space model
        latents = None
        if pipe.autoencoder is not None:  # decode as TiMPipeline does, but keep values outside the range
            latents = x
            with torch.no_grad():
                decoded = pipe.autoencoder.decode(
                    (x / pipe.recipe.latent_scale + pipe.recipe.latent_shift).to(pipe.device)
                )
            x = decoded.float().cpu()
        low, high = pipe.recipe.value_range
        if (low, high) != (-1.0, 1.0):
            x = (x - low) / (high - low) * 2 - 1
        return BatchOutput(samples=x, latents=latents, nfe=out.nfe)


class VectorBackend:
    """A training run of the vector MLP (2-D toys), sampled with :func:`tim.samplers.sample`."""

    kind = "vector"

    def __init__(self, model: torch.nn.Module, info: RunInfo, device: torch.device, dtype: str) -> None:
        self.model, self.info, self.device = model, info, device
        self.conditioning = "class" if info.num_classes else "none"
        self.num_classes = info.num_classes
        # Half precision through autocast (the sampler keeps its state in float64 anyway).
        self.autocast = (
            {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype) if device.type == "cuda" else None
        )

    def default_size(self) -> None:
        """Vectors have no size."""
        return None

    def noise_shape(self, height: int | None, width: int | None) -> tuple[int, ...]:
        """(D,)."""
        return self.info.data_shape

    def fingerprint(self) -> str:
        """Digest of the network weights."""
        return weights_fingerprint(self.model)

    def batch_bytes(self, batch_size: int, height: int | None, width: int | None, guided: bool) -> int:
        """Hidden activations of every layer (an over-estimate) and the float64 sampler state."""
        config = self.model.config
        rows = batch_size * (2 if guided else 1)
        return rows * 4 * config.hidden_size * (config.depth + 2) * 4

    @torch.no_grad()
    def generate(
        self,
        indices: range,
        *,
        seed: int,
        labels: torch.Tensor | None,
        prompts: list[str] | None,
        steps: int,
        height: int | None,
        width: int | None,
        options: dict[str, Any],
    ) -> Any:
        """One batch from per-sample seeded noise (the rule of tim.pipeline)."""
        from tim.cli.sample_job import BatchOutput, sample_generators
        from tim.samplers import sample

        noise, generators = sample_generators(indices, self.info.data_shape, seed)
        cond = {} if labels is None else {"y": labels.to(self.device)}
        scale = options.get("guidance_scale", 1.0)
        uncond = self.model.null_cond(cond) if cond and scale != 1.0 else None
        with torch.autocast("cuda", dtype=self.autocast, enabled=self.autocast is not None):
            result = sample(
                self.model,
                noise.to(self.device),
                path=self.info.path,
                steps=steps,
                cond=cond,
                uncond=uncond,
                generator=generators,
                **options,
            )
        return BatchOutput(samples=result.x.float().cpu(), latents=None, nfe=result.nfe)


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A short digest of a network's weights: names, shapes and float64 sums per tensor.

    Cheap (one reduction per tensor, no copy of the weights) and enough to tell that a resumed job
    would sample another checkpoint (a run trained further, another file at the same path).
    """
    import hashlib

    digest = hashlib.sha256()
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            values = tensor.detach().double()
            digest.update(
                f"{name}:{tuple(tensor.shape)}:{values.sum().item():.9e}:{values.abs().sum().item():.9e}".encode()
            )
    return digest.hexdigest()[:16]


def _is_vector_run(run_dir: Path) -> bool:
    """Whether a run trained the vector MLP (read from its newest checkpoint's config.json)."""
    from tim.models import MLP_PRESETS

    configs = sorted(run_dir.glob("checkpoints/step_*/config.json"))
    for path in reversed(configs):
        try:
            return json.loads(path.read_text()).get("model", {}).get("preset") in MLP_PRESETS
        except (OSError, ValueError, AttributeError):
            continue
    return False


def load_backend(args: argparse.Namespace, device: torch.device) -> Any:
    """The backend for ``--checkpoint`` (see the module docstring)."""
    from tim.pretrained import is_bundled

    source = Path(args.checkpoint)
    if not is_bundled(args.checkpoint) and not source.exists():
        raise TimError(
            f"--checkpoint {source} does not exist",
            "pass a run folder (tim train --out), a pipeline folder or a released .safetensors file",
        )
    is_run = not is_bundled(args.checkpoint) and source.is_dir() and (source / "checkpoints").is_dir()
    if not is_run and args.weights != "ema":
        raise TimError("--weights model applies to training runs only", "drop --weights")
    if is_run and args.preset is not None:
        raise TimError("--preset applies to released .safetensors files only", "drop --preset")
    if is_run and _is_vector_run(source):
        if args.autoencoder or args.text_encoder:
            raise TimError(
                "the run trained the vector MLP; it has no autoencoder or text encoder",
                "drop --autoencoder and --text-encoder",
            )
        model, info = load_for_sampling(source, weights=args.weights, device=str(device))
        return VectorBackend(model, info, device, args.dtype)
    from tim.pipeline import TiMPipeline

    if is_bundled(args.checkpoint) and args.preset is not None:
        raise TimError("--preset applies to released .safetensors files only", "drop --preset")
    pipe = TiMPipeline.load(
        args.checkpoint if is_bundled(args.checkpoint) else source,
        preset=args.preset,
        autoencoder=args.autoencoder,
        text_encoder=args.text_encoder,
        device=device,
        dtype=args.dtype,
        weights=args.weights,
    )
    return PipelineBackend(pipe.compile() if getattr(args, "compile", False) else pipe)


# ------------------------------------------------------------------------------------------------
# The in-memory helpers tim demo uses


@dataclass(frozen=True)
class Generated:
    """Samples for one step count."""

    steps: int
    samples: torch.Tensor  # (N, *data_shape) float32, data range
    labels: torch.Tensor  # (N,) int64, -1 for unconditional
    nfe: int  # network evaluations per sample


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    path,
    data_shape: Sequence[int],
    steps_list: Sequence[int],
    *,
    class_ids: Sequence[int],
    per_class: int,
    guidance_scale: float = 1.0,
    seed: int = 0,
    batch_size: int = 500,
    **sampler_options: Any,
) -> list[Generated]:
    """Sample ``per_class`` items for each class with every step count, from the same noise, in memory.

    Sample ``i`` (class-major order) starts from noise seeded ``seed + i``, as in ``tim sample`` and
    :class:`tim.pipeline.TiMPipeline`; noise is drawn per batch.

    Args:
        model: the network F(x_t, t, r, **cond), in eval mode.
        path (tim.paths.Path): the path the model was trained with.
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
    from tim.cli.sample_job import sample_generators
    from tim.samplers import sample

    device = next(model.parameters()).device
    labels = (
        torch.tensor(class_ids, dtype=torch.long).repeat_interleave(per_class)
        if class_ids
        else torch.full((per_class,), -1, dtype=torch.long)
    )
    results = []
    for steps in steps_list:
        chunks, nfe = [], 0
        for start in range(0, len(labels), batch_size):
            batch = range(start, min(len(labels), start + batch_size))
            noise, generators = sample_generators(batch, data_shape, seed)
            y = labels[batch.start : batch.stop].to(device)
            cond = {"y": y} if class_ids else {}
            uncond = model.null_cond(cond) if class_ids and guidance_scale != 1.0 else None
            result = sample(
                model,
                noise.to(device),
                path=path,
                steps=steps,
                cond=cond,
                uncond=uncond,
                guidance_scale=guidance_scale,
                generator=generators,
                **sampler_options,
            )
            chunks.append(result.x.float().cpu())
            nfe = result.nfe
        samples = torch.cat(chunks)
        if not torch.isfinite(samples).all():
            raise TimError(
                f"sampling with {steps} steps produced NaN or Inf",
                "check the checkpoint (was training stable?) and the guidance scale",
            )
        results.append(Generated(steps, samples, labels.clone(), nfe))
    return results


@dataclass(frozen=True)
class RunInfo:
    """What sampling needs to know about a trained run besides its weights."""

    path: object  # the tim.paths.Path the run was trained with
    num_classes: int  # 0 = unconditional
    data_shape: tuple[int, ...]  # one training item, e.g. (1, 8, 8) or (2,)
    patch_size: int  # 1 for vector models
    default_steps: tuple[int, ...] = ()  # the run's sample.steps


def load_for_sampling(
    run_dir: str | Path, weights: str = "ema", device: str = "cpu"
) -> tuple[torch.nn.Module, RunInfo]:
    """Load a run's network (eval mode) and the facts sampling needs.

    Args:
        run_dir: folder written by ``tim train`` / ``tim demo``.
        weights: "ema" or "model".
        device: torch device for the network.

    Returns:
        ``(model, info)``.
    """
    from tim.training import load_run
    from tim.training.config import build_path_from_config

    if not Path(run_dir).is_dir():
        raise TimError(
            f"--checkpoint {run_dir} is not a folder", "pass the run folder written by `tim train`"
        )
    model, cfg = load_run(run_dir, which=weights, device=device)
    config = model.config
    conditional = getattr(config, "conditioning", "class") == "class"
    num_classes = config.num_classes if conditional else 0
    if hasattr(config, "patch_size"):  # TiM: images (C, H, W); any H, W divisible by p work
        shape, patch = (config.in_channels, config.input_size, config.input_size), config.patch_size
    else:  # TiMMLP: vectors (D,)
        shape, patch = (config.dim,), 1
    return model, RunInfo(build_path_from_config(cfg), num_classes, shape, patch, tuple(cfg.sample.steps))


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
    parser.set_defaults(run=run)
    return parser


def _parse_interval(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        low, high = (float(item) for item in text.split(","))
    except ValueError:
        raise TimError(f"--guidance-interval {text!r} is not two numbers", "pass LO,HI such as 0,1") from None
    if not 0.0 <= low <= high <= 1.0:
        raise TimError(f"--guidance-interval {text!r} is not 0 <= LO <= HI <= 1", "pass LO,HI such as 0,0.7")
    return low, high


def _check_positive(name: str, value: int | None) -> int | None:
    if value is not None and value < 1:
        raise TimError(f"{name} {value} is < 1", f"pass {name} >= 1")
    return value


def run(args: argparse.Namespace) -> int:
    """Run ``tim sample`` (see :func:`add_parser` for the options)."""
    from tim.cli.sample_job import check_job_dir, check_writable_out

    # Everything that can be checked without the model, first (the message must not wait for loading).
    steps_list = None if args.steps is None else parse_steps(args.steps)
    batch_size = _check_positive("--batch-size", args.batch_size)
    _check_positive("--shard-size", args.shard_size)
    for name in ("num", "per_class", "per_prompt"):
        _check_positive(f"--{name.replace('_', '-')}", getattr(args, name))
    interval = _parse_interval(args.guidance_interval)
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
    from tim.cli.sample_job import Job, default_shard_size, run_job

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
        defaults = {"guidance_scale": 1.0, "guidance_interval": (0.0, 1.0), "stochasticity": 0.0}
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
