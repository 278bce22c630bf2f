"""One writer per run, resume that refuses to guess, robust manifests/metrics, no global RNG (issue 13).

Each test here failed on the code before issue 13: a second trainer ran alongside the first, a run
whose checkpoints were all corrupt restarted silently from step 0 (deleting the old metrics), a
changed learning rate resumed silently, a manifest with a missing field or a metrics line that is
not an object gave a traceback, and the saved global RNG state depended on what ran before.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tim.errors import TimError
from tim.training import load_config, train
from tim.training.checkpoint import MANIFEST, list_checkpoints, load_latest
from tim.training.config import RESUMABLE_KEYS, config_differences
from tim.training.lock import RunLock
from tim.training.memory import check_training_memory


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    return [(row["step"], row["loss"]) for row in _rows(run_dir) if "event" not in row]


def _same_files(a: Path, b: Path, part: str) -> bool:
    x, y = load_file(a / f"{part}.safetensors"), load_file(b / f"{part}.safetensors")
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


# ------------------------------------------------------------------------------------------------
# One writer per run directory


@pytest.mark.slow  # ~15 s on the loaded 2-core machine: a second process imports torch
def test_second_trainer_is_refused_with_the_holders_pid(tiny_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    endless = [
        sys.executable,
        "-m",
        "tim.cli.main",
        "train",
        "--config",
        "toy2d",
        "--out",
        str(run),
        "train.steps=1000000",
        "train.checkpoint_every=1000000",
        "train.log_every=1",
        "train.progress=false",
        "model.hidden_size=32",
        "train.batch_size=32",
        "sample.num=0",
        "train.device=cpu",
    ]
    first = subprocess.Popen(
        endless,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "metrics.jsonl").is_file() or not (run / "metrics.jsonl").read_text():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
            time.sleep(0.05)
        live = (
            run / "checkpoints" / ".tmp-step_00000007-424242"
        )  # stands for the first writer's checkpoint in progress
        live.mkdir(parents=True)
        rows_before = (run / "metrics.jsonl").read_text().count("\n")
        with pytest.raises(
            TimError, match=rf"in use by another training process \(PID {first.pid}\).*another --out"
        ):
            train(load_config("toy2d", endless[endless.index("train.steps=1000000") :]), run)
        assert live.is_dir(), "the refused trainer deleted the other writer's temporary"
        assert first.poll() is None and (run / "metrics.jsonl").read_text().count("\n") >= rows_before
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=120)


def test_lock_is_released_by_the_os_when_the_holder_dies(tiny_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
                "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid()).encode()); print('locked', flush=True); "
                "time.sleep(600)"
            ),
            str(run / ".lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    live = run / "checkpoints" / ".tmp-step_00000007-424242"  # the holder's checkpoint in progress
    live.mkdir(parents=True)
    with pytest.raises(
        TimError, match=rf"'{run}' is in use by another training process \(PID {holder.pid}\)"
    ):
        train(tiny_config(), run)
    assert live.is_dir(), "a trainer without the lock deleted the holder's temporary"
    holder.kill()  # kill -9: no clean-up code runs, the kernel drops the lock
    holder.wait()
    train(tiny_config(), run)
    assert list_checkpoints(run) and not live.exists()  # the new holder cleans the stale temporary


def test_lock_is_exclusive_and_released(tmp_path: Path) -> None:
    with RunLock(tmp_path):
        with pytest.raises(TimError, match=f"PID {os.getpid()}"):
            RunLock(tmp_path)
    RunLock(tmp_path).release()  # free again


@pytest.mark.parametrize("dangling", [False, True], ids=["link-to-a-file", "dangling-link"])
def test_a_symlinked_lock_file_is_refused_not_followed(tiny_config, tmp_path: Path, dangling: bool) -> None:
    """`tim train --out RUN` with RUN/.lock a link: one line naming the link; the target is untouched."""
    target = tmp_path / "important.txt"
    if not dangling:
        target.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").symlink_to(target)
    with pytest.raises(TimError) as caught:
        train(tiny_config(), run)
    message = str(caught.value)
    assert "\n" not in message and f"'{run / '.lock'}' is a symbolic link" in message, message
    assert "remove the link" in message, message
    assert target.exists() != dangling  # a dangling link created no file
    if not dangling:
        assert target.read_text() == "keep me\n"  # not truncated, no PID written
    assert not list_checkpoints(run)


def test_the_lock_file_must_be_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / ".lock").mkdir()
    with pytest.raises(TimError, match=r"cannot open the lock file .*\.lock"):
        RunLock(tmp_path)
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / ".lock")
    with pytest.raises(TimError, match=r"lock file .*\.lock' is not a regular file; remove it"):
        RunLock(fifo)  # refused at once, not hanging on the pipe


def test_checkpoint_temporaries_never_write_through_a_planted_link(tmp_path: Path) -> None:
    """The run directory's probe and JSON temporaries have predictable names; a link there is replaced."""
    from tim.training.checkpoint import check_output_dir, write_json_atomic

    target = tmp_path / "important.txt"
    target.write_text("keep me\n")
    run = tmp_path / "run"
    run.mkdir()
    (run / f".write-test-{os.getpid()}").symlink_to(target)
    (run / f".summary.json.tmp-{os.getpid()}").symlink_to(target)
    check_output_dir(run, 0)
    write_json_atomic(run / "summary.json", {"ok": True})
    assert target.read_text() == "keep me\n"
    assert json.loads((run / "summary.json").read_text()) == {"ok": True}
    assert not (run / "summary.json").is_symlink()


