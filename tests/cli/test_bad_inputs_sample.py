"""Bad inputs (`tim sample`'s command line): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.bad_inputs import (
    Case,
    check_case,
    cli,
    cli_error,
    copy_of_run,
    sample_cli,
    trained_run,
)


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


CASES: list[Case] = [
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
    Case(
        "cli-prompts-dev-zero",
        "command line",
        "`tim sample --prompts /dev/zero`",
        sample_cli("--steps", "1", "--prompts", "/dev/zero"),
        ("/dev/zero", "not a regular file or a pipe"),
        ("one prompt per line",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


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
