"""The dependency rules of docs/internals.md, checked on the source tree.

- The model never imports the objective; the objective never imports the model.
- The math core imports only torch (and numpy); heavy packages are imported lazily.
- Nothing imports the command line; only training/distributed.py and evaluation use torch.distributed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tim"

# module prefix -> the tim modules it may import (besides itself, tim.errors and tim.system)
ALLOWED: dict[str, tuple[str, ...]] = {
    "tim.paths": (),
    "tim.timesteps": ("tim.paths",),
    "tim.guidance": ("tim.paths", "tim.timesteps"),
    "tim.objective": ("tim.paths", "tim.timesteps", "tim.guidance"),
    "tim.samplers": ("tim.paths", "tim.timesteps", "tim.guidance"),
    "tim.models": ("tim.models",),
    "tim.data": ("tim.data", "tim.text", "tim.autoencoders"),
    "tim.text": (),
    "tim.autoencoders": (),
    "tim.viz": (),
}
CORE_PREFIXES = ("tim.paths", "tim.timesteps", "tim.guidance", "tim.objective", "tim.samplers", "tim.models")
HEAVY = ("safetensors", "yaml", "PIL", "matplotlib", "sklearn", "scipy", "tqdm", "diffusers", "transformers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """All imported module names of a file, with whether the import is at module level."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[str, bool]] = []
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against this package
                base = _module_name(path).split(".")
                if path.name != "__init__.py":
                    base = base[:-1]
                base = base[: len(base) - node.level + 1]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
        found.extend((name, id(node) in top_level) for name in names)
    return found


def _sources() -> list[Path]:
    return sorted(SRC.rglob("*.py"))


def test_layer_contract() -> None:
    violations = []
    for path in _sources():
        name = _module_name(path)
        for imported, _ in _imports(path):
            if not imported.startswith("tim.") or imported.startswith(
                ("tim.errors", "tim.system")
            ):  # not "time"
                continue
            if imported.startswith("tim.cli") and not name.startswith("tim.cli"):
                violations.append(f"{name} imports the command line ({imported})")
            generation = ("tim.pipeline", "tim.app", "tim.cli")
            if imported.startswith(generation[:2]) and not name.startswith(generation):
                violations.append(f"{name} imports the generation layer ({imported})")
            if imported.startswith("tim.app") and name.startswith("tim.pipeline"):
                violations.append(f"{name} imports the web app ({imported})")
            for prefix, allowed in ALLOWED.items():
                if name == prefix or name.startswith(prefix + "."):
                    ok = imported.startswith(prefix) or any(imported.startswith(a) for a in allowed)
                    if not ok:
                        violations.append(f"{name} may not import {imported}")
    assert not violations, "\n".join(violations)


def test_core_has_no_heavy_module_level_imports() -> None:
    violations = []
    for path in _sources():
        name = _module_name(path)
        if not any(name == p or name.startswith(p + ".") for p in CORE_PREFIXES):
            continue
        for imported, top in _imports(path):
            if top and imported.split(".")[0] in HEAVY:
                violations.append(f"{name} imports {imported} at module level")
    assert not violations, "\n".join(violations)


def test_torch_distributed_only_where_allowed() -> None:
    violations = []
    for path in _sources():
        name = _module_name(path)
        if (
            name == "tim.training.distributed"
            or name.startswith("tim.evaluation")
            or name.startswith("tim.cli.bench")
        ):
            continue
        for imported, _ in _imports(path):
            if imported.startswith("torch.distributed"):
                violations.append(f"{name} imports {imported}")
    assert not violations, "\n".join(violations)


def test_core_imports_with_torch_and_numpy_only() -> None:
    modules = ["tim", "tim.paths", "tim.timesteps", "tim.objective", "tim.samplers", "tim.models"]
    code = (
        "import sys, importlib\n"
        "import torch, numpy\n"  # whatever torch itself pulls in is not ours to avoid
        "before = set(sys.modules)\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"heavy = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {HEAVY!r})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the core loaded {out.stdout.strip()}"