# ------------------------------------------------------------------------------------------------
# Resume that refuses to guess


def _corrupt_every_checkpoint(run: Path) -> None:
    for checkpoint in list_checkpoints(run):
        weights = checkpoint / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)  # same size, wrong sha256


def test_all_checkpoints_unusable_is_an_error_and_nothing_is_deleted(tiny_config, tmp_path: Path) -> None:
    run = train(tiny_config(), tmp_path / "run")
    _corrupt_every_checkpoint(run)
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    with pytest.warns(UserWarning, match="is unusable"), pytest.raises(TimError) as raised:
        train(tiny_config("train.steps=8"), run)
    message = str(raised.value)
    assert (
        "all 2 checkpoint(s)" in message
        and "nothing was changed or deleted" in message
        and "--restart" in message
    )
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before
    # --restart: a fresh run from step 0, the old one set aside (not deleted).
    train(tiny_config(), run, restart=True)
    (previous,) = run.glob("previous-*")
    assert sorted(p.name for p in (previous / "checkpoints").iterdir()) == ["step_00000003", "step_00000006"]
    assert (previous / "metrics.jsonl").read_bytes() == before[Path("metrics.jsonl")]
    assert [step for step, _ in _losses(run)] == [1, 2, 3, 4, 5, 6]
    assert load_latest(run).step == 6


def test_resume_with_a_changed_setting_lists_the_differences(tiny_config, tmp_path: Path) -> None:
    run = train(tiny_config("train.steps=3"), tmp_path / "run")
    changed = tiny_config("train.steps=6", "optim.lr=5e-4", "train.seed=3", "data.name=moons")
    with pytest.raises(TimError) as raised:
        train(changed, run)
    message = str(raised.value)
    for fragment in (
        "optim.lr: 0.001 -> 0.0005",
        "train.seed: 0 -> 3",
        "data.name: 'checkerboard' -> 'moons'",
        "--allow-config-change",
        "config.json",
    ):
        assert fragment in message, message
    assert "train.steps" not in message  # may change on resume
    assert load_latest(run).step == 3  # nothing trained
    train(changed, run, allow_config_change=True)  # the explicit override
    assert load_latest(run).step == 6


