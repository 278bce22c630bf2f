"""Crash-safe checkpoints: exact round trips, atomic writes, checksums, fallback, disk errors."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tim.errors import TimError
from tim.training import checkpoint as ckpt


def _parts(seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    model = torch.nn.Linear(3, 2)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=generator))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95))
    model(torch.randn(4, 3, generator=generator)).square().mean().backward()
    optimizer.step()
    return {
        "model": model.state_dict(),
        "ema": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {"torch_cpu": torch.get_rng_state()},
    }


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return (
            type(a) is type(b) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
        )
    return type(a) is type(b) and a == b


def test_flatten_round_trips_key_types_tuples_and_arrays() -> None:
    state = {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(2, 2)}},
        "param_groups": [{"betas": (0.9, 0.95), "params": [0, 1], "foreach": None, "lr": 1e-3}],
        "numpy": np.arange(5, dtype=np.uint32),
        "nested": [1, "a", True, 2.5],
    }
    tensors, layout = ckpt.flatten_state(state)
    layout = json.loads(json.dumps(layout))  # what is on disk is JSON
    assert _equal(ckpt.unflatten_state(tensors, layout), state)


def test_optimizer_state_round_trip_gives_bitwise_equal_next_step(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        model(torch.randn(8, 4)).square().mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    parts = {
        "model": model.state_dict(),
        "ema": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "rng": {},
    }
    ckpt.save_checkpoint(tmp_path, 3, parts, {}, {}, keep_last=1)
    loaded = ckpt.load_latest(tmp_path)
    clone = torch.nn.Linear(4, 4)
    clone.load_state_dict(loaded.parts["model"])
    clone_optimizer = torch.optim.AdamW(clone.parameters(), lr=1e-2)
    clone_optimizer.load_state_dict(loaded.parts["optimizer"])
    x = torch.randn(8, 4)
    for m, o in ((model, optimizer), (clone, clone_optimizer)):
        m(x).square().mean().backward()
        o.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), clone.parameters(), strict=True))


def test_save_writes_manifest_and_only_safe_formats(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint(tmp_path, 7, _parts(), {"images": 5}, {"train": {}}, keep_last=2)
    assert path.name == "step_00000007" and ckpt.verify_checkpoint(path) is None
    suffixes = {p.suffix for p in path.iterdir()}
    assert suffixes == {".safetensors", ".json"}
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {p.name for p in path.iterdir()} - {"manifest.json"}
    loaded = ckpt.load_latest(tmp_path)
    assert (
        loaded.step == 7
        and loaded.state["images"] == 5
        and _equal(loaded.parts["optimizer"], _parts()["optimizer"])
    )


def test_keep_last_prunes_oldest(tmp_path: Path) -> None:
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, _parts(), {}, {}, keep_last=2)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "no_manifest", "delete_file"])
def test_corrupt_latest_is_reported_and_previous_is_used(tmp_path: Path, damage: str) -> None:
    ckpt.save_checkpoint(tmp_path, 1, _parts(1), {}, {}, keep_last=3)
    latest = ckpt.save_checkpoint(tmp_path, 2, _parts(2), {}, {}, keep_last=3)
    target = latest / "model.safetensors"
    if damage == "flip_byte":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:10])
    elif damage == "no_manifest":
        (latest / "manifest.json").unlink()
    else:
        target.unlink()
    with pytest.warns(UserWarning, match="step_00000002"):
        loaded = ckpt.load_latest(tmp_path)
    assert loaded.step == 1 and _equal(loaded.parts["model"], _parts(1)["model"])


def test_nothing_usable_returns_none(tmp_path: Path) -> None:
    path = ckpt.save_checkpoint(tmp_path, 1, _parts(), {}, {}, keep_last=3)
    (path / "state.json").write_text("{}")
    with pytest.warns(UserWarning, match="state.json"):
        assert ckpt.load_latest(tmp_path) is None


def test_stale_temporaries_are_removed(tmp_path: Path) -> None:
    stale = ckpt.checkpoint_dir(tmp_path) / ".tmp-step_00000009-123"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"partial")
    assert ckpt.remove_stale_temporaries(tmp_path) == [stale] and not stale.exists()
    assert ckpt.list_checkpoints(tmp_path) == []


def test_disk_full_during_write_keeps_previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt.save_checkpoint(tmp_path, 1, _parts(), {}, {}, keep_last=3)
    real = ckpt._write_bytes

    def full(path: Path, data: bytes) -> None:
        if path.name == "optimizer.safetensors":
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_bytes", full)
    with pytest.raises(TimError, match="disk is full.*step_00000002.*free disk space"):
        ckpt.save_checkpoint(tmp_path, 2, _parts(), {}, {}, keep_last=3)
    assert [p.name for p in ckpt.checkpoint_dir(tmp_path).iterdir()] == ["step_00000001"]
    assert ckpt.load_latest(tmp_path).step == 1


def test_output_dir_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(TimError, match="exists and is a file"):
        ckpt.check_output_dir(blocker, 0)
    with pytest.raises(TimError, match="not writable.*writable run directory"):
        ckpt.check_output_dir(blocker / "run", 0)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage._replace(free=2**20))
    with pytest.raises(TimError, match="only 1.0 MiB free.*free disk space"):
        ckpt.check_output_dir(tmp_path / "run", 2**30)
    assert ckpt.check_output_dir(tmp_path / "run", 2**19) == tmp_path / "run"
