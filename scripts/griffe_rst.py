"""Griffe extension for the API reference site: read our reStructuredText-flavoured docstrings as Markdown.

The docstrings are Google style (Args/Returns/Raises, which griffe parses) but cross-reference with
Sphinx roles (``:func:`sample```, ``:class:`~tim.paths.Path```) and tabulate with reST "simple tables"
(``====  ====`` borders). mkdocstrings renders Markdown, so before griffe parses a docstring this
extension rewrites, in the text only (the source files are untouched):

* a role ``:func:`x```, ``:class:`x``` ... into the autorefs link ``[`x`][x]`` (``~a.b`` shows ``b``;
  ``text <target>`` shows ``text``; a trailing ``()`` is dropped from the target). A target that
  resolves nowhere is a warning of autorefs, so ``mkdocs build --strict`` fails on it: that is the
  point, broken cross-references are caught in CI;
* a simple table into a Markdown table (a row whose first cell is blank continues the row above);
* a paragraph ending in ``::`` (reST's literal-block marker) into one ending in ``:``; the indented
  block after it is already a Markdown code block.

Loaded by mkdocs.yml (``plugins.mkdocstrings.handlers.python.options.extensions``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import griffe

# :role:`content` for the roles our docstrings use (Python domain; "py:" prefix allowed).
ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|exc|obj|const):`([^`]+)`")
BORDER = re.compile(r"^ *=+( +=+)+ *$")


def _resolve(target: str, obj: griffe.Object) -> str:
    """The full path of a role's target, looked up like Python names: the object, then its parents.

    ``tim.x.y`` is already absolute. A short name (``sample``, ``Path.transition``) is searched in the
    members of ``obj`` (a module or class), then of each enclosing scope; an imported name resolves
    to the object it imports. Unknown names are returned unchanged, so autorefs reports them.
    """
    if target == "tim" or target.startswith("tim."):
        return target
    first, _, rest = target.partition(".")
    scope: griffe.Object | None = obj if obj.is_module or obj.is_class else obj.parent
    while scope is not None:
        member = scope.members.get(first)
        if member is not None:
            base = member.target_path if isinstance(member, griffe.Alias) else member.path
            return f"{base}.{rest}" if rest else base
        scope = scope.parent
    return target


def _role_to_link(match: re.Match[str], obj: griffe.Object) -> str:
    content = match.group(1).strip()
    explicit = re.fullmatch(r"(.+?)\s*<([^<>]+)>", content)
    if explicit:
        text, target = explicit.group(1), explicit.group(2)
    else:
        target = content.lstrip("~")
        text = target.rsplit(".", 1)[-1] if content.startswith("~") else target
        text = f"`{text}`"
    target = _resolve(target.removesuffix("()"), obj)
    return f"[{text}][{target}]"


def _column_starts(border: str) -> list[int]:
    return [m.start() for m in re.finditer(r"=+", border)]


def _split_row(line: str, starts: list[int]) -> list[str]:
    """Cells of one table row: cut at the column starts, or at runs of 2+ spaces when a cell overflows."""
    parts = re.split(r"\s{2,}", line.strip())
    if not line[: starts[0] + 1].strip() == "":  # first cell filled: a new row
        if len(parts) == len(starts):
            return parts
    cells = []
    for i, start in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else None
        cells.append(line[start:end].strip())
    return cells


def _table_to_markdown(lines: list[str]) -> list[str]:
    """A reST simple table (borders included) as Markdown rows; header = the row between the first borders."""
    starts = _column_starts(lines[0])
    rows: list[list[str]] = []
    header_rows = 0
    for line in lines[1:-1]:  # between the top and the bottom border
        if BORDER.match(line):  # the border under the header
            header_rows = header_rows or len(rows)
            continue
        if not line.strip():
            continue
        cells = _split_row(line, starts)
        if rows and not cells[0] and not BORDER.match(line):
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    if not header_rows:  # a table without a header row: Markdown needs one, leave it empty
        rows.insert(0, [""] * len(starts))
        header_rows = 1
    out = []
    for i, row in enumerate(rows):
        out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        if i == header_rows - 1:
            out.append("|" + "|".join(" --- " for _ in row) + "|")
    return out


def _table_end(lines: list[str], start: int) -> int | None:
    """One past the last border of the simple table whose top border is ``lines[start]``, or None.

    A table has three borders (top, under the header, bottom) or, without a header, two; rows never
    contain a blank line, so the table ends at the border after which a blank line (or the end) comes.
    """
    for j in range(start + 1, len(lines)):
        if not lines[j].strip():
            return None  # a blank line before any closing border: not a table
        if BORDER.match(lines[j]) and (j + 1 == len(lines) or not lines[j + 1].strip()):
            return j + 1
    return None


def rst_to_markdown(text: str, obj: griffe.Object) -> str:
    """The docstring text of ``obj`` with roles, simple tables and ``::`` markers rewritten as Markdown."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        end = _table_end(lines, i) if BORDER.match(line) else None
        if end is not None:
            if out and out[-1].strip():
                out.append("")
            out.extend(_table_to_markdown(lines[i:end]))
            i = end
            continue
        if line.rstrip().endswith("::") and not line.rstrip().endswith(":::"):
            stripped = line.rstrip()[:-2].rstrip()
            line = stripped + ":" if stripped else ""
        out.append(line)
        i += 1
    return ROLE.sub(lambda match: _role_to_link(match, obj), "\n".join(out))


def _walk(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not isinstance(member, griffe.Alias):
            yield from _walk(member)


class RstToMarkdown(griffe.Extension):
    """Rewrite every docstring once the whole package is loaded (names resolve against its members)."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _walk(pkg):
            if obj.docstring is not None:
                obj.docstring.value = rst_to_markdown(obj.docstring.value, obj)
