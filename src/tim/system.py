"""What the machine has free: memory per device, and sizes written for people; the mode of new files.

One place for the numbers that sampling, training, the pipeline and the autoencoders check before
they allocate (a refusal names the size needed and this limit), and for the permissions of the
files tim creates (``0o666 & ~umask``, also through ``mkstemp`` and libraries that write 0600:
:func:`create_temporary`, :func:`give_new_file_mode`). A leaf module: torch and the standard
library only, importable from every layer, like :mod:`tim.errors`.
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


# ------------------------------------------------------------------------------------------------
# Files we create: the mode a plain open() would give, also through mkstemp and libraries


def umask() -> int:
    """The process's file-creation mask (read without changing it where /proc allows)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)  # no /proc: the classic read (set and put back)
    os.umask(current)
    return current


def new_file_mode() -> int:
    """``0o666 & ~umask``: the permissions ``open(path, "w")`` gives a new file."""
    return 0o666 & ~umask()


def give_new_file_mode(path: str | Path, *, folder: bool = False) -> None:
    """Set the umask-respecting mode on a file we created through ``mkstemp`` (0600) or a library.

    ``tempfile.mkstemp`` and ``safetensors`` create files readable by their owner only; a file we
    publish (samples, exported weights) should have the mode any other new file gets, so that a
    group or a web server set up through the umask can read it. ``folder`` gives ``0o777 & ~umask``
    (for a ``mkdtemp`` folder that is renamed into place).
    """
    os.chmod(path, (0o777 if folder else 0o666) & ~umask())


def create_temporary(folder: str | Path, prefix: str, suffix: str) -> tuple[int, Path]:
    """``tempfile.mkstemp`` in ``folder`` (created with ``O_EXCL``: never through a planted link), with the new-file mode.

    Returns:
        ``(open descriptor, path)``; the caller writes it and renames it into place, or removes it.
    """
    import tempfile

    handle, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    try:
        os.fchmod(handle, new_file_mode())
    except BaseException:
        os.close(handle)
        Path(name).unlink(missing_ok=True)
        raise
    return handle, Path(name)
