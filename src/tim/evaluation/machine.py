"""The machine a published number was measured on: CPU, cores, torch threads and version, date.

Every benchmark report (``tim bench quality|cost|geneval``, docs/benchmarks.md) carries it.
"""

from __future__ import annotations

from pathlib import Path

import torch


def machine_info() -> dict:
    """CPU model, core count, torch version and the UTC date, for labelling published numbers."""
    import datetime
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass  # not Linux: keep platform's answer
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
    }
