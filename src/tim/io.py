"""Files that are never half-written: THE atomic-write helper of tim, and images as uint8 and PNG.

Every file tim writes for a user (checkpoints, logs, pipeline folders, sample shards, PNGs, reports)
goes through :func:`atomic_write` (safetensors files: :func:`write_safetensors`): the content goes to a fresh temporary file in the same folder
(created with ``O_EXCL``, so a link planted at that name is never followed, and with the umask's
mode, see :mod:`tim.system`), is optionally fsynced, and is renamed over the destination (atomic on
POSIX). A crash or a kill at any moment leaves either the old file or the new one, never a mix; a
failure removes the temporary and re-raises the ``OSError`` for the caller to turn into its one-line
message. Folders are swapped in with :func:`replace_folder`, by renames only.

A leaf module: the standard library, numpy and (lazily, for PNGs) Pillow; importable from every layer.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from tim.system import create_temporary


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], *, sync: bool = True) -> Path:
    """Write a file through ``write(handle)`` so that ``path`` never holds a partial file.

    Args:
        path: destination; its folder is created. A file or link already there is replaced (the
            link itself, never its target).
        write: called once with a binary file handle open on the temporary.
        sync: fsync the file before the rename (and the folder after it) so a power loss cannot
            leave an empty file under the final name. Off for bulk outputs that are cheap to redo.

    Returns:
        ``path`` as a ``pathlib.Path``.

    Raises:
        OSError: creating, writing or renaming failed (the temporary is removed).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = create_temporary(path.parent, f".{path.name}.", ".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            if sync:
                file.flush()
                os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    if sync:
        fsync_folder(path.parent)
    return path


def write_bytes(path: str | Path, data: bytes, *, sync: bool = True) -> Path:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda file: file.write(data), sync=sync)


def write_text(path: str | Path, text: str, *, sync: bool = True) -> Path:
    """:func:`atomic_write` of ``text`` as UTF-8."""
    return write_bytes(path, text.encode("utf-8"), sync=sync)


def write_json(
    path: str | Path, data: Any, *, indent: int | None = 2, sort_keys: bool = False, sync: bool = True
) -> Path:
    """:func:`atomic_write` of ``data`` as JSON with a final newline."""
    text = json.dumps(data, indent=indent, sort_keys=sort_keys) + "\n"
    return write_text(path, text, sync=sync)


def write_safetensors(
    path: str | Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None
) -> Path:
    """Write torch tensors as a ``.safetensors`` file with the guarantees of :func:`atomic_write`.

    safetensors writes to a path (and with mode 0600): it gets a fresh temporary (``O_EXCL``, never
    through a planted link), which is given the umask's mode, fsynced and renamed in.
    """
    from safetensors.torch import save_file

    from tim.system import give_new_file_mode

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = create_temporary(path.parent, f".{path.name}.", ".tmp")
    os.close(handle)
    try:
        save_file(tensors, str(temporary), metadata=metadata)
        give_new_file_mode(temporary)
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    fsync_folder(path.parent)
    return path


def fsync_folder(path: str | Path) -> None:
    """Make a folder's entries (a rename into it) durable; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_folder(temporary: str | Path, folder: str | Path) -> Path:
    """Move the complete folder ``temporary`` to ``folder``, replacing an old one, by renames only.

    The old folder is renamed aside first (``.old-<name>-<pid>``) and deleted last, so a crash
    between the two renames leaves the complete old version there, never a half-written folder.
    """
    temporary, folder = Path(temporary), Path(folder)
    if not folder.exists() and not folder.is_symlink():
        os.replace(temporary, folder)
        return folder
    old = folder.parent / f".old-{folder.name}-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(folder, old)
    os.replace(temporary, folder)
    if old.is_symlink():
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def to_uint8(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) images in [-1, 1] (clipped here) -> (n, H, W, C) uint8, as in the PNGs."""
    pixels = np.round((np.clip(images, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)
    return pixels.transpose(0, 2, 3, 1)


def save_png(path: str | Path, pixels: Any, *, sync: bool = True) -> Path:
    """Write one picture as PNG with :func:`atomic_write`.

    Args:
        path: destination.
        pixels: an (H, W, C) uint8 array (C = 1 or 3) or a PIL image.
        sync: as in :func:`atomic_write`.
    """
    from PIL import Image

    if isinstance(pixels, np.ndarray):
        pixels = Image.fromarray(pixels[..., 0] if pixels.ndim == 3 and pixels.shape[-1] == 1 else pixels)
    image = pixels
    return atomic_write(path, lambda file: image.save(file, format="PNG"), sync=sync)
