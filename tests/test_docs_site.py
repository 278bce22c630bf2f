"""The API reference site's own tooling: reST -> Markdown rewriting and the generated module pages.

The strict build itself (`make docs-build`, ~40 s) runs in CI as its own stage; these tests pin the
pieces it relies on, in milliseconds, so a regression shows up in the fast suite with a clear name.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    path = ROOT / "scripts" / f"{name}.py"
    if not path.is_file():
        pytest.skip(f"{path} is not beside the tests")
    spec = importlib.util.spec_from_file_location(f"_docs_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rst():
    pytest.importorskip("griffe", reason='the docs tools need pip install "transition-models[docs]"')
    return _load("griffe_rst")


def _package(tmp_path: Path, source: str):
    import griffe

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(source)
    return griffe.load("pkg", search_paths=[tmp_path])


def test_roles_become_links_resolved_in_scope(rst, tmp_path: Path) -> None:
    pkg = _package(
        tmp_path,
        '"""Module."""\nfrom os.path import join\n\n'
        "class Path:\n    def transition(self): ...\n\n"
        'def f():\n    """See :meth:`Path.transition`, :func:`~tim.samplers.sample`, :func:`join`, :class:`Nope`."""\n',
    )
    text = rst.rst_to_markdown(pkg["f"].docstring.value, pkg["f"])
    assert "[`Path.transition`][pkg.Path.transition]" in text
    assert "[`sample`][tim.samplers.sample]" in text  # ~ shows the last name, the target stays full
    assert "[`join`][os.path.join]" in text  # an imported name links to what it imports
    assert "[`Nope`][Nope]" in text  # unknown: left for autorefs to report (strict build fails)


def test_simple_table_becomes_markdown_with_continuation_rows(rst, tmp_path: Path) -> None:
    table = (
        "Intro::\n\n"
        "=========  ==========\n"
        "quantity   method\n"
        "=========  ==========\n"
        "a          one\n"
        "           two\n"
        "a much longer cell  three\n"
        "=========  ==========\n"
    )
    pkg = _package(tmp_path, '"""Module."""\n')
    lines = rst.rst_to_markdown(table, pkg).splitlines()
    assert lines[0] == "Intro:"
    assert "| quantity | method |" in lines
    assert "| a | one two |" in lines  # the blank first cell continues the row above
    assert "| a much longer cell | three |" in lines  # a cell wider than its border still splits
    assert lines.index("| quantity | method |") + 1 == lines.index("| --- | --- |")


def test_every_public_module_gets_a_reference_page() -> None:
    pytest.importorskip("mkdocs", reason='the docs tools need pip install "transition-models[docs]"')
    hooks = _load("mkdocs_hooks")
    pages = dict(hooks.public_modules())
    src = ROOT / "src" / "tim"
    if not src.is_dir():
        pytest.skip("no source tree (tests run against an installed wheel)")
    top = {f"tim.{p.stem}" for p in src.glob("*.py") if not p.name.startswith("_")}
    top |= {f"tim.{p.parent.name}" for p in src.glob("*/__init__.py")}
    assert set(pages) == top | {"tim"}
    assert "tim.data.scenes" in pages["tim.data"] and "tim.training.loop" in pages["tim.training"]
    assert "::: tim.models.weights" in hooks._page("tim.models", pages["tim.models"])


def test_changelog_lists_the_package_version() -> None:
    import re

    import tim

    changelog = ROOT / "CHANGELOG.md"
    if not changelog.is_file():
        pytest.skip("no CHANGELOG.md beside the tests")
    versions = re.findall(r"^## \[(\d+\.\d+\.\d+)\]", changelog.read_text(), flags=re.MULTILINE)
    assert versions and versions[0] == tim.__version__, (versions[:1], tim.__version__)


def test_headerless_simple_table_gets_an_empty_header(rst, tmp_path: Path) -> None:
    table = "Presets:\n\n======  =====\n``A``   first\n``B``   second\n======  =====\n\nAfter.\n"
    pkg = _package(tmp_path, '"""Module."""\n')
    lines = rst.rst_to_markdown(table, pkg).splitlines()
    assert lines[2:6] == ["|  |  |", "| --- | --- |", "| ``A`` | first |", "| ``B`` | second |"]
    assert lines[-1] == "After."
