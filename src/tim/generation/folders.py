"""Loading anything to sample from, and writing pipeline folders (docs/internals.md, "Layers").

What ``TiMPipeline.load`` and ``tim sample --checkpoint`` accept: a training run (``tim train
--out``), a pipeline folder (:func:`save_pretrained`, ``tim convert``), a released ``.safetensors``
checkpoint with its preset and autoencoder, or ``"bundled:<name>"`` (:mod:`tim.pretrained`); runs of
the vector MLP load with :func:`load_for_sampling`. The constructors of
:class:`~tim.generation.TiMPipeline` delegate here, passing the class they build.

Folder layout written by :func:`save_pretrained` (built in a temporary sibling folder and swapped in
with :func:`tim.io.replace_folder`, so nothing is ever half-written)::

    pipeline.json        {"format": "tim-pipeline", "format_version": 1, "autoencoder": ..., "text_encoder": ...}
    recipe.json          the SamplingRecipe
    model/               config.json + model.safetensors (tim.models.save_pretrained)
    autoencoder/         diffusers folder (copied), unless referenced by local path in pipeline.json
    text_encoder/        transformers folder (copied), unless referenced ("minilm" or a local path)

A run's recipe is the ``recipe.json`` training wrote beside its config (:mod:`tim.training.recipe`).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tim.errors import TimError
from tim.generation.recipe import RECIPE_NAME, RELEASED_RECIPES, SamplingRecipe, released_recipe
from tim.io import replace_folder, write_json
from tim.pretrained import check_files

__all__ = [
    "PIPELINE_NAME",
    "RunInfo",
    "load_for_sampling",
    "load_pipeline",
    "pipeline_from_folder",
    "pipeline_from_released",
    "pipeline_from_run",
    "resolve_dtype",
    "resolve_pipeline_folder",
    "save_pretrained",
]

PIPELINE_NAME = "pipeline.json"
MODEL_DIR = "model"
AUTOENCODER_DIR = "autoencoder"
TEXT_ENCODER_DIR = "text_encoder"
FORMAT = "tim-pipeline"
FORMAT_VERSION = 1


def load_pipeline(
    cls: Any,
    x: str | Path,
    *,
    preset: str | None = None,
    autoencoder: Any = None,
    text_encoder: Any = None,
    device: str | torch.device = "cpu",
    dtype: Any = None,
    weights: str = "ema",
) -> Any:
    """``cls.load``: dispatch on what ``x`` is (see ``TiMPipeline.load``)."""
    from tim.pretrained import is_bundled

    if is_bundled(x):  # a model shipped inside the package (tim.pretrained)
        return cls.from_pretrained(
            str(x), device=device, dtype=dtype, autoencoder=autoencoder, text_encoder=text_encoder
        )
    source = Path(x)
    if source.is_file():
        if source.suffix != ".safetensors":
            raise TimError(
                f"{source} is a file but not a .safetensors checkpoint",
                "pass a released .safetensors file, a pipeline folder or a run folder",
            )
        if preset is None or autoencoder is None:
            raise TimError(
                f"loading the released checkpoint {source.name} needs its preset and autoencoder",
                "pass preset='TiM-XL/2' (or --preset) and autoencoder=DIR (or --autoencoder)",
            )
        return cls.from_released(
            source,
            preset=preset,
            autoencoder=autoencoder,
            text_encoder=text_encoder,
            device=device,
            dtype=dtype,
        )
    if source.is_dir() and (source / PIPELINE_NAME).is_file():
        return cls.from_pretrained(
            source, device=device, dtype=dtype, autoencoder=autoencoder, text_encoder=text_encoder
        )
    if source.is_dir() and (source / "checkpoints").is_dir():
        pipe = cls.from_run(
            source, weights=weights, device=device, autoencoder=autoencoder, text_encoder=text_encoder
        )
        return pipe.cast(resolve_dtype(dtype, pipe.device))
    if source.is_dir():
        raise TimError(
            f"{source} is neither a pipeline folder (no {PIPELINE_NAME}) nor a training run (no checkpoints/)",
            "pass a folder written by tim convert / save_pretrained, or by tim train",
        )
    return cls.from_pretrained(
        source, device=device, dtype=dtype, autoencoder=autoencoder, text_encoder=text_encoder
    )


def pipeline_from_released(
    cls: Any,
    file: str | Path,
    *,
    preset: str,
    autoencoder: Any,
    text_encoder: Any = None,
    device: str | torch.device = "cpu",
    dtype: Any = None,
    text_max_length: int | None = None,
) -> Any:
    """``cls.from_released``: a released checkpoint, its autoencoder and the paper's recipe."""
    from tim.models import TIM_PRESETS, load_released_checkpoint
    from tim.models.convert import check_released_checkpoint

    if preset not in TIM_PRESETS or preset not in RELEASED_RECIPES:
        raise TimError(
            f"preset {preset!r} is not a released TiM model", f"use one of {sorted(RELEASED_RECIPES)}"
        )
    device, config = torch.device(device), TIM_PRESETS[preset]
    dtype = resolve_dtype(dtype, device)
    # The cheap checks first (text encoder, the file's header, autoencoder channels), then the big file.
    text_model = config.conditioning == "text"
    if not text_model and text_encoder is not None:
        raise TimError(
            f"a text encoder was given but {preset} is a class-conditioned model", "drop the text encoder"
        )
    if text_model and text_encoder is None:
        raise TimError(
            f"{preset} is a text-to-image model and needs its text encoder",
            "pass text_encoder=DIR (a local transformers folder, e.g. gemma-3-1b-it)",
        )
    if Path(file).suffix == ".safetensors":  # its header is cheap: a wrong file fails before any loading
        check_released_checkpoint(file, preset)
    ae = load_autoencoder(autoencoder, device)
    if ae.latent_channels != config.in_channels:
        raise TimError(
            f"the autoencoder makes {ae.latent_channels}-channel latents but {preset} takes "
            f"{config.in_channels} channels",
            "pass the autoencoder the checkpoint was trained with "
            "(SD-VAE ft-EMA for TiM-XL/2 and TiM-B/4, DC-AE f32c32-sana-1.1 for TiM-XL/1 and TiM-T2I)",
        )
    recipe = released_recipe(
        preset, latent_scale=float(ae.scaling_factor), latent_shift=float(ae.shift_factor)
    )
    if text_max_length is not None:
        recipe.text_max_length = text_max_length
    text = load_text_encoder(text_encoder, recipe.text_max_length, device) if text_model else None
    model = load_released_checkpoint(file, preset)
    if text is not None:
        model.set_null_context(text.null_context())
    return cls(model.to(device), recipe, autoencoder=ae, text_encoder=text).cast(dtype)


