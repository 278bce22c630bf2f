"""`tim sample` as a bounded, streaming, resumable job: shards, resume, refusals, limits (issue 13 item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tim.errors import TimError
from tim.training.preemption import EXIT_PREEMPTED


def _argv(run: Path, out: Path, *extra: str) -> list[str]:
    return ["sample", "--checkpoint", str(run), "--out", str(out), "--no-progress", *extra]


def _all_samples(out: Path, steps: int) -> np.ndarray:
    index = json.loads((out / "index.json").read_text())
    shards = index["steps"][str(steps)]["shards"]
    return np.concatenate([np.load(out / shard["npz"])["samples"] for shard in shards])


JOB = (
    "--steps",
    "1,2",
    "--class",
    "0,1,2",
    "--num",
    "10",
    "--batch-size",
    "2",
    "--shard-size",
    "3",
    "--seed",
    "7",
)


def test_large_jobs_are_written_as_numbered_shards(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    code, _, err = run_cli(_argv(tiny_run, tmp_path / "s", *JOB))
    assert code == 0, err
    out = tmp_path / "s"
    names = sorted(p.name for p in out.glob("steps_002-*.npz"))
    assert names == [f"steps_002-{j:05d}.npz" for j in range(4)]  # 10 samples, 3 per shard
    assert not (out / "steps_002.npz").exists()
    with np.load(out / "steps_002-00003.npz") as last:
        assert last["index"].tolist() == [9] and last["labels"].tolist() == [2]
    assert len(list((out / "steps_002").glob("*.png"))) == 10
    # The same job in one shard and one batch gives the same samples: nothing depends on batching.
    code, _, err = run_cli(
        _argv(tiny_run, tmp_path / "one", "--steps", "1,2", "--class", "0,1,2", "--num", "10", "--seed", "7")
    )
    assert code == 0, err
    np.testing.assert_allclose(
        _all_samples(out, 2), np.load(tmp_path / "one" / "steps_002.npz")["samples"], rtol=0, atol=1e-6
    )


def test_noise_is_drawn_per_batch(
    tiny_run: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pipeline is asked for one batch at a time, so it never draws the noise of the whole job."""
    from tim.generation import TiMPipeline

    sizes: list[int] = []
    original = TiMPipeline._noise

    def recording(self, n, *args, **kwargs):  # noqa: ANN001, ANN202
        sizes.append(n)
        return original(self, n, *args, **kwargs)

    monkeypatch.setattr(TiMPipeline, "_noise", recording)
    code, _, err = run_cli(
        _argv(tiny_run, tmp_path / "s", "--steps", "1", "--num", "20", "--batch-size", "4", "--no-png")
    )
    assert code == 0, err
    assert sizes == [4] * 5