def test_resumable_keys_really_may_change(tiny_config) -> None:
    saved = tiny_config().to_dict()
    later = tiny_config(
        "train.steps=60",
        "train.time_limit=5",
        "train.checkpoint_every=7",
        "train.log_every=2",
        "train.progress=true",
        "logging.csv=false",
        "sample.num=4",
        "train.keep_last=9",
    )
    assert config_differences(saved, later) == []
    assert config_differences(saved, tiny_config("train.batch_size=64")) == ["train.batch_size: 32 -> 64"]
    assert "train.steps" in RESUMABLE_KEYS and "optim" not in RESUMABLE_KEYS


@pytest.mark.parametrize(
    "edit", ["drop-size", "size-is-text", "files-is-list", "entry-is-number", "path-escape"]
)
def test_malformed_manifest_is_named_and_skipped(edit: str, tiny_config, tmp_path: Path) -> None:
    run = train(tiny_config(), tmp_path / "run")
    newest = list_checkpoints(run)[-1]
    manifest = json.loads((newest / MANIFEST).read_text())
    entry = manifest["files"]["model.safetensors"]
    if edit == "drop-size":
        del entry["size"]
    elif edit == "size-is-text":
        entry["size"] = "big"
    elif edit == "files-is-list":
        manifest["files"] = list(manifest["files"])
    elif edit == "entry-is-number":
        manifest["files"]["model.safetensors"] = 7
    else:
        manifest["files"]["../../escape.txt"] = entry
    (newest / MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match=r"step_00000006' is unusable \(manifest.json is malformed"):
        assert load_latest(run).step == 3


def test_state_json_that_does_not_fit_is_named_and_skipped(tiny_config, tmp_path: Path) -> None:
    from tim.training.checkpoint import sha256_file

    run = train(tiny_config(), tmp_path / "run")
    newest = list_checkpoints(run)[-1]
    (newest / "state.json").write_text("[1, 2, 3]")  # valid JSON, matching manifest, wrong layout
    manifest = json.loads((newest / MANIFEST).read_text())
    manifest["files"]["state.json"] = {
        "size": (newest / "state.json").stat().st_size,
        "sha256": sha256_file(newest / "state.json"),
    }
    (newest / MANIFEST).write_text(json.dumps(manifest))
    with pytest.warns(UserWarning, match="contents cannot be read"):
        assert load_latest(run).step == 3


def test_metrics_lines_that_are_not_objects_are_dropped_with_a_warning(tiny_config, tmp_path: Path) -> None:
    run = train(tiny_config("train.steps=3"), tmp_path / "run")
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "[1, 2]", "42", '{"step": "two"}', *lines[1:]]) + "\n")
    with pytest.warns(UserWarning, match=r"dropped 3 line\(s\) that are not metric rows.*line 2, 3, 4"):
        train(tiny_config("train.steps=6"), run)
    assert [step for step, _ in _losses(run)] == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------------------------
# Training memory, seeds


def test_huge_batch_is_refused_before_allocating(tiny_config, tmp_path: Path) -> None:
    with pytest.raises(TimError, match=r"train.batch_size = 1000000000000 needs at least .* per process"):
        train(tiny_config("train.batch_size=1000000000000"), tmp_path / "run")
    assert not list_checkpoints(tmp_path / "run")


def test_memory_estimate_names_a_batch_that_fits() -> None:
    from tim.models import MLPConfig

    config = MLPConfig(hidden_size=32, depth=2)
    needed = check_training_memory(config, (2,), 32, 32, torch.device("cpu"), available=2**30)
    assert 0 < needed < 2**20
    with pytest.raises(TimError, match=r"at most about (\d+) rows") as raised:
        check_training_memory(config, (2,), 10**9, 10**9, torch.device("cpu"), available=2**30)
    fits = int(raised.value.args[0].split("at most about ")[1].split()[0])
    assert check_training_memory(config, (2,), fits, fits, torch.device("cpu"), available=2**30) <= 2**30