def pipeline_from_folder(
    cls: Any,
    folder: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: Any = None,
    autoencoder: Any = None,
    text_encoder: Any = None,
) -> Any:
    """``cls.from_pretrained``: a pipeline folder (or ``bundled:``/``hf:``)."""
    from tim.models import from_pretrained as model_from_pretrained

    folder = resolve_pipeline_folder(folder)
    device = torch.device(device)
    meta = read_json(folder / PIPELINE_NAME, "pipeline index")
    if meta.get("format") != FORMAT or meta.get("format_version", 0) > FORMAT_VERSION:
        raise TimError(
            f"{folder / PIPELINE_NAME} is not a tim pipeline index of version <= {FORMAT_VERSION}",
            "re-create the folder with tim convert or TiMPipeline.save_pretrained",
        )
    if not (folder / RECIPE_NAME).is_file():
        raise TimError(
            f"pipeline folder {folder} has no {RECIPE_NAME}",
            "re-create it with tim convert or save_pretrained",
        )
    recipe = SamplingRecipe.from_dict(read_json(folder / RECIPE_NAME, "recipe"), folder / RECIPE_NAME)
    if (
        not (folder / MODEL_DIR / "config.json").is_file()
        or not (folder / MODEL_DIR / "model.safetensors").is_file()
    ):
        raise TimError(
            f"pipeline folder {folder} has no {MODEL_DIR}/ (config.json + model.safetensors)",
            "re-create it with tim convert or save_pretrained",
        )
    if "files" in meta:  # written by save_pretrained since the checksums were added; older folders have none
        check_files(folder, meta["files"], what="pipeline", index=PIPELINE_NAME, fix=DAMAGED_FIX)
    model = model_from_pretrained(folder / MODEL_DIR, device=device)
    ae = load_autoencoder(
        autoencoder if autoencoder is not None else part_location(folder, meta, "autoencoder"), device
    )
    text = None
    config: Any = model.config
    if config.conditioning == "text":
        text = load_text_encoder(
            text_encoder if text_encoder is not None else part_location(folder, meta, "text_encoder"),
            recipe.text_max_length,
            device,
        )
    return cls(model, recipe, autoencoder=ae, text_encoder=text).cast(resolve_dtype(dtype, device))


