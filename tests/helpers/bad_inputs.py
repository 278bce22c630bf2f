"""The bad-inputs table: each bad input a user can give gets a one-line TimError naming problem and fix.

Every row (:class:`Case`) is one bad input (config, command line, data, checkpoint, ...). The rows
live beside the tests of the part of the library they probe, as the ``CASES`` list of one
``test_bad_inputs_*.py`` file per area (:data:`AREA_FILES`); this module holds what they share:
how a row is run and checked (:func:`check_case`), the tiny trained run and model files the rows
damage, the pickle payloads, and the one generator of the Markdown table in docs/reliability.md.

A row's ``trigger`` feeds the bad input to the public API (or to ``tim.cli.main.main`` for
command-line rows) and returns the error message; :func:`check_case` then checks that

* library rows raise :class:`tim.errors.TimError` (command-line rows: exit status 2, exactly one
  ``error: ...`` line on stderr, at most preceded by ``warning: ...`` lines, no traceback);
* the message is ONE line;
* it contains every ``problem`` fragment (what is wrong: the key, the value, the file) and every
  ``fix`` fragment (what to do), compared case-insensitively.

Checkpoint rows also prove that pickles are never unpickled: the bad files carry a payload whose
``__reduce__`` would write a marker file, and the row fails if the marker appears.

``python tests/test_bad_inputs_table.py`` runs every row of every area file and prints the table
(bad input -> message) as Markdown; ``python tests/test_bad_inputs_table.py --write-docs`` puts it
into docs/reliability.md, so the documentation comes from the rows
(``test_docs_table_lists_every_row`` checks it is current).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import io
import pickle
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tim.errors import TimError

TESTS = Path(__file__).resolve().parents[1]

# The area files, in the order of the docs table; test_bad_inputs_table.py checks that every
# tests/**/test_bad_inputs*.py file is listed here.
AREA_FILES = (
    "training/test_bad_inputs_config.py",
    "cli/test_bad_inputs_sample.py",
    "cli/test_bad_inputs_cli.py",
    "data/test_bad_inputs_data.py",
    "models/test_bad_inputs_checkpoints.py",
    "training/test_bad_inputs_training.py",
    "evaluation/test_bad_inputs_evaluation.py",
    "text/test_bad_inputs_text.py",
    "pipeline/test_bad_inputs_pipeline.py",
    "autoencoders/test_bad_inputs_autoencoders.py",
    "test_bad_inputs_samplers.py",
)
TABLE_FILE = "test_bad_inputs_table.py"  # the whole-table checks and the docs generator's entry point

# ------------------------------------------------------------------------------------------------
# Harness


@dataclass(frozen=True)
class Case:
    """One bad input and what its message must say."""

    id: str  # pytest id, unique
    area: str  # "config" | "command line" | "data" | "checkpoint" | "training" | "sampling"
    bad_input: str  # what the user did, for the docs table
    trigger: Callable[[Path], str]  # feeds the bad input (scratch folder given); returns the message
    problem: tuple[str, ...]  # fragments naming the problem (case-insensitive)
    fix: tuple[str, ...]  # fragments naming the fix (case-insensitive)


def tim_error(call: Callable[[], object]) -> str:
    """Run ``call``; it must raise TimError (warnings are allowed). Returns the message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            call()
        except TimError as error:
            return str(error)
    raise AssertionError("no TimError was raised")


def cli_error(argv: list[str]) -> str:
    """Run ``tim <argv>`` in-process; it must exit 2 with one ``error:`` line. Returns the message."""
    from tim.cli.main import main

    stderr = io.StringIO()
    with (
        contextlib.redirect_stderr(stderr),
        contextlib.redirect_stdout(io.StringIO()),
        warnings.catch_warnings(),
    ):
        warnings.simplefilter("ignore")
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse exits instead of returning
            code = exit_.code
    text = stderr.getvalue()
    assert code == 2, f"exit status {code}, stderr: {text!r}"
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], f"expected one final 'error:' line, got {text!r}"
    assert all(line.startswith("warning: ") for line in lines[:-1]), f"unexpected stderr lines: {text!r}"
    return errors[0].removeprefix("error: ")


_SHARED: dict[str, Path] = {}


def shared_dir() -> Path:
    if "root" not in _SHARED:
        _SHARED["root"] = Path(tempfile.mkdtemp(prefix="tim-bad-inputs-"))
        atexit.register(shutil.rmtree, _SHARED["root"], ignore_errors=True)
    return _SHARED["root"]


TINY_RUN = [
    "train.steps=1",
    "train.batch_size=10",
    "train.progress=false",
    "train.log_every=1",
    "model.patch_size=2",
    "model.hidden_size=32",
    "model.depth=1",
    "model.num_heads=2",
    "model.modulation_rank=8",
    "sample.steps=[1]",
    "sample.num=2",
]


def trained_run() -> Path:
    """A one-step digits run (10 classes, patch 2, 8x8x1), trained once and shared by the rows."""
    if "run" not in _SHARED:
        from tim.training import load_config, train

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _SHARED["run"] = train(load_config("digits", TINY_RUN), shared_dir() / "run")
    return _SHARED["run"]


