"""``tim autoencoder train`` and ``tim demo latent`` on tiny budgets (seconds), plus their bad inputs.

``tim demo latent`` also runs on a short budget (slow) and as the default 15-minute command (full).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")

from helpers.cli import run_cli  # noqa: E402
from tim.autoencoders import Autoencoder  # noqa: E402

FAST_AE = ["--steps", "4", "--num-images", "32", "--batch-size", "4", "--no-progress", "--threads", "1"]


@pytest.mark.parametrize("data", ["scenes", "shapes"])
def test_train_writes_a_loadable_autoencoder_with_its_report(tmp_path: Path, data: str) -> None:
    code, out, err = run_cli(
        ["autoencoder", "train", "--data", data, "--out", str(tmp_path / "ae"), *FAST_AE]
    )
    assert code == 0, err
    report = json.loads((tmp_path / "ae" / "train_report.json").read_text())
    config = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert report["steps"] == 4 and report["source"] == data and report["heldout_images"] == 256
    assert f"held-out PSNR {report['heldout_psnr_db']:.2f} dB" in out
    # scaling/shift come from the latents and are in the config diffusers reads back.
    assert config["scaling_factor"] == pytest.approx(1 / report["latents"]["std"])
    assert config["shift_factor"] == pytest.approx(report["latents"]["mean"])
    ae = Autoencoder.from_pretrained(tmp_path / "ae")
    assert (ae.kind, ae.factor, ae.latent_channels) == ("AutoencoderKL", 4, 4)
    assert [p.name for p in tmp_path.iterdir()] == ["ae"]  # no temporary folder left behind
    # The normalised latents of the training data have about zero mean and unit std.
    from tim.cli.autoencoder import render_synthetic

    x = ae.normalize(ae.encode(render_synthetic(data, 32, 32, 0)))
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05


def test_trained_autoencoder_feeds_encode_images_to_latents(tmp_path: Path) -> None:
    """An image folder -> tim autoencoder train -> encode_images_to_latents -> the latents source."""
    from PIL import Image

    from tim.cli.autoencoder import render_synthetic
    from tim.data import DataConfig, build_data_source
    from tim.data.latents import encode_images_to_latents

    images = ((render_synthetic("shapes", 12, 16, 3) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()
    for k, image in enumerate(images):
        (tmp_path / "images" / f"c{k % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "images" / f"c{k % 2}" / f"{k}.png")
    code, _, err = run_cli(
        [
            "autoencoder",
            "train",
            "--data",
            str(tmp_path / "images"),
            "--out",
            str(tmp_path / "ae"),
            "--image-size",
            "16",
            *FAST_AE,
        ]
    )
    assert code == 0, err
    assert json.loads((tmp_path / "ae" / "train_report.json").read_text())["heldout_images"] == 1  # 10% of 12
    cfg = DataConfig(name="image_folder", root=str(tmp_path / "images"), image_size=16)
    encode_images_to_latents(cfg, tmp_path / "latents", autoencoder=tmp_path / "ae")
    source = build_data_source(
        DataConfig(name="latents", root=str(tmp_path / "latents"), patch_multiple=2), batch_size=4
    )
    ae = Autoencoder.from_pretrained(tmp_path / "ae")
    assert source.info.shape == (4, 4, 4) and source.info.latent_scale == ae.scaling_factor
    assert source.info.class_names == ("c0", "c1")


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--data", "nowhere"], ("neither a folder nor one of scenes, shapes",)),
        (["--data", "scenes", "--widths", "16"], ("1 block(s)", "at least two widths")),
        (["--data", "scenes", "--widths", "16,x"], ("not a comma-separated list",)),
        (["--data", "scenes", "--widths", "12,24,24"], ("multiples of 8",)),
        (["--data", "scenes", "--steps", "0"], ("must be positive",)),
        (["--data", "scenes", "--image-size", "16"], ("below the scenes' minimum 24",)),
        (
            ["--data", "shapes", "--image-size", "18"],
            ("image size 18 is not a multiple of the autoencoder factor 4",),
        ),
        (["--data", "shapes", "--latent-channels", "0"], ("latent_channels=0",)),
        (["--data", "scenes", "--minutes", "0"], ("--minutes", "not positive")),
        (
            ["--data", "shapes", "--image-size", "100000"],
            (
                "training at image size 100000 on 288 images",
                "needs at least",
                "is free on cpu",
                "--image-size",
            ),
        ),
        (["--data", "nowhere", "--image-size", "100000"], ("image size 100000 on 1 images",)),
    ],
)
def test_bad_arguments_are_one_line_errors_and_write_nothing(
    tmp_path: Path, argv: list[str], fragments: tuple[str, ...]
) -> None:
    code, _, err = run_cli(["autoencoder", "train", "--out", str(tmp_path / "ae"), *FAST_AE, *argv])
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: "), err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert not (tmp_path / "ae").exists()


def test_out_folder_rules(tmp_path: Path) -> None:
    (tmp_path / "ae").mkdir()
    (tmp_path / "ae" / "notes.txt").write_text("mine")
    code, _, err = run_cli(
        ["autoencoder", "train", "--data", "shapes", "--out", str(tmp_path / "ae"), *FAST_AE]
    )
    assert code == 2 and "is not empty" in err and "--overwrite" in err
    code, _, err = run_cli(
        ["autoencoder", "train", "--data", "shapes", "--out", str(tmp_path / "ae"), "--overwrite", *FAST_AE]
    )
    assert code == 2 and "not an autoencoder folder" in err and (tmp_path / "ae" / "notes.txt").exists()


def test_tiny_latent_demo_end_to_end(tmp_path: Path) -> None:
    """``tim demo latent`` with a few steps everywhere: every file, decoded samples, metrics."""
    out = tmp_path / "demo"
    code, stdout, err = run_cli(
        [
            "demo",
            "--quick",
            "--out",
            str(out),
            "--steps",
            "1,2",
            "--per-class",
            "2",
            "--threads",
            "1",
            "latent",
            "autoencoder.steps=3",
            "autoencoder.progress=false",
            "train.steps=3",
            "train.progress=false",
        ]
    )
    assert code == 0, err
    for name in (
        "montage.png",
        "quality_vs_steps.png",
        "steps_001.png",
        "steps_002.png",
        "metrics.json",
        "report.md",
        "autoencoder/config.json",
        "autoencoder/train_report.json",
        "latents/shard-00000.safetensors",
        "run/config.json",
    ):
        assert (out / name).exists(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["quality_vs_steps"]) == {"1", "2"} and metrics["data"]["latent_shape"] == [4, 8, 8]
    assert metrics["real_images_reference"]["detector_accuracy"] == 1.0  # the renderer's own scenes
    assert metrics["autoencoder"]["steps"] == 3 and metrics["train"]["steps"] == 3
    assert "held-out PSNR" in (out / "report.md").read_text()
    from PIL import Image

    grid = np.asarray(Image.open(out / "steps_001.png"))
    assert grid.shape[0] > 15 * 32 * 3  # 15 class rows of decoded 32x32 images (scale 3)
    # metrics.json's rows are the decoded samples' scores (floats in range), not placeholders.
    for row in metrics["quality_vs_steps"].values():
        assert 0 <= row["detector_accuracy"] <= 1 and np.isfinite(row["energy_distance"])


def test_latent_demo_bad_override(tmp_path: Path) -> None:
    code, _, err = run_cli(["demo", "--out", str(tmp_path / "d"), "latent", "autoencoder.stepz=3"])
    assert code == 2 and "autoencoder.stepz=3" in err and "autoencoder.steps" in err
    assert not (tmp_path / "d").exists()


# The slow test: the default recipe (autoencoder, 3,000 latents of 15 classes, TiM) at every step count,
# each training cut to one minute by an explicit limit (the budget rule is run by the fast test);
# 4 samples per class (the default 20 costs 5x the sampling and decoding).
TRAIN_MINUTES = 1


@pytest.mark.slow
def test_short_latent_demo_runs_every_stage(tmp_path: Path) -> None:
    steps = [1, 2, 4, 8, 16, 32, 64, 128]
    out = tmp_path / "demo"
    limits = [f"autoencoder.minutes={TRAIN_MINUTES}", f"train.time_limit={TRAIN_MINUTES}"]
    argv = ["demo", "--out", str(out), "--per-class", "4", "latent", *limits]
    code, _, err = run_cli(argv + ["train.progress=false", "autoencoder.progress=false"])
    assert code == 0, err
    for name in ["montage.png", "quality_vs_steps.png", "metrics.json", "report.md", "run/config.json"] + [
        f"steps_{k:03d}.png" for k in steps
    ]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.rglob("*.tmp*")), "a temporary file was left behind"
    metrics = json.loads((out / "metrics.json").read_text())
    ae, train = metrics["autoencoder"], metrics["train"]
    # Both trainings were ended by their time limits (not their step caps) after some optimiser steps,
    # and kept to them (60 s of slack for the last step and the saving on a loaded machine).
    assert 1 <= ae["steps"] < ae["planned_steps"] and ae["seconds"] <= TRAIN_MINUTES * 60 + 60, ae
    assert np.isfinite(ae["heldout_psnr_db"]) and ae["heldout_psnr_db"] > 0, ae
    assert train["stopped_by_time_limit"] and 1 <= train["steps"], train
    assert train["time_limit_minutes"] == TRAIN_MINUTES and train["seconds"] <= TRAIN_MINUTES * 60 + 60, train
    assert metrics["data"]["images_per_class"] == 200 and metrics["sampling"]["per_class"] == 4
    assert list(metrics["quality_vs_steps"]) == [str(k) for k in steps]
    for row in metrics["quality_vs_steps"].values():
        assert 0 <= row["detector_accuracy"] <= 1 and np.isfinite(row["energy_distance"]), row
    assert metrics["real_images_reference"]["detector_accuracy"] == 1.0  # the renderer's own scenes
    report = (out / "report.md").read_text()
    assert f"held-out PSNR **{ae['heldout_psnr_db']:.2f} dB**" in report
    for k in steps:
        row = metrics["quality_vs_steps"][str(k)]
        assert f"| {k} | {row['detector_accuracy']:.3f} | {row['energy_distance']:.2f} |" in report
    from PIL import Image

    from tim.training import load_run

    with Image.open(out / "montage.png") as image:
        image.verify()
    # The step count reaches the sampler: 1 and 128 steps from the same noise give different grids.
    first, last = (np.asarray(Image.open(out / f"steps_{k:03d}.png")) for k in (1, 128))
    assert first.shape == last.shape and not np.array_equal(first, last)
    model, _ = load_run(out / "run", which="ema")
    assert model.config.in_channels == 4 and all(bool(torch.isfinite(p).all()) for p in model.parameters())
    assert Autoencoder.from_pretrained(out / "autoencoder").latent_channels == 4


@pytest.mark.full
def test_full_latent_demo(tmp_path: Path) -> None:
    """The default command (<= 15 min on 2 cores): the samples must be recognisable scenes (pytest -m full)."""
    code, _, err = run_cli(
        [
            "demo",
            "--out",
            str(tmp_path / "demo"),
            "latent",
            "train.progress=false",
            "autoencoder.progress=false",
        ]
    )
    assert code == 0, err
    metrics = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert metrics["autoencoder"]["heldout_psnr_db"] > 20
    assert metrics["wall_seconds"] < 16 * 60
    best = max(row["detector_accuracy"] for row in metrics["quality_vs_steps"].values())
    assert best > 0.3, metrics["quality_vs_steps"]
    torch.testing.assert_close(
        torch.tensor(1.0), torch.tensor(metrics["real_images_reference"]["detector_accuracy"])
    )
