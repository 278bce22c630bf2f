"""Cost of the generation pipeline: overhead over the raw network, decode time, memory at large sizes.

Prints one JSON object with three sections:

* ``overhead``: 1-step generation through :class:`tim.generation.TiMPipeline` (no autoencoder;
  ``output_type="pt"`` for pixel models, ``"latent"`` for latent ones: per-image seeded noise,
  conditioning, the memory check, the sampler, range mapping) against the
  raw network forward ``F(z, 1, 0, y)`` at the same batch, both in one process and interleaved
  (raw, pipe, raw, pipe, ...) so that machine load hits both alike; images/s as medians and as
  best-of-repeats, and the pipeline's own time (each call minus the time inside the network,
  from forward hooks in the same call, so load swings cancel). Target: >= 95 % of raw images/s.
* ``decode``: a small random AutoencoderKL (f4, 4 channels; built here, no download) behind the
  pipeline: network seconds and decode seconds per image, reported separately.
* ``memory``: the library's estimate (``estimate_generation_bytes`` + weights +
  ``Autoencoder.decode_bytes``) of a 4096x4096 text-to-image generation with the TiM-T2I preset
  (DC-AE f32 latents 128x128x32 = 16,384 tokens, bf16, CFG, 256 caption tokens), and measured peaks
  of a narrow network with the T2I token structure (patch 1, 32 latent channels, caption
  cross-attention) at growing latent sizes: peak resident-memory growth during the call, polled every
  0.5 ms in a fresh process after ``malloc_trim``, with glibc's default allocator and with a fixed
  mmap threshold (live tensors only; the growth exponent is fitted on these) on the CPU, or
  ``torch.cuda.max_memory_allocated`` (GPU), with the growth exponent d log(peak) / d log(tokens)
  fitted over the largest sizes.

    python benchmarks/bench_pipeline.py                  # CPU, 1 thread, about 5 minutes on a loaded 2-core box
    python benchmarks/bench_pipeline.py --quick          # smaller models and sizes (about a minute)
    python benchmarks/bench_pipeline.py --device cuda    # GPU (bf16 for the memory section)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

from tim.generation import SamplingRecipe, TiMPipeline, estimate_generation_bytes
from tim.models import TIM_PRESETS, TiMConfig, build_model

# The narrow stand-in for TiM-T2I: the T2I token structure (patch 1 on 32-channel DC-AE latents,
# caption cross-attention) at a width a CPU can run at 16,384 tokens.
NARROW_T2I = dataclasses.replace(
    TIM_PRESETS["TiM-T2I"], hidden_size=64, depth=2, num_heads=1, modulation_rank=16, text_dim=64, z_dim=0
)
CAPTION_TOKENS = 256  # TiM-T2I caption length (published code: Gemma features padded to 256 tokens)


def median(values: list[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """Random non-zero weights (the released initialisation outputs exactly 0)."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model.eval()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def overhead(name: str, config: TiMConfig, batch: int, repeats: int, device: torch.device) -> dict:
    """Interleaved raw forward vs 1-step pipeline generation at the same batch."""
    model = perturbed(build_model(config)).to(device)
    pipe = TiMPipeline(model, SamplingRecipe(steps=1))
    C, H = config.in_channels, config.input_size
    labels = [k % config.num_classes for k in range(batch)]
    z = torch.randn(batch, C, H, H, generator=torch.Generator().manual_seed(0)).to(device)
    y = torch.tensor(labels, device=device)
    ones, zeros = torch.ones(batch, device=device), torch.zeros(batch, device=device)

    @torch.no_grad()
    def raw() -> None:
        model(z, ones, zeros, y=y)

    output_type = "pt" if C in (1, 3) else "latent"  # latent models without an autoencoder return latents

    def through_pipeline() -> None:
        pipe(
            class_labels=labels,
            steps=1,
            guidance_scale=1.0,
            output_type=output_type,
            batch_size=batch,
            seed=0,
        )

    # Time spent inside the network during each pipeline call (forward hooks): the pipeline's own
    # cost is the rest of the call, measured in the same call and so immune to machine load swings.
    inside = [0.0]
    marks: list[float] = []

    def before(*_: object) -> None:  # hooks must return None (a value would replace the inputs/outputs)
        sync(device)
        marks.append(time.perf_counter())

    def after(*_: object) -> None:
        sync(device)
        inside[0] += time.perf_counter() - marks.pop()

    model.register_forward_pre_hook(before)
    model.register_forward_hook(after)

    times = {"raw": [], "pipeline": []}
    own = []
    for step in (raw, through_pipeline):  # warm-up
        step()
    for _ in range(repeats):
        for key, step in (("raw", raw), ("pipeline", through_pipeline)):
            sync(device)
            inside[0] = 0.0
            start = time.perf_counter()
            step()
            sync(device)
            times[key].append(time.perf_counter() - start)
            if key == "pipeline":
                own.append(times[key][-1] - inside[0])
    raw_ips, pipe_ips = batch / median(times["raw"]), batch / median(times["pipeline"])
    best_raw, best_pipe = batch / min(times["raw"]), batch / min(times["pipeline"])
    return {
        "model": name,
        "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "tokens": (H // config.patch_size) ** 2,
        "batch": batch,
        "repeats": repeats,
        "output_type": output_type,
        "raw_images_per_s_median": round(raw_ips, 2),
        "pipeline_images_per_s_median": round(pipe_ips, 2),
        "pipeline_share_of_raw_median": round(pipe_ips / raw_ips, 3),
        "raw_images_per_s_best": round(best_raw, 2),
        "pipeline_images_per_s_best": round(best_pipe, 2),
        "pipeline_share_of_raw_best": round(best_pipe / best_raw, 3),
        "pipeline_own_ms_per_batch": round(1000 * median(own), 2),
        "pipeline_own_share_of_call": round(median(own) / median(times["pipeline"]), 4),
    }


