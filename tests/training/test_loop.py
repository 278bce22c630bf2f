"""The training loop: exact resume, corrupt-checkpoint fallback, non-finite skipping, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tim.data.build import build_data_source
from tim.errors import TimError
from tim.models import from_pretrained
from tim.training import load_run, train
from tim.training.checkpoint import list_checkpoints, load_latest


def _losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows if "event" not in row]


def _weights(run_dir: Path, part: str = "model") -> dict[str, torch.Tensor]:
    return load_file(list_checkpoints(run_dir)[-1] / f"{part}.safetensors")


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_run_writes_everything_and_load_run_returns_ema(tiny_config, tmp_path: Path) -> None:
    run = train(tiny_config("sample.num=64"), tmp_path / "run")
    assert [p.name for p in list_checkpoints(run)] == ["step_00000003", "step_00000006"]
    assert [s for s, _ in _losses(run)] == [1, 2, 3, 4, 5, 6]
    assert (run / "metrics.csv").read_text().count("\n") == 7
    assert sorted(p.name for p in (run / "samples").iterdir()) == [
        "step_00000006_nfe_1.png",
        "step_00000006_nfe_2.png",
    ]
    model, cfg = load_run(run)
    assert cfg == tiny_config("sample.num=64") and not model.training
    assert _same(model.state_dict(), _weights(run, "ema"))
    exported = from_pretrained(run / "pretrained")
    assert _same(exported.state_dict(), model.state_dict())
    raw, _ = load_run(run, which="model")
    assert not _same(raw.state_dict(), model.state_dict())  # the EMA differs from the raw weights


def test_resume_equals_uninterrupted_run_bitwise(tiny_config, tmp_path: Path) -> None:
    straight = train(tiny_config("train.steps=8", "train.checkpoint_every=4"), tmp_path / "straight")
    # Interrupted after step 4 (the checkpoint), then "the same command again".
    resumed = tmp_path / "resumed"
    train(tiny_config("train.steps=4", "train.checkpoint_every=4"), resumed)
    train(tiny_config("train.steps=8", "train.checkpoint_every=4"), resumed)
    assert _losses(resumed) == _losses(straight)
    for part in ("model", "ema", "optimizer"):
        assert _same(_weights(resumed, part), _weights(straight, part)), part


def test_resume_after_crash_drops_metrics_past_the_checkpoint(tiny_config, tmp_path: Path) -> None:
    straight = train(tiny_config(), tmp_path / "straight")
    crashed = tmp_path / "crashed"
    shutil.copytree(straight, crashed)
    shutil.rmtree(list_checkpoints(crashed)[-1])  # killed after logging steps 4-6, before checkpoint 6
    train(tiny_config(), crashed)
    assert _losses(crashed) == _losses(straight)
    assert _same(_weights(crashed), _weights(straight))


def test_corrupt_checkpoint_falls_back_and_still_matches(tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config("train.checkpoint_every=2")
    straight = train(cfg, tmp_path / "straight")
    damaged = tmp_path / "damaged"
    shutil.copytree(straight, damaged)
    shutil.rmtree(list_checkpoints(damaged)[-1])
    weights = list_checkpoints(damaged)[-1] / "model.safetensors"  # step 4: corrupt it
    weights.write_bytes(weights.read_bytes()[:-8] + b"garbage!")
    with pytest.warns(UserWarning, match="step_00000004.*sha256"):
        train(cfg, damaged)
    assert _same(_weights(damaged), _weights(straight)) and _losses(damaged) == _losses(straight)


def test_same_seed_same_run_other_seed_other_run(tiny_config, tmp_path: Path) -> None:
    a = train(tiny_config("train.checkpoint_every=6"), tmp_path / "a")
    b = train(tiny_config("train.checkpoint_every=6"), tmp_path / "b")
    c = train(tiny_config("train.checkpoint_every=6", "train.seed=1"), tmp_path / "c")
    assert _same(_weights(a), _weights(b)) and _losses(a) == _losses(b)
    assert not _same(_weights(a), _weights(c))


class PoisonedSource:
    """The real toy source, but the data of the listed (0-based) steps is NaN."""

    def __init__(self, cfg, bad_steps: set[int]) -> None:
        self.inner = build_data_source(cfg.data, batch_size=cfg.train.batch_size, seed=cfg.train.seed)
        self.info, self.bad_steps, self.count = self.inner.info, bad_steps, 0

    def next_batch(self) -> dict[str, torch.Tensor]:
        batch = self.inner.next_batch()
        if self.count in self.bad_steps:
            batch["x"] = torch.full_like(batch["x"], float("nan"))
        self.count += 1
        return batch

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.count = state["count"]


def test_non_finite_step_is_skipped_counted_and_logged(tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config("train.checkpoint_every=1", "train.keep_last=10")
    run = train(cfg, tmp_path / "run", data=PoisonedSource(cfg, {3}))  # the 4th step sees NaN data
    before, after = list_checkpoints(run)[2:4]  # checkpoints of steps 3 and 4
    for part in ("model", "ema", "optimizer"):
        assert _same(load_file(before / f"{part}.safetensors"), load_file(after / f"{part}.safetensors")), (
            part
        )
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    events = [row for row in rows if row.get("event") == "non_finite"]
    assert len(events) == 1 and events[0]["step"] == 4 and events[0]["loss"] == "nan"
    assert rows[-1]["skipped"] == 1 and json.loads((run / "summary.json").read_text())["skipped"] == 1
    assert json.loads((run / "summary.json").read_text())["ema_updates"] == 5
    assert all(torch.isfinite(v).all() for v in _weights(run).values())


def test_too_many_bad_steps_stop_and_keep_last_good_checkpoint(tiny_config, tmp_path: Path) -> None:
    cfg = tiny_config("train.steps=20", "train.checkpoint_every=2", "train.max_bad_steps=3")
    with pytest.raises(
        TimError, match=r"3 consecutive .*non-finite.*up to step 7.*step_00000006.*lower optim.lr"
    ):
        train(cfg, tmp_path / "run", data=PoisonedSource(cfg, set(range(4, 20))))  # steps 5, 6, 7 bad
    good, latest = list_checkpoints(tmp_path / "run")[-2:]
    assert (good.name, latest.name) == ("step_00000004", "step_00000006")
    # Step 6's checkpoint holds the untouched step-4 weights: nothing non-finite reaches a checkpoint.
    assert _same(load_file(good / "model.safetensors"), load_file(latest / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in load_latest(tmp_path / "run").parts["model"].values())


def test_accumulation_and_indivisible_batch(tiny_config, tmp_path: Path) -> None:
    run = train(tiny_config("optim.accumulation=2", "train.steps=2"), tmp_path / "run")
    assert json.loads((run / "summary.json").read_text())["images"] == 64
    with pytest.raises(TimError, match="batch_size = 32 is not divisible .* 3"):
        train(tiny_config("optim.accumulation=3"), tmp_path / "bad")


def test_model_that_does_not_fit_the_data_is_an_error(tiny_config, tmp_path: Path) -> None:
    with pytest.raises(
        TimError, match=r"takes 3 input channels but data items have shape \(2,\); set model.dim=2"
    ):
        train(tiny_config("model.dim=3"), tmp_path / "run")
    with pytest.raises(TimError, match="expects 5 classes but the data has 0"):
        train(tiny_config("model.num_classes=5"), tmp_path / "run")


def test_resuming_with_another_model_is_an_error(tiny_config, tmp_path: Path) -> None:
    train(tiny_config("train.steps=3"), tmp_path / "run")
    with pytest.raises(TimError, match="was trained with model.*new run directory"):
        train(tiny_config("model.hidden_size=64"), tmp_path / "run")


def test_load_run_without_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(TimError, match="no usable checkpoint"):
        load_run(tmp_path)


def test_bf16_autocast_run_keeps_fp32_weights(tiny_config, tmp_path: Path) -> None:
    run = train(tiny_config("train.precision=bf16", "train.steps=2"), tmp_path / "run")
    weights = _weights(run)
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights.values())


def test_time_limit_stops_with_a_checkpoint_and_rerun_continues(tiny_config, tmp_path: Path) -> None:
    run = train(tiny_config("train.time_limit=1e-9"), tmp_path / "run")  # stops after the first step
    assert [p.name for p in list_checkpoints(run)] == ["step_00000001"]
    train(tiny_config(), run)
    assert list_checkpoints(run)[-1].name == "step_00000006"


def test_deterministic_flag_is_scoped_to_the_run(tiny_config, tmp_path: Path) -> None:
    assert not torch.are_deterministic_algorithms_enabled()
    run = train(tiny_config("train.deterministic=true", "train.steps=2"), tmp_path / "run")
    assert not torch.are_deterministic_algorithms_enabled() and list_checkpoints(run)


def test_sample_grid_preview_of_latents_shows_three_channels_in_range() -> None:
    from tim.training.outputs import _preview

    latents = torch.randn(4, 4, 8, 8) * 3.0
    preview = _preview(latents)
    assert preview.shape == (4, 3, 8, 8)
    assert preview.abs().max().item() == pytest.approx(1.0)
    torch.testing.assert_close(preview, latents[:, :3] / latents[:, :3].abs().max())
    pixels = torch.tensor([[[[2.0, -0.5]]]])
    assert _preview(pixels).tolist() == [[[[1.0, -0.5]]]]


def test_a_guided_objective_gets_the_ema_as_its_teacher(tiny_config, tmp_path: Path, monkeypatch) -> None:
    # The loop offers its EMA every micro-batch; the objective (not the loop) decides to use it.
    from tim.objective import TransitionLoss

    seen: list[tuple[bool, dict]] = []
    original = TransitionLoss.teacher_inputs

    def recording(self, teacher, cond, null_cond):
        wired = original(self, teacher, cond, null_cond)
        seen.append((self.uses_teacher, wired))
        return wired

    monkeypatch.setattr(TransitionLoss, "teacher_inputs", recording)
    train(tiny_config("train.steps=2", "objective.guidance_scale=1.5"), tmp_path / "guided")
    train(tiny_config("train.steps=2"), tmp_path / "plain")
    assert [used for used, _ in seen] == [True, True, False, False]
    guided, plain = seen[0][1], seen[-1][1]
    assert isinstance(guided["teacher"], torch.nn.Module) and not guided["teacher"].training and plain == {}
