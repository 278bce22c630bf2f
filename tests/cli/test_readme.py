"""The README's promises: its Python block runs, its quick start is the two Makefile targets CI uses."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)


def test_python_usage_block_runs() -> None:
    (block,) = [b for b in _blocks("python") if "eight_steps" in b]
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own documentation
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
