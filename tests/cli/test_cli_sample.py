"""`tim sample`: files, keys, shapes, labels, counting, seeds, the pipeline inputs, native sizes.

Streaming shards, resume and the limits are in test_cli_sample_stream.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tim.errors import TimError


def _sample(run_cli, checkpoint: Path, out: Path, *extra: str) -> str:
    code, stdout, err = run_cli(
        ["sample", "--checkpoint", str(checkpoint), "--out", str(out), "--no-progress", *extra]
    )
    assert code == 0, err
    return stdout


def _load(out: Path, steps: int) -> dict[str, np.ndarray]:
    with np.load(out / f"steps_{steps:03d}.npz") as data:
        return {key: data[key] for key in data.files}


def test_sample_writes_npz_pngs_grid_and_index(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    from PIL import Image

    out = tmp_path / "s"
    _sample(run_cli, tiny_run, out, "--steps", "1,2,4", "--class", "3,7", "--per-class", "3")
    for steps in (1, 2, 4):
        data = _load(out, steps)
        assert sorted(data) == ["index", "labels", "samples"]
        assert data["samples"].shape == (6, 1, 8, 8) and data["samples"].dtype == np.float32
        assert data["labels"].tolist() == [3, 3, 3, 7, 7, 7] and data["labels"].dtype == np.int64
        assert data["index"].tolist() == list(range(6))
        assert np.isfinite(data["samples"]).all()
        pngs = sorted((out / f"steps_{steps:03d}").glob("*.png"))
        assert [p.name for p in pngs] == [f"{i:06d}.png" for i in range(6)]
        # Each PNG is its sample clipped to [-1, 1] and mapped to 0..255.
        pixels = np.asarray(Image.open(pngs[4]))
        expected = np.round((np.clip(data["samples"][4, 0], -1, 1) + 1) * 127.5).astype(np.uint8)
        np.testing.assert_array_equal(pixels, expected)
        assert (out / f"steps_{steps:03d}.png").stat().st_size > 0
    import json

    index = json.loads((out / "index.json").read_text())
    assert index["complete"] and index["total"] == 6 and index["command"]["steps"] == [1, 2, 4]
    assert [s["npz"] for s in index["steps"]["4"]["shards"]] == ["steps_004.npz"]
    assert index["steps"]["4"]["nfe"] == 4


def test_npz_keeps_raw_values_and_pngs_clip(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    """The documented range decision: the .npz is not clipped (the tiny model overshoots [-1, 1])."""
    out = tmp_path / "s"
    _sample(run_cli, tiny_run, out, "--steps", "1", "--per-class", "2")
    samples = _load(out, 1)["samples"]
    assert np.abs(samples).max() > 1.0  # raw outputs are stored as generated


def test_counting_num_is_the_total(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    _sample(run_cli, tiny_run, tmp_path / "a", "--steps", "1", "--class", "0,1,2", "--num", "7", "--no-png")
    assert _load(tmp_path / "a", 1)["labels"].tolist() == [0, 0, 0, 1, 1, 2, 2]
    _sample(
        run_cli, tiny_run, tmp_path / "b", "--steps", "1", "--class", "4,5", "--per-class", "2", "--no-png"
    )
    assert _load(tmp_path / "b", 1)["labels"].tolist() == [4, 4, 5, 5]


def test_default_is_every_class_and_eight_per_class(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    from PIL import Image

    from tim.cli.sample import DEFAULT_PER_CONDITION

    out = tmp_path / "s"
    _sample(run_cli, tiny_run, out, "--steps", "1", "--no-png")
    assert _load(out, 1)["labels"].tolist() == [c for c in range(10) for _ in range(DEFAULT_PER_CONDITION)]
    width, height = Image.open(out / "steps_001.png").size
    scale = 4  # 8-px tiles are shown 4x; tiles are 8 px + 1 px padding
    assert (width, height) == ((DEFAULT_PER_CONDITION * 9 + 1) * scale, (10 * 9 + 1) * scale)


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["--num", "3"], ("--num 3", "fewer than the 10", "--num >= 10")),
        (["--per-prompt", "2"], ("--per-prompt", "class-conditioned", "--per-class")),
        (["--num", "4", "--per-class", "2"], ("not allowed with",)),
        (["--per-class", "0"], ("--per-class 0", ">= 1")),
        (["--prompt", "a red circle"], ("--prompt", "class-conditioned", "--class")),
    ],
)
def test_counting_and_condition_errors(tiny_run: Path, tmp_path: Path, run_cli, argv, fragments) -> None:
    code, _, err = run_cli(
        ["sample", "--checkpoint", str(tiny_run), "--out", str(tmp_path / "x"), "--steps", "1", *argv]
    )
    assert code == 2 and err.count("error:") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_same_seed_same_samples_and_seed_shifts_by_index(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    """Sample i uses seed + i: seed 5's sample 1 is seed 6's sample 0 (same class)."""
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        _sample(
            run_cli,
            tiny_run,
            tmp_path / name,
            "--steps",
            "2",
            "--class",
            "1",
            "--per-class",
            "3",
            "--seed",
            seed,
            "--no-png",
        )
    a, b, c = (_load(tmp_path / name, 2)["samples"] for name in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_allclose(a[1:], c[:2], rtol=0, atol=1e-6)


def test_cli_equals_the_pipeline_call(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    from tim.generation import TiMPipeline

    out = tmp_path / "s"
    _sample(
        run_cli,
        tiny_run,
        out,
        "--steps",
        "3",
        "--class",
        "2,9",
        "--per-class",
        "2",
        "--seed",
        "11",
        "--no-png",
    )
    pipe = TiMPipeline.from_run(tiny_run)
    expected = pipe(
        class_labels=[2, 9], num_images_per_prompt=2, steps=3, seed=11, output_type="latent"
    ).images
    np.testing.assert_allclose(_load(out, 3)["samples"], expected.numpy(), rtol=0, atol=1e-6)


def test_step_counts_share_the_noise(tiny_run: Path) -> None:
    """Every step count starts from the same noise: a 1-step sample is F applied once to that noise."""
    from tim.generation import generate, load_for_sampling

    model, info = load_for_sampling(tiny_run)
    first, second = generate(model, info.path, info.data_shape, [1, 1], class_ids=[0, 1], per_class=2, seed=3)
    torch.testing.assert_close(first.samples, second.samples, rtol=0, atol=0)
    noise = torch.stack(
        [torch.randn(info.data_shape, generator=torch.Generator().manual_seed(3 + i)) for i in range(4)]
    )
    y = torch.tensor([0, 0, 1, 1])
    with torch.no_grad():
        F = model(noise, torch.ones(4), torch.zeros(4), y=y)
    expected = (noise.double() - F.double()).float()  # linear path: x_0 = x_1 - (1 - 0) F
    torch.testing.assert_close(first.samples, expected, rtol=1e-5, atol=1e-5)


def test_generate_matches_the_command(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    """tim demo's in-memory generate() and tim sample give the same samples for the same seed."""
    from tim.generation import generate, load_for_sampling

    out = tmp_path / "s"
    _sample(
        run_cli,
        tiny_run,
        out,
        "--steps",
        "2",
        "--class",
        "0,5",
        "--per-class",
        "2",
        "--seed",
        "4",
        "--no-png",
    )
    model, info = load_for_sampling(tiny_run)
    (item,) = generate(
        model, info.path, info.data_shape, [2], class_ids=[0, 5], per_class=2, seed=4, batch_size=3
    )
    np.testing.assert_allclose(_load(out, 2)["samples"], item.samples.numpy(), rtol=0, atol=1e-6)


