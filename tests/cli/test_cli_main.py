"""`tim --help` and the one-line error contract of every subcommand (docs/cli.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

COMMANDS = ("train", "sample", "demo", "bench")


def test_help_lists_every_command(run_cli) -> None:
    code, out, _ = run_cli(["--help"])
    assert code == 0
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", ["train", "sample", "demo"])
def test_command_help_explains_every_option_with_defaults(run_cli, command: str) -> None:
    from tim.cli.main import build_parser

    code, out, _ = run_cli([command, "--help"])
    assert code == 0
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # the subcommand's own parser
    for action in sub._actions:
        for flag in action.option_strings:
            assert flag in out, f"{flag} missing from `tim {command} --help`"
        if action.option_strings and action.help:
            assert (
                action.help.split("(")[0].split()[0] in out
            )  # the explanation is printed, not only the flag
    assert "(default: 64)" in out if command == "sample" else True  # --batch-size


def test_console_script_runs_in_a_fresh_process() -> None:
    script = Path(sys.executable).with_name("tim")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "tim.cli.main"]
    result = subprocess.run(
        [*argv, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    assert "sample" in result.stdout and "demo" in result.stdout


def test_usage_error_is_one_line_without_usage_dump(run_cli) -> None:
    code, _, err = run_cli(["sample", "--checkpoint", "x", "--steps", "1", "--out", "y", "--bogus"])
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "--bogus" in err and "--help" in err
    assert "Traceback" not in err and "usage:" not in err


def test_interrupt_exits_130(monkeypatch, run_cli) -> None:
    import tim.cli.train as train_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cli, "run", interrupted)
    code, _, err = run_cli(["train", "--config", "digits"])
    assert code == 130 and "interrupted" in err


def _bad(tmp: Path, run: Path | None) -> dict[str, tuple[list[str], tuple[str, ...]]]:
    """Bad command lines -> fragments their one-line message must contain."""
    run_s = str(run)
    full = tmp / "full"
    full.mkdir()
    (full / "old.png").write_text("x")
    a_file = tmp / "a_file"
    a_file.write_text("x")
    out = str(tmp / "new")
    sample = ["sample", "--checkpoint", run_s, "--out", out]
    return {
        "steps-empty": ([*sample, "--steps", ""], ("--steps is empty", "--steps 1,2,4")),
        "steps-commas-only": ([*sample, "--steps", ",,"], ("--steps is empty",)),
        "steps-non-integer": ([*sample, "--steps", "1,two"], ("'two' is not an integer",)),
        "steps-float": ([*sample, "--steps", "1.5"], ("'1.5' is not an integer",)),
        "steps-zero": ([*sample, "--steps", "0"], ("--steps value 0 is < 1", "at least 1")),
        "steps-negative": ([*sample, "--steps", "4,-2"], ("-2 is < 1",)),
        "class-out-of-range": (
            [*sample, "--steps", "1", "--class", "10"],
            ("class id 10 is out of range", "10 classes", "[0, 9]"),
        ),
        "class-negative": ([*sample, "--steps", "1", "--class", "3,-1"], ("class id -1 is out of range",)),
        "class-non-integer": (
            [*sample, "--steps", "1", "--class", "seven"],
            ("'seven' is not an integer", "[0, 9]"),
        ),
        "cfg-negative": ([*sample, "--steps", "1", "--cfg", "-0.5"], ("--cfg -0.5 is negative", ">= 0")),
        "cfg-nan": ([*sample, "--steps", "1", "--cfg", "nan"], ("not finite",)),
        "height-not-divisible": (
            [*sample, "--steps", "1", "--height", "7"],
            ("7x8 is not divisible by the patch size 2", "multiples of 2"),
        ),
        "width-not-divisible": (
            [*sample, "--steps", "1", "--width", "9"],
            ("8x9 is not divisible by the patch size 2",),
        ),
        "size-zero": ([*sample, "--steps", "1", "--height", "0"], ("--height 0 is outside [1, 16384]",)),
        "out-not-empty": (
            ["sample", "--checkpoint", run_s, "--steps", "1", "--out", str(full)],
            ("already exists and is not empty", "--overwrite"),
        ),
        "out-is-file": (
            ["sample", "--checkpoint", run_s, "--steps", "1", "--out", str(a_file)],
            ("exists and is a file", "folder"),
        ),
        "num-zero": ([*sample, "--steps", "1", "--num", "0"], ("--num 0 is < 1",)),
        "stochasticity-negative": ([*sample, "--steps", "1", "--stochasticity", "-1"], ("negative", ">= 0")),
        "interval-malformed": (
            [*sample, "--steps", "1", "--guidance-interval", "0.5"],
            ("not two numbers", "LO,HI"),
        ),
        "interval-reversed": (
            [*sample, "--steps", "1", "--guidance-interval", "0.8,0.2"],
            ("0 <= LO <= HI <= 1",),
        ),
        "checkpoint-missing": (
            ["sample", "--checkpoint", str(tmp / "nope"), "--steps", "1", "--out", out],
            ("does not exist", "tim train --out"),
        ),
        "checkpoint-empty-dir": (
            ["sample", "--checkpoint", str(tmp), "--steps", "1", "--out", out],
            ("neither a pipeline folder", "nor a training run"),
        ),
        "unknown-option": (
            [*sample, "--steps", "1", "--colour", "red"],
            ("unrecognized arguments: --colour", "--help"),
        ),
        "missing-required": (["sample", "--steps", "1"], ("required", "--checkpoint", "--out")),
        "cfg-not-a-number": ([*sample, "--steps", "1", "--cfg", "high"], ("invalid float value: 'high'",)),
        "unknown-command": (["fly"], ("invalid choice: 'fly'",)),
        "train-config-missing": (["train", "--config", str(tmp / "none.yaml")], ("does not exist",)),
        "train-unknown-key": (
            ["train", "--config", "digits", "--out", out, "optim.lrr=1"],
            ("unknown config key 'optim.lrr'", "did you mean 'optim.lr'"),
        ),
        "train-negative-lr": (
            ["train", "--config", "digits", "--out", out, "optim.lr=-1"],
            ("optim.lr = -1 must be > 0",),
        ),
        "train-bad-override": (
            ["train", "--config", "digits", "--out", out, "optim.lr"],
            ("not of the form key.sub=value",),
        ),
        "demo-steps-zero": (["demo", "--out", out, "--steps", "0"], ("--steps value 0 is < 1",)),
        "demo-out-not-empty": (
            ["demo", "--out", str(full)],
            ("already exists and is not empty", "--overwrite"),
        ),
        "demo-per-class": (["demo", "--out", out, "--per-class", "1"], ("--per-class 1 is < 2",)),
        "demo-bad-override": (["demo", "--out", out, "train.stepz=3"], ("unknown config key 'train.stepz'",)),
    }


def test_bad_command_lines_give_one_line_errors_with_exit_2(tmp_path: Path, tiny_run: Path, run_cli) -> None:
    cases = _bad(tmp_path, tiny_run)
    assert len(cases) >= 30
    failures = []
    for case_id, (argv, fragments) in cases.items():
        code, _, err = run_cli(argv)
        lines = err.strip().splitlines()
        problems = []
        if code != 2:
            problems.append(f"exit {code}")
        if len(lines) != 1 or not lines[0].startswith("error: "):
            problems.append(f"not one 'error:' line: {err!r}")
        if "Traceback" in err:
            problems.append("traceback")
        problems += [f"missing {f!r}" for f in fragments if f.lower() not in err.lower()]
        if problems:
            failures.append(f"{case_id}: {'; '.join(problems)} (stderr: {err.strip()!r})")
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "new").exists(), "a failed command left an output folder behind"


def _fake_demos(monkeypatch) -> list:
    """Replace every demo by one that records what `tim demo` passed to it."""
    import dataclasses

    import tim.cli.demo as demo

    seen = []

    def fake(name):
        real = demo.importlib.import_module(f"tim.experiments.{name}").EXPERIMENT
        return dataclasses.replace(
            real, configure=lambda options: None, run=lambda options, plan: seen.append((name, options)) or 0
        )

    monkeypatch.setattr(demo, "experiment", fake)
    return seen


def test_overrides_after_options_reach_the_command(monkeypatch, tmp_path) -> None:
    from tim.cli.main import main

    seen = _fake_demos(monkeypatch)
    assert main(["demo", "latent", "--quick", "--out", str(tmp_path), "train.steps=3", "optim.lr=1e-3"]) == 0
    ((name, options),) = seen
    assert (name, options.quick, options.overrides) == ("latent", True, ["train.steps=3", "optim.lr=1e-3"])
    with pytest.raises(SystemExit):
        main(["demo", "latent", "--quick", "train.steps=3", "--bogus"])


@pytest.mark.parametrize(
    ("argv", "name", "overrides"),
    [
        (["demo", "--quick", "--out", "{out}", "train.steps=3"], "digits", ["train.steps=3"]),
        (["demo", "digits", "--quick", "--out", "{out}"], "digits", []),
        (["demo", "--quick", "--out", "{out}", "t2i", "train.steps=3"], "t2i", ["train.steps=3"]),
        (["demo", "t2i", "--out", "{out}", "--quick", "a=1", "--seed", "2", "b=2"], "t2i", ["a=1", "b=2"]),
        (["demo", "--seed", "3", "--quick", "--out", "{out}", "latent"], "latent", []),
    ],
)
def test_demo_names_and_options_in_any_order(monkeypatch, tmp_path, argv, name, overrides) -> None:
    """`tim demo` runs the digits; the shared options may come before or after the demo's name."""
    from tim.cli.main import main

    seen = _fake_demos(monkeypatch)
    out = tmp_path / "out"
    assert main([word.replace("{out}", str(out)) for word in argv]) == 0
    ((ran, options),) = seen
    assert (ran, options.quick, options.overrides, options.out) == (name, True, overrides, out)
    assert options.seed == (3 if name == "latent" else 2 if "b=2" in overrides else 0)


def test_a_file_system_error_that_no_layer_words_is_still_one_line(tmp_path, capsys) -> None:
    """A folder where the run's exported weights go: the export fails with one line (exit 2), and the
    finished checkpoints stay."""
    from tim.cli.main import main

    run = tmp_path / "run"
    args = ["train", "--config", "toy2d", "--out", str(run), "train.log_every=10", "train.progress=false"]
    assert main([*args, "train.steps=10", "train.checkpoint_every=10"]) == 0
    (run / "pretrained" / "model.safetensors").unlink()
    (run / "pretrained" / "model.safetensors").mkdir()
    capsys.readouterr()
    assert main([*args, "train.steps=20", "train.checkpoint_every=10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: Is a directory:") and "model.safetensors" in err
    assert "Traceback" not in err and (run / "checkpoints" / "step_00000020").is_dir()