def test_seed_limits(tiny_config, tmp_path: Path) -> None:
    with pytest.raises(
        TimError, match=r"train.seed = 18446744073709551616 is outside \[0, 9223372036854775807\]"
    ):
        tiny_config(f"train.seed={2**64}")
    with pytest.raises(TimError, match=r"sample.seed = -1 is outside"):
        tiny_config("sample.seed=-1")
    train(tiny_config(f"train.seed={2**63 - 1}", "train.steps=1"), tmp_path / "run")  # the largest seed works


# ------------------------------------------------------------------------------------------------
# No global RNG in training


def test_identical_runs_save_identical_rng_and_leave_the_callers_rng_alone(
    tiny_config, tmp_path: Path
) -> None:
    torch.manual_seed(123)
    caller = torch.get_rng_state()
    first = train(tiny_config(), tmp_path / "a")
    assert torch.equal(torch.get_rng_state(), caller)  # train() did not move the caller's RNG
    torch.rand(17)  # the caller draws in between: must not matter
    second = train(tiny_config(), tmp_path / "b")
    for a, b in zip(list_checkpoints(first), list_checkpoints(second), strict=True):
        assert _same_files(a, b, "rng")


def _with_dropout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every network the loop builds applies dropout to its output (drawn from the global RNG)."""
    import tim.training.loop as loop

    build = loop._build_model

    def build_with_dropout(*args, **kwargs):
        model = build(*args, **kwargs)
        model.register_forward_hook(
            lambda module, inputs, out: torch.nn.functional.dropout(out, 0.3, module.training)
        )
        return model

    monkeypatch.setattr(loop, "_build_model", build_with_dropout)


def test_model_with_dropout_resumes_bit_exact(
    tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_dropout(monkeypatch)
    resumed = tmp_path / "resumed"
    train(tiny_config("train.steps=4", "train.checkpoint_every=4"), resumed)
    torch.rand(5)  # whatever the caller does between the two invocations
    train(tiny_config("train.steps=8", "train.checkpoint_every=4"), resumed)
    straight = train(tiny_config("train.steps=8", "train.checkpoint_every=4"), tmp_path / "straight")
    assert _losses(resumed) == _losses(straight)
    for part in ("model", "ema", "optimizer"):
        assert _same_files(list_checkpoints(resumed)[-1], list_checkpoints(straight)[-1], part), part
    other = train(tiny_config("train.steps=4", "train.seed=1"), tmp_path / "other")
    assert _losses(other)[0] != _losses(straight)[0]  # the dropout draws do depend on the seed


def test_command_line_restart_and_allow_config_change(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from tim.cli.main import main

    run = tmp_path / "run"
    base = [
        "train",
        "--config",
        "toy2d",
        "--out",
        str(run),
        "model.hidden_size=32",
        "train.batch_size=32",
        "train.progress=false",
        "sample.num=0",
        "train.device=cpu",
        "train.steps=2",
    ]
    assert main(base) == 0
    assert main([*base, "optim.lr=5e-4"]) == 2
    assert "optim.lr: 0.001 -> 0.0005" in capsys.readouterr().err
    assert main([*base[:-1], "train.steps=3", "optim.lr=5e-4", "--allow-config-change"]) == 0
    assert load_latest(run).step == 3
    assert main([*base, "optim.lr=5e-4", "--restart"]) == 0  # a fresh run with the new settings
    assert load_latest(run).step == 2 and len(list(run.glob("previous-*"))) == 1


def test_unusable_gpus_are_one_line_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """Mocked CUDA (this machine has none): too few GPUs for LOCAL_RANK, and a GPU that fails to allocate."""
    from tim.training.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(
        TimError, match=r"LOCAL_RANK=3 needs GPU 3 but only 2 GPU\(s\) are visible.*nproc_per_node"
    ):
        resolve_device("cuda", local_rank=3)

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: all CUDA-capable devices are busy or unavailable\nmore detail")

    monkeypatch.setattr(torch, "empty", broken)
    with pytest.raises(
        TimError,
        match=r"cuda:1 is not usable \(CUDA error: all CUDA-capable devices are busy"
        r" or unavailable\); .*train.device=cpu",
    ) as raised:
        resolve_device("auto", local_rank=1)
    assert "\n" not in str(raised.value)


# ------------------------------------------------------------------------------------------------
# state.json is read back like every other file: checked before it is trusted


def _rewrite_state(checkpoint: Path, edit) -> None:  # noqa: ANN001 - a function of the parsed state
    """Edit a checkpoint's state.json and re-sign it in the manifest (only the layout check can notice)."""
    from tim.training.checkpoint import sha256_file

    state = json.loads((checkpoint / "state.json").read_text())
    state = edit(state)
    (checkpoint / "state.json").write_text(json.dumps(state))
    manifest = json.loads((checkpoint / MANIFEST).read_text())
    manifest["files"]["state.json"] = {
        "size": (checkpoint / "state.json").stat().st_size,
        "sha256": sha256_file(checkpoint / "state.json"),
    }
    (checkpoint / MANIFEST).write_text(json.dumps(manifest))


