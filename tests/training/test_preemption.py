"""Graceful preemption (issue 13 item 1): SIGTERM / SIGINT stop after the current step with a checkpoint.

A real ``tim train`` process gets a real signal once it is training; it must exit with status
:data:`EXIT_PREEMPTED` and one ``stopped on ...`` line, leave a verified checkpoint at exactly the
last logged step, and rerunning must continue bit-exactly (the resumed losses equal an
uninterrupted run's). The 2-process test (gloo, marked slow) signals only rank 1 and checks that
both ranks stop after the same step.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tim.training import load_config, train
from tim.training.checkpoint import list_checkpoints, verify_checkpoint
from tim.training.preemption import EXIT_PREEMPTED, Preempted, StopRequest

# The tiny 2-D run of conftest.TINY (a few ms per step), on top of the toy2d preset.
TINY = [
    "model.hidden_size=32",
    "model.depth=2",
    "train.batch_size=32",
    "train.label_dropout=0",
    "train.log_every=1",
    "train.progress=false",
    "train.device=cpu",
    "optim.lr=1e-3",
    "ema.decay=0.9",
    "sample.num=0",
]

# Long enough never to finish by itself; checkpoints only when stopped (or at the very end).
ENDLESS = [*TINY, "train.steps=1000000", "train.checkpoint_every=1000000"]


def _tim_train(run_dir: Path, overrides: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "tim.cli.main",
        "train",
        "--config",
        "toy2d",
        "--out",
        str(run_dir),
        *overrides,
    ]
    return subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


def _logged(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def _wait_until_training(
    process: subprocess.Popen, run_dir: Path, steps: int = 3, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while len(_logged(run_dir)) < steps:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run did not start training in time"
        time.sleep(0.05)


# SIGINT takes the same path as SIGTERM; its run is slow-only to keep the default suite short
# (each case starts a process that imports torch: 6-14 s on the shared 2-core machine).
@pytest.mark.parametrize(
    "number", [signal.SIGTERM, pytest.param(signal.SIGINT, marks=pytest.mark.slow)], ids=["SIGTERM", "SIGINT"]
)
def test_signal_stops_after_the_step_with_a_checkpoint_and_resumes_exactly(
    number: int, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    process = _tim_train(run, ENDLESS)
    _wait_until_training(process, run)
    process.send_signal(number)
    _, stderr = process.communicate(timeout=120)
    lines = [line for line in stderr.splitlines() if line.strip()]
    name = signal.Signals(number).name
    assert process.returncode == EXIT_PREEMPTED, stderr[-2000:]
    assert "Traceback" not in stderr
    assert lines[-1].startswith(f"stopped on {name} after step ") and "rerun the same command" in lines[-1], (
        lines
    )
    assert all(line.startswith(("received ", "stopped on ")) for line in lines), lines
    stopped_at = int(lines[-1].split("after step ")[1].split(";")[0])
    (checkpoint,) = list_checkpoints(run)
    assert checkpoint.name == f"step_{stopped_at:08d}" and verify_checkpoint(checkpoint) is None
    assert _logged(run)[-1]["step"] == stopped_at  # no step trained past the checkpoint
    # Resume to two steps further (train.steps may change on resume); compare with a straight run.
    further = [*TINY, f"train.steps={stopped_at + 2}", "train.checkpoint_every=1000000"]
    train(load_config("toy2d", further), run)
    straight = train(load_config("toy2d", further), tmp_path / "straight")
    assert [(r["step"], r["loss"]) for r in _logged(run)] == [
        (r["step"], r["loss"]) for r in _logged(straight)
    ]


def test_second_signal_aborts_at_once_and_handlers_are_restored() -> None:
    before = signal.getsignal(signal.SIGINT)
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signal_name == "SIGINT"
        with pytest.raises(KeyboardInterrupt):  # the second one: the previous handler, at once
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the signal is handled at the next bytecode boundary, well before this ends
    assert signal.getsignal(signal.SIGINT) is before


def test_train_restores_the_callers_signal_handlers(tiny_config, tmp_path: Path) -> None:
    mine = lambda number, frame: None  # noqa: E731
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        train(tiny_config("train.steps=2"), tmp_path / "run")
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_preempted_message_is_one_line() -> None:
    message = str(Preempted("SIGTERM", 12, Path("/runs/a/checkpoints/step_00000012")))
    assert "\n" not in message and "step 12" in message and "rerun the same command" in message


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_processes_stop_after_the_same_step(tmp_path: Path) -> None:
    """SIGTERM to rank 1 only: the per-step all-reduce makes rank 0 stop after the same step."""
    run, port = tmp_path / "run", _free_port()
    common = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    ranks = [
        _tim_train(run, [*ENDLESS, "train.batch_size=32"], {**common, "RANK": str(k), "LOCAL_RANK": str(k)})
        for k in range(2)
    ]
    try:
        _wait_until_training(ranks[0], run, steps=5, timeout=240)
        ranks[1].send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=120)[1] for process in ranks]
    finally:
        for process in ranks:
            process.kill() if process.poll() is None else None
    steps = []
    for process, stderr in zip(ranks, outputs, strict=True):
        assert process.returncode == EXIT_PREEMPTED, stderr[-2000:]
        last = [line for line in stderr.splitlines() if line.strip()][-1]
        steps.append(int(last.split("after step ")[1].split(";")[0]))
    assert steps[0] == steps[1], outputs
    assert "stopped on SIGTERM" in outputs[1] and "another process" in outputs[0]
    (checkpoint,) = list_checkpoints(run)
    assert checkpoint.name == f"step_{steps[0]:08d}" and verify_checkpoint(checkpoint) is None


def test_preempted_is_handled_like_ctrl_c_by_callers_that_do_not_know_it() -> None:
    try:
        raise Preempted("SIGINT", 3, None)
    except Exception:  # noqa: BLE001 - must not catch it
        pytest.fail("Preempted was swallowed by 'except Exception'")
    except KeyboardInterrupt as stopped:
        assert isinstance(stopped, Preempted) and stopped.step == 3


# ------------------------------------------------------------------------------------------------
# Every long phase stops on a signal, not only the training steps


def _signal_then_work(number: int = signal.SIGTERM):  # noqa: ANN202
    """A stand-in for a long phase (a huge model's set-up, a 1,000-step grid): the signal arrives while it works."""

    def long_phase(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        os.kill(os.getpid(), number)
        time.sleep(30)  # the handler raises at the next bytecode: this never finishes
        raise AssertionError("the stop signal did not stop this phase")

    return long_phase


# phase -> (what is patched, overrides, the stop line's words, the checkpoint left, whether the run was resumed)
PHASES = {
    "setup-fresh": (
        "tim.training.loop._build_model",
        [],
        "while setting up the run, before any training step; no checkpoint was written",
        None,
        False,
    ),
    "setup-resume": (
        "tim.training.loop._build_model",
        [],
        "while setting up the run, before any training step; its checkpoints in",
        3,
        True,
    ),
    "final-grid": (
        "tim.samplers.sample",
        ["sample.num=4"],
        "while drawing the final sample grids after step 3; checkpoint saved in",
        3,
        False,
    ),
    "grid-during-training": (
        "tim.samplers.sample",
        ["sample.num=4", "train.sample_every=2", "train.steps=1000000"],
        "after step 2; checkpoint saved in",
        2,
        False,
    ),
}


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_signal_outside_the_training_steps_stops_at_once_with_exit_75(
    phase: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from helpers.cli import run_cli

    target, overrides, words, left, resume = PHASES[phase]
    run = tmp_path / "run"
    argv = ["train", "--config", "toy2d", "--out", str(run), *TINY, "train.steps=3", *overrides]
    if resume:
        assert run_cli(argv)[0] == 0
        argv = [*argv, "train.steps=6"]
    before = sorted(p.name for p in list_checkpoints(run))
    monkeypatch.setattr(target, _signal_then_work())
    started = time.monotonic()
    code, stdout, stderr = run_cli(argv)
    assert time.monotonic() - started < 25, "the phase ran on after the signal"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert code == EXIT_PREEMPTED and len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("stopped on SIGTERM ") and words in lines[0], lines
    assert "rerun the same command" in lines[0]
    found = [int(p.name.split("_")[1]) for p in list_checkpoints(run)]
    assert (found[-1] if found else None) == left and all(
        verify_checkpoint(p) is None for p in list_checkpoints(run)
    )
    if phase.startswith("setup"):
        assert sorted(p.name for p in list_checkpoints(run)) == before  # nothing written
    assert not (run / "pretrained").exists() or resume  # no export after a stop
    assert not list(run.rglob(".tmp-*")) and not list(run.rglob("*.tmp"))  # nothing half-written
    monkeypatch.undo()  # the rerun finishes what was stopped
    if phase == "final-grid":
        code, _, stderr = run_cli(argv)
        assert code == 0 and (run / "pretrained" / "model.safetensors").is_file(), stderr
        assert (run / "samples" / "step_00000003_nfe_1.png").is_file()
