"""``tim demo latent``: the whole latent path offline, autoencoder included, in minutes on a CPU.

1. Train the small default autoencoder (:func:`tim.autoencoders.train_autoencoder`, f4, 4 latent
   channels) on 4,096 synthetic scenes of every category (tim.data.scenes, 32x32).
2. Render the class-conditional data: the 15 training colour-shape pairs of the scenes' ``colors``
   category ("a red circle", ...; the 3 pairs held out by tim.data.scenes stay out), one object at a
   random place and size per image, and encode them to latent shards (8x8x4) with
   :func:`tim.data.latents.write_latent_shards`.
3. Train a class-conditional TiM on those latents (data name ``latents``; the ``digits`` recipe
   with 4 latent channels, 4x4 latent patches and 15 classes), within the time budget.
4. Sample the EMA model with 1, 2, 4 ... 128 steps from the same noise, DECODE, and judge every
   step count with the scene detector (:func:`tim.evaluation.geneval.score_images`: is there exactly
   the asked shape in the asked colour?) and the energy distance to real images in pixel space.
5. Write ``steps_<k>.png`` (rows = the 15 classes), ``montage.png`` (real, autoencoder
   reconstructions, every step count), ``quality_vs_steps.png``, ``metrics.json``, ``report.md``,
   plus ``autoencoder/``, ``latents/`` and the run folder ``run/``.

Class-conditional rather than captions: the text-to-image demo (``tim demo t2i``) covers prompts;
this one isolates what the autoencoder adds. KEY=VALUE overrides change the TiM training config;
``autoencoder.FIELD=VALUE`` ones change :class:`tim.autoencoders.TrainSettings` (steps, minutes...).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tim.data.scenes import scene_tensor
from tim.errors import TimError
from tim.experiments import engine
from tim.experiments.engine import Options
from tim.generation.backends import Generated, sample_classes

DEFAULT_OUT = "outputs/demo_latent"
DEMO_STEPS = "1,2,4,8,16,32,64,128"
QUICK_STEPS = "1,2,4,8"
IMAGE_SIZE = 32  # the scenes' native size (tim.data.scenes)
AE_TRAIN_IMAGES = 4096
IMAGES_PER_CLASS = 200  # 15 classes -> 3,000 training latents
QUICK_IMAGES_PER_CLASS = 40
DEFAULT_PER_CLASS = 20  # samples per class and step count for the metrics (300 per step count)
QUICK_PER_CLASS = 4
GRID_COLUMNS = 8
# Share of the budget for the autoencoder (the rest: TiM, sampling, decoding, metrics). At 3 of 15
# minutes the autoencoder reached 25 dB held-out PSNR on a busy 2-core machine (measured).
AE_SHARE = 0.22
QUICK_AE_STEPS = 120
# TiM in latent space: the `digits` preset's recipe (configs/digits.yaml) on 8x8x4 latents, with its
# 4x4 patches (4 tokens). Measured with the full demo on the busy 2-core machine: 2x2 patches (16
# tokens) got 676 steps in 6.3 min and 14-17% detector accuracy at every step count; 4x4 patches
# 4,732 steps in 8.8 min and 24% (1 step) -> 70% (64 steps). No periodic sample grids.
TIM_OVERRIDES = [
    "model.in_channels=4",
    "model.patch_size=4",
    "data.name=latents",
    "data.patch_multiple=4",
    "train.sample_every=0",
    "sample.num=0",
]  # no training-time grids: latents are not pictures
QUICK_TIM_OVERRIDES = ["train.steps=150", "optim.warmup_steps=20", "train.checkpoint_every=150"]
AE_HELDOUT_IMAGES = 256  # held-out scenes for the autoencoder's PSNR (as `tim autoencoder`)
FIXED_MINUTES = 1.0  # data rendering/encoding, model set-up, metrics, pictures (measured ~40 s busy)

DEFAULTS = engine.Defaults(
    DEFAULT_OUT, DEMO_STEPS, QUICK_STEPS, DEFAULT_PER_CLASS, QUICK_PER_CLASS, 15.0, 2.0
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """The latent demo's checked settings: the autoencoder's, the classes and TiM's run config."""

    settings: Any  # tim.autoencoders.TrainSettings
    specs: list[Any]  # one scene spec per class
    cfg: Any  # TiM's run config
    root: Path  # the latent shards


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(``autoencoder.FIELD=VALUE`` overrides, TiM training-config overrides)."""
    ae = [item for item in overrides if item.startswith("autoencoder.")]
    return ae, [item for item in overrides if not item.startswith("autoencoder.")]


def configure(options: Options) -> Plan:
    """The autoencoder settings and TiM's run config, checked before anything is written."""
    from tim.training import load_config

    ae_overrides, tim_overrides = split_overrides(options.overrides)
    settings = _ae_settings(options.quick, options.seed, options.minutes, ae_overrides)
    specs = _class_specs()
    overrides = (
        TIM_OVERRIDES
        + (QUICK_TIM_OVERRIDES if options.quick else [])
        + [f"model.num_classes={len(specs)}", f"train.seed={options.seed}"]
    )
    root = options.out / "latents"
    cfg = load_config("digits", overrides + [f"data.root={root}"] + tim_overrides)
    return Plan(settings, specs, cfg, root)


