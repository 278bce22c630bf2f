"""The bad-inputs table as a whole: well-formed rows in every area file, and the docs table.

The rows live in one ``test_bad_inputs_*.py`` file per area (listed in
``helpers.bad_inputs.AREA_FILES``). ``python tests/test_bad_inputs_table.py`` runs every row and
prints the table (bad input -> message) as Markdown; ``python tests/test_bad_inputs_table.py
--write-docs`` puts it into docs/reliability.md.
"""

from __future__ import annotations

import sys

from helpers.bad_inputs import (
    AREA_FILES,
    DOCS,
    TABLE_END,
    TABLE_FILE,
    TABLE_START,
    TESTS,
    all_cases,
    markdown_cell,
    markdown_table,
    write_docs,
)

CASES = all_cases()


def test_table_is_large_and_well_formed() -> None:
    assert len(CASES) >= 30
    assert len({case.id for case in CASES}) == len(CASES)
    assert {case.area for case in CASES} == {
        "config",
        "command line",
        "data",
        "checkpoint",
        "training",
        "sampling",
    }
    for case in CASES:
        assert case.problem and case.fix, case.id
    on_disk = {path.relative_to(TESTS).as_posix() for path in TESTS.glob("**/test_bad_inputs*.py")}
    assert on_disk == {*AREA_FILES, TABLE_FILE}, "list every area file in helpers.bad_inputs.AREA_FILES"


def test_docs_table_lists_every_row() -> None:
    """docs/reliability.md carries the generated table (regenerate: python tests/test_bad_inputs_table.py --write-docs)."""
    text = DOCS.read_text()
    table = text[text.index(TABLE_START) : text.index(TABLE_END)]
    for case in CASES:
        assert f"| {case.area} | {markdown_cell(case.bad_input)} |" in table, (
            f"{case.id}: regenerate the docs table"
        )


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-docs"]:
        write_docs(CASES)
    else:
        sys.stdout.write(markdown_table(CASES) + "\n")