def pipeline_from_run(
    cls: Any,
    run_dir: str | Path,
    *,
    weights: str = "ema",
    device: str | torch.device = "cpu",
    autoencoder: Any = None,
    text_encoder: Any = None,
) -> Any:
    """``cls.from_run``: a training run's weights with the recipe the run wrote (``recipe.json``)."""
    from tim.models import TiM
    from tim.training import load_run
    from tim.training.recipe import RUN_RECIPE_NAME, read_run_recipe, run_recipe

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TimError(f"run folder {run_dir} does not exist", "pass the folder written by tim train --out")
    device = torch.device(device)
    model, cfg = load_run(run_dir, which=weights, device=device)
    if not isinstance(model, TiM):
        raise TimError(
            f"run {run_dir} trained a {type(model).__name__} (vectors); the pipeline makes images",
            "sample it with tim sample or tim.samplers.sample",
        )
    facts = read_run_recipe(Path(run_dir))
    if facts is None:  # a run trained before runs wrote recipe.json: derive it from the config
        facts = run_recipe(cfg)
    recorded_ae, recorded_text = facts.pop("autoencoder", None), facts.pop("text_encoder", None)
    if model.config.conditioning != "class" or len(facts.get("class_names", ())) != model.config.num_classes:
        facts.pop("class_names", None)
    ae_source = autoencoder if autoencoder is not None else recorded_ae
    if autoencoder is None and recorded_ae is not None and not Path(recorded_ae).is_dir():
        warnings.warn(
            f"the autoencoder recorded by the run ({recorded_ae}) is not a local folder: the pipeline "
            "returns latents only; pass autoencoder=DIR to decode",
            stacklevel=3,
        )
        ae_source = None
    ae = load_autoencoder(ae_source, device)
    text_source = text_encoder if text_encoder is not None else recorded_text
    recipe = SamplingRecipe.from_dict(facts, Path(run_dir) / RUN_RECIPE_NAME)
    text = None
    if model.config.conditioning == "text" and text_source is not None:
        text = load_text_encoder(text_source, recipe.text_max_length, device)
    return cls(model, recipe, autoencoder=ae, text_encoder=text)


def save_pretrained(pipe: Any, folder: str | Path, *, reference: bool = False) -> Path:
    """``TiMPipeline.save_pretrained``: write ``pipe`` as one pipeline folder, atomically."""
    from tim.models import save_pretrained as model_save_pretrained

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise TimError(f"{folder} exists and is a file", "pass a folder path")
    if folder.is_dir() and any(folder.iterdir()) and not (folder / PIPELINE_NAME).is_file():
        raise TimError(
            f"{folder} already exists, is not empty and is not a pipeline folder",
            "pass a new or empty folder (an existing pipeline folder is replaced)",
        )
    temporary = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        temporary.mkdir()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "autoencoder": None,
            "text_encoder": None,
        }
        model_save_pretrained(pipe.model, temporary / MODEL_DIR)
        write_json(temporary / RECIPE_NAME, pipe.recipe.to_dict())
        if pipe.autoencoder is not None:
            meta["autoencoder"] = save_part(
                pipe.autoencoder, temporary / AUTOENCODER_DIR, reference, "autoencoder"
            )
        if pipe.text_encoder is not None:
            meta["text_encoder"] = save_text_part(pipe.text_encoder, temporary / TEXT_ENCODER_DIR, reference)
        for part in (
            "autoencoder",
            "text_encoder",
        ):  # a reference into the folder being replaced would dangle
            entry = meta[part]
            if (
                isinstance(entry, dict)
                and "path" in entry
                and Path(entry["path"]).is_relative_to(folder.resolve())
            ):
                raise TimError(
                    f"the {part} to reference lies inside {folder}, which is being replaced",
                    "save a copy (reference=False) or save to another folder",
                )
        meta["files"] = checksummed_files(temporary)
        write_json(temporary / PIPELINE_NAME, meta)
        replace_folder(temporary, folder)
    except OSError as error:  # disk full, permissions: nothing was replaced
        raise TimError(
            f"cannot write the pipeline folder {folder} ({error.strerror or error}); nothing was changed",
            "free disk space or pass a writable folder",
        ) from None
    finally:
        shutil.rmtree(temporary, ignore_errors=True)
    return folder


