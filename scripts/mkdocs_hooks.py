"""mkdocs hooks for the API reference: one page per public module of ``src/tim``, generated at build time.

The pages are not files in ``docs/``: they are made from the package tree on every build, so a new
module gets its page (and a removed one loses it) without anyone editing the site. A top-level module
(``tim.paths``) gets one page; a package (``tim.data``) gets one page with its own docstring followed
by a section per submodule. Private modules (``_name``) are skipped. Loaded by mkdocs.yml (``hooks``).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

SRC = Path(__file__).resolve().parents[1] / "src" / "tim"
REFERENCE = "reference"


def public_modules(package: Path = SRC, prefix: str = "tim") -> list[tuple[str, list[str]]]:
    """``(module, submodules)`` for ``tim`` and each public top-level module or package, in order.

    Args:
        package: The folder of the ``tim`` package.
        prefix: Its import name.

    Returns:
        ``[("tim", []), ("tim.app", []), ("tim.data", ["tim.data.buckets", ...]), ...]``; the
        submodules of a package are listed recursively, sorted by name.
    """
    pages: list[tuple[str, list[str]]] = [(prefix, [])]
    for path in sorted(package.iterdir()):
        if path.name.startswith("_"):
            continue
        if path.suffix == ".py":
            pages.append((f"{prefix}.{path.stem}", []))
        elif (path / "__init__.py").is_file():
            subs = [
                ".".join((prefix, *sub.relative_to(package).with_suffix("").parts))
                for sub in sorted(path.rglob("*.py"))
                if not any(part.startswith("_") for part in sub.relative_to(path).parts)
            ]
            pages.append((f"{prefix}.{path.name}", subs))
    return pages


def _page(module: str, submodules: list[str]) -> str:
    title = f"`{module}`"
    if module == "tim":
        # the top-level names are re-exports: list them (each links to where it is documented)
        return (
            f"# {title}\n\n::: tim\n    options:\n      show_root_heading: false\n      members: false\n\n"
            + (
                "## Public names\n\nImported with `import tim`; each is documented on its module's page.\n\n"
                + "\n".join(f"- [`{name}`][tim.{name}]" for name in _top_level_names())
                + "\n"
            )
        )
    body = [f"# {title}\n"]
    if submodules:
        # the package's own definitions only: its re-exports are documented in their submodules
        own = _defined_names(SRC.parent.joinpath(*module.split("."), "__init__.py"))
        members = "[" + ", ".join(own) + "]" if own else "false"
        body.append(f"::: {module}\n    options:\n      show_root_heading: false\n      members: {members}\n")
        for sub in submodules:
            body.append(f"::: {sub}\n    options:\n      heading_level: 2\n")
    else:
        body.append(f"::: {module}\n    options:\n      show_root_heading: false\n")
    return "\n".join(body)


def _defined_names(init: Path) -> list[str]:
    """Public names a package's ``__init__.py`` defines itself (functions, classes, constants)."""
    names = []
    for node in ast.parse(init.read_text()).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return [name for name in names if not name.startswith("_")]


def _top_level_names() -> list[str]:
    tree = ast.parse((SRC / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "__all__" for t in node.targets):
            return [name for name in ast.literal_eval(node.value) if not name.startswith("_")]
    return []


def on_config(config: MkDocsConfig, **kwargs: Any) -> MkDocsConfig:
    """Append the generated pages to the navigation under "API reference"."""
    entries = [{module: f"{REFERENCE}/{module}.md"} for module, _ in public_modules()]
    nav = config.nav or []
    nav.append({"API reference": [{"Overview": f"{REFERENCE}/index.md"}, *entries]})
    config.nav = nav
    return config


def on_files(files: Files, config: MkDocsConfig, **kwargs: Any) -> Files:
    """Add the generated reference pages (in memory; nothing is written into ``docs/``)."""
    modules = public_modules()
    index = ["# API reference\n", "One page per public module of `src/tim`, built from the docstrings.\n"]
    index += [f"- [`{module}`]({module}.md)" for module, _ in modules]
    files.append(File.generated(config, f"{REFERENCE}/index.md", content="\n".join(index) + "\n"))
    for module, submodules in modules:
        files.append(File.generated(config, f"{REFERENCE}/{module}.md", content=_page(module, submodules)))
    return files