def run(options: Options, plan: Plan) -> int:
    """Autoencoder, latents, TiM, then sample + decode every step count, judge, write the outputs."""
    started = time.perf_counter()
    out, specs, cfg, per_class = options.out, plan.specs, plan.cfg, options.count
    if options.overwrite:
        for name, markers in {"run": ("config.json", "checkpoints"), "autoencoder": ("config.json",)}.items():
            engine.remove_previous(out / name, markers, f"this demo's {name} folder")
        engine.remove_previous(out / "latents", (), "this demo's latents folder")
    ae_report, ae = _train_autoencoder(out, plan.settings, options.seed)
    real, labels = _render_class_data(
        specs, QUICK_IMAGES_PER_CLASS if options.quick else IMAGES_PER_CLASS, options.seed
    )
    _encode_to_shards(ae, real, labels, specs, plan.root)
    if not engine.time_limit_given(split_overrides(options.overrides)[1]):
        minutes_left = options.minutes - (time.perf_counter() - started) / 60
        cfg = fit_time_limit(cfg, minutes_left, options.steps, per_class, len(specs), ae)
    train_info = _train_tim(cfg, out / "run")
    print(
        f"sampling with {', '.join(map(str, options.steps))} steps, {per_class} images per class, decoding ...",
        flush=True,
    )
    sample_started = time.perf_counter()
    generated = _sample_and_decode(out / "run", ae, options.steps, per_class, options.seed)
    sample_seconds = time.perf_counter() - sample_started
    metrics = _evaluate(generated, specs, ae, per_class, options.seed)
    total_seconds = time.perf_counter() - started
    summary = {
        "command": options.command,
        "autoencoder": {key: ae_report[key] for key in AE_REPORT_KEYS},
        "data": {
            "classes": [spec.caption for spec in specs],
            "images_per_class": len(real) // len(specs),
            "image_size": IMAGE_SIZE,
            "latent_shape": list(ae.encode(real[:1]).shape[1:]),
        },
        "train": train_info,
        "sampling": {
            "per_class": per_class,
            "guidance_scale": 1.0,
            "noise_seed": options.seed,
            "seconds_with_decoding": round(sample_seconds, 1),
        },
        "quality_vs_steps": metrics["steps"],
        "real_images_reference": metrics["real"],
        "autoencoder_reconstruction_reference": metrics["reconstructed"],
        "wall_seconds": round(total_seconds, 1),
        "machine": engine.machine(),
    }
    engine.write_outputs(
        out,
        summary,
        lambda: _write_pictures(out, generated, metrics, real, ae, specs),
        render_report,
        print_table,
        "montage.png, quality_vs_steps.png, steps_*.png, metrics.json, report.md, autoencoder/, latents/, run/",
        total_seconds,
    )
    return 0


AE_REPORT_KEYS = (
    "architecture",
    "steps",
    "planned_steps",
    "seconds",
    "train_images",
    "heldout_images",
    "heldout_psnr_db",
    "heldout_psnr_db_min",
    "latents",
)


def _ae_settings(quick: bool, seed: int, minutes: float, overrides: list[str]) -> Any:
    """TrainSettings: a share of the budget (or QUICK_AE_STEPS), then ``autoencoder.FIELD=VALUE``."""
    from tim.autoencoders import TrainSettings

    settings = TrainSettings(minutes=round(AE_SHARE * minutes, 2), seed=seed)
    if quick:
        settings = dataclasses.replace(settings, steps=QUICK_AE_STEPS)
    fields = {field.name: field for field in dataclasses.fields(TrainSettings)}
    for item in overrides:
        key, sep, value = item[len("autoencoder.") :].partition("=")
        if not sep or key not in fields:
            raise TimError(
                f"override {item!r} is not autoencoder.FIELD=VALUE with a known field",
                f"use one of autoencoder.{', autoencoder.'.join(fields)}",
            )
        current = getattr(settings, key)
        try:
            if key == "widths":
                parsed: Any = tuple(int(v) for v in value.split(","))
            elif isinstance(current, bool):
                if value.lower() not in ("true", "false"):
                    raise ValueError(value)
                parsed = value.lower() == "true"
            elif key == "minutes":
                parsed = None if value.lower() in ("none", "null", "") else float(value)
            else:
                parsed = type(current)(value)
        except ValueError:
            raise TimError(
                f"override {item!r}: {value!r} is not a valid {key}",
                f"pass a value like autoencoder.{key}={current}",
            ) from None
        settings = dataclasses.replace(settings, **{key: parsed})
    return settings