DAMAGED_FIX = "restore the file or re-create the folder with tim convert or TiMPipeline.save_pretrained"


def checksummed_files(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file of a pipeline folder's network (kept in ``pipeline.json``).

    :func:`pipeline_from_folder` checks them before anything is loaded, so a truncated, bit-flipped or
    replaced weight file is refused with one line instead of sampling garbage. ``recipe.json`` is left
    out on purpose (editing the default steps or guidance is a use, and every field is validated when
    read), and so are copies of the autoencoder and text encoder (large; their loaders check them).
    """
    from tim.pretrained import sha256_of

    files = sorted(p for p in (folder / MODEL_DIR).rglob("*") if p.is_file())
    return {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files
    }


def refresh_checksums(folder: Path) -> None:
    """Record the network files of a pipeline folder again after a deliberate change (e.g. 16-bit storage)."""
    meta = read_json(folder / PIPELINE_NAME, "pipeline index")
    meta["files"] = checksummed_files(folder)
    write_json(folder / PIPELINE_NAME, meta)


def resolve_dtype(dtype: Any, device: torch.device | str) -> torch.dtype:
    """The inference dtype: fp32 on CPU; ``"auto"``/None on CUDA -> bf16 (fp16 without bf16 support)."""
    device = torch.device(device)
    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if isinstance(dtype, str):
        if dtype not in names:
            raise TimError(f"dtype {dtype!r} is unknown", "use auto, fp32, bf16 or fp16")
        dtype = names[dtype]
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TimError(f"dtype {dtype} is not supported for inference", "use fp32, bf16 or fp16")
    if dtype != torch.float32 and device.type == "cpu":
        raise TimError(
            f"{dtype} inference on the CPU is not supported (slow and untested)",
            "use dtype fp32 on the CPU; bf16/fp16 are for GPUs",
        )
    return dtype


def resolve_pipeline_folder(folder: str | Path) -> Path:
    """A local pipeline folder, ``"bundled:<name>"`` (checked against its card), or ``"hf:owner/name"``.

    ``"hf:owner/name"`` is a Hub repo fetched with huggingface_hub.

    The Hub is used only with the explicit ``hf:`` prefix (a mistyped local path never goes to the
    network); that path needs huggingface_hub installed and is untested here (no network).
    """
    from tim.pretrained import is_bundled, resolve

    text = str(folder)
    if is_bundled(text):
        return resolve(text)
    if text.startswith("hf:"):
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise TimError(
                f"{text} names a Hub repo but huggingface_hub is not installed",
                "pip install huggingface_hub, or download the folder and pass its local path",
            ) from None
        try:
            return Path(snapshot_download(text[3:]))
        except Exception as error:  # noqa: BLE001 - network, auth, unknown repo: one line
            raise TimError(
                f"cannot fetch pipeline {text[3:]} from the Hub ({str(error).splitlines()[0]})",
                "download it yourself and pass the local folder",
            ) from None
    path = Path(folder)
    if not path.is_dir():
        raise TimError(
            f"pipeline folder {path} does not exist",
            "pass a folder written by tim convert or save_pretrained (or hf:owner/name for a Hub repo)",
        )
    return path


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from ``path``; a broken file is a one-line error."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise TimError(
            f"{path} ({what}) is missing", "re-create the folder with tim convert or save_pretrained"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise TimError(
            f"{path} ({what}) is not valid JSON ({str(error).splitlines()[0]})",
            "re-create the folder with tim convert or save_pretrained",
        ) from None
    if not isinstance(data, dict):
        raise TimError(
            f"{path} ({what}) is not a JSON object",
            "re-create the folder with tim convert or save_pretrained",
        )
    return data


def part_location(folder: Path, meta: dict[str, Any], part: str) -> str | None:
    """Where a pipeline folder's autoencoder / text encoder is: its sub-folder, a referenced path or None."""
    entry = meta.get(part)
    if entry is None:
        return None
    if entry == "copy":
        location = folder / (AUTOENCODER_DIR if part == "autoencoder" else TEXT_ENCODER_DIR)
        if not (location / "config.json").is_file():
            raise TimError(
                f"pipeline folder {folder} has no {location.name}/ (config.json missing)",
                f"restore it, or pass {part}=DIR when loading",
            )
        return str(location)
    if isinstance(entry, dict) and "name" in entry:  # e.g. the embedded text encoder "minilm"
        return str(entry["name"])
    if isinstance(entry, dict) and "path" in entry:
        location = Path(entry["path"])
        if not location.is_dir():
            raise TimError(
                f"pipeline folder {folder} references the {part} {location}, which does not exist",
                f"restore that folder, or pass {part}=DIR when loading",
            )
        return str(location)
    raise TimError(f"{folder / PIPELINE_NAME} has an invalid {part} entry {entry!r}", "re-create the folder")


def load_autoencoder(source: Any, device: torch.device) -> Any:
    """An Autoencoder from a local folder (or an object that already is one); None stays None."""
    if source is None or not isinstance(source, (str, Path)):
        return source
    from tim.autoencoders import Autoencoder

    return Autoencoder.from_pretrained(source, device=device)


def load_text_encoder(source: Any, max_length: int, device: torch.device) -> Any:
    """A TextEncoder from ``"minilm"`` / a local folder (or an object that already is one)."""
    if source is None or not isinstance(source, (str, Path)):
        return source
    from tim.text import TextEncoder

    return TextEncoder(str(source), max_length=max_length, device=str(device))


def save_part(part: Any, target: Path, reference: bool, name: str) -> Any:
    """Copy (or reference) an autoencoder into a pipeline folder; the pipeline.json entry."""
    source = getattr(part, "folder", None)
    if reference:
        if source is None or not Path(source).is_dir():
            raise TimError(
                f"the {name} has no local folder to reference", "save it as a copy (reference=False)"
            )
        return {"path": str(Path(source).resolve())}
    if hasattr(part, "save_pretrained"):
        part.save_pretrained(target)
    elif source is not None and Path(source).is_dir():
        shutil.copytree(source, target)
    else:
        raise TimError(
            f"the {name} can neither be saved nor copied", "pass an Autoencoder loaded from a local folder"
        )
    return "copy"


def save_text_part(text_encoder: Any, target: Path, reference: bool) -> Any:
    """The text encoder: the embedded default by name, otherwise its local folder copied (or referenced)."""
    name = str(getattr(text_encoder, "name", ""))
    if name == "minilm":  # shipped by a package, located at load time (tim.text.default_text_encoder_path)
        return {"name": name}
    source = getattr(text_encoder, "folder", None) or (name if Path(name).is_dir() else None)
    if source is None:
        raise TimError(
            f"the text encoder {name!r} has no local folder", "load it from a local transformers folder"
        )
    if reference:
        return {"path": str(Path(source).resolve())}
    shutil.copytree(source, target)
    return "copy"


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
    config: Any = model.config
    conditional = getattr(config, "conditioning", "class") == "class"
    num_classes = config.num_classes if conditional else 0
    if hasattr(config, "patch_size"):  # TiM: images (C, H, W); any H, W divisible by p work
        shape, patch = (config.in_channels, config.input_size, config.input_size), config.patch_size
    else:  # TiMMLP: vectors (D,)
        shape, patch = (config.dim,), 1
    return model, RunInfo(build_path_from_config(cfg), num_classes, shape, patch, tuple(cfg.sample.steps))


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
