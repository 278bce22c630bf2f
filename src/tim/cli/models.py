"""``tim models``: the models shipped with the package, and how a run becomes one.

    tim models                                   # list the bundled models (bundled:scenes, bundled:digits)
    tim models export RUN --name scenes --out DIR  # a run's EMA weights -> a bundled-format folder
    tim models score DIR                         # score it (GenEval in miniature / digits metrics), write its card

A bundled-format folder is a pipeline folder (``TiMPipeline.save_pretrained``) whose weights are
stored in 16 bits (float32 again at load), with ``card.json`` (training command, steps, images,
wall time, machine, recipe, scores, SHA-256 of every file) and a ``README.md`` rendered from it
(:mod:`tim.pretrained`). The scores are those of ``docs/pretrained.md``: scenes with the prompts of
``tim bench geneval`` from the same noise at every step count, without and with guidance; digits
with the judge of ``tim demo``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from tim.cli.parsing import HelpFormatter
from tim.errors import TimError
from tim.generation.folders import PIPELINE_NAME, refresh_checksums
from tim.io import write_safetensors, write_text

STEP_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128)
SEEN_PER_CATEGORY, HELDOUT_PER_CATEGORY = 16, 8  # 96 seen and 40 held-out prompts
DIGITS_PER_CLASS = 50  # 500 digits per step count, as tim demo
STORAGE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``tim models``."""
    parser = subparsers.add_parser(
        "models",
        help="list the pretrained models shipped with the package (bundled:NAME); export and score your own",
        description="Without a sub-command: list the bundled models, which every --checkpoint option and "
        "TiMPipeline.load take as bundled:NAME. `export` turns a training run into a bundled-format "
        "folder (16-bit weights + model card), `score` measures it and writes the scores into its card.",
        formatter_class=HelpFormatter,
    )
    parser.set_defaults(run=run_list)
    actions = parser.add_subparsers(title="sub-commands", dest="action", metavar="<action>")
    export = actions.add_parser(
        "export",
        help="a run's EMA weights -> a bundled-format pipeline folder with a model card",
        formatter_class=HelpFormatter,
    )
    export.add_argument("run_dir", metavar="RUN", help="the run folder written by tim train")
    export.add_argument("--name", required=True, help="the model's name (bundled:NAME once installed)")
    export.add_argument(
        "--out", required=True, metavar="DIR", help="the folder to write (replaced if it is one)"
    )
    export.add_argument("--command", default="", help="the training command, recorded in the card")
    export.add_argument("--description", default="", help="one line for the listing")
    export.add_argument("--steps", type=int, default=None, help="the recipe's default sampling steps")
    export.add_argument("--guidance-scale", type=float, default=None, help="the recipe's default CFG scale")
    export.add_argument("--storage", choices=sorted(STORAGE_DTYPES), default="fp16", help="weight storage")
    export.set_defaults(run=run_export)
    score = actions.add_parser(
        "score",
        help="score a bundled-format folder and write the scores into its card",
        formatter_class=HelpFormatter,
    )
    score.add_argument("folder", metavar="DIR", help="a folder written by tim models export")
    score.add_argument(
        "--guidance-scale", type=float, default=2.0, help="text models: the guided scale scored besides 1"
    )
    score.add_argument("--quick", action="store_true", help="1 and 8 steps, few prompts (a smoke test)")
    score.set_defaults(run=run_score)
    return parser


# ------------------------------------------------------------------------------------------------ list


def run_list(args: argparse.Namespace) -> int:
    """Print the bundled models with their size and headline scores."""
    from tim import pretrained
    from tim.pretrained import PREFIX, available, read_card

    names = available()
    if not names:
        print(f"no bundled models are installed (looked in {pretrained.ROOT})")
        return 0
    print(f"{'name':<18} {'params':>7} {'size':>8}  {'trained':<28} headline score")
    for name in names:
        card = read_card(pretrained.ROOT / name)
        size = sum(entry["bytes"] for entry in card["files"].values())
        trained = f"{card.get('steps', 0):,} steps, {card.get('images', 0) / 1e6:.1f}M images"
        print(
            f"{PREFIX + name:<18} {card.get('parameters', 0) / 1e6:6.2f}M {size / 2**20:6.1f}MB  "
            f"{trained:<28} {headline(card)}"
        )
        if card.get("description"):
            print(f"{'':<18} {card['description']}")
    print("use one with: tim sample --checkpoint bundled:NAME ..., tim app --checkpoint bundled:NAME")
    return 0


