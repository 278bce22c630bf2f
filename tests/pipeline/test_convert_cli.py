"""`tim convert`: a tiny checkpoint in the released key layout + tiny diffusers autoencoders -> pipeline -> images.

The released presets are far too large for a test, so the presets are replaced (in-process) by
tiny networks of the same structure; the checkpoint uses the released key names of
shared/specs/state-dicts/ (checked against the listing) and a real, tiny, random AutoencoderKL.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from helpers.autoencoders import tiny_dc, tiny_kl
from helpers.cli import run_cli
from tim.generation import TiMPipeline
from tim.models import TIM_PRESETS, TiM, TiMConfig, load_released_checkpoint
from tim.models.convert import ours_to_released

SPECS = Path(__file__).resolve().parents[3] / "shared" / "specs" / "state-dicts"
# TiM-XL/2's structure (4 latent channels, patch 2, projector, interval attention) at test size.
TINY_XL2 = TiMConfig(
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
TINY_T2I = dataclasses.replace(TINY_XL2, in_channels=8, patch_size=1, conditioning="text", text_dim=32)


def released_file(path: Path, config: TiMConfig, seed: int = 0) -> Path:
    """Random weights of ``config`` saved under the released key names (as the published checkpoints)."""
    torch.manual_seed(seed)
    model = TiM(dataclasses.replace(config, rope_positions="wrapped", mask_context=False))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    state = {
        ours_to_released(k): v.contiguous()
        for k, v in model.state_dict().items()
        if not k.endswith("null_context")
    }
    save_file(state, str(path))
    return path


def listed_keys(listing: str, depth: int) -> set[str]:
    """Key names of a released state-dict listing, blocks restricted to the first ``depth``."""
    names = {line.split()[0] for line in (SPECS / listing).read_text().splitlines() if line.strip()}
    return {n for n in names if not (m := re.match(r"blocks\.(\d+)\.", n)) or int(m.group(1)) < depth}


@pytest.fixture
def tiny_presets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(TIM_PRESETS, "TiM-XL/2", TINY_XL2)
    monkeypatch.setitem(TIM_PRESETS, "TiM-T2I", TINY_T2I)


@pytest.fixture(scope="module")
def kl_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_kl(tmp_path_factory.mktemp("ae") / "kl")


def test_tiny_checkpoint_has_the_released_layout(tmp_path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(released_file(tmp_path / "c2i.safetensors", TINY_XL2)), "pt") as f:
        assert set(f.keys()) == listed_keys("c2i_tim_xl_p2_256.txt", TINY_XL2.depth)
    with safe_open(str(released_file(tmp_path / "t2i.safetensors", TINY_T2I)), "pt") as f:
        assert set(f.keys()) == listed_keys("t2i_tim_xl_p1_t2i.txt", TINY_T2I.depth)


def test_convert_then_load_gives_images(tmp_path: Path, kl_folder: Path, tiny_presets: None) -> None:
    file = released_file(tmp_path / "TiM-XL-2-256.safetensors", TINY_XL2)
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class {k}" for k in range(10)) + "\n")
    code, out, err = run_cli(
        [
            "convert",
            "--released",
            str(file),
            "--preset",
            "TiM-XL/2",
            "--autoencoder",
            str(kl_folder),
            "--class-names",
            str(names),
            "--out",
            str(tmp_path / "pipe"),
        ]
    )
    assert code == 0, err
    assert "recipe: 1 step(s), CFG 2.5 on (0.0, 0.6) (strict), stochasticity 0.2" in out
    assert sorted(p.name for p in (tmp_path / "pipe").iterdir()) == [
        "autoencoder",
        "model",
        "pipeline.json",
        "recipe.json",
    ]
    pipe = TiMPipeline.load(tmp_path / "pipe")
    r = pipe.recipe
    assert (r.steps, r.guidance_scale, r.guidance_interval, r.interval, r.stochasticity) == (
        1,
        2.5,
        (0.0, 0.6),
        "strict",
        0.2,
    )
    assert (r.latent_scale, r.latent_shift, r.class_names[3]) == (
        0.5,
        0.0,
        "class 3",
    )  # the autoencoder's scaling factor
    assert pipe.default_size == (256, 256) and pipe.size_multiple == 8  # tiny KL f4 x patch 2
    images = pipe(class_labels=[1, 7], height=32, width=48, steps=2).images
    assert [im.size for im in images] == [(48, 32)] * 2 and images[0].mode == "RGB"
    # The network is the released one (strict load, same outputs).
    reference = load_released_checkpoint(file, TINY_XL2)
    x, t, r_, y = (
        torch.randn(2, 4, 8, 8),
        torch.tensor([0.9, 0.5]),
        torch.tensor([0.2, 0.0]),
        torch.tensor([1, 10]),
    )
    assert torch.equal(pipe.model(x, t, r_, y=y), reference(x, t, r_, y=y))
    # from_pretrained(save_pretrained(p)) reproduces p's images bit for bit (autoencoder included).
    again = TiMPipeline.from_pretrained(pipe.save_pretrained(tmp_path / "again"))
    kwargs = dict(class_labels=[3, 4], height=16, width=16, steps=4, output_type="pt")
    assert torch.equal(again(**kwargs).images, pipe(**kwargs).images)
    referenced = TiMPipeline.load(pipe.save_pretrained(tmp_path / "ref", reference=True))
    ref = json.loads((tmp_path / "ref" / "pipeline.json").read_text())["autoencoder"]
    assert ref == {
        "path": str((tmp_path / "pipe" / "autoencoder").resolve())
    }  # where the loaded pipe read it
    assert torch.equal(referenced(**kwargs).images, pipe(**kwargs).images)
    with pytest.raises(Exception, match="lies inside"):  # its autoencoder lives in the folder being replaced
        pipe.save_pretrained(tmp_path / "pipe", reference=True)
    assert TiMPipeline.load(tmp_path / "pipe").autoencoder is not None  # left as it was
    # A released file is also accepted directly (preset + autoencoder required).
    direct = TiMPipeline.load(file, preset="TiM-XL/2", autoencoder=kl_folder)
    assert torch.equal(direct(**kwargs).images, pipe(**kwargs).images)
    with pytest.raises(Exception, match="needs its preset and autoencoder"):
        TiMPipeline.load(file)
    # ... and `tim sample` writes decoded PNGs of the requested size from the converted folder.
    code, _, err = run_cli(
        [
            "sample",
            "--checkpoint",
            str(tmp_path / "pipe"),
            "--class",
            "1,7",
            "--per-class",
            "1",
            "--steps",
            "1",
            "--height",
            "32",
            "--width",
            "48",
            "--no-progress",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert code == 0, err
    from PIL import Image

    pngs = sorted((tmp_path / "s").glob("steps_*/*.png"))
    assert len(pngs) == 2 and all(
        Image.open(p).size == (48, 32) and Image.open(p).mode == "RGB" for p in pngs
    )


def names_file(tmp_path: Path) -> Path:
    path = tmp_path / "weights.txt"
    path.write_text("not weights")
    return path


def one_line_error(argv: list[str]) -> str:
    code, out, err = run_cli(argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and err.startswith("error: "), (code, out, err)
    return err


def test_convert_bad_inputs(tmp_path: Path, kl_folder: Path, tiny_presets: None) -> None:
    file = released_file(tmp_path / "ok.safetensors", TINY_XL2)
    base = ["convert", "--preset", "TiM-XL/2", "--autoencoder", str(kl_folder)]
    out = tmp_path / "pipe"
    # A file of another model: the first mismatched keys are named, nothing is written.
    other = released_file(tmp_path / "other.safetensors", dataclasses.replace(TINY_XL2, depth=3))
    err = one_line_error([*base, "--released", str(other), "--out", str(out)])
    assert "unexpected" in err and "blocks.2." in err and not out.exists()
    # An autoencoder whose latent channels do not match (DC-AE tiny: 8 channels).
    dc = tiny_dc(tmp_path / "dc")
    err = one_line_error(
        [
            "convert",
            "--preset",
            "TiM-XL/2",
            "--autoencoder",
            str(dc),
            "--released",
            str(file),
            "--out",
            str(out),
        ]
    )
    assert "8-channel latents but TiM-XL/2 takes 4" in err and "SD-VAE" in err and not out.exists()
    # A folder of another class.
    unet = tmp_path / "unet"
    unet.mkdir()
    (unet / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    assert "UNet2DModel" in one_line_error(
        [
            "convert",
            "--preset",
            "TiM-XL/2",
            "--autoencoder",
            str(unet),
            "--released",
            str(file),
            "--out",
            str(out),
        ]
    )
    assert "none.safetensors does not exist" in one_line_error(
        [*base, "--released", str(tmp_path / "none.safetensors"), "--out", str(out)]
    )
    assert "not a .safetensors file" in one_line_error(
        [*base, "--released", str(names_file(tmp_path)), "--out", str(out)]
    )
    names = tmp_path / "names.txt"
    names.write_text("a\nb\n")
    assert "has 2 names but the model has 10" in one_line_error(
        [*base, "--released", str(file), "--class-names", str(names), "--out", str(out)]
    )
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("keep")
    assert "not empty" in one_line_error([*base, "--released", str(file), "--out", str(busy)])
    assert "not a pipeline folder" in one_line_error(
        [*base, "--released", str(file), "--out", str(busy), "--overwrite"]
    )
    assert (busy / "x").read_text() == "keep" and not [
        p for p in tmp_path.iterdir() if p.name.startswith(".tmp")
    ]
    err = one_line_error(
        [*base, "--released", str(file), "--text-encoder", str(kl_folder), "--out", str(out)]
    )
    assert "class-conditioned" in err


def test_convert_text_to_image(tmp_path: Path, tiny_presets: None) -> None:
    from helpers.text_models import tiny_bert

    file = released_file(tmp_path / "t2i.safetensors", TINY_T2I)
    ae = tiny_kl(tmp_path / "kl8", latent_channels=8)
    text = tiny_bert(tmp_path / "bert", hidden=32)
    base = ["convert", "--released", str(file), "--preset", "TiM-T2I", "--autoencoder", str(ae)]
    assert "needs its text encoder" in one_line_error([*base, "--out", str(tmp_path / "p")])
    code, _, err = run_cli(
        [*base, "--text-encoder", str(text), "--text-max-length", "16", "--out", str(tmp_path / "p")]
    )
    assert code == 0, err
    pipe = TiMPipeline.load(tmp_path / "p")
    assert (pipe.recipe.shift_rule, pipe.recipe.base_size, pipe.recipe.text_max_length) == (
        "sqrt_area",
        (32, 32),
        16,
    )
    assert pipe.recipe.shift_at(64, 32) == pytest.approx(2**0.5)  # 2048x1024 px over the 1024^2 base
    # The null caption is the encoder's features of "" (as the released model was trained).
    assert torch.allclose(pipe.model.cond_embedder.null_context, pipe.text_encoder.null_context())
    images = pipe(prompt=["a red circle", ""], height=16, width=16, steps=2).images
    assert [im.size for im in images] == [(16, 16)] * 2
    with pytest.raises(Exception, match="prompt was given but this is a class"):
        TiMPipeline(
            load_released_checkpoint(released_file(tmp_path / "c.safetensors", TINY_XL2), TINY_XL2),
            pipe.recipe,
        )(prompt="x")


def test_documented_convert_commands_parse() -> None:
    """The `tim convert` lines of the released-checkpoints page use options that exist."""
    import shlex

    from tim.cli.main import build_parser

    page = Path(__file__).resolve().parents[2] / "docs" / "released-checkpoints.md"
    readme = page.read_text().replace("\\\n", " ")
    lines = [line.split("#")[0] for line in readme.splitlines() if line.startswith("tim convert ")]
    assert len(lines) >= 2
    for line in lines:
        args = build_parser().parse_args(shlex.split(line)[1:])
        assert args.preset in ("TiM-XL/2", "TiM-T2I") and args.out.startswith("pipelines/")


def test_from_run_of_a_latent_run_decodes_with_the_recorded_autoencoder(
    tmp_path: Path, kl_folder: Path
) -> None:
    """Latent shards record scale, shift and the autoencoder folder; the run's pipeline uses all three."""
    from tim.data.latents import write_latent_shards
    from tim.training import load_config, train

    torch.manual_seed(0)
    write_latent_shards(
        tmp_path / "shards",
        torch.randn(32, 4, 8, 8),
        torch.arange(32) % 3,
        scale=0.7,
        shift=0.1,
        autoencoder=str(kl_folder),
        class_names=["a", "b", "c"],
    )
    overrides = [
        "data.name=latents",
        f"data.root={tmp_path / 'shards'}",
        "model.in_channels=4",
        "model.num_classes=3",
        "model.patch_size=2",
        "model.hidden_size=32",
        "model.depth=1",
        "model.num_heads=2",
        "model.modulation_rank=8",
        "model.encoder_depth=1",
        "train.steps=2",
        "train.batch_size=8",
        "train.checkpoint_every=2",
        "train.progress=false",
        "sample.num=0",
    ]
    train(load_config("digits", overrides), tmp_path / "run")
    pipe = TiMPipeline.load(tmp_path / "run")
    assert (pipe.recipe.latent_scale, pipe.recipe.latent_shift, pipe.recipe.class_names) == (
        0.7,
        0.1,
        ["a", "b", "c"],
    )
    assert pipe.autoencoder is not None and pipe.autoencoder.folder == kl_folder
    images = pipe(class_labels=[0, 2]).images
    assert [im.size for im in images] == [(32, 32)] * 2  # 8x8 latents x f4
    # The run recorded these facts when it started (recipe.json), so later changes to the shards
    # do not move a trained run to another autoencoder.
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["autoencoder"] == str(kl_folder)
    # The recorded autoencoder folder is gone: a one-line warning, latents only.
    recipe = json.loads((tmp_path / "run" / "recipe.json").read_text())
    (tmp_path / "run" / "recipe.json").write_text(
        json.dumps({**recipe, "autoencoder": str(tmp_path / "gone")})
    )
    with pytest.warns(UserWarning, match="not a local folder"):
        latent_only = TiMPipeline.from_run(tmp_path / "run")
    assert latent_only.autoencoder is None
    assert latent_only(class_labels=[1], output_type="latent").images.shape == (1, 4, 8, 8)