def test_other_resolution_divisible_by_patch(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    from PIL import Image

    out = tmp_path / "s"
    _sample(
        run_cli, tiny_run, out, "--steps", "1", "--num", "1", "--class", "0", "--height", "12", "--width", "6"
    )
    assert _load(out, 1)["samples"].shape == (1, 1, 12, 6)
    assert Image.open(out / "steps_001" / "000000.png").size == (6, 12)


def test_overwrite_allows_a_non_empty_folder(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    out = tmp_path / "s"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, _, err = run_cli(["sample", "--checkpoint", str(tiny_run), "--out", str(out), "--steps", "1"])
    assert code == 2 and "--overwrite" in err
    _sample(run_cli, tiny_run, out, "--steps", "1", "--num", "10", "--overwrite")
    assert (out / "notes.txt").read_text() == "mine"


def test_pipeline_folder_gives_the_run_samples(tiny_run: Path, tmp_path: Path, run_cli) -> None:
    from tim.generation import TiMPipeline

    folder = TiMPipeline.from_run(tiny_run).save_pretrained(tmp_path / "pipe")
    _sample(run_cli, tiny_run, tmp_path / "a", "--steps", "2", "--class", "6", "--per-class", "2", "--no-png")
    _sample(run_cli, folder, tmp_path / "b", "--steps", "2", "--class", "6", "--per-class", "2", "--no-png")
    np.testing.assert_array_equal(_load(tmp_path / "a", 2)["samples"], _load(tmp_path / "b", 2)["samples"])
    code, _, err = run_cli(
        ["sample", "--checkpoint", str(folder), "--out", str(tmp_path / "c"), "--weights", "model"]
    )
    assert code == 2 and "--weights" in err and "training runs" in err


def test_latent_pipeline_decodes_to_pixels(tmp_path: Path, run_cli) -> None:
    """A latent model: PNGs and `samples` are decoded pixels (factor x the latent size), `latents` the raw output."""
    from PIL import Image

    from helpers.autoencoders import tiny_kl
    from helpers.pipeline import tiny_model
    from tim.autoencoders import Autoencoder
    from tim.generation import SamplingRecipe, TiMPipeline

    autoencoder = Autoencoder.from_pretrained(tiny_kl(tmp_path / "vae"))
    model = tiny_model()  # 4 latent channels, 8x8 latents
    recipe = SamplingRecipe(steps=1, latent_scale=float(autoencoder.scaling_factor))
    folder = TiMPipeline(model, recipe, autoencoder=autoencoder).save_pretrained(tmp_path / "pipe")
    out = tmp_path / "s"
    _sample(run_cli, folder, out, "--class", "1", "--num", "2")
    data = _load(out, 1)
    side = 8 * autoencoder.factor
    assert data["samples"].shape == (2, 3, side, side) and data["latents"].shape == (2, 4, 8, 8)
    assert Image.open(out / "steps_001" / "000001.png").size == (side, side)
    decoded = autoencoder.decode(torch.from_numpy(data["latents"]) / recipe.latent_scale)
    np.testing.assert_allclose(data["samples"], decoded.numpy(), rtol=0, atol=1e-5)
    code, _, err = run_cli(
        ["sample", "--checkpoint", str(folder), "--out", str(tmp_path / "x"), "--height", "36"]
    )
    assert code == 2 and "not divisible" in err and "autoencoder factor" in err, err


def test_text_model_prompts(tmp_path: Path, run_cli) -> None:
    from helpers.pipeline import tiny_model
    from helpers.text_models import tiny_bert
    from tim.generation import SamplingRecipe, TiMPipeline
    from tim.text import TextEncoder

    encoder = TextEncoder(str(tiny_bert(tmp_path / "bert")), max_length=8)
    model = tiny_model(conditioning="text", text_dim=encoder.dim, in_channels=3)
    model.set_null_context(encoder.null_context())
    folder = TiMPipeline(
        model, SamplingRecipe(steps=1, text_max_length=8), text_encoder=encoder
    ).save_pretrained(tmp_path / "pipe")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("two green squares\n\n  a blue triangle  \n")
    out = tmp_path / "s"
    _sample(run_cli, folder, out, "--prompt", "a red circle", "--prompts", str(prompts), "--per-prompt", "2")
    data = _load(out, 1)
    assert (
        data["prompts"].tolist() == ["a red circle"] * 2 + ["two green squares"] * 2 + ["a blue triangle"] * 2
    )
    assert data["labels"].tolist() == [-1] * 6 and data["samples"].shape == (6, 3, 8, 8)
    from PIL import Image

    grid = np.asarray(Image.open(out / "steps_001.png").convert("L"))
    tiles = (2 * 9 + 1) * 4  # 2 samples per prompt, 8-px tiles + 1 px padding, enlarged 4x
    assert grid.shape == ((3 * 9 + 1) * 4, grid.shape[1]) and grid.shape[1] > tiles + 40
    label_column = grid[:, : grid.shape[1] - tiles]
    for band in np.array_split(label_column, 3):  # each prompt row has its text on the left
        assert (band < 128).any()
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n")
    for argv, fragments in (
        (["--prompts", str(empty)], ("no prompts",)),
        ([], ("no prompt was given", "--prompt")),
        (["--prompt", "x", "--class", "1"], ("--class", "text-to-image")),
        (["--prompt", "x", "--per-class", "1"], ("--per-class", "--per-prompt")),
        (["--prompts", str(tmp_path / "none.txt")], ("does not exist",)),
    ):
        code, _, err = run_cli(["sample", "--checkpoint", str(folder), "--out", str(tmp_path / "x"), *argv])
        assert code == 2 and err.count("error:") == 1, err
        for fragment in fragments:
            assert fragment in err, err


def test_prompts_file_is_bounded(tmp_path: Path) -> None:
    """/dev/zero, a folder or a huge file is refused in one line; a pipe is read like a file."""
    import os
    import threading

    from tim.cli import sample

    for path, fragment in (
        ("/dev/zero", "is a device or socket, not a regular file or a pipe"),
        (str(tmp_path), "is a folder, not a regular file or a pipe"),
    ):
        with pytest.raises(TimError, match=fragment):
            sample.read_prompts(None, path)
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as handle:
        handle.truncate(sample.MAX_PROMPTS_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(TimError, match="huge.txt is larger than the limit of 10 MiB; split it"):
        sample.read_prompts(None, str(huge))
    many = tmp_path / "many.txt"
    many.write_text("p\n" * (sample.MAX_PROMPTS + 1))
    with pytest.raises(TimError, match="100,001 prompts are more than the limit of 100,000"):
        sample.read_prompts(None, str(many))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("a red circle\n\ntwo squares\n"))
    writer.start()
    assert sample.read_prompts(["x"], str(fifo)) == ["x", "a red circle", "two squares"]
    writer.join()


@pytest.mark.parametrize(
    ("text", "expected"), [("1,2,4", [1, 2, 4]), (" 8 , 1 ", [8, 1]), ("2,2,1", [2, 1]), ("1000", [1000])]
)
def test_parse_steps_accepts(text: str, expected: list[int]) -> None:
    from tim.cli.sample import parse_steps

    assert parse_steps(text) == expected


@pytest.mark.parametrize("text", ["", " , ", "a", "1,0", "-1", "2.0", "1001", "4,100000"])
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
    code, _, err = run_cli(
        [
            "train",
            "--config",
            "toy2d",
            "--out",
            str(run),
            "train.steps=2",
            "train.batch_size=32",
            "model.hidden_size=16",
            "model.depth=1",
            "train.progress=false",
            "sample.num=0",
        ]
    )
    assert code == 0, err
    out = tmp_path / "s"
    _sample(run_cli, run, out, "--steps", "1,3", "--num", "5")
    data = _load(out, 3)
    assert data["samples"].shape == (5, 2) and data["samples"].dtype == np.float32
    assert data["labels"].tolist() == [-1] * 5
    assert (out / "steps_003.png").stat().st_size > 0 and not (out / "steps_003").exists()
    for argv, fragment in (
        (["--class", "1"], "unconditional"),
        (["--cfg", "2"], "unconditional"),
        (["--height", "8"], "vectors"),
        (["--per-class", "2"], "unconditional"),
    ):
        code, _, err = run_cli(
            ["sample", "--checkpoint", str(run), "--out", str(tmp_path / "x"), "--steps", "1", *argv]
        )
        assert code == 2 and fragment in err, err


def test_released_file_needs_preset_and_autoencoder(
    tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint in the released key layout (tiny, TiM-XL/2's structure) + a tiny AutoencoderKL -> PNGs."""
    import dataclasses

    from PIL import Image
    from safetensors.torch import save_file

    from helpers.autoencoders import tiny_kl
    from tim.models import TIM_PRESETS, TiM, TiMConfig
    from tim.models.convert import ours_to_released

    tiny_xl2 = TiMConfig(
        in_channels=4,
        input_size=8,
        patch_size=2,
        hidden_size=32,
        depth=2,
        num_heads=2,
        modulation_rank=8,
        num_classes=10,
        encoder_depth=1,
        z_dim=16,
        projector_dim=32,
    )
    monkeypatch.setitem(TIM_PRESETS, "TiM-XL/2", tiny_xl2)
    torch.manual_seed(0)
    model = TiM(dataclasses.replace(tiny_xl2, rope_positions="wrapped", mask_context=False))
    state = {
        ours_to_released(k): v.contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("null_context")
    }
    file = tmp_path / "TiM-XL-2-256.safetensors"
    save_file(state, str(file))
    vae = tiny_kl(tmp_path / "vae")
    out = tmp_path / "s"
    _sample(
        run_cli,
        file,
        out,
        "--preset",
        "TiM-XL/2",
        "--autoencoder",
        str(vae),
        "--steps",
        "1",
        "--class",
        "3",
        "--num",
        "2",
        "--height",
        "32",
        "--width",
        "16",
        "--cfg",
        "1",
    )
    assert Image.open(out / "steps_001" / "000001.png").size == (16, 32)
    assert _load(out, 1)["samples"].shape == (2, 3, 32, 16)
    code, _, err = run_cli(
        ["sample", "--checkpoint", str(file), "--out", str(tmp_path / "x"), "--preset", "TiM-XL/2"]
    )
    assert code == 2 and "needs its preset and autoencoder" in err and "--autoencoder" in err, err


def test_small_released_file_as_xl2_is_refused_from_its_header(
    tmp_path: Path, run_cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`tim sample --checkpoint small.safetensors --preset TiM-XL/2`: one line, the XL network never built."""
    from safetensors.torch import save_file

    import tim.models.convert as convert
    from helpers.autoencoders import tiny_kl
    from tim.models import build_model

    file = tmp_path / "small.safetensors"
    save_file({k: v.contiguous() for k, v in build_model("TiM-tiny").state_dict().items()}, str(file))
    devices: list[str] = []
    real_tim = convert.TiM

    def spy(config):  # noqa: ANN001, ANN202
        model = real_tim(config)
        devices.append(next(model.parameters()).device.type)
        return model

    monkeypatch.setattr(convert, "TiM", spy)
    argv = ["sample", "--checkpoint", str(file), "--preset", "TiM-XL/2", "--out", str(tmp_path / "out")]
    code, _, err = run_cli([*argv, "--autoencoder", str(tiny_kl(tmp_path / "vae")), "--steps", "1"])
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"weights in {file} do not match the model" in err and "(1152, 1152)" in err, err
    assert devices == ["meta"] and not (tmp_path / "out").exists()


def test_documented_sample_commands_parse_and_resume_example_repeats_the_command() -> None:
    """Every `tim sample` line of the CLI page parses; its resume example is the first command again."""
    import re
    import shlex

    from tim.cli.main import build_parser

    readme = (Path(__file__).resolve().parents[2] / "docs" / "cli.md").read_text()
    lines = [
        line.split("  #")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
        for line in block.splitlines()
    ]
    samples = [line for line in lines if line.startswith("tim sample ")]
    assert len(samples) >= 3
    parser = build_parser()
    for line in samples:
        args = parser.parse_args(shlex.split(line)[1:])
        assert args.command == "sample" and args.checkpoint and args.out
    raw = [
        line
        for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.DOTALL)
        for line in block.splitlines()
    ]
    resumes = [i for i, line in enumerate(raw) if "same command again" in line]
    assert resumes
    for i in resumes:  # the resume line repeats the line above it exactly
        assert raw[i].split("  #")[0].strip() == raw[i - 1].split("  #")[0].strip()


def test_training_progress_bar_shows_images_as_a_count() -> None:
    """The bar printed `images=1e+4`; it shows `images=10,000`."""
    from tim.training.logging import Progress

    bar = Progress(enabled=True, total=5, initial=0)
    bar.update(0.5, 10_000)
    text = str(bar.bar)
    bar.close()
    assert "images=10,000" in text and "1e+" not in text, text