def test_interrupted_job_resumes_where_it_stopped(
    tiny_run: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tim.generation import PipelineBackend

    reference = tmp_path / "ref"
    assert run_cli(_argv(tiny_run, reference, *JOB))[0] == 0
    original = PipelineBackend.generate
    calls = {"n": 0}

    def interrupted(self, *args, **kwargs):  # noqa: ANN001, ANN202
        calls["n"] += 1
        if calls["n"] == 6:  # inside the 3rd shard of 1 step (2 batches per shard)
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(PipelineBackend, "generate", interrupted)
    out = tmp_path / "s"
    code, _, err = run_cli(_argv(tiny_run, out, *JOB))
    assert code == 130 and "rerun the same command to resume" in err
    index = json.loads((out / "index.json").read_text())
    assert [s["shard"] for s in index["steps"]["1"]["shards"]] == [0, 1] and not index["complete"]
    assert not list(out.rglob("*.tmp"))  # nothing half-written
    calls["n"] = -1000
    code, stdout, err = run_cli(_argv(tiny_run, out, *JOB))
    assert code == 0, err
    assert "resumed after 2 finished shard(s)" in stdout
    assert calls["n"] == -1000 + 3 + 7  # shards 2-3 of 1 step (2 + 1 batches), all 4 of 2 steps (2+2+2+1)
    for steps in (1, 2):
        np.testing.assert_array_equal(_all_samples(out, steps), _all_samples(reference, steps))
    code, stdout, _ = run_cli(_argv(tiny_run, out, *JOB))
    assert code == 0 and "nothing to do" in stdout


def test_a_damaged_shard_is_generated_again(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "s"
    assert run_cli(_argv(tiny_run, out, *JOB))[0] == 0
    before = _all_samples(out, 2)
    (out / "steps_002-00001.npz").write_bytes(b"truncated")
    (out / "steps_001" / "000004.png").unlink()
    code, stdout, err = run_cli(_argv(tiny_run, out, *JOB))
    assert code == 0 and "resumed after 6 finished shard(s)" in stdout, err
    np.testing.assert_array_equal(_all_samples(out, 2), before)
    assert (out / "steps_001" / "000004.png").is_file()


def test_a_changed_command_is_refused(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    job = ["--steps", "1,2", "--class", "0,1", "--num", "4", "--seed", "7", "--no-png"]
    out = tmp_path / "s"
    assert run_cli(_argv(tiny_run, out, *job))[0] == 0
    for change, fragment in (
        (("--seed", "8"), "seed 7 -> 8"),
        (("--num", "5"), "counts [2, 2] -> [3, 2]"),
        (("--cfg", "2"), "guidance_scale 1.0 -> 2.0"),
        (("--steps", "1,4"), "steps [1, 2] -> [1, 4]"),
        (("--batch-size", "1"), "batch_size 4 -> 1"),
    ):
        argv = list(job)
        if change[0] in argv:
            argv[argv.index(change[0]) + 1] = change[1]
        else:
            argv += list(change)
        code, _, err = run_cli(_argv(tiny_run, out, *argv))
        assert code == 2 and err.count("error:") == 1, err
        assert "other settings" in err and fragment in err and "--overwrite" in err, err
    code, _, err = run_cli(_argv(tiny_run, out, *job, "--seed", "8", "--overwrite"))
    assert code == 0, err
    assert json.loads((out / "index.json").read_text())["command"]["seed"] == 8


def test_a_damaged_index_is_a_one_line_error(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    out, job = tmp_path / "s", ("--steps", "1", "--num", "10", "--no-png")
    assert run_cli(_argv(tiny_run, out, *job))[0] == 0
    (out / "index.json").write_text("{not json")
    code, _, err = run_cli(_argv(tiny_run, out, *job))
    assert code == 2 and "not a readable tim sample index" in err and "--overwrite" in err


def test_memory_is_estimated_before_allocating(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "s"
    code, _, err = run_cli(
        _argv(tiny_run, out, "--height", "16384", "--width", "16384", "--batch-size", "64")
    )
    assert code == 2 and err.count("error:") == 1, err
    assert "needs about" in err and "available" in err and "TiB" in err and not out.exists(), err


def test_memory_check_names_the_size_and_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from tim.generation import memory
    from tim.generation.job import Job

    class Fake:
        kind, conditioning, num_classes = "image", "class", 10

        def noise_shape(self, height, width):  # noqa: ANN001, ANN202
            return (1, height, width)

        def batch_bytes(self, batch_size, height, width, guided):  # noqa: ANN001, ANN202
            return batch_size * 2**30 * (2 if guided else 1)

    monkeypatch.setattr(memory, "available_memory", lambda device: (10 * 2**30, "test limit"))
    job = Job(
        steps=(1,),
        conditions=(0,),
        counts=(64,),
        seed=0,
        batch_size=64,
        shard_size=8,
        height=8,
        width=8,
        options={"guidance_scale": 1.0},
    )
    with pytest.raises(
        TimError,
        match=r"64 8x8 samples per batch needs about 64.0 GiB but only 10.0 GiB is "
        r"available \(test limit\); lower --batch-size \(a batch of 1 needs about 1.0 GiB\)",
    ):
        memory.check_memory(job, Fake(), torch.device("cpu"))
    small = Job(
        steps=(1,),
        conditions=(0,),
        counts=(64,),
        seed=0,
        batch_size=4,
        shard_size=8,
        height=8,
        width=8,
        options={"guidance_scale": 1.0},
    )
    assert memory.check_memory(small, Fake(), torch.device("cpu")) > 4 * 2**30


def test_available_memory_reads_the_system() -> None:
    import torch

    from tim.system import available_memory

    free, source = available_memory(torch.device("cpu"))
    assert 0 < free < 2**50 and source


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--steps", "1001"], ("--steps value 1001", "maximum of 1000")),
        (["--cfg", "31"], ("--cfg 31", "maximum of 30")),
        (["--stochasticity", "1.5"], ("--stochasticity 1.5", "outside [0, 1]")),
        (["--stochasticity", "inf"], ("--stochasticity inf", "outside [0, 1]")),
        (["--guidance-interval", "0.6,0.2"], ("--guidance-interval", "LO <= HI")),
        (["--guidance-interval", "0,1.5"], ("--guidance-interval", "<= 1")),
        (["--height", "0"], ("--height 0", "outside [1, 16384]")),
        (["--width", "100000"], ("--width 100000", "outside [1, 16384]")),
        (["--seed", "-1"], ("--seed -1", "2^63")),
        (["--seed", str(2**63)], ("2^63",)),
        (["--batch-size", "0"], ("--batch-size 0", ">= 1")),
        (["--shard-size", "0"], ("--shard-size 0", ">= 1")),
        (["--num", "20000000"], ("--num 20000000", "maximum of 10,000,000")),
        (["--dtype", "bf16"], ("--dtype bf16", "CUDA GPU", "fp32")),
        (["--device", "meta"], ("--device meta", "cannot run sampling")),
        (["--prompts", "/nonexistent/prompts.txt"], ("does not exist",)),
        (["--prompt", ""], ("--prompt is empty",)),
        (["--preset", "TiM-XL/2"], ("--preset", "released")),
    ],
)
def test_limits_are_one_line_errors_before_any_output(
    tiny_run: Path, tmp_path: Path, run_cli, argv, fragments
) -> None:
    out = tmp_path / "s"
    code, _, err = run_cli(_argv(tiny_run, out, *argv))
    assert code == 2 and err.count("error:") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    assert not out.exists()


def test_split_count_and_shard_size() -> None:
    from tim.generation.job import default_shard_size, split_count

    assert split_count(10, 3) == (4, 3, 3) and sum(split_count(50_000, 1000)) == 50_000
    assert default_shard_size(64) == 1000  # tiny digits: the sample cap
    assert default_shard_size(3 * 256 * 256) == 341  # 256 MiB of float32 256x256 RGB images


@pytest.mark.slow
def test_fifty_thousand_samples_stream_in_bounded_memory(tiny_run: Path, tmp_path: Path) -> None:
    """50,000 samples: 50 shards per step count, peak RSS far below holding them all (~2x the first shards)."""
    import subprocess
    import sys

    out = tmp_path / "s"
    script = (
        "import resource, sys; from tim.cli.main import main; code = main(sys.argv[1:]); "
        "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(code)"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            *_argv(tiny_run, out, "--steps", "1", "--num", "50000", "--batch-size", "500", "--no-png"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and len(index["steps"]["1"]["shards"]) == 50
    peak = int(result.stdout.split("peak_rss_kib")[1].split()[0]) * 1024
    assert peak < 2 * 2**30, peak


def test_one_job_per_folder_and_stale_temporaries_are_removed(
    tiny_run: Path, tmp_path: Path, run_cli
) -> None:
    from tim.generation.job import JobLock

    out = tmp_path / "s"
    assert run_cli(_argv(tiny_run, out, *JOB))[0] == 0
    (out / "steps_002-00001.npz").unlink()
    stale = [out / ".steps_002-00001.npz.abc123.tmp", out / "steps_001" / ".000003.png.xyz.tmp"]
    for path in stale:
        path.write_bytes(b"half")  # as a kill -9 during a write leaves
    with JobLock(out):  # another tim sample holds the folder
        code, _, err = run_cli(_argv(tiny_run, out, *JOB))
    assert code == 2 and "in use by another tim sample process" in err and "PID" in err, err
    assert all(path.exists() for path in stale)  # only the lock holder cleans up
    code, stdout, err = run_cli(_argv(tiny_run, out, *JOB))
    assert code == 0 and "resumed after 7 finished shard(s)" in stdout, err
    assert not any(path.exists() for path in stale)


@pytest.mark.slow
def test_sigterm_keeps_finished_shards_and_the_same_command_resumes(tiny_run: Path, tmp_path: Path) -> None:
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "s"
    command = [
        sys.executable,
        "-m",
        "tim.cli.main",
        *_argv(
            tiny_run,
            out,
            "--steps",
            "1",
            "--num",
            "20000",
            "--batch-size",
            "250",
            "--shard-size",
            "500",
            "--no-png",
        ),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        index = out / "index.json"
        if index.exists() and json.loads(index.read_text())["steps"]["1"]["shards"]:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == EXIT_PREEMPTED, err
    assert "stopped on SIGTERM; the finished shards" in err and "rerun the same command" in err, err
    done = len(json.loads((out / "index.json").read_text())["steps"]["1"]["shards"])
    assert 1 <= done < 40 and not list(out.glob(".*.tmp"))
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0 and f"resumed after {done} finished shard(s)" in result.stdout, (
        result.stderr
    )


# ------------------------------------------------------------------------------------------------
# Nothing in --out is trusted on resume: index.json names and symbolic links


SMALL = (
    "--steps",
    "1",
    "--class",
    "0,1",
    "--num",
    "4",
    "--shard-size",
    "2",
    "--batch-size",
    "2",
    "--seed",
    "3",
)


def _edit_index(out: Path, edit) -> None:  # noqa: ANN001 - edit(index dict) changes it in place
    index = json.loads((out / "index.json").read_text())
    edit(index)
    (out / "index.json").write_text(json.dumps(index))


def _outside(out: Path) -> Path:
    """A file outside --out whose size a planted shard entry can match."""
    secret = out.parent / "secret.bin"
    secret.write_bytes(b"x" * 123)
    return secret


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda index, out: index["steps"]["1"]["shards"][0].update(
                npz=f"../{_outside(out).name}", bytes=_outside(out).stat().st_size
            ),
            "steps.1.shards[0].npz",
        ),
        (
            lambda index, out: index["steps"]["1"]["shards"][1].update(npz=str(_outside(out))),
            "steps.1.shards[1].npz",
        ),
        (lambda index, out: index["steps"]["1"].update(grid=str(_outside(out))), "steps.1.grid"),
        (lambda index, out: index["steps"]["1"].update(grid="../steps_001.png"), "steps.1.grid"),
        (lambda index, out: index["steps"].pop("1"), "steps.1 is missing"),
        (lambda index, out: index["steps"]["1"].update(shards=None), "steps.1.shards = null is not a list"),
        (
            lambda index, out: index["steps"]["1"]["shards"][0].update(shard="0"),
            'steps.1.shards[0].shard = "0"',
        ),
        (
            lambda index, out: index["steps"]["1"]["shards"][1].update(shard=0),
            "steps.1.shards[1].shard = 0 appears twice",
        ),
        (
            lambda index, out: index["steps"]["1"]["shards"][0].update(stop=9),
            "steps.1.shards[0].stop = 9 is not 2",
        ),
        (lambda index, out: index["steps"]["1"]["shards"][0].pop("bytes"), "steps.1.shards[0].bytes"),
        (
            lambda index, out: index["steps"]["1"]["shards"].__setitem__(0, "x"),
            "steps.1.shards[0] is not an object",
        ),
        (lambda index, out: index["steps"].update({"7": index["steps"]["1"]}), "steps.7 is not a step count"),
        (lambda index, out: index.update(command=[1]), "not a readable tim sample index"),
    ],
    ids=[
        "npz-dotdot",
        "npz-absolute",
        "grid-absolute",
        "grid-dotdot",
        "missing-step",
        "shards-null",
        "shard-string",
        "shard-twice",
        "wrong-range",
        "no-bytes",
        "entry-not-object",
        "unknown-step",
        "command-not-object",
    ],
)
def test_a_tampered_index_is_refused_naming_the_key(
    tiny_run: Path, tmp_path: Path, run_cli, edit, key: str
) -> None:
    """Every name and number read from index.json must be the one this job writes, or the resume stops."""
    out = tmp_path / "s"
    assert run_cli(_argv(tiny_run, out, *SMALL))[0] == 0
    secret = _outside(out)
    _edit_index(out, lambda index: edit(index, out))
    before = {path: path.read_bytes() for path in out.rglob("*") if path.is_file() and path.name != ".lock"}
    code, _, err = run_cli(_argv(tiny_run, out, *SMALL))
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err and key in err and "index.json" in err, err
    if "readable" not in key:
        assert "rerun the command with --overwrite" in err, err
    after = {path: path.read_bytes() for path in out.rglob("*") if path.is_file() and path.name != ".lock"}
    assert after == before and secret.read_bytes() == b"x" * 123  # nothing read as done, written or deleted


def _link_steps_folder(out: Path) -> Path:
    elsewhere = out.parent / "elsewhere"
    (out / "steps_001").rename(elsewhere)
    (elsewhere / ".victim.tmp").write_bytes(b"mine")  # what a resume's clean-up would delete
    (elsewhere / "000000.png").unlink()  # what a resume would write there
    (out / "steps_001").symlink_to(elsewhere, target_is_directory=True)
    return out / "steps_001"


def _link_file(out: Path, name: str) -> Path:
    target = out.parent / f"elsewhere-{name.replace('/', '-')}"
    (out / name).rename(target)
    (out / name).symlink_to(target)
    return out / name


@pytest.mark.parametrize(
    ("plant", "overwrite"),
    [
        (lambda out: _link_steps_folder(out), False),
        (lambda out: _link_steps_folder(out), True),
        (lambda out: _link_file(out, "steps_001-00001.npz"), False),
        (lambda out: _link_file(out, "steps_001.png"), True),
        (lambda out: _link_file(out, "index.json"), False),
        (lambda out: _link_file(out, "steps_001/000003.png"), False),
        (lambda out: _link_file(out, ".lock"), False),
    ],
    ids=["steps-folder", "steps-folder-overwrite", "shard", "grid-overwrite", "index", "sample-png", "lock"],
)
def test_symbolic_links_in_out_are_refused_not_followed(
    tiny_run: Path, tmp_path: Path, run_cli, plant, overwrite: bool
) -> None:
    out = tmp_path / "s"
    assert run_cli(_argv(tiny_run, out, *SMALL))[0] == 0
    link = plant(out)
    target = link.resolve()
    outside = {
        path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file() and out not in path.parents
    }
    code, _, err = run_cli(_argv(tiny_run, out, *SMALL, *(["--overwrite"] if overwrite else [])))
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"'{link}' is a symbolic link" in err and "remove the link" in err, err
    now = {
        path: path.read_bytes() for path in tmp_path.rglob("*") if path.is_file() and out not in path.parents
    }
    assert now == outside and target.exists()  # the link's target was neither written nor deleted


def test_a_dangling_lock_link_creates_no_file(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    out, important = tmp_path / "s", tmp_path / "important.txt"
    out.mkdir()
    (out / ".lock").symlink_to(important)
    code, _, err = run_cli(_argv(tiny_run, out, *SMALL, "--overwrite"))
    assert code == 2 and "lock file" in err and "is a symbolic link" in err, err
    assert not important.exists() and not (out / "index.json").exists()


# ------------------------------------------------------------------------------------------------
# Signals in every phase, full disks, odd --out folders, file modes


def _signal_then_work(number: int, seconds: float = 30.0):  # noqa: ANN202
    """A stand-in for a long phase: the signal arrives while it works (a sleep the handler interrupts)."""
    import os
    import time

    def long_phase(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        os.kill(os.getpid(), number)
        time.sleep(seconds)  # the handler raises at the next bytecode: this never finishes
        raise AssertionError("the stop signal did not stop this phase")

    return long_phase


@pytest.mark.parametrize("signal_name", ["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("phase", ["loading", "batch"])
def test_a_signal_in_any_phase_stops_at_once_with_exit_75(
    phase: str, signal_name: str, tiny_run: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal
    import time

    from tim.cli import sample as sample_cli
    from tim.generation import PipelineBackend

    number = getattr(signal, signal_name)
    out = tmp_path / "s"
    if phase == "loading":
        monkeypatch.setattr(sample_cli, "load_backend", _signal_then_work(number))
    else:  # inside the 3rd shard of 1 step (2 batches per shard): shards 0 and 1 are finished
        original, calls = PipelineBackend.generate, {"n": 0}

        def generate(self, *args, **kwargs):  # noqa: ANN001, ANN202
            calls["n"] += 1
            if calls["n"] == 6:
                return _signal_then_work(number)()
            return original(self, *args, **kwargs)

        monkeypatch.setattr(PipelineBackend, "generate", generate)
    started = time.monotonic()
    code, _, err = run_cli(_argv(tiny_run, out, *JOB))
    assert time.monotonic() - started < 25  # stopped at once, not after the 30 s phase
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == EXIT_PREEMPTED, err
    assert lines[-1].startswith(f"stopped on {signal_name}; ") and "rerun the same command" in lines[-1], (
        lines
    )
    assert all(line.startswith(("received ", "stopped on ")) for line in lines), lines
    assert signal.getsignal(signal.SIGTERM) is not None  # the handlers were put back (no leak into pytest)
    if phase == "loading":
        assert "nothing was written" in lines[-1] and not out.exists()
    else:
        assert "the finished shards in" in lines[-1]
        index = json.loads((out / "index.json").read_text())
        assert [s["shard"] for s in index["steps"]["1"]["shards"]] == [0, 1] and not index["complete"]
        assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.tmp.png"))  # nothing half-written


def _full_disk(what: str):  # noqa: ANN202
    import errno

    def writer(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    return writer


# (what is patched to fail, the file the message must name, finished shards kept)
DISK_FULL = {
    "npz-shard": ("numpy.savez", "steps_001-00000.npz", 0),
    "png": ("PIL.Image.Image.save", "steps_001/000000.png", 0),
    "grid": ("tim.viz.grid_array", "steps_001.png", 8),
}


@pytest.mark.parametrize("case", list(DISK_FULL))
def test_a_full_disk_while_sampling_is_one_line_and_keeps_finished_work(
    case: str, tiny_run: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    target, name, kept = DISK_FULL[case]
    out = tmp_path / "s"
    if case == "grid":  # the shards are written; the grid write fails (ENOSPC from the PNG writer)
        from tim.generation import job_files

        real = job_files.save_png

        def save_png(path, pixels, **kwargs):  # noqa: ANN001, ANN003, ANN202
            if path.name == name:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(path, pixels, **kwargs)

        monkeypatch.setattr(job_files, "save_png", save_png)
    else:
        monkeypatch.setattr(target, _full_disk(target))
    code, _, err = run_cli(_argv(tiny_run, out, *JOB))
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: the disk is full while writing") and name in lines[0], lines
    assert f"the {kept} finished shard(s)" in lines[0] if kept else "nothing finished" in lines[0], lines
    assert "free disk space, then rerun the same command to resume" in lines[0]
    assert not list(out.rglob("*.tmp")) and not list(out.rglob("*.tmp.png"))
    monkeypatch.undo()  # disk space freed: the same command finishes the job
    code, stdout, err = run_cli(_argv(tiny_run, out, *JOB))
    assert code == 0, err


def test_a_write_refused_by_permissions_is_one_line(
    tiny_run: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    def denied(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("numpy.savez", denied)
    code, _, err = run_cli(_argv(tiny_run, tmp_path / "s", *JOB))
    assert code == 2 and "Traceback" not in err, err
    assert "cannot write '" in err and "Permission denied" in err and "make --out writable" in err


@pytest.mark.parametrize("where", ["out", "parent"])
def test_an_unwritable_out_is_refused_before_loading(
    where: str, tiny_run: Path, tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from tim.cli import sample as sample_cli

    locked = tmp_path / "locked"
    locked.mkdir()
    out = locked if where == "out" else locked / "new" / "s"
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: False if Path(path) == locked else real_access(path, mode)
    )
    monkeypatch.setattr(sample_cli, "load_backend", lambda *a: pytest.fail("loaded the model first"))
    code, _, err = run_cli(_argv(tiny_run, out, *JOB))
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "is not writable (permission denied)" in err and "pass a folder you may write to" in err


@pytest.mark.parametrize(
    ("entry", "make"),
    [
        ("steps_001", "file"),
        ("steps_002.png", "folder"),
        ("steps_001-00000.npz", "folder"),
        ("index.json", "folder"),
    ],
)
def test_an_out_entry_of_the_wrong_kind_is_one_line_before_any_work(
    entry: str, make: str, tiny_run: Path, tmp_path: Path, run_cli
) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / entry).mkdir() if make == "folder" else (out / entry).write_text("x")
    code, _, err = run_cli([*_argv(tiny_run, out, *JOB), "--overwrite"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert f"'{out / entry}' is a {make}" in err and "move it out of the way" in err
    assert sorted(p.name for p in out.iterdir() if p.name != ".lock") == [entry]  # nothing written


def test_written_files_get_the_umask_mode(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    import os
    import stat

    previous = os.umask(0o027)  # not the usual 022: the files must follow the umask, not a constant
    try:
        code, _, err = run_cli(_argv(tiny_run, tmp_path / "s", "--steps", "1", "--class", "0", "--num", "2"))
    finally:
        os.umask(previous)
    assert code == 0, err
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file() and p.name != ".lock"]
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert len(files) >= 5 and set(modes.values()) == {"0o640"}, modes  # 0o666 & ~0o027; mkstemp gives 0o600
