"""The README's promises: its Python block runs, its quick start is the two Makefile targets CI uses.

Also the Python API page's training block (docs/python.md), which the README points to.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _blocks(language: str, page: str = "README.md") -> list[str]:
    path = ROOT / page
    if not path.is_file():
        pytest.skip(f"{page} is not beside the tests")
    return re.findall(rf"```{language}\n(.*?)```", path.read_text(), flags=re.DOTALL)


def test_python_usage_block_runs() -> None:
    (block,) = [b for b in _blocks("python") if "eight_steps" in b]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
    one_step, eight_steps = namespace["one_step"], namespace["eight_steps"]
    assert one_step.shape == eight_steps.shape == (10, 1, 8, 8)
    assert 0.0 <= float(one_step.min()) and float(eight_steps.max()) <= 1.0


def test_python_api_training_block_runs() -> None:
    (block,) = [b for b in _blocks("python", "docs/python.md") if "eight_steps" in b]
    namespace: dict = {}
    exec(compile(block, "docs/python.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["one_step"].shape == namespace["eight_steps"].shape == (10, 1, 8, 8)
    assert bool(namespace["out"].loss.isfinite())


def test_quick_start_is_two_make_targets_and_ci_runs_the_test_one() -> None:
    quick_start = _blocks("bash")[0]
    commands = [line.split("#")[0].strip() for line in quick_start.splitlines() if line.split("#")[0].strip()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:.*\n\t.*tim demo", makefile, flags=re.MULTILINE)
    assert re.search(r"^test:.*\n\t.*pytest", makefile, flags=re.MULTILINE)
    assert "torch==2.13.0" in makefile
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_readme_image_links_exist() -> None:
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\((docs/[^)]+)\)", text)
    assert "docs/images/demo_montage.png" in links
    missing = [
        link for link in links if not (ROOT / link.split("#")[0]).exists()
    ]  # anchors: the file must exist
    assert not missing, missing


def test_docs_stay_inside_the_repository() -> None:
    """README, docs/ and src/ cite only this repository and the paper: no notes kept elsewhere, no issue numbers."""
    pages = [
        ROOT / "README.md",
        *sorted((ROOT / "docs").rglob("*.md")),
        *sorted((ROOT / "src" / "tim").rglob("*.py")),
    ]
    forbidden = re.compile(
        r"\.\./shared|paper\.md|design\.md|released-architecture\.md|[Ii]ssue [0-9]|[Ii]ssue-[0-9]"
    )
    hits = [
        f"{page.relative_to(ROOT)}: {m.group(0)}"
        for page in pages
        for m in forbidden.finditer(page.read_text())
    ]
    assert not hits, hits
