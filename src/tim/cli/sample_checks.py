"""The argument checks of ``tim sample`` (shared with ``tim demo``): each refusal is one line.

Every parameter with a range is checked here before any model is loaded, against the limits of the
command line below and the sampler limits of :mod:`tim.samplers` (the one table).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tim.errors import TimError

# The sampler limits: THE table in tim.samplers, shared with run configs and pipeline recipes.
from tim.samplers import MAX_GUIDANCE_SCALE, MAX_STEPS, MAX_STOCHASTICITY

# Limits of the command line (every parameter with a range is checked before any work).
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
    from tim.generation.job import split_count

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
    """Range checks of ``--cfg`` and ``--stochasticity`` (before any loading; the interval: parse_interval)."""
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


def parse_interval(text: str | None) -> tuple[float, float] | None:
    """Parse ``--guidance-interval LO,HI`` (None when not given)."""
    if text is None:
        return None
    try:
        low, high = (float(item) for item in text.split(","))
    except ValueError:
        raise TimError(f"--guidance-interval {text!r} is not two numbers", "pass LO,HI such as 0,1") from None
    if not 0.0 <= low <= high <= 1.0:
        raise TimError(f"--guidance-interval {text!r} is not 0 <= LO <= HI <= 1", "pass LO,HI such as 0,0.7")
    return low, high


def check_positive(name: str, value: int | None) -> int | None:
    """A count option (``--batch-size``, ``--num``...) must be >= 1 when given."""
    if value is not None and value < 1:
        raise TimError(f"{name} {value} is < 1", f"pass {name} >= 1")
    return value