def _set(key: str, value: object):  # noqa: ANN202
    return lambda state: {**state, key: value}


def _optimizer_layout(edit):  # noqa: ANN001, ANN202
    def apply(state: dict) -> dict:
        state["layouts"]["optimizer"] = edit(state["layouts"]["optimizer"])
        return state

    return apply


# (edit of the newest checkpoint's state.json, words of the warning that names it)
STATE_CASES = {
    "not-an-object": (lambda state: [1, 2, 3], "holds a JSON list, not an object"),
    "data-null": (_set("data", None), "data = null, not an object (the data position)"),
    "data-list": (_set("data", [1, 2]), "data = [1, 2], not an object"),
    "data-of-another-source": (
        _set("data", {"rows": 96, "seed": 0}),
        "data position does not fit the data source",
    ),
    "data-value-null": (
        _set("data", {"step": None, "seed": 0}),
        "data position does not fit the data source",
    ),
    "data-missing": (
        lambda state: {k: v for k, v in state.items() if k != "data"},
        "no data position ('data')",
    ),
    "images-text": (_set("images", "lots"), 'images = "lots", not a non-negative integer'),
    "skipped-negative": (_set("skipped", -1), "skipped = -1, not a non-negative integer"),
    "ema-updates-bool": (_set("ema_updates", True), "ema_updates = true"),
    "world-size-zero": (_set("world_size", 0), "world_size = 0, not a positive integer"),
    "step-disagrees": (_set("step", 5), "says step 5 in a folder named step_00000006"),
    "no-layouts": (lambda state: {k: v for k, v in state.items() if k != "layouts"}, "no 'layouts' object"),
    "optimizer-state-emptied": (
        _optimizer_layout(lambda layout: {**layout, "state": {}}),
        "the optimizer state is empty after 6 optimizer step(s)",
    ),
    "optimizer-layout-emptied": (_optimizer_layout(lambda layout: {}), "no list of parameter groups"),
    "optimizer-groups-emptied": (
        _optimizer_layout(lambda layout: {**layout, "param_groups": []}),
        "has 0 parameter group(s), the optimizer 1",
    ),
    "optimizer-group-params-emptied": (
        _optimizer_layout(
            lambda layout: {**layout, "param_groups": [{**layout["param_groups"][0], "params": []}]}
        ),
        "parameter group 0 of the optimizer state does not list the model's parameters",
    ),
    "optimizer-entry-foreign": (
        _optimizer_layout(
            lambda layout: {**layout, "state": {**layout["state"], "elsewhere.weight": {"step": 1}}}
        ),
        "'elsewhere.weight', which is not a model parameter",
    ),
}