def headline(card: dict[str, Any]) -> str:
    """One line of a card's scores: the 1- and 8-step values of its main metric."""
    scores = card.get("scores") or {}
    if "geneval" in scores:
        rows = scores["geneval"]["seen"]["1.0"]
        return f"GenEval (seen, no CFG) {rows['1']['overall']:.2f} at 1 step, {rows['8']['overall']:.2f} at 8"
    if "digits" in scores:
        rows = scores["digits"]["steps"]
        return f"class accuracy {rows['1']['class_accuracy']:.3f} at 1 step, Frechet {rows['1']['frechet_distance']:.2f}"
    return "(not scored yet: tim models score DIR)"


# ------------------------------------------------------------------------------------------------ export


def run_export(args: argparse.Namespace) -> int:
    """Write the bundled-format folder of a run (see the module docstring)."""
    from tim.generation import TiMPipeline
    from tim.training import load_run

    run_dir, out = Path(args.run_dir), Path(args.out)
    pipe = TiMPipeline.from_run(run_dir)
    if args.steps is not None:
        pipe.recipe.steps = args.steps
    if args.guidance_scale is not None:
        pipe.recipe.guidance_scale = args.guidance_scale
    pipe.recipe.__post_init__()  # the range checks of the recipe, for the values set above
    _, cfg = load_run(run_dir)
    pipe.save_pretrained(out)
    store_16bit(out / "model" / "model.safetensors", STORAGE_DTYPES[args.storage])
    card = training_facts(run_dir, cfg) | {
        "name": args.name,
        "description": args.description,
        "command": args.command,
        "storage": args.storage,
        "parameters": sum(p.numel() for p in pipe.model.parameters()),
        "recipe": pipe.recipe.to_dict(),
    }
    write_card(out, card)
    print(f"wrote {out} ({args.storage} weights); score it with: tim models score {out}")
    return 0


def store_16bit(path: Path, dtype: torch.dtype) -> None:
    """Rewrite a safetensors file with its floating tensors in ``dtype``; refuse values that overflow."""
    from tim.models.weights import read_safetensors

    tensors, metadata = read_safetensors(path)
    limit = torch.finfo(dtype).max
    for key, value in tensors.items():
        if value.is_floating_point():
            if value.abs().max() > limit:
                raise TimError(f"weight {key} exceeds the {dtype} range", "export with --storage bf16")
            tensors[key] = value.to(dtype).contiguous()
    write_safetensors(path, tensors, metadata=metadata)
    folder = path.parent.parent  # <pipeline folder>/model/model.safetensors
    if (folder / PIPELINE_NAME).is_file():
        refresh_checksums(folder)


def training_facts(run_dir: Path, cfg: Any) -> dict[str, Any]:
    """Steps, images and wall time of a run's latest checkpoint, its machine and its config.

    The wall time adds up the ``seconds`` of each sitting in ``metrics.jsonl`` (the counter starts
    again at every resume) up to the checkpoint's step.
    """
    from tim.evaluation.machine import machine_info
    from tim.training.checkpoint import load_latest

    checkpoint = load_latest(run_dir, parts=())
    step = checkpoint.step if checkpoint is not None else 0
    seconds, sitting, previous = 0.0, 0.0, -1.0
    metrics = run_dir / "metrics.jsonl"
    for line in metrics.read_text().splitlines() if metrics.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(row, dict) or int(row.get("step", 0)) > step:
            continue
        now = float(row.get("seconds", 0.0))
        if now < previous:  # a new sitting began
            seconds += sitting
        sitting, previous = now, now
    return {
        "steps": step,
        "images": step * cfg.train.batch_size,
        "train_seconds": round(seconds + sitting, 1),
        "machine": {k: v for k, v in machine_info().items() if k in ("cpu", "cpu_count", "torch")},
        "run_config": json.loads((run_dir / "config.json").read_text()),
        "model_preset": cfg.model.preset,
    }


def write_card(folder: Path, card: dict[str, Any]) -> None:
    """``card.json`` (with the file table) and ``README.md`` of a bundled-format folder."""
    from tim.pretrained import CARD_NAME, file_table

    for path in folder.rglob("*"):  # files of an installed package are world-readable
        path.chmod(0o755 if path.is_dir() else 0o644)
    card["files"] = file_table(folder)
    write_text(folder / CARD_NAME, json.dumps(card, indent=2) + "\n")
    write_text(folder / "README.md", render_card(card))


# ------------------------------------------------------------------------------------------------ score


def run_score(args: argparse.Namespace) -> int:
    """Score a bundled-format folder (see the module docstring) and write the scores into its card."""
    from tim.generation import TiMPipeline
    from tim.pretrained import read_card, resolve

    folder = resolve(args.folder) if args.folder.startswith("bundled:") else Path(args.folder)
    card = read_card(folder)
    pipe = TiMPipeline.load(folder)
    steps = (1, 8) if args.quick else STEP_COUNTS
    started = time.perf_counter()
    if pipe.conditioning == "text":
        card.setdefault("scores", {})["geneval"] = score_text(pipe, steps, args.guidance_scale, args.quick)
    elif pipe.conditioning == "class":
        card.setdefault("scores", {})["digits"] = score_digits(
            pipe, steps, 5 if args.quick else DIGITS_PER_CLASS
        )
    else:
        raise TimError(f"{folder} holds an unconditional model", "score class or text models only")
    card["scored_seconds"] = round(time.perf_counter() - started, 1)
    write_card(folder, card)
    print(render_scores(card))
    return 0


