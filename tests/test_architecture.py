"""The layer contract (``.importlinter`` at the repository root) holds, plus what import-linter cannot see.

The rules themselves live in ``.importlinter`` only; this file runs them and adds two checks that
import-linter cannot express:

- external packages are known to import-linter by their top-level name only, so the rule "only
  tim.training.distributed imports torch.distributed" is an AST scan here;
- import-linter counts lazy (function-level) imports as imports, so whether importing the core
  actually loads a heavy package is checked by importing it in a fresh interpreter.
"""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "tim"
CONTRACT = ROOT / ".importlinter"


def _contract(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser()
    parser.read(CONTRACT)
    return parser[f"importlinter:contract:{name}"]


def _listed(section: configparser.SectionProxy, key: str) -> list[str]:
    return [line.strip() for line in section[key].splitlines() if line.strip()]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[str]:
    """Every absolute module name a file imports, at any depth (relative imports point inside tim)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append(node.module)
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_import_linter_contracts_are_kept(capsys: pytest.CaptureFixture[str]) -> None:
    cli = pytest.importorskip("importlinter.cli", reason='needs pip install "transition-models[dev]"')
    status = cli.lint_imports(config_filename=str(CONTRACT), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert status == 0, report


def test_torch_distributed_only_in_training_distributed() -> None:
    violations = []
    for path in sorted(SRC.rglob("*.py")):
        name = _module_name(path)
        if name == "tim.training.distributed":
            continue
        violations += [
            f"{name} imports {imported}"
            for imported in _imports(path)
            if imported == "torch.distributed" or imported.startswith("torch.distributed.")
        ]
    assert not violations, "\n".join(violations) + "\n(use tim.training.distributed instead)"


def test_the_scan_sees_torch_distributed(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from torch import distributed\n    import torch.distributed.fsdp\n")
    assert {"torch.distributed", "torch.distributed.fsdp"} <= set(_imports(source))


def test_importing_the_core_loads_no_heavy_package() -> None:
    light = _contract("core-is-light")
    modules = ["tim", *_listed(light, "source_modules")]
    heavy = _listed(light, "forbidden_modules")
    code = (
        "import sys, importlib\n"
        "import torch, numpy\n"  # whatever torch itself pulls in is not ours to avoid
        "before = set(sys.modules)\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"heavy = sorted(m for m in set(sys.modules) - before if m.split('.')[0] in {heavy!r})\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"importing the core loaded {out.stdout.strip()}"
