"""`tim sample`: files, keys, shapes, dtypes, labels, determinism, native-resolution sampling."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tim.errors import TimError


def _sample(run_cli, run: Path, out: Path, *extra: str) -> None:
    code, _, err = run_cli(["sample", "--checkpoint", str(run), "--out", str(out), *extra])
    assert code == 0, err


def test_sample_writes_png_and_npz_per_step_count(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "s"
    _sample(run_cli, tiny_run, out, "--steps", "1,2,4", "--class", "3,7", "--num", "3")
    for steps in (1, 2, 4):
        assert (out / f"steps_{steps:03d}.png").stat().st_size > 0
        with np.load(out / f"steps_{steps:03d}.npz") as data:
            assert sorted(data.files) == ["labels", "samples"]
            samples, labels = data["samples"], data["labels"]
        assert samples.shape == (6, 1, 8, 8) and samples.dtype == np.float32
        assert labels.shape == (6,) and labels.dtype == np.int64
        assert labels.tolist() == [3, 3, 3, 7, 7, 7]
        assert np.isfinite(samples).all()


def test_default_classes_are_all_and_grid_has_one_row_per_class(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    from PIL import Image

    out = tmp_path / "s"
    _sample(run_cli, tiny_run, out, "--steps", "1", "--num", "2")
    with np.load(out / "steps_001.npz") as data:
        assert data["labels"].tolist() == [c for c in range(10) for _ in range(2)]
    width, height = Image.open(out / "steps_001.png").size
    scale = 4  # save_grid default; tiles are 8 px + 1 px padding
    assert (width, height) == ((2 * 9 + 1) * scale, (10 * 9 + 1) * scale)


def test_same_seed_same_samples_and_other_seed_differs(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        _sample(run_cli, tiny_run, tmp_path / name, "--steps", "2", "--num", "2", "--seed", seed)
    a, b, c = (np.load(tmp_path / name / "steps_002.npz")["samples"] for name in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_step_counts_share_the_noise(tiny_run: Path, tmp_path: Path) -> None:
    """Every step count starts from the same noise: a 1-step sample is F applied once to that noise."""
    import torch

    from tim.cli.sample import generate, load_for_sampling

    model, info = load_for_sampling(tiny_run)
    first, second = generate(model, info.path, info.data_shape, [1, 1], class_ids=[0, 1], per_class=2, seed=3)
    torch.testing.assert_close(first.samples, second.samples, rtol=0, atol=0)
    noise = torch.randn((4, *info.data_shape), generator=torch.Generator().manual_seed(3))
    y = torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        F = model(noise, torch.ones(4), torch.zeros(4), y=y)
    expected = (noise.double() - F.double()).float()  # linear path: x_0 = x_1 - (1 - 0) F
    torch.testing.assert_close(first.samples, expected, rtol=1e-5, atol=1e-5)


def test_other_resolution_divisible_by_patch(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "s"
    _sample(run_cli, tiny_run, out, "--steps", "1", "--num", "1", "--class", "0", "--height", "12", "--width", "6")
    assert np.load(out / "steps_001.npz")["samples"].shape == (1, 1, 12, 6)


def test_overwrite_allows_a_non_empty_folder(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "s"
    _sample(run_cli, tiny_run, out, "--steps", "1", "--num", "1")
    code, _, err = run_cli(["sample", "--checkpoint", str(tiny_run), "--out", str(out), "--steps", "1"])
    assert code == 2 and "--overwrite" in err
    _sample(run_cli, tiny_run, out, "--steps", "1", "--num", "1", "--overwrite")


@pytest.mark.parametrize(("text", "expected"), [("1,2,4", [1, 2, 4]), (" 8 , 1 ", [8, 1]), ("2,2,1", [2, 1])])
def test_parse_steps_accepts(text: str, expected: list[int]) -> None:
    from tim.cli.sample import parse_steps

    assert parse_steps(text) == expected


@pytest.mark.parametrize("text", ["", " , ", "a", "1,0", "-1", "2.0"])
def test_parse_steps_rejects(text: str) -> None:
    from tim.cli.sample import parse_steps

    with pytest.raises(TimError):
        parse_steps(text)


def test_class_ids_need_a_conditional_model() -> None:
    from tim.cli.sample import parse_class_ids

    assert parse_class_ids(None, 0) == []
    assert parse_class_ids(None, 3) == [0, 1, 2]
    with pytest.raises(TimError, match="unconditional"):
        parse_class_ids("1", 0)


def test_guidance_needs_a_conditional_model() -> None:
    from tim.cli.sample import check_guidance_scale

    assert check_guidance_scale(0.0, 10) == 0.0
    with pytest.raises(TimError, match="unconditional"):
        check_guidance_scale(2.0, 0)


def test_vector_model_writes_scatter_and_unlabelled_npz(tmp_path: Path, run_cli) -> None:
    run = tmp_path / "toy"
    code, _, err = run_cli(["train", "--config", "toy2d", "--out", str(run), "train.steps=2", "train.batch_size=32",
                            "model.hidden_size=16", "model.depth=1", "train.progress=false", "sample.num=0"])
    assert code == 0, err
    out = tmp_path / "s"
    _sample(run_cli, run, out, "--steps", "1,3", "--num", "5")
    with np.load(out / "steps_003.npz") as data:
        assert data["samples"].shape == (5, 2) and data["samples"].dtype == np.float32
        assert data["labels"].tolist() == [-1] * 5
    assert (out / "steps_003.png").stat().st_size > 0
    for argv, fragment in ((["--class", "1"], "unconditional"), (["--cfg", "2"], "unconditional"),
                           (["--height", "8"], "vectors")):
        code, _, err = run_cli(["sample", "--checkpoint", str(run), "--out", str(tmp_path / "x"), "--steps", "1", *argv])
        assert code == 2 and fragment in err, err
