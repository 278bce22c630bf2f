"""Bad inputs (training: model/data agreement, run folders, resume, lock, memory, devices): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import pytest
import torch

from helpers.bad_inputs import (
    TINY_RUN,
    Case,
    check_case,
    cli_error,
    copy_of_run,
    tim_error,
    trained_run,
)


def _model_data_mismatch(tmp: Path) -> str:
    from tim.training import load_config, train

    cfg = load_config("digits", TINY_RUN + ["model.in_channels=3"])
    return tim_error(lambda: train(cfg, tmp / "run"))


def _patch_mismatch(tmp: Path) -> str:
    from tim.training import load_config, train

    return tim_error(lambda: train(load_config("digits", TINY_RUN + ["model.patch_size=3"]), tmp / "run"))


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


CASES: list[Case] = [
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
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)