def _class_specs() -> list[Any]:
    """The 15 training colour-shape pairs of the scenes' ``colors`` category (held-out pairs excluded)."""
    from tim.data.scenes import scene_specs

    return scene_specs("train", "colors")


def _train_autoencoder(out: Path, settings: Any, seed: int) -> tuple[dict[str, Any], Any]:
    from tim.autoencoders import Autoencoder, train_autoencoder

    images = scene_tensor(AE_TRAIN_IMAGES, seed=seed, size=IMAGE_SIZE)
    heldout = scene_tensor(AE_HELDOUT_IMAGES, seed=seed + 1_000_003, size=IMAGE_SIZE)
    print(
        f"1/3 autoencoder: training an f{2 ** (len(settings.widths) - 1)} AutoencoderKL on {len(images)} scenes "
        f"for up to {settings.steps} steps or {settings.minutes:g} min ({torch.get_num_threads()} thread(s))",
        flush=True,
    )
    report = train_autoencoder(images, heldout, out / "autoencoder", settings, source="scenes")
    print(f"    held-out PSNR {report['heldout_psnr_db']:.2f} dB after {report['steps']} steps", flush=True)
    return report, Autoencoder.from_pretrained(out / "autoencoder")


def _render_class_data(specs: list[Any], per_class: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_class`` scenes of each colour-shape class, (N, 3, 32, 32) in [-1, 1], class-major."""
    from tim.data.scenes import render_scene

    images, labels = [], []
    for label, spec in enumerate(specs):
        for k in range(per_class):
            rng = np.random.default_rng([seed, 7, label, k])  # 7: a stream of its own (not render_scenes')
            images.append(render_scene(spec, size=IMAGE_SIZE, generator=rng))
            labels.append(label)
    array = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2))
    return torch.from_numpy(array).float() * (2 / 255) - 1, torch.tensor(labels)


def _encode_to_shards(
    ae: Any, images: torch.Tensor, labels: torch.Tensor, specs: list[Any], root: Path
) -> None:
    from tim.data.latents import write_latent_shards

    latents = torch.cat([ae.encode(chunk) for chunk in images.split(256)])
    write_latent_shards(
        root,
        latents,
        labels,
        scale=ae.scaling_factor,
        shift=ae.shift_factor,
        autoencoder=str(ae.folder.resolve()),
        class_names=[spec.caption for spec in specs],
    )
    print(
        f"2/3 latents: {len(latents)} scenes of {len(specs)} classes -> {tuple(latents.shape[1:])} latents in {root}",
        flush=True,
    )


def fit_time_limit(
    cfg: Any, minutes_left: float, steps_list: list[int], per_class: int, classes: int, ae: Any
) -> Any:
    """Set ``train.time_limit`` so that TiM training, sampling, decoding and metrics fit the budget.

    One network call on a sampling batch and one decode are timed here, under this machine's load.
    """
    model = engine.build_untrained(cfg).eval()
    n = classes * per_class
    x, t, y = torch.zeros(n, 4, 8, 8), torch.ones(n), torch.arange(n) % classes
    with torch.no_grad():
        call = engine.fastest(lambda: model(x, t, t, y=y), 3)
        zeros = torch.zeros(n, ae.latent_channels, 8, 8)
        decode = engine.fastest(lambda: ae.decode(zeros), 2, warm_up=False)
    sampling = 1.5 * (call * sum(steps_list) + decode * len(steps_list)) / 60  # 50% margin (as tim demo)
    return engine.fit_time_limit(
        cfg,
        minutes_left,
        sampling + FIXED_MINUTES,
        lambda limit: (
            f"    {minutes_left:.1f} min left: sampling + decoding need ~{sampling:.1f} min here, so "
            f"TiM trains for at most {limit:.1f} min"
        ),
    )


def _train_tim(cfg: Any, run_dir: Path) -> dict[str, Any]:
    from tim.training.loop import total_steps

    params = sum(p.numel() for p in engine.build_untrained(cfg).parameters())
    print(
        f"3/3 TiM: training {cfg.model.preset} ({params / 1e6:.2f}M parameters, 4-channel 8x8 latents, "
        f"{cfg.model.num_classes} classes) for up to {total_steps(cfg)} steps or "
        f"{cfg.train.time_limit:g} min",
        flush=True,
    )
    summary, seconds = engine.train_run(cfg, run_dir)
    return engine.train_record(cfg, run_dir, params, summary, seconds)


def _sample_and_decode(
    run_dir: Path, ae: Any, steps_list: list[int], per_class: int, seed: int
) -> list[Generated]:
    """EMA samples per step count (same noise for all), decoded to images in [-1, 1]."""
    model, path, shape, classes = engine.load_class_run(run_dir)

    def one(steps: int) -> Generated:
        item = sample_classes(model, path, shape, steps, class_ids=classes, per_class=per_class, seed=seed)
        images = torch.cat([ae.decode(ae.denormalize(chunk)) for chunk in item.samples.split(256)])
        return Generated(item.steps, images, item.labels, item.nfe)

    return engine.sweep(steps_list, one)


def _evaluate(generated: list[Any], specs: list[Any], ae: Any, per_class: int, seed: int) -> dict[str, Any]:
    """Detector accuracy and pixel energy distance per step count; the same for real and reconstructed images."""
    from tim.evaluation.geneval import score_images, to_uint8_images
    from tim.evaluation.metrics import energy_distance

    reference, _ = _render_class_data(specs, per_class, seed + 1)  # fresh real images, same class mix
    flat_reference = reference.flatten(1).numpy().astype(np.float64)

    def judge(images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        scores = score_images(to_uint8_images(images), [specs[int(k)] for k in labels])
        return {
            "detector_accuracy": round(float(scores["overall"]), 4),
            "energy_distance": round(
                energy_distance(images.flatten(1).numpy().astype(np.float64), flat_reference), 4
            ),
        }

    rows = {str(item.steps): {"nfe": item.nfe, **judge(item.samples, item.labels)} for item in generated}
    real, labels = _render_class_data(specs, per_class, seed + 2)
    reconstructed = torch.cat([ae.decode(ae.encode(chunk)) for chunk in real.split(256)])
    return {
        "steps": rows,
        "real": {"num_images": len(real), **judge(real, labels)},
        "reconstructed": {"num_images": len(real), **judge(reconstructed, labels)},
    }


# ------------------------------------------------------------------------------------------------ output


def _grid(images: torch.Tensor, classes: int) -> tuple[torch.Tensor, int]:
    """The first GRID_COLUMNS images of each class (class-major input), one row per class."""
    per_class = len(images) // classes
    columns = min(GRID_COLUMNS, per_class)
    return images[[c * per_class + j for c in range(classes) for j in range(columns)]], columns


def _write_pictures(
    out: Path, generated: list[Any], metrics: dict[str, Any], real: torch.Tensor, ae: Any, specs: list[Any]
) -> None:
    from tim import viz

    classes = len(specs)
    real_grid, columns = _grid(real, classes)
    panels = [viz.grid_array(real_grid, nrow=columns, scale=2)]
    captions = [f"real (detector {metrics['real']['detector_accuracy']:.0%})"]
    panels.append(viz.grid_array(ae.decode(ae.encode(real_grid)), nrow=columns, scale=2))
    captions.append(f"autoencoder ({metrics['reconstructed']['detector_accuracy']:.0%})")
    for item in generated:
        grid, columns = _grid(item.samples, classes)
        viz.save_grid(grid, out / f"steps_{item.steps:03d}.png", nrow=columns, scale=3)
        panels.append(viz.grid_array(grid, nrow=columns, scale=2))
        accuracy = metrics["steps"][str(item.steps)]["detector_accuracy"]
        captions.append(f"{item.steps} step{'s' if item.steps > 1 else ''} ({accuracy:.0%})")
    viz.montage(
        panels,
        captions,
        out / "montage.png",
        ncol=5 if len(panels) > 5 else len(panels),
        title="Latent TiM on 32x32 scenes, decoded by a 4x autoencoder trained here (rows: "
        + ", ".join(spec.caption.removeprefix("a ") for spec in specs[:3])
        + " ...; same noise in every panel)",
    )
    steps = [item.steps for item in generated]
    rows = metrics["steps"]
    viz.line_plot(
        steps,
        {
            "detector accuracy": [rows[str(k)]["detector_accuracy"] for k in steps],
            "energy distance": [rows[str(k)]["energy_distance"] for k in steps],
        },
        out / "quality_vs_steps.png",
        xlabel="sampling steps (NFE)",
        ylabels={
            "detector accuracy": "right shape + colour (higher is better)",
            "energy distance": "pixel energy distance (lower is better)",
        },
        title="Latent TiM: quality vs sampling steps (dashed: autoencoder reconstructions)",
        reference={
            "detector accuracy": metrics["reconstructed"]["detector_accuracy"],
            "energy distance": metrics["reconstructed"]["energy_distance"],
        },
    )


def render_report(summary: dict[str, Any]) -> str:
    """report.md of a latent demo run (from the contents of metrics.json)."""
    ae, train, rows = summary["autoencoder"], summary["train"], summary["quality_vs_steps"]
    real, recon = summary["real_images_reference"], summary["autoencoder_reconstruction_reference"]
    arch = ae["architecture"]
    lines = [
        "# Latent TiM demo: autoencoder + TiM in its latent space, one model, any number of steps",
        "",
        f"Command: `{summary['command']}` ({summary['wall_seconds'] / 60:.1f} min wall time, "
        f"{summary['machine']['cpu_threads']} CPU thread(s)).",
        "",
        f"Autoencoder: an f{arch['factor']} AutoencoderKL ({arch['parameters'] / 1e6:.2f}M parameters, widths "
        f"{arch['widths']}, {arch['latent_channels']} latent channels) trained on {ae['train_images']:,} scenes for "
        f"{ae['steps']} steps ({ae['seconds'] / 60:.1f} min): held-out PSNR **{ae['heldout_psnr_db']:.2f} dB** "
        f"(min {ae['heldout_psnr_db_min']:.2f}) on {ae['heldout_images']} scenes; latent shift "
        f"{ae['latents']['shift_factor']:.4f}, scale {ae['latents']['scaling_factor']:.4f}.",
        "",
        f"TiM: `{train['model']}` with 4 input channels and 4x4 latent patches ({train['parameters'] / 1e6:.2f}M parameters) "
        f"trained on {summary['data']['images_per_class'] * len(summary['data']['classes']):,} latents "
        f"{tuple(summary['data']['latent_shape'])} of {len(summary['data']['classes'])} classes (the scenes' colour-"
        f"shape pairs) for {train['steps']} steps in {train['seconds'] / 60:.1f} min"
        + (" (stopped by the time limit)." if train["stopped_by_time_limit"] else "."),
        "",
        f"Samples: {summary['sampling']['per_class']} per class from the EMA weights, the same noise for every step "
        "count, no guidance, decoded by the autoencoder. Detector accuracy: share of images in which "
        "`tim.evaluation.geneval` finds the asked shape in the asked colour; energy distance: between the "
        "decoded samples and fresh real scenes, in pixel space (lower is better).",
        "",
        "| steps (NFE) | detector accuracy | energy distance |",
        "|---:|---:|---:|",
    ]
    lines += [
        f"| {steps} | {row['detector_accuracy']:.3f} | {row['energy_distance']:.2f} |"
        for steps, row in rows.items()
    ]
    lines += [
        f"| autoencoder reconstructions ({recon['num_images']}) | {recon['detector_accuracy']:.3f} | "
        f"{recon['energy_distance']:.2f} |",
        f"| real scenes ({real['num_images']}) | {real['detector_accuracy']:.3f} | {real['energy_distance']:.2f} |",
        "",
        "![montage](montage.png)",
        "",
        "![quality vs steps](quality_vs_steps.png)",
        "",
        "Files: `steps_<k>.png` (rows = classes), `metrics.json`, `autoencoder/` (diffusers AutoencoderKL + "
        "train_report.json), `latents/` (shards), `run/` (checkpoints, config.json, logs). Sample again, decoded to "
        f"PNGs: `tim sample --checkpoint {summary['train']['run_dir']} --class 0,6 --steps 8 --out DIR` (the run "
        "records the autoencoder's folder).",
        "",
    ]
    return "\n".join(lines)


def print_table(summary: dict[str, Any]) -> None:
    """The quality-vs-steps table and the two references on stdout."""
    print(f"{'steps':>14} {'detector':>9} {'energy':>8}")
    for steps, row in summary["quality_vs_steps"].items():
        print(f"{steps:>14} {row['detector_accuracy']:9.3f} {row['energy_distance']:8.2f}")
    for name, key in (
        ("reconstructed", "autoencoder_reconstruction_reference"),
        ("real", "real_images_reference"),
    ):
        row = summary[key]
        print(f"{name:>14} {row['detector_accuracy']:9.3f} {row['energy_distance']:8.2f}")


EXPERIMENT = engine.Experiment("latent", DEFAULTS, configure, run)