def copy_of_run(tmp: Path) -> Path:
    """A private copy of :func:`trained_run` that a row may damage."""
    return Path(shutil.copytree(trained_run(), tmp / "run"))


def tiny_model_file(tmp: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    """A ``TiM-tiny`` state dict saved as safetensors (our key names, accepted by the converter)."""
    from safetensors.torch import save_file

    from tim.models import build_model

    state = {k: v.contiguous() for k, v in build_model("TiM-tiny").state_dict().items()}
    path = tmp / "tiny.safetensors"
    save_file(state, str(path))
    return path, state


# ------------------------------------------------------------------------------------------------
# Pickle payloads: unpickling one runs exec(), which writes a marker file.


class WritesMarker:
    """Unpickling this object writes ``marker`` (the attack a safe loader must not run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[str]]:
        return exec, (f"open({str(self.marker)!r}, 'w').write('unpickled')",)


def marker_of(tmp: Path) -> Path:
    return tmp / "UNPICKLED"


def write_pickle(path: Path, *, torch_format: bool) -> Path:
    """A checkpoint-looking file whose state dict holds a :class:`WritesMarker` payload."""
    payload = {"state_dict": {"w": torch.zeros(2), "payload": WritesMarker(marker_of(path.parent))}}
    if torch_format:
        torch.save(payload, path)  # zip archive with data.pkl, as torch.save writes it
    else:
        path.write_bytes(pickle.dumps(payload))  # a bare pickle stream
    return path


def never_unpickled(call: Callable[[], object], tmp: Path) -> str:
    """``tim_error(call)`` that also fails if the marker file appeared."""
    message = tim_error(call)
    assert not marker_of(tmp).exists(), "the pickle was executed"
    return message


# ------------------------------------------------------------------------------------------------
# Builders shared by several area files: command lines, image files, DataConfig rows.


def cli(*argv: str, needs_run: bool = False, out: str = "new") -> Callable[[Path], str]:
    """``tim <argv>``; ``{run}`` becomes the trained run, ``{out}`` an output folder in the scratch dir.

    ``out``: "new" (does not exist yet, and must still not exist after the error: bad input is
    rejected before anything is written) or "non-empty" (exists with a file in it).
    """

    def trigger(tmp: Path) -> str:
        run = trained_run() if needs_run else tmp / "no-run"
        target = tmp / "out"
        if out == "non-empty":
            target.mkdir()
            (target / "old.png").write_bytes(b"old")
        message = cli_error([a.format(run=run, out=target) for a in argv])
        assert out == "non-empty" or not target.exists(), "the command wrote output before failing"
        return message

    return trigger


def sample_cli(*extra: str, out: str = "new") -> Callable[[Path], str]:
    return cli("sample", "--checkpoint", "{run}", "--out", "{out}", *extra, needs_run=True, out=out)


def save_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (8, 8), seed: int = 0) -> None:
    from PIL import Image

    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)  # mode follows the channel count
    assert image.mode == mode
    image.save(path)


def data_config_error(**config: Any) -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.data import DataConfig

        return tim_error(lambda: DataConfig(**config))

    return trigger


def check_case(case: Case, tmp: Path) -> None:
    """Run one row in the scratch folder ``tmp`` and check its message (one line, every fragment)."""
    message = case.trigger(tmp)
    assert message.strip(), "empty message"
    assert "\n" not in message and "\r" not in message, f"multi-line message: {message!r}"
    lowered = message.lower()
    for fragment in case.problem + case.fix:
        assert fragment.lower() in lowered, f"{fragment!r} missing from {message!r}"


def all_cases() -> list[Case]:
    """Every row of every area file, in :data:`AREA_FILES` order (each file loaded once, by path)."""
    cases: list[Case] = []
    for relative in AREA_FILES:
        path = TESTS / relative
        name = f"_bad_input_rows_{path.stem}"
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec is not None and spec.loader is not None, path
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        cases += module.CASES
    return cases


# ------------------------------------------------------------------------------------------------
# Markdown table for docs/reliability.md

DOCS = TESTS.parent / "docs" / "reliability.md"
TABLE_START, TABLE_END = "<!-- bad-inputs table: start -->", "<!-- bad-inputs table: end -->"


def markdown_cell(text: str) -> str:
    """Text that renders literally inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def markdown_table(cases: list[Case]) -> str:
    """Run every row and format ``area | bad input | message`` as a Markdown table."""
    rows = ["| # | area | bad input | message (one line; $TMP = the scratch folder) |", "|---|---|---|---|"]
    for number, case in enumerate(cases, 1):
        with tempfile.TemporaryDirectory() as tmp:
            message = case.trigger(Path(tmp)).replace(tmp, "$TMP").replace(str(shared_dir()), "$TMP")
        rows.append(
            f"| {number} | {case.area} | {markdown_cell(case.bad_input)} | {markdown_cell(message)} |"
        )
    return "\n".join(rows)


def write_docs(cases: list[Case]) -> None:
    """Replace the table between the markers in docs/reliability.md by a freshly generated one."""
    text = DOCS.read_text()
    head, rest = text.split(TABLE_START, 1)
    tail = rest.split(TABLE_END, 1)[1]
    DOCS.write_text(f"{head}{TABLE_START}\n{markdown_table(cases)}\n{TABLE_END}{tail}")
