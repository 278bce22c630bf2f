"""REPA (tim.training.repa) with a tiny random-initialised DINOv2 saved locally: features, loss, training, DDP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as functional
from safetensors.torch import load_file

from tim.errors import TimError
from tim.models import TiM, TiMConfig
from tim.objective import TransitionLoss
from tim.training import load_config, train
from tim.training.repa import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    RepaConfig,
    VisionEncoder,
    build_repa,
    repa_alignment,
)

WIDTH = 16  # the tiny encoder's feature width = the model's z_dim
WORKER = Path(__file__).with_name("repa_worker.py")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=WIDTH,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        patch_size=2,
        image_size=8,
        num_channels=3,
    )
    folder = tmp_path_factory.mktemp("dinov2-tiny")
    Dinov2Model(config).save_pretrained(folder)
    return folder


def run(encoder_dir: Path, *extra: str) -> list[str]:
    return [
        "model.preset=TiM-digits",
        "model.hidden_size=32",
        "model.depth=2",
        "model.num_heads=2",
        "model.modulation_rank=8",
        "model.encoder_depth=1",
        f"model.z_dim={WIDTH}",
        "model.projector_dim=32",
        "data.name=digits",
        "train.batch_size=16",
        "train.steps=2",
        "train.checkpoint_every=2",
        "train.log_every=1",
        "train.progress=false",
        "train.device=cpu",
        "optim.lr=1e-3",
        "ema.decay=0.9",
        "sample.num=0",
        f"repa.encoder={encoder_dir}",
        *extra,
    ]


def test_encoder_gives_one_patch_feature_per_token(encoder_dir: Path) -> None:
    from transformers import Dinov2Model

    encoder = VisionEncoder(encoder_dir)
    images = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = encoder(images, (2, 2))  # TiM tokens of patch 4 on 8x8 digits -> a 4x4 encoder input
    assert features.shape == (3, 4, WIDTH)
    reference = Dinov2Model.from_pretrained(encoder_dir).eval()
    x = functional.interpolate(images.expand(-1, 3, -1, -1), size=(4, 4), mode="bicubic", align_corners=False)
    x = ((x + 1) / 2 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(
        1, 3, 1, 1
    )
    with torch.no_grad():
        expected = reference(pixel_values=x).last_hidden_state[:, 1:]  # CLS dropped
    torch.testing.assert_close(features, expected)
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_alignment_is_one_minus_cosine_averaged_over_tokens() -> None:
    target = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))
    hook = repa_alignment(lambda images, grid: target)
    images = torch.zeros(2, 1, 8, 8)
    torch.testing.assert_close(hook(target * 3.0, images, {}), torch.zeros(2))
    torch.testing.assert_close(hook(-target, images, {}), torch.full((2,), 2.0))
    mixed = target.clone()
    mixed[:, :2] *= -1  # half the tokens opposite: 1 - cos = 2 on them, 0 elsewhere
    torch.testing.assert_close(hook(mixed, images, {}), torch.ones(2))
    with pytest.raises(TimError, match="z_dim"):
        hook(torch.randn(2, 4, 5), images, {})


def test_projector_is_trained_through_the_objective(encoder_dir: Path) -> None:
    torch.manual_seed(0)
    model = TiM(
        TiMConfig(
            in_channels=1,
            input_size=8,
            patch_size=4,
            hidden_size=32,
            depth=2,
            num_heads=2,
            modulation_rank=8,
            num_classes=10,
            encoder_depth=1,
            z_dim=WIDTH,
            projector_dim=32,
        )
    )
    info = SimpleNamespace(kind="image", value_range=(-1.0, 1.0))
    loss = TransitionLoss(
        alignment=build_repa(RepaConfig(str(encoder_dir)), model.config, info, torch.device("cpu"))
    )
    x, y = torch.rand(4, 1, 8, 8) * 2 - 1, torch.tensor([0, 1, 2, 3])
    out = loss(
        model,
        x,
        cond={"y": y},
        generator=torch.Generator().manual_seed(0),
        features_fn=model.forward_with_features,
    )
    out.loss.backward()
    assert 0.0 < float(out.stats["alignment"]) < 2.0
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.projector.parameters())


def test_training_run_logs_the_alignment_term(encoder_dir: Path, tmp_path: Path) -> None:
    train(load_config(None, run(encoder_dir)), tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2]
    assert all(0.0 < row["alignment"] < 2.0 for row in rows)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["repa"]["encoder"] == str(encoder_dir)


def test_bad_settings_are_one_line(encoder_dir: Path, tmp_path: Path) -> None:
    image = SimpleNamespace(kind="image", value_range=(-1.0, 1.0))
    config = TiMConfig(z_dim=WIDTH)
    with pytest.raises(TimError, match="not a Hugging Face model folder"):
        build_repa(RepaConfig(str(tmp_path)), config, image, torch.device("cpu"))
    with pytest.raises(TimError, match="model.z_dim=16"):
        build_repa(RepaConfig(str(encoder_dir)), TiMConfig(z_dim=8), image, torch.device("cpu"))
    with pytest.raises(TimError, match="no projector"):
        build_repa(RepaConfig(str(encoder_dir)), TiMConfig(z_dim=0), image, torch.device("cpu"))
    with pytest.raises(TimError, match="latents"):
        build_repa(
            RepaConfig(str(encoder_dir)),
            config,
            SimpleNamespace(kind="image", value_range=None),
            torch.device("cpu"),
        )
    assert build_repa(RepaConfig(), config, image, torch.device("cpu")) is None
    (tmp_path / "config.json").write_text((encoder_dir / "config.json").read_text())  # weights missing
    with pytest.raises(TimError, match="could not be loaded") as error:
        build_repa(RepaConfig(str(tmp_path)), config, image, torch.device("cpu"))
    assert "\n" not in str(error.value)


@pytest.mark.slow
def test_ddp_with_repa_equals_one_process(encoder_dir: Path, tmp_path: Path) -> None:
    """2 processes (DDP, gloo) = 1 process with accumulation 2, projector included (as tests/training/test_distributed.py)."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(WORKER),
        str(tmp_path),
        *run(encoder_dir),
    ]
    result = subprocess.run(
        command,
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    train(load_config(None, [*run(encoder_dir), "optim.accumulation=2"]), tmp_path / "single")
    for part in ("model.safetensors", "ema.safetensors"):
        a = load_file(tmp_path / "ddp" / "checkpoints/step_00000002" / part)
        b = load_file(tmp_path / "single" / "checkpoints/step_00000002" / part)
        assert a.keys() == b.keys() and any(k.startswith("projector.") for k in a)
        assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-6
    rows = [json.loads(line) for line in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    single = [json.loads(line) for line in (tmp_path / "single" / "metrics.jsonl").read_text().splitlines()]
    assert [r["alignment"] for r in rows] == pytest.approx([r["alignment"] for r in single], abs=1e-6)


def test_runs_saved_before_the_repa_section_resume_unchanged() -> None:
    from tim.training.config import RunConfig, config_differences

    saved = RunConfig().to_dict()
    del saved["repa"]  # config.json of a run written before the section existed
    assert config_differences(saved, RunConfig()) == []
    changed = load_config(None, ["repa.encoder=/somewhere"])
    assert config_differences(saved, changed) == [
        "repa.encoder: '' -> '/somewhere'"
    ]  # a change, never resumed silently


def test_matches_the_published_proj_loss(specs_refs: Path) -> None:
    """shared/specs/refs/tiny_c2i_loss: our projector features = h_proj, our term = proj_loss, total = sum."""
    from tim.models import load_released_checkpoint

    ref = load_file(str(specs_refs / "tiny_c2i_loss.safetensors"))
    model = load_released_checkpoint(specs_refs / "tiny_c2i_weights.safetensors")
    t, r = ref["dde.t"], ref["dde.r"]
    with torch.no_grad():
        _, features = model.forward_with_features(ref["dde.x_t"], t, r, y=ref["y"])
    torch.testing.assert_close(
        features, ref["dde.h_proj"], atol=1e-4, rtol=0
    )  # forward tolerance (specs README)
    hook = repa_alignment(lambda images, grid: ref["h_target"])
    torch.testing.assert_close(
        hook(ref["dde.h_proj"], ref["x"], {}).mean(), ref["dde.proj_loss"], atol=1e-6, rtol=1e-6
    )

    class Recorded(TransitionLoss):
        def time_derivative(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201 - replay the published derivative
            return ref["dde.dF_dv_dt"]

    def features_fn(x_t, c_t, c_r, **cond):  # noqa: ANN001, ANN202 - replay the published forward
        return ref["dde.F_pred"].clone().requires_grad_(True), ref["dde.h_proj"]

    out = Recorded(alignment=hook)(
        model, ref["x"], cond={"y": ref["y"]}, z=ref["z"], t=t, r=r, features_fn=features_fn
    )
    torch.testing.assert_close(
        out.loss, ref["dde.weighted_loss"] + ref["dde.proj_loss"], atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(out.stats["alignment"], ref["dde.proj_loss"], atol=1e-6, rtol=1e-6)


@pytest.fixture
def specs_refs() -> Path:
    refs = Path(__file__).resolve().parents[3] / "shared" / "specs" / "refs"
    if not refs.is_dir():
        pytest.fail(f"missing reference folder {refs}")
    return refs
