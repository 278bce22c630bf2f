"""Bundled pretrained models: trained by this library's own commands and shipped inside the package.

A bundled model is a pipeline folder (``pipeline.json``, ``recipe.json``, ``model/config.json``,
``model/model.safetensors`` with 16-bit weights that load as float32) under ``tim/assets/pretrained/
<name>/``, with a model card beside it: ``card.json`` (the training command, steps, images seen,
wall time, machine, sampling recipe, scores and the SHA-256 of every file) and ``README.md``.

Everything that takes a checkpoint takes ``bundled:<name>`` (``tim sample --checkpoint``, ``tim app
--checkpoint``, ``TiMPipeline.load``); ``tim models`` lists them. Before a bundled folder is used,
every file is checked against the card's size and SHA-256, so a damaged or truncated install is one
line naming the file and the fix, never a traceback or silent garbage. Weights are read with
safetensors only. How the models were trained and what they score: ``docs/pretrained.md``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from tim.errors import TimError

PREFIX = "bundled:"
ROOT = Path(__file__).resolve().parent / "assets" / "pretrained"
CARD_NAME = "card.json"
REINSTALL = "reinstall the package: pip install --force-reinstall transition-models"


def is_bundled(source: object) -> bool:
    """Whether ``source`` names a bundled model (``"bundled:<name>"``)."""
    return isinstance(source, str) and source.startswith(PREFIX)


def available(root: Path | None = None) -> list[str]:
    """Names of the bundled models installed under ``root`` (default :data:`ROOT`; folders with a ``card.json``)."""
    root = ROOT if root is None else root
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / CARD_NAME).is_file())


def read_card(folder: Path) -> dict[str, Any]:
    """The ``card.json`` of a bundled folder; an unreadable card is a one-line error."""
    path = folder / CARD_NAME
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TimError(
            f"bundled model card {path} cannot be read ({type(error).__name__})", REINSTALL
        ) from None
    if not isinstance(card, dict) or not isinstance(card.get("files"), dict):
        raise TimError(f"bundled model card {path} has no 'files' table", REINSTALL)
    return card


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_table(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"bytes", "sha256"}}`` of every file of a pipeline folder but the card."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name not in (CARD_NAME, "README.md"))
    return {
        p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_of(p)} for p in files
    }


def verify(folder: Path, card: dict[str, Any]) -> None:
    """Check every file the card lists: present, not a link, its size and its SHA-256."""
    check_files(folder, card["files"])


def check_files(
    folder: Path,
    files: Any,
    *,
    what: str = "bundled model",
    index: str = CARD_NAME,
    fix: str = REINSTALL,
) -> None:
    """Check a folder against its table ``{relative path: {"bytes", "sha256"}}`` (see :func:`file_table`).

    Each entry must be a relative path inside ``folder`` naming a regular file (not a link) of the
    recorded size and SHA-256; the first that is not gives one line naming the file and ``fix``.
    Used for the bundled models (their ``card.json``) and for every pipeline folder that
    ``save_pretrained`` wrote (``pipeline.json``).
    """
    if not isinstance(files, dict):
        raise TimError(f"{what} index {folder / index} has a malformed file table", fix)
    for name, entry in files.items():
        path = folder / name
        if not isinstance(entry, dict) or Path(name).is_absolute() or ".." in Path(name).parts:
            raise TimError(f"{what} index {folder / index} has a bad entry {name!r}", fix)
        if path.is_symlink() or not path.is_file():
            raise TimError(f"{what} file {path} is missing", fix)
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise TimError(
                f"{what} file {path} is damaged or truncated ({size} bytes, expected {entry.get('bytes')})",
                fix,
            )
        if sha256_of(path) != entry.get("sha256"):
            raise TimError(f"{what} file {path} is damaged (SHA-256 differs from {index})", fix)


def resolve(source: str, root: Path | None = None) -> Path:
    """The verified folder of ``"bundled:<name>"``; an unknown name lists the installed ones."""
    root = ROOT if root is None else root
    name = source[len(PREFIX) :] if is_bundled(source) else source
    names = available(root)
    if name not in names:
        listed = ", ".join(PREFIX + n for n in names) or "none are installed"
        raise TimError(
            f"there is no bundled model {name!r}",
            f"use one of: {listed} (tim models lists them)",
        )
    folder = root / name
    verify(folder, read_card(folder))
    return folder


def card_of(name: str, root: Path | None = None) -> dict[str, Any]:
    """The model card of a bundled model (``name`` with or without the ``bundled:`` prefix)."""
    return read_card(resolve(name, root))
