"""What the machine has free: memory per device, and sizes written for people.

One place for the numbers that sampling, training, the pipeline and the autoencoders check before
they allocate (a refusal names the size needed and this limit). A leaf module: torch and the
standard library only, importable from every layer, like :mod:`tim.errors`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

UNKNOWN_MEMORY = 2**62  # no way to tell on this platform: report "plenty" rather than refuse


def available_memory(device: torch.device | str) -> tuple[int, str]:
    """Bytes free for new allocations on ``device``, and where the number comes from.

    CUDA: the driver's free memory plus what PyTorch's caching allocator holds but does not use.
    CPU: ``MemAvailable`` of /proc/meminfo (else ``os.sysconf`` free pages), lowered to the
    cgroup v2 limit (``memory.max - memory.current``) when the process runs in a container with one.
    """
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        unused_cache = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return int(free + unused_cache), f"free memory of {device}"
    value, source = _host_available()
    limit = _cgroup_free()
    if limit is not None and limit < value:
        return limit, "the container's memory limit (cgroup memory.max)"
    return value, source


def _host_available() -> tuple[int, str]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024, "MemAvailable in /proc/meminfo"  # "MemAvailable: 123 kB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free pages (os.sysconf)"
    except (ValueError, OSError, AttributeError):
        return UNKNOWN_MEMORY, "unknown (no /proc/meminfo or sysconf)"


def _cgroup_free() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        return None if limit == "max" else max(0, int(limit) - int(used))
    except (OSError, ValueError):
        return None


def format_bytes(value: float) -> str:
    """A size for messages: ``1536 -> '1.5 KiB'``, ``0 -> '0 B'``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
