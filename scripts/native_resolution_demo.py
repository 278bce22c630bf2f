"""Native-resolution demo (issue 7 item 4): train on mixed sizes, sample at seen and unseen sizes.

1. Data: the synthetic "shapes" dataset (tim.data.shapes: circle / square / triangle / plus on a
   flat background; grey here), rendered at every size with sides 8..24 px in steps of 8 and aspect <= 3:1
   (9 sizes), read through resolution buckets: every batch is one size, and the batch size
   follows a token budget (paper.md §8: B ∝ 1/(H W)).
2. Training: ``tim.training.train`` with a small class-conditional TiM (patch 4) and the
   resolution-dependent time shift (SD3 rule, paper.md §5.2, base 16x16), for a few minutes on CPU.
3. Sampling with the EMA model at seen sizes (16x16, 24x24, 8x24, 24x16) and unseen ones
   (32x32, 48x48 larger; 16x48 and 48x16 = 3:1 at a larger scale; 40x24), with 1 and 4 steps,
   each size with its own time shift; unseen sizes also with RoPE position interpolation
   (``TiM.set_rope_scale``). One PNG per (size, steps[, RoPE scale]): rows = classes, columns = seeds,
   plus ``overview.png`` with everything and ``real.png`` with training examples.

Run: ``python scripts/native_resolution_demo.py --out runs/native_resolution`` (~5 min on 2 cores).
Rerunning resumes the training run in ``OUT/run`` (and stops at once when it is complete).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from tim.data import DataConfig, build_data_source
from tim.data.shapes import SHAPE_NAMES, shape_sizes
from tim.samplers import sample
from tim.timesteps import resolution_shift
from tim.training import RunConfig, load_run, train
from tim.training.config import ModelConfig, ObjectiveConfig, OptimConfig, SampleConfig, TrainConfig

BASE = (16, 16)  # base resolution of the time shift (the model's nominal input_size)
SEEN = [(16, 16), (24, 24), (8, 24), (24, 16)]
UNSEEN = [(32, 32), (48, 48), (16, 48), (48, 16), (40, 24)]
SAMPLES_PER_CLASS = 5
CHANNELS = 1  # grey shapes: learnable in a few CPU minutes (3 channels also work, given longer training)


def run_config(minutes: float, steps: int) -> RunConfig:
    """The training run: small TiM on bucketed shapes with the resolution time shift."""
    data = DataConfig(
        name="shapes",
        bucketed=True,
        patch_multiple=8,
        min_side=8,
        max_side=24,
        max_aspect=3.0,
        channels=CHANNELS,
        num_images=4096,
        token_budget=64,
    )  # 64 cells of 8x8 px: 7 images at 24x24, 64 at 8x8
    model = ModelConfig(
        preset="TiM-digits",
        overrides={
            "in_channels": CHANNELS,
            "num_classes": len(SHAPE_NAMES),
            "input_size": BASE[0],
            "patch_size": 4,
            "hidden_size": 96,
            "depth": 3,
            "num_heads": 4,
        },
    )
    return RunConfig(
        model=model,
        objective=ObjectiveConfig(options={"shift_base": BASE}),
        data=data,
        optim=OptimConfig(lr=2e-3, warmup_steps=50),
        train=TrainConfig(steps=steps, time_limit=minutes, batch_size=16, checkpoint_every=200, log_every=25, seed=0),
        sample=SampleConfig(num=0),
    )


def generate(model: torch.nn.Module, size: tuple[int, int], steps: int, seed: int = 0) -> torch.Tensor:
    """SAMPLES_PER_CLASS samples of every class at ``size`` (H, W); returns (classes * n, C, H, W) in [-1, 1]."""
    labels = torch.arange(len(SHAPE_NAMES)).repeat_interleave(SAMPLES_PER_CLASS)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(labels), CHANNELS, *size, generator=generator)
    shift = resolution_shift(size[0], size[1], *BASE)
    with torch.no_grad():
        x = sample(model, noise, steps=steps, cond={"y": labels}, shift=shift, generator=generator).x
    return x.clamp(-1, 1)


def to_grid(x: torch.Tensor, rows: int, pad: int = 2, zoom: int = 4) -> np.ndarray:
    """(N, C, H, W) in [-1, 1], C = 1 or 3 -> uint8 (rows * H', cols * W', 3) with grey padding, upscaled."""
    n, _, h, w = x.shape
    cols = math.ceil(n / rows)
    canvas = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), 128, dtype=np.uint8)
    images = ((x.expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy() + 1) * 127.5).round().astype(np.uint8)
    for k, image in enumerate(images):
        r, c = divmod(k, cols)
        canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = image
    return canvas.repeat(zoom, 0).repeat(zoom, 1)


def save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path)


def overview(panels: list[tuple[str, np.ndarray]], path: Path) -> None:
    """All panels stacked vertically with a caption above each."""
    from PIL import Image, ImageDraw

    width = max(p.shape[1] for _, p in panels)
    height = sum(p.shape[0] + 14 for _, p in panels)
    canvas = Image.new("RGB", (width, height), (255, 255, 255))
    draw, y = ImageDraw.Draw(canvas), 0
    for caption, panel in panels:
        draw.text((2, y + 1), caption, fill=(0, 0, 0))
        canvas.paste(Image.fromarray(panel), (0, y + 14))
        y += panel.shape[0] + 14
    canvas.save(path)


def real_examples(cfg: RunConfig, out: Path) -> None:
    """A few training batches, one per bucket seen first, to compare against the samples."""
    source = build_data_source(cfg.data, batch_size=cfg.train.batch_size, seed=1)
    panels, seen = [], set()
    while len(panels) < 6:
        batch = source.next_batch()
        size = tuple(batch["x"].shape[-2:])
        if size not in seen:
            seen.add(size)
            panels.append((f"real {size[0]}x{size[1]}", to_grid(batch["x"][:8], rows=1)))
    overview(panels, out / "real.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/native_resolution", help="output folder")
    parser.add_argument("--minutes", type=float, default=3.5, help="training time limit")
    parser.add_argument("--steps", type=int, default=3000, help="maximum optimizer steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = run_config(args.minutes, args.steps)
    real_examples(cfg, out)
    started = time.perf_counter()
    train(cfg, out / "run")
    trained = time.perf_counter() - started
    model, _ = load_run(out / "run", which="ema")
    panels, files = [], []
    for steps in (1, 4):
        for size in SEEN + UNSEEN:
            kind = "seen" if size in SEEN else "unseen"
            # Unseen sizes twice: plain RoPE positions, and interpolated ones (scale = largest
            # training side / largest side here) so positions stay inside the trained range.
            scales = [1.0] if size in SEEN else [1.0, min(1.0, cfg.data.max_side / max(size))]
            for scale in scales:
                model.set_rope_scale(scale)
                grid = to_grid(generate(model, size, steps), rows=len(SHAPE_NAMES))
                suffix = "" if scale == 1.0 else f"_rope{scale:.2f}"
                name = out / f"{kind}_{size[0]}x{size[1]}_{steps}step{suffix}.png"
                save_png(grid, name)
                files.append(name.name)
                caption = (
                    f"{kind} {size[0]}x{size[1]}, {steps} step(s), time shift {resolution_shift(*size, *BASE):.2f}"
                )
                panels.append((f"{caption}, RoPE scale {scale:.2f}; rows: {', '.join(SHAPE_NAMES)}", grid))
    model.set_rope_scale(1.0)
    overview(panels, out / "overview.png")
    summary = {
        "train_seconds": round(trained, 1),
        "seen_sizes": SEEN,
        "unseen_sizes": UNSEEN,
        "files": files,
        "training_sizes": shape_sizes(
            cfg.data.min_side, cfg.data.max_side, cfg.data.patch_multiple, cfg.data.max_aspect
        ),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
