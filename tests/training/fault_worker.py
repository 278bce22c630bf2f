"""Worker for tests/training/test_fault.py: ``python fault_worker.py RUN_DIR OVERRIDES...``.

Prints ``ready`` once the imports are done (the test then kills it with SIGKILL after a random
delay, so the kill lands inside training or checkpoint writing, not inside ``import torch``).
"""

from __future__ import annotations

import sys

import torch

from tim.training import load_config, train

if __name__ == "__main__":
    torch.set_num_threads(1)
    run_dir, *overrides = sys.argv[1:]
    cfg = load_config(None, overrides)
    print("ready", flush=True)
    train(cfg, run_dir)
