"""Worker for tests/training/test_repa.py: ``torchrun --nproc_per_node 2 repa_worker.py OUT OVERRIDES...``.

Trains the given run (REPA on) wrapped with DDP into ``OUT/ddp``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist


def main() -> None:
    torch.set_num_threads(1)
    out, overrides = Path(sys.argv[1]), sys.argv[2:]
    dist.init_process_group("gloo")
    from tim.training import load_config, train

    train(load_config(None, [*overrides, "train.parallel=ddp"]), out / "ddp")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