def tiny_kl(folder: Path) -> Path:
    """A small random AutoencoderKL (f4, 4 latent channels), saved with save_pretrained."""
    import diffusers

    torch.manual_seed(0)
    diffusers.AutoencoderKL(
        block_out_channels=(32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=16,
        layers_per_block=1,
        sample_size=128,
        scaling_factor=0.5,
    ).save_pretrained(str(folder))
    return folder


def decode_section(config: TiMConfig, batch: int, repeats: int, device: torch.device, workdir: Path) -> dict:
    """Network time vs decode time per image through a pipeline with a small KL autoencoder."""
    from tim.autoencoders import Autoencoder

    ae = Autoencoder.from_pretrained(tiny_kl(workdir / "kl"), device=device)
    pipe = TiMPipeline(perturbed(build_model(config)).to(device), SamplingRecipe(steps=1), autoencoder=ae)
    side = config.input_size * ae.factor
    labels = [k % config.num_classes for k in range(batch)]
    latent, decode = [], []
    pipe(class_labels=labels, output_type="pt", batch_size=batch)  # warm-up
    for _ in range(repeats):
        start = time.perf_counter()
        x = pipe(class_labels=labels, output_type="latent", batch_size=batch).images
        sync(device)
        latent.append(time.perf_counter() - start)
        start = time.perf_counter()
        ae.decode((x / pipe.recipe.latent_scale + pipe.recipe.latent_shift).to(device))
        sync(device)
        decode.append(time.perf_counter() - start)
    return {
        "autoencoder": "AutoencoderKL f4 c4, widths 32-64-64 (random)",
        "image_size": side,
        "batch": batch,
        "network_s_per_image": round(median(latent) / batch, 4),
        "decode_s_per_image": round(median(decode) / batch, 4),
        "decode_bytes_estimate_MiB": round(ae.decode_bytes(side, side) / 2**20, 1),
    }


def estimate_4096(device: torch.device, with_decode: bool = True) -> dict:
    """The library's estimate for a 4096^2 TiM-T2I generation (bf16, CFG, DC-AE f32c32 decode)."""
    config = TIM_PRESETS["TiM-T2I"]
    h = w = 4096 // 32  # DC-AE f32 (published TiM-T2I, github.com/WZDTHU/TiM)
    with torch.device("meta"):  # shapes only: no 3.5 GB allocation, no initialisation work
        params = sum(math.prod(p.shape) for p in build_model(config, z_dim=0).parameters())
    network = estimate_generation_bytes(
        config, 1, h, w, dtype_bytes=2, guided=True, context_length=CAPTION_TOKENS
    )
    out = {
        "preset": "TiM-T2I",
        "image": "4096x4096",
        "latent": [32, h, w],
        "tokens": h * w,
        "dtype": "bf16",
        "guided": True,
        "caption_tokens": CAPTION_TOKENS,
        "weights_GiB": round(params * 2 / 2**30, 2),
        "network_activations_GiB": round(network / 2**30, 2),
    }
    try:  # the decode estimate of a DC-AE with the f32c32 layout (diffusers' default AutoencoderDC), no weights
        if not with_decode:
            raise ImportError("decode estimate skipped")
        import diffusers

        from tim.autoencoders import Autoencoder

        with torch.device("meta"):
            vae = diffusers.AutoencoderDC()
        ae = Autoencoder(vae, memory_limit=2**50)
        out["decode_GiB_tiled"] = round(ae.decode_bytes(4096, 4096, tiled=True) / 2**30, 2)
        out["decode_GiB_untiled"] = round(ae.decode_bytes(4096, 4096, tiled=False) / 2**30, 2)
    except Exception as error:  # noqa: BLE001 - optional part of the report
        out["decode_estimate_error"] = f"{type(error).__name__}: {error}"
    out["total_GiB_tiled_decode"] = round(
        out["weights_GiB"] + out["network_activations_GiB"] + out.get("decode_GiB_tiled", 0.0), 2
    )
    return out


MEASURE = """
import json, sys, torch
from tim.models import TiMConfig, TiM
from tim.generation import SamplingRecipe, TiMPipeline
torch.set_num_threads(1)
config = TiMConfig.from_dict(json.loads(sys.argv[1])); side = int(sys.argv[2]); device = torch.device(sys.argv[3])
torch.manual_seed(0)
model = TiM(config).eval().to(device)
dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
model.to(dtype)
pipe = TiMPipeline(model, SamplingRecipe(steps=1, guidance_scale=2.0, text_max_length=int(sys.argv[4])))
context = torch.randn(1, int(sys.argv[4]), config.text_dim)
class Text:  # a fixed caption: the memory of the network, not of a text encoder, is measured
    dim = config.text_dim
    def __call__(self, prompts):
        return {"context": context.expand(len(prompts), -1, -1), "context_mask": torch.ones(len(prompts), context.shape[1], dtype=torch.bool)}
pipe.text_encoder = Text()
pipe.memory_limit = 2**50
import ctypes, os, threading, time
page = os.sysconf("SC_PAGE_SIZE")
def rss():  # resident set size now, bytes
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * page
pipe(prompt="a caption", height=16, width=16, steps=1, output_type="latent")  # warm-up (kernels, caches)
ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so that growth = new allocations
peak, done = [rss()], threading.Event()
before = peak[0]
def poll():
    while not done.is_set():
        peak[0] = max(peak[0], rss()); time.sleep(0.0005)
if device.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
else:
    thread = threading.Thread(target=poll, daemon=True); thread.start()
start = time.perf_counter()
pipe(prompt="a caption", height=side, width=side, steps=1, output_type="latent")
seconds = time.perf_counter() - start
if device.type == "cuda":
    used = torch.cuda.max_memory_allocated() - base
else:
    done.set(); thread.join(); used = max(peak[0], rss()) - before
print(json.dumps({"peak": used, "seconds": seconds}))
"""


def measured_peaks(config: TiMConfig, sides: list[int], device: torch.device) -> dict:
    """Peak memory of one guided 1-step generation per latent side, each in a fresh process."""
    rows = []
    # CPU, two allocator settings: a fixed mmap threshold makes glibc map every large tensor on its
    # own and unmap it when freed, so the resident size follows live memory ("live"); the default
    # dynamic threshold recycles heap and fragments ("default", what a user's process shows).
    modes = {"live": "131072", "default": None} if device.type == "cpu" else {"live": None}
    for side in sides:
        row = {"latent_side": side, "tokens": side * side}
        for mode, threshold in modes.items():
            env = dict(os.environ, **({"MALLOC_MMAP_THRESHOLD_": threshold} if threshold else {}))
            result = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    MEASURE,
                    json.dumps(config.to_dict()),
                    str(side),
                    str(device),
                    str(CAPTION_TOKENS),
                ],
                capture_output=True,
                text=True,
                env=env,
            )
            if result.returncode:
                raise RuntimeError(f"measuring side {side} ({mode}) failed: {result.stderr.strip()[-2000:]}")
            measured = json.loads(result.stdout.strip().splitlines()[-1])
            row[f"measured_{mode}_MiB"] = round(measured["peak"] / 2**20, 1)
            row[f"seconds_{mode}"] = round(measured["seconds"], 2)
        dtype_bytes = 2 if device.type == "cuda" else 4
        estimate = estimate_generation_bytes(
            config, 1, side, side, dtype_bytes=dtype_bytes, guided=True, context_length=CAPTION_TOKENS
        )
        row["estimate_MiB"] = round(estimate / 2**20, 1)
        rows.append(row)
    big = [r for r in rows if r["measured_live_MiB"] > 0][-3:]
    slope = None
    if len(big) >= 2:
        xs = [math.log(r["tokens"]) for r in big]
        ys = [math.log(r["measured_live_MiB"]) for r in big]
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    return {
        "config": {
            k: getattr(config, k)
            for k in (
                "hidden_size",
                "depth",
                "num_heads",
                "in_channels",
                "patch_size",
                "text_dim",
                "attention_backend",
            )
        },
        "rows": rows,
        "growth_exponent_in_tokens": None if slope is None else round(slope, 2),
        "fitted_on_tokens": [r["tokens"] for r in big],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timing rounds per variant")
    parser.add_argument("--quick", action="store_true", help="smaller models and sizes")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    workdir = Path("runs") / "bench_pipeline"
    workdir.mkdir(parents=True, exist_ok=True)
    b4 = dataclasses.replace(TIM_PRESETS["TiM-B/4"], z_dim=0)
    narrow_b4 = dataclasses.replace(b4, hidden_size=256, depth=4, num_heads=4, modulation_rank=64)
    models = [("TiM-digits", TIM_PRESETS["TiM-digits"], 64)]
    models += [("TiM-B/4 width 256 depth 4", narrow_b4, 16)] if args.quick else [("TiM-B/4", b4, 8)]
    sides = [16, 32, 64] if args.quick else [16, 32, 64, 96, 128]
    started = time.perf_counter()
    report = {
        "benchmark": "bench_pipeline",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": round(os.getloadavg()[0], 2),
        "torch": torch.__version__,
        "device": str(device),
        "threads": args.threads,
        "overhead": [overhead(name, config, batch, args.repeats, device) for name, config, batch in models],
        "decode": decode_section(narrow_b4, 4, max(3, args.repeats // 2), device, workdir),
        "memory": {
            "estimate_4096": estimate_4096(device),
            "measured_narrow_t2i": measured_peaks(NARROW_T2I, sides, device),
        },
    }
    report["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