@pytest.mark.parametrize("case", list(STATE_CASES))
def test_a_malformed_state_json_is_named_and_skipped_on_resume(
    case: str, tiny_config, tmp_path: Path
) -> None:
    """A state.json that is valid JSON (and matches the manifest) but not our layout: named, skipped, never a traceback."""
    edit, words = STATE_CASES[case]
    run = train(tiny_config(), tmp_path / "run")
    newest = list_checkpoints(run)[-1]
    _rewrite_state(newest, edit)
    with pytest.warns(UserWarning) as caught:
        train(tiny_config("train.steps=7"), run)  # resumes from the previous checkpoint (step 3)
    messages = [str(w.message) for w in caught if "is unusable" in str(w.message)]
    assert len(messages) == 1 and "step_00000006" in messages[0] and words in messages[0], messages
    assert "falling back to the previous one" in messages[0] and "\n" not in messages[0]
    assert [step for step, _ in _losses(run)] == [1, 2, 3, 4, 5, 6, 7]  # steps 4-6 trained again
    assert load_latest(run).step == 7


def test_every_malformed_state_json_makes_all_checkpoints_unusable_one_line(
    tiny_config, tmp_path: Path
) -> None:
    run = train(tiny_config(), tmp_path / "run")
    for checkpoint in list_checkpoints(run):
        _rewrite_state(checkpoint, _set("data", None))
    with pytest.warns(UserWarning, match="data = null"), pytest.raises(TimError, match="all 2 checkpoint"):
        train(tiny_config("train.steps=8"), run)
    with pytest.raises(
        TimError, match=r"step 3 .* is unusable \(its contents cannot be read: state.json has data"
    ):
        from tim.training import load_run

        load_run(run, step=3)


# ------------------------------------------------------------------------------------------------
# Run-folder entries of the wrong kind; the free-space check counts what pruning frees


@pytest.mark.parametrize(
    ("entry", "make", "kind"),
    [
        ("checkpoints", "file", "folder"),
        ("samples", "file", "folder"),
        ("pretrained", "file", "folder"),
        ("metrics.jsonl", "folder", "file"),
        ("config.json", "folder", "file"),
        ("summary.json", "folder", "file"),
    ],
)
def test_a_run_folder_entry_of_the_wrong_kind_is_one_line_before_training(
    entry: str, make: str, kind: str, tiny_config, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / entry).mkdir() if make == "folder" else (run / entry).write_text("x")
    with pytest.raises(TimError) as raised:
        train(tiny_config("sample.num=4"), run)
    message = str(raised.value)
    assert f"'{run / entry}' is a {make}, but a run keeps its {entry} there as a {kind}" in message
    assert "move it out of the way" in message and "\n" not in message
    assert sorted(p.name for p in run.iterdir()) == [entry]  # refused before anything was written


def test_free_space_counts_the_checkpoints_that_pruning_will_free(
    tiny_config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A run that filled its volume can be extended there: its own old checkpoints will be replaced."""
    import shutil

    from tim.training import checkpoint as ckpt
    from tim.training.config import model_config
    from tim.training.loop import _BYTES_PER_PARAM
    from tim.training.memory import parameter_count

    cfg = tiny_config("train.keep_last=2")
    run = train(cfg, tmp_path / "run")  # 2 checkpoints kept
    one = _BYTES_PER_PARAM * parameter_count(model_config(cfg))  # the estimate of one checkpoint
    reclaim, count = ckpt.reclaimable_bytes(run)
    assert count == 2 and reclaim >= 2 * one
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=int(1.5 * one)))
    with pytest.raises(TimError, match=r"only .* MiB free .* but checkpoints need about"):
        train(cfg, tmp_path / "fresh")  # 3 checkpoints' worth does not fit in 1.5
    train(tiny_config("train.keep_last=2", "train.steps=9"), run)  # the same space is enough to go on
    assert load_latest(run).step == 9 and len(list_checkpoints(run)) == 2
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=one // 2))
    with pytest.raises(TimError, match=r"counting the .* MiB its 2 old checkpoint\(s\) will free"):
        train(tiny_config("train.keep_last=2", "train.steps=12"), run)  # the next one must fit before pruning
