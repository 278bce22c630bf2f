"""Measure the peak memory of autoencoder decodes, the data behind ``Autoencoder.decode_bytes``.

Each decode runs in a fresh subprocess with randomly initialised weights (memory does not depend
on the values) of the released architectures: the SD-VAE (AutoencoderKL, f8c4) and DC-AE f32c32
(AutoencoderDC, f32c32), plus a quarter-width SD-VAE for tiled decodes of large images. On the CPU
the peak is the resident-set high-water mark (``VmHWM``, reset through ``/proc/self/clear_refs``
just before the decode) minus the resident set before it; on CUDA it is
``torch.cuda.max_memory_allocated`` minus the allocation before it. Printed per decode: the
measured peak, the library's estimate, and ``ratio`` = (peak - output - kept tiles) / (widest
activation x element size), the constant ``PEAK_PER_WIDEST`` must cover.

    python scripts/autoencoder_memory.py [--device cuda] [--out memory.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from tim.autoencoders import ARCHITECTURES

SD_VAE, DC_AE = ARCHITECTURES["sd-vae"], ARCHITECTURES["dc-ae-f32c32"]
SD_VAE_QUARTER = dict(SD_VAE, block_out_channels=(32, 64, 128, 128), norm_num_groups=32)
CASES = [  # (name, class, config, output side, tiled, tile size)
    ("sd-vae", "AutoencoderKL", SD_VAE, 128, False, 512),
    ("sd-vae", "AutoencoderKL", SD_VAE, 256, False, 512),
    ("sd-vae", "AutoencoderKL", SD_VAE, 384, False, 512),
    ("dc-ae-f32c32", "AutoencoderDC", DC_AE, 256, False, 512),
    ("dc-ae-f32c32", "AutoencoderDC", DC_AE, 512, False, 512),
    ("sd-vae/4", "AutoencoderKL", SD_VAE_QUARTER, 512, False, 256),
    ("sd-vae/4", "AutoencoderKL", SD_VAE_QUARTER, 1024, True, 256),
]

WORKER = r"""
import json, sys, torch
from tim.autoencoders import Autoencoder
kind, config, side, tiled, tile, device = json.loads(sys.argv[1])
torch.manual_seed(0)
ae = Autoencoder.from_config(config, device=device, tile_size=tile, memory_limit=1 << 62)
latents = torch.randn(1, ae.latent_channels, side // ae.factor, side // ae.factor, device=device)
def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
with torch.no_grad():
    ae.decode(latents[:, :, :2, :2], tiled=False)  # warm-up: first calls allocate once-only buffers
    if device == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); before = torch.cuda.memory_allocated()
    else:
        open("/proc/self/clear_refs", "w").write("5"); before = rss("VmRSS:")
    ae.decode(latents, tiled=tiled)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else rss("VmHWM:")) - before
print(json.dumps({"peak": peak, "estimate": ae.decode_bytes(side, side, tiled=tiled),
                  "widest": ae.widest_activation(min(side, tile) if tiled else side, min(side, tile) if tiled else side),
                  "stride": ae._tile_stride()}))
"""


def measure(kind: str, config: dict, side: int, tiled: bool, tile: int, device: str) -> dict:
    argument = json.dumps([kind, config, side, tiled, tile, device])
    done = subprocess.run(
        [sys.executable, "-c", WORKER, argument], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="also write the rows as JSON")
    args = parser.parse_args()
    rows = []
    for name, kind, config, side, tiled, tile in CASES:
        result = measure(kind, config, side, tiled, tile, args.device)
        element = 4
        output = 3 * side * side * 4
        kept = 3 * side * side * element * (tile / result["stride"]) ** 2 * 2 if tiled else 0
        ratio = (result["peak"] - output - kept) / (result["widest"] * element)
        row = {
            "model": name,
            "side": side,
            "tiled": tiled,
            "tile": tile,
            "peak_mb": round(result["peak"] / 1e6, 1),
            "estimate_mb": round(result["estimate"] / 1e6, 1),
            "ratio": round(ratio, 2),
            "estimate_over_peak": round(result["estimate"] / max(result["peak"], 1), 2),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"device": args.device, "rows": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
