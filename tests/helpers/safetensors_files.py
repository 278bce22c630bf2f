"""Edit a safetensors file's JSON header in place (tests of untrusted weight files)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path


def edit_header(path: Path, edit: Callable[[dict], None], extra_bytes: int = 0) -> Path:
    """Rewrite the JSON header of ``path`` with ``edit(header)``; optionally grow the file (sparse)."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])
    if extra_bytes:
        os.truncate(path, path.stat().st_size + extra_bytes)
    return path
