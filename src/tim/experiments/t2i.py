"""``tim demo t2i``: text-to-image on the synthetic scenes, end to end on a laptop CPU, no download.

1. Render the training scenes and encode their captions once with the embedded all-MiniLM-L6-v2
   (run preset ``scenes_t2i``: :mod:`tim.data.scenes`, :mod:`tim.data.captions`).
2. Train a text-conditioned TiM within the time budget (15 minutes for the whole demo by default;
   training gets what sampling and scoring leave, as timed on this machine).
3. Sample the EMA model with 1, 2, 4 ... 128 steps from the SAME noise: a fixed list of
   :data:`GRID_PROMPTS` (the grids) and a fixed evaluation set of seen and held-out prompts.
4. Score every step count with GenEval in miniature (:mod:`tim.evaluation.geneval`), overall and
   per category, and write ``steps_<k>.png`` (rows = prompts, labelled), ``montage.png``,
   ``quality_vs_steps.png``, ``metrics.json``, ``report.md`` and the run folder ``run/``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from tim.errors import TimError
from tim.experiments import engine
from tim.experiments.engine import Options
from tim.io import save_png

DEMO_STEPS = "1,2,4,8,16,32,64,128"
QUICK_STEPS = "1,2,4"
DEFAULT_OUT = "outputs/demo_t2i"
# The prompt list of the grids (one row each): every category, two rows with held-out pairs.
GRID_PROMPTS = (
    "a circle",
    "a square and a triangle",
    "a red circle",
    "a white triangle",
    "two blue squares",
    "three yellow circles",
    "a green triangle left of a yellow circle",
    "a white square above a purple triangle",
    "a purple square and a white circle",
    "a red square and a green circle",
    "a blue circle",  # held out: never seen in training
    "a yellow square below a red circle",  # held out
)
HELDOUT_ROWS = {"a blue circle", "a yellow square below a red circle"}
DEFAULT_COLUMNS, QUICK_COLUMNS = 6, 4  # samples per prompt in each grid
MONTAGE_COLUMNS = 3  # samples per prompt per step count in montage.png
# Evaluation prompts per category (seen / held-out splits of tim.data.scenes). Sampling costs
# images x 255 network calls: with 12 x 8 grid images, 12 / 6 per category took ~6.7 of the 15
# minutes on the busy 2-core machine; 8 / 4 with 12 x 6 grid images take ~4.5.
SEEN_PER_CATEGORY, HELDOUT_PER_CATEGORY = 8, 4
QUICK_SEEN, QUICK_HELDOUT = 2, 1
# Settings on top of the `scenes_t2i` preset for the demo: no periodic grids (the demo samples
# at the end anyway), checkpoints only at the end of the time budget.
# The recipe on top of the preset, as `tim bench geneval` (SCENES_MODEL in
# src/tim/experiments/geneval.py): the preset's network (4x4 patches, 128 wide), 12 caption
# tokens, batch 32 and lr 2e-3 (more, larger steps beat bigger batches when the budget is CPU
# minutes, as for the digits demo).
DEMO_OVERRIDES = [
    "train.sample_every=0",
    "sample.num=0",
    "train.checkpoint_every=100000",
    "data.max_text_length=12",
    "train.batch_size=32",
    "optim.lr=2e-3",
    "data.num_images=20000",
    "train.steps=20000",
]
QUICK_OVERRIDES = ["train.steps=30", "optim.warmup_steps=5", "data.num_images=256", "train.log_every=10"]
GUIDANCE_SCALE = 1.0  # the demo's sampling CFG scale; `tim bench geneval` reports both with and without
DEFAULTS = engine.Defaults(
    DEFAULT_OUT,
    DEMO_STEPS,
    QUICK_STEPS,
    DEFAULT_COLUMNS,
    QUICK_COLUMNS,
    15.0,
    3.0,
    min_count=1,
    count_reason="images per prompt in each grid",
)


def configure(options: Options) -> Any:
    """The run config (preset ``scenes_t2i`` + the demo's recipe + the overrides), checked."""
    from tim.training import load_config

    base = DEMO_OVERRIDES + (QUICK_OVERRIDES if options.quick else []) + [f"train.seed={options.seed}"]
    cfg = load_config("scenes_t2i", base + list(options.overrides))
    if cfg.data.name != "scenes" or not cfg.data.text_encoder:
        raise TimError(
            "tim demo t2i trains on the captioned scenes", "do not override data.name or data.text_encoder"
        )
    return cfg


def run(options: Options, cfg: Any) -> int:
    """Train, sample the grid and evaluation prompts at every step count, score, write the outputs."""
    started = time.perf_counter()
    out, run_dir, columns = options.out, options.out / "run", options.count
    if options.overwrite:
        engine.remove_previous(run_dir, ("config.json", "checkpoints"), "a training run")
    source = _data_source(cfg)
    specs = _eval_specs(options.quick)
    grid_rows: list[str] = list(GRID_PROMPTS[:4] if options.quick else GRID_PROMPTS)
    num_images = len(grid_rows) * columns + len(specs["seen"]) + len(specs["heldout"])
    if not engine.time_limit_given(options.overrides):
        minutes = options.minutes - (time.perf_counter() - started) / 60
        cfg = fit_time_limit(cfg, minutes, options.steps, num_images)
    train_info = _train(cfg, run_dir, source)

    print(f"sampling {num_images} images with {', '.join(map(str, options.steps))} steps ...", flush=True)
    sample_started = time.perf_counter()
    generated = _sample(run_dir, source, grid_rows, columns, specs, options.steps, options.seed)
    sample_seconds = time.perf_counter() - sample_started
    total_seconds = time.perf_counter() - started
    encode_seconds = source.info.text.encode_seconds + generated["encode_seconds"]
    summary = {
        "command": options.command,
        "train": train_info,
        "text_encoder": {
            "name": cfg.data.text_encoder,
            "max_length": cfg.data.max_text_length,
            "dim": source.info.text.dim,
            "captions_encoded": len(source.info.text.captions),
            "encode_seconds": round(encode_seconds, 2),
            "share_of_wall_time": round(encode_seconds / total_seconds, 4),
        },
        "sampling": {
            "guidance_scale": GUIDANCE_SCALE,
            "noise_seed": options.seed,
            "grid_prompts": grid_rows,
            "per_prompt": columns,
            "eval_prompts": {k: len(v) for k, v in specs.items()},
            "seconds": round(sample_seconds, 1),
        },
        "geneval_vs_steps": generated["scores"],
        "bundled": bundled_reference(),
        "wall_seconds": round(total_seconds, 1),
        "machine": engine.machine(),
    }
    engine.write_outputs(
        out,
        summary,
        lambda: _write_pictures(out, generated, grid_rows, columns, options.steps),
        render_report,
        print_table,
        "montage.png, quality_vs_steps.png, steps_*.png, metrics.json, report.md, run/",
        total_seconds,
    )
    return 0


def _data_source(cfg: Any) -> Any:
    """The training scenes with their captions encoded once (the cost is in ``info.text``)."""
    from tim.data import build_data_source

    print(
        f"rendering {cfg.data.num_images} scenes and encoding their captions with {cfg.data.text_encoder} ...",
        flush=True,
    )
    return build_data_source(cfg.data, batch_size=cfg.train.batch_size, seed=cfg.train.seed)


def _eval_specs(quick: bool) -> dict[str, list]:
    from tim.experiments.geneval import eval_specs

    seen, held = (QUICK_SEEN, QUICK_HELDOUT) if quick else (SEEN_PER_CATEGORY, HELDOUT_PER_CATEGORY)
    return {"seen": eval_specs("seen", seen), "heldout": eval_specs("heldout", held)}


def fit_time_limit(cfg: Any, minutes: float, steps_list: list[int], num_images: int) -> Any:
    """Set ``train.time_limit`` so that training + sampling + scoring fit in ``minutes``.

    Sampling costs sum(steps) network calls on ``num_images`` images; one call is timed here,
    on this machine under its current load, so the budget holds on slow or busy machines too.
    """
    model = engine.build_untrained(cfg).eval()
    c = model.config
    x, t = torch.zeros(num_images, c.in_channels, c.input_size, c.input_size), torch.ones(num_images)
    cond = {
        "context": torch.zeros(num_images, cfg.data.max_text_length, c.text_dim),
        "context_mask": torch.ones(num_images, cfg.data.max_text_length, dtype=torch.bool),
    }
    with torch.no_grad():
        call = engine.fastest(lambda: model(x, t, t, **cond), 3)
    calls = sum(steps_list) * (2 if GUIDANCE_SCALE != 1.0 else 1)
    # No margin on top of the fastest of 3 calls: measured twice on the busy 2-core machine, the
    # sampling took 0.66x and 0.52x of this estimate with a 1.5x margin (4.4 of 6.7, 6.0 of 11.5 min).
    sampling_minutes = call * calls / 60
    fixed_minutes = 0.75  # model loading, GenEval scoring, pictures (measured ~20 s on a busy machine)
    return engine.fit_time_limit(
        cfg,
        minutes,
        sampling_minutes + fixed_minutes,
        lambda limit: (
            f"time budget: sampling needs ~{sampling_minutes:.1f} min here, so training gets at "
            f"most {limit:.1f} min"
        ),
    )


def _train(cfg: Any, run_dir: Path, source: Any) -> dict[str, Any]:
    """Train the demo model on ``source``; returns what happened."""
    from tim.training.config import set_options
    from tim.training.loop import total_steps

    params = sum(p.numel() for p in engine.build_untrained(cfg).parameters())
    print(
        f"training {cfg.model.preset} ({params / 1e6:.2f}M parameters) on {len(source.info.text.captions)} "
        f"distinct captions for up to {total_steps(cfg)} steps or {cfg.train.time_limit:g} minutes "
        f"({torch.get_num_threads()} CPU thread(s))",
        flush=True,
    )
    summary, seconds = engine.train_run(cfg, run_dir, data=source)
    recipe = {
        "objective": cfg.objective.name,
        "caption_dropout": cfg.train.label_dropout,
        "training_scenes": cfg.data.num_images,
    }
    return engine.train_record(
        cfg,
        run_dir,
        params,
        summary,
        seconds,
        model={"model_overrides": set_options(cfg.model)},
        recipe=recipe,
    )


def _sample(
    run_dir: Path,
    source: Any,
    grid_rows: list[str],
    columns: int,
    specs: dict[str, list],
    steps_list: list[int],
    seed: int,
) -> dict[str, Any]:
    """Grid images and GenEval scores for every step count, all from one noise tensor."""
    from tim.data.scenes import parse_caption
    from tim.evaluation.geneval import score_images
    from tim.experiments.geneval import generate

    model, _ = engine.load_ema(run_dir)
    captions = [p for p in grid_rows for _ in range(columns)]
    eval_captions = [s.caption for split in ("seen", "heldout") for s in specs[split]]
    begun = time.perf_counter()
    cond = source.encoder(captions + eval_captions)  # cache hits for training captions
    encode_seconds = time.perf_counter() - begun
    c = model.config
    noise = torch.randn(
        len(captions) + len(eval_captions),
        c.in_channels,
        c.input_size,
        c.input_size,
        generator=torch.Generator().manual_seed(seed),
    )
    grids, scores = {}, {}
    n_grid, n_seen = len(captions), len(specs["seen"])
    grid_specs = [parse_caption(p) for p in captions]
    for steps in steps_list:
        begun = time.perf_counter()
        x, nfe = generate(model, cond, steps, noise, guidance_scale=GUIDANCE_SCALE)
        seconds = time.perf_counter() - begun
        grids[steps] = x[:n_grid]
        row: dict[str, Any] = {"nfe": nfe, "seconds": round(seconds, 2)}
        for split, part in (("seen", x[n_grid : n_grid + n_seen]), ("heldout", x[n_grid + n_seen :])):
            if specs[split]:
                row[split] = {k: round(v, 4) for k, v in score_images(part, specs[split]).items()}
        row["grid_prompts"] = round(score_images(x[:n_grid], grid_specs)["overall"], 4)
        scores[str(steps)] = row
        print(
            f"  {steps:4d} steps: GenEval seen {row['seen']['overall']:.3f}"
            + (f", held-out {row['heldout']['overall']:.3f}" if "heldout" in row else "")
            + f" ({seconds:.1f} s)",
            flush=True,
        )
    return {"grids": grids, "scores": scores, "encode_seconds": encode_seconds}


def labelled_grid(images: torch.Tensor, labels: list[str], columns: int, scale: int = 3) -> Any:
    """A PIL image: one row per label (its text on the left), ``columns`` images per row.

    Args:
        images: (rows * columns, 3, H, W) in [-1, 1], row-major.
        labels: one text per row.
        columns: images per row.
        scale: nearest-neighbour upsampling.
    """
    from PIL import Image

    from tim import viz

    grid = viz.grid_array(images, nrow=columns, scale=scale)  # (H, W, 3) uint8, 1 px padding per cell
    return Image.fromarray(viz.label_rows(grid, labels, max_chars=80))


def grid_labels(rows: list[str] | tuple[str, ...]) -> list[str]:
    """The grid rows' labels: each prompt, marked when it is a held-out one."""
    return [p + (" (held out)" if p in HELDOUT_ROWS else "") for p in rows]


def _write_pictures(
    out: Path, generated: dict[str, Any], grid_rows: list[str], columns: int, steps_list: list[int]
) -> None:
    """Labelled grids per step count, the montage and the GenEval-vs-steps plot."""
    labels = grid_labels(grid_rows)
    for steps in steps_list:
        save_png(out / f"steps_{steps:03d}.png", labelled_grid(generated["grids"][steps], labels, columns))
    save_png(out / "montage.png", montage(generated, labels, columns, steps_list))
    _plot_categories(out / "quality_vs_steps.png", steps_list, generated["scores"])


def montage(
    generated: dict[str, Any],
    labels: list[str],
    columns: int,
    steps_list: list[int],
    shown: int = MONTAGE_COLUMNS,
) -> Any:
    """One picture: prompt labels on the left, then ``shown`` samples per prompt for every step count."""
    from PIL import Image, ImageDraw, ImageFont

    from tim import viz

    shown = min(shown, columns)
    blocks = []
    for steps in steps_list:
        images = generated["grids"][steps].unflatten(0, (len(labels), columns))[:, :shown].flatten(0, 1)
        blocks.append(viz.grid_array(images, nrow=shown, scale=2))
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = 8 + max(int(measure.textlength(t, font=font)) for t in labels)
    gap, header, height = 10, 34, blocks[0].shape[0]
    width = label_width + sum(b.shape[1] + gap for b in blocks)
    canvas = Image.new("RGB", (width, header + height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text(
        (4, 2),
        "TiM text-to-image on synthetic scenes: one model, any number of steps (same noise in every "
        "column block)",
        fill="black",
        font=font,
    )
    for k, text in enumerate(labels):
        draw.text((4, header + int((k + 0.5) * height / len(labels)) - 6), text, fill="black", font=font)
    left = label_width
    for steps, block in zip(steps_list, blocks, strict=True):
        title = f"{steps} step{'s' if steps > 1 else ''}"
        if "scores" in generated:  # the seen prompts' GenEval overall, when it was measured
            title += f": {generated['scores'][str(steps)]['seen']['overall']:.2f}"
        draw.text((left, 18), title, fill="black", font=font)
        canvas.paste(Image.fromarray(block), (left, header))
        left += block.shape[1] + gap
    return canvas


def _plot_categories(path: Path, steps_list: list[int], scores: dict[str, Any]) -> None:
    """GenEval vs steps: overall (seen, held-out) and every category of the seen prompts."""
    from tim.data.scenes import CATEGORIES

    figure, (left, right) = engine.subplots(2, 5.5, 4)
    for split, style in (("seen", "-o"), ("heldout", "--s")):
        if split in scores[str(steps_list[0])]:
            left.plot(
                steps_list,
                [scores[str(k)][split]["overall"] for k in steps_list],
                style,
                label=f"{split} prompts",
            )
    for category in CATEGORIES:
        right.plot(
            steps_list,
            [scores[str(k)]["seen"].get(category, float("nan")) for k in steps_list],
            "-o",
            label=category,
            markersize=3,
        )
    for axis, title in ((left, "GenEval overall"), (right, "per category (seen prompts)")):
        axis.set_ylim(-0.02, 1.02)
        engine.log2_axis(axis, "sampling steps (NFE)", "score (higher is better)", title, legend_size=8)
    engine.save_figure(figure, path)


def render_report(summary: dict[str, Any]) -> str:
    """A short Markdown report of a demo run (written as report.md)."""
    from tim.data.scenes import CATEGORIES

    train, text, rows = summary["train"], summary["text_encoder"], summary["geneval_vs_steps"]
    lines = [
        "# TiM text-to-image demo: synthetic scenes, one model, any number of steps",
        "",
        f"Command: `{summary['command']}` ({summary['wall_seconds'] / 60:.1f} min wall time, "
        f"{summary['machine']['cpu_threads']} CPU thread(s)).",
        "",
        f"Trained `{train['model']}` {train['model_overrides'] or ''} ({train['parameters'] / 1e6:.2f}M parameters, "
        f"objective `{train['objective']}`) on {train['training_scenes']:,} rendered scenes for {train['steps']} steps "
        f"({train['images_seen']:,} images, batch {train['batch_size']}, lr {train['lr']:g}, EMA {train['ema_decay']:g}, "
        f"caption dropout {train['caption_dropout']:g}) in {train['seconds'] / 60:.1f} min"
        + (" (stopped by the time limit)." if train["stopped_by_time_limit"] else "."),
        "",
        f"Captions: {text['captions_encoded']} distinct training captions encoded once by `{text['name']}` "
        f"({text['dim']}-d tokens, {text['max_length']} per caption): {text['encode_seconds']:.1f} s in all, "
        f"{100 * text['share_of_wall_time']:.1f}% of the wall time.",
        "",
        f"Scores: GenEval in miniature (`tim.evaluation.geneval`) on {summary['sampling']['eval_prompts']['seen']} seen "
        f"and {summary['sampling']['eval_prompts']['heldout']} held-out prompts (colour-shape pairs never drawn in "
        f"training), EMA weights, CFG {summary['sampling']['guidance_scale']:g}, the same noise for every step count.",
        "",
        "| steps (NFE) | seen overall | held-out overall | " + " | ".join(CATEGORIES) + " |",
        "|---:|---:|---:|" + "---:|" * len(CATEGORIES),
    ]
    for steps, row in rows.items():
        held = f"{row['heldout']['overall']:.3f}" if "heldout" in row else "-"
        cells = [f"{row['seen'][c]:.2f}" if c in row["seen"] else "-" for c in CATEGORIES]
        lines.append(
            f"| {steps} ({row['nfe']}) | {row['seen']['overall']:.3f} | {held} | " + " | ".join(cells) + " |"
        )
    lines += bundled_lines(summary.get("bundled"))
    lines += [
        "",
        "![montage](montage.png)",
        "",
        "![quality vs steps](quality_vs_steps.png)",
        "",
        "Files: `steps_<k>.png` (rows = prompts), `metrics.json`, `run/` (checkpoints, config.json, metrics.jsonl, "
        "`pretrained/`). Sample again with "
        f'`tim sample --checkpoint {train["run_dir"]} --prompt "a red circle" --steps 1,4 --out DIR`.',
        "",
    ]
    return "\n".join(lines)


def bundled_reference() -> dict[str, Any] | None:
    """The scores of ``bundled:scenes`` without guidance: the demo's recipe trained far longer (or None)."""
    from tim.pretrained import available, card_of

    if "scenes" not in available():
        return None
    try:
        card = card_of("scenes")
    except TimError:  # a damaged install: the demo still runs, its report just lacks the comparison
        return None
    scores = (card.get("scores") or {}).get("geneval") or {}
    splits = {split: by_scale.get("1.0") for split, by_scale in scores.items() if by_scale.get("1.0")}
    if "seen" not in splits:
        return None
    return {
        "steps": card.get("steps", 0),
        "images": card.get("images", 0),
        "overall": {split: {k: row["overall"] for k, row in rows.items()} for split, rows in splits.items()},
    }


def bundled_lines(bundled: dict[str, Any] | None) -> list[str]:
    """The report's comparison with the bundled model (the same recipe with more training)."""
    if not bundled:
        return []
    counts = list(bundled["overall"]["seen"])
    lines = [
        "",
        f"What the same recipe reaches with more training: `bundled:scenes` ({bundled['steps']:,} steps, "
        f"{bundled['images']:,} images; `tim models`, docs/pretrained.md), no guidance, its own prompt set:",
        "",
        "| split | " + " | ".join(f"{c} steps" for c in counts) + " |",
        "|---|" + "---:|" * len(counts),
    ]
    for split, row in bundled["overall"].items():
        lines.append(
            f"| {split} | " + " | ".join(f"{row[c]:.3f}" if c in row else "-" for c in counts) + " |"
        )
    return lines


def print_table(summary: dict[str, Any]) -> None:
    """The GenEval-vs-steps table and the caption-encoding share on stdout."""
    print(f"{'steps':>6} {'seen':>6} {'held-out':>9}")
    for steps, row in summary["geneval_vs_steps"].items():
        held = f"{row['heldout']['overall']:9.3f}" if "heldout" in row else f"{'-':>9}"
        print(f"{steps:>6} {row['seen']['overall']:6.3f} {held}")
    text = summary["text_encoder"]
    print(
        f"caption encoding: {text['encode_seconds']:.1f} s ({100 * text['share_of_wall_time']:.1f}% of the wall time)"
    )


EXPERIMENT = engine.Experiment("t2i", DEFAULTS, configure, run)