def score_text(pipe: Any, steps: tuple[int, ...], scale: float, quick: bool) -> dict[str, Any]:
    """GenEval in miniature, seen and held-out prompts, without and with CFG ``scale``."""
    from tim.experiments.geneval import score_model

    seen, heldout = (2, 1) if quick else (SEEN_PER_CATEGORY, HELDOUT_PER_CATEGORY)
    return score_model(pipe.model, pipe.text_encoder, steps, seen, heldout, scales=(1.0, scale), log=_log)


def score_digits(pipe: Any, steps: tuple[int, ...], per_class: int) -> dict[str, Any]:
    """Class accuracy, Frechet distance and KID of ``per_class`` digits per class at each step count."""
    from tim.evaluation.digits import evaluate_digits
    from tim.generation import generate
    from tim.paths import build_path

    path = build_path(pipe.recipe.path, **pipe.recipe.path_options)
    shape = (pipe.model.config.in_channels, pipe.model.config.input_size, pipe.model.config.input_size)
    rows = {}
    for item in generate(pipe.model, path, shape, steps, class_ids=list(range(10)), per_class=per_class):
        result = evaluate_digits(item.samples, item.labels)
        rows[str(item.steps)] = {"nfe": item.nfe} | {
            k: round(v, 4) for k, v in result.items() if k in ("class_accuracy", "frechet_distance", "kid")
        }
        _log(f"digits {item.steps} steps: " + ", ".join(f"{k} {v}" for k, v in rows[str(item.steps)].items()))
    return {"per_class": per_class, "guidance_scale": 1.0, "steps": rows}


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------ cards


def render_scores(card: dict[str, Any]) -> str:
    """The score tables of a card, as markdown."""
    scores, lines = card.get("scores") or {}, []
    for split, by_scale in (scores.get("geneval") or {}).items():
        for scale, rows in by_scale.items():
            keys = [k for k in next(iter(rows.values())) if k not in ("nfe", "seconds")]
            title = f"GenEval in miniature, {split} prompts, CFG {float(scale):g}:"
            lines += _table(title, "category", rows, keys)
    if "digits" in scores:
        title = f"Digits, {scores['digits']['per_class']} per class, no guidance:"
        lines += _table(
            title, "metric", scores["digits"]["steps"], ["class_accuracy", "frechet_distance", "kid"]
        )
    return "\n".join(lines) or "(not scored yet)"


def _table(title: str, label: str, rows: dict[str, dict[str, float]], keys: list[str]) -> list[str]:
    """A markdown table: one column per step count (the keys of ``rows``), one row per metric."""
    counts = list(rows)
    lines = [title, "", f"| {label} | " + " | ".join(counts) + " |", "|---|" + "---:|" * len(counts)]
    lines += [f"| {key} | " + " | ".join(f"{rows[c][key]:.3f}" for c in counts) + " |" for key in keys]
    return [*lines, ""]


def render_card(card: dict[str, Any]) -> str:
    """The ``README.md`` of a bundled model, from its card."""
    machine = card.get("machine") or {}
    recipe = card.get("recipe") or {}
    hours = card.get("train_seconds", 0.0) / 3600
    return "\n".join(
        [
            f"# bundled:{card.get('name', '?')}",
            "",
            card.get("description", ""),
            "",
            f"- network: {card.get('model_preset')} ({card.get('parameters', 0) / 1e6:.2f}M parameters), "
            f"weights stored as {card.get('storage')}, loaded as float32",
            f"- trained: {card.get('steps', 0):,} optimizer steps, {card.get('images', 0):,} images, "
            f"{hours:.2f} h of training wall time on {machine.get('cpu', machine)}",
            f"- training command: `{card.get('command', '')}`",
            f"- sampling recipe: {recipe.get('steps')} steps by default, CFG {recipe.get('guidance_scale')}, "
            f"path {recipe.get('path')}",
            "- use: `tim sample --checkpoint bundled:"
            + f"{card.get('name')} ...`, `tim app --checkpoint bundled:{card.get('name')}`, "
            + f'`TiMPipeline.load("bundled:{card.get("name")}")`',
            "",
            "## Scores",
            "",
            render_scores(card),
            "",
            "How these were measured, and the learning curve: docs/pretrained.md in the repository.",
            "",
        ]
    )
