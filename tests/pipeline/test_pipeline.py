"""TiMPipeline: outputs, per-image seeds, errors, save/load round trip, training runs, recipe rules."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.pipeline import PixelShuffleAutoencoder, tiny_model
from tim.errors import TimError
from tim.generation import (
    PipelineOutput,
    SamplingRecipe,
    TiMPipeline,
    estimate_generation_bytes,
    resolve_dtype,
)
from tim.timesteps import resolution_shift

ROOT = Path(__file__).resolve().parents[2]


def latent_pipeline(autoencoder: PixelShuffleAutoencoder, **recipe: object) -> TiMPipeline:
    """TiM-tiny (4 latent channels, patch 2) behind the stand-in autoencoder (factor 2 -> sides % 4)."""
    defaults = dict(
        steps=2, guidance_scale=2.0, latent_scale=0.5, latent_shift=0.25, class_names=list("abcdefghij")
    )
    return TiMPipeline(tiny_model(), SamplingRecipe(**(defaults | recipe)), autoencoder=autoencoder)


def test_output_types_sizes_and_latent_decoding(fake_autoencoder: PixelShuffleAutoencoder) -> None:
    pipe = latent_pipeline(fake_autoencoder)
    out = pipe(class_labels=[1, 2], num_images_per_prompt=2, height=16, width=24, seed=3)
    assert isinstance(out, PipelineOutput) and len(out.images) == 4
    assert out.images[0].size == (24, 16) and out.images[0].mode == "L"
    assert out.labels == [1, 1, 2, 2] and out.seeds == [3, 4, 5, 6] and out.nfe == 4  # 2 steps x CFG pair
    latents = pipe(
        class_labels=[1, 2], num_images_per_prompt=2, height=16, width=24, seed=3, output_type="latent"
    ).images
    assert latents.shape == (4, 4, 8, 12)
    # decode gets x / latent_scale + latent_shift (the inverse of the shards' normalisation).
    assert torch.allclose(fake_autoencoder.decoded[0], latents / 0.5 + 0.25)
    pt = pipe(
        class_labels=[1, 2], num_images_per_prompt=2, height=16, width=24, seed=3, output_type="pt"
    ).images
    np_images = pipe(
        class_labels=[1, 2], num_images_per_prompt=2, height=16, width=24, seed=3, output_type="np"
    ).images
    assert pt.shape == (4, 1, 16, 24) and 0 <= pt.min() and pt.max() <= 1
    assert np_images.shape == (4, 16, 24, 1) and np.array_equal(np_images, pt.permute(0, 2, 3, 1).numpy())
    expected = (torch.tanh(torch.nn.functional.pixel_shuffle(latents / 0.5 + 0.25, 2)) + 1) / 2
    assert torch.allclose(pt, expected, atol=1e-6)
    assert np.array_equal(np.asarray(out.images[2]), (pt[2, 0].numpy() * 255).round().astype(np.uint8))


def test_image_i_does_not_depend_on_batching(fake_autoencoder: PixelShuffleAutoencoder) -> None:
    """Noise and stochastic-step noise come from image i's own generator (seed + i)."""
    pipe = latent_pipeline(fake_autoencoder, stochasticity=0.5, steps=4)
    kwargs = dict(class_labels=[0, 3, 7, 9, 2], output_type="latent", seed=10)
    whole = pipe(**kwargs).images
    streamed = pipe(**kwargs, batch_size=2).images
    alone = pipe(class_labels=[2], output_type="latent", seed=14).images
    assert torch.allclose(whole, streamed, atol=1e-6) and torch.allclose(whole[4], alone[0], atol=1e-6)
    other_seed = pipe(class_labels=[2], output_type="latent", seed=15).images
    assert not torch.allclose(alone, other_seed)
    g = torch.Generator().manual_seed(0)
    derived = pipe(class_labels=[0, 3], output_type="latent", generator=g)
    assert derived.seeds is not None and len(set(derived.seeds)) == 2


def test_recipe_defaults_and_overrides(fake_autoencoder: PixelShuffleAutoencoder) -> None:
    pipe = latent_pipeline(fake_autoencoder, steps=3, guidance_scale=1.0, height=8, width=12)
    out = pipe(class_labels=[1], output_type="pt")
    assert out.nfe == 3 and out.images.shape[-2:] == (8, 12)
    assert pipe(class_labels=[1], steps=1, guidance_scale=3.0, output_type="pt").nfe == 2


def test_explicit_noise(fake_autoencoder: PixelShuffleAutoencoder) -> None:
    pipe = latent_pipeline(fake_autoencoder)
    noise = torch.randn(2, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    a = pipe(class_labels=[1, 2], noise=noise, height=8, width=8, output_type="latent").images
    b = pipe(class_labels=[1, 2], noise=noise, height=8, width=8, output_type="latent", seed=99).images
    assert torch.equal(a, b)
    with pytest.raises(TimError, match="noise has shape"):
        pipe(class_labels=[1], noise=noise)


def test_bad_requests_are_one_line_errors(fake_autoencoder: PixelShuffleAutoencoder) -> None:
    pipe = latent_pipeline(fake_autoencoder)
    cases = [
        (dict(prompt="a cat"), "prompt was given but this is a class-conditioned model"),
        (dict(class_labels=[10]), "class label 10 is out of range for a model with 10 classes"),
        (dict(class_labels=[-1]), "out of range"),
        (dict(class_labels=[1.5]), "not integer ids"),
        (dict(), "needs class_labels"),
        (
            dict(class_labels=[1], height=18, width=16),
            r"18x16 is not divisible by 4 \(autoencoder factor 2 x patch 2\)",
        ),
        (dict(class_labels=[1], output_type="gif"), "output_type"),
        (dict(class_labels=[1], steps=0), "steps=0"),
        (dict(class_labels=[1], batch_size=0), "batch_size=0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(TimError, match=message) as info:
            pipe(**kwargs)
        assert "\n" not in str(info.value)
    text = TiMPipeline(
        tiny_model(conditioning="text", text_dim=12), SamplingRecipe(), autoencoder=fake_autoencoder
    )
    with pytest.raises(TimError, match="class labels were given but this is a text-conditioned model"):
        text(class_labels=[1])
    with pytest.raises(TimError, match="has no text encoder"):
        text(prompt="a red circle")
    with pytest.raises(TimError, match="has no autoencoder"):
        TiMPipeline(tiny_model(), SamplingRecipe())(class_labels=[1])


def test_too_large_for_memory_is_refused_with_both_numbers(fake_autoencoder: PixelShuffleAutoencoder) -> None:
    pipe = latent_pipeline(fake_autoencoder)
    one = estimate_generation_bytes(pipe.model.config, 1, 256, 256, guided=True)
    pipe.memory_limit = one // 2
    with pytest.raises(
        TimError, match=r"generating one 512x512 image needs about .* MiB for the network .* available"
    ):
        pipe(class_labels=[1], height=512, width=512)
    pipe.memory_limit = int(1.5 * estimate_generation_bytes(pipe.model.config, 1, 4, 4, guided=True))
    with pytest.raises(TimError, match="batch_size=8 .* needs about"):
        pipe(class_labels=[1] * 8, height=8, width=8, batch_size=8)
    assert (
        len(pipe(class_labels=[1] * 3, height=8, width=8, output_type="latent").images) == 3
    )  # batches of 1 fit


def test_memory_estimate_grows_with_tokens() -> None:
    config = tiny_model().config
    small, large = (estimate_generation_bytes(config, 1, s, s) for s in (16, 64))
    assert 15 < large / small < 17  # linear in tokens for fused attention (16x the tokens)
    math_config = tiny_model(attention_backend="math").config
    assert estimate_generation_bytes(math_config, 1, 64, 64) > 2 * large  # + quadratic scores
    assert (
        3 * small < estimate_generation_bytes(config, 2, 16, 16, guided=True) < 4 * small
    )  # CFG: 4 network rows


def test_save_and_load_reproduce_images_bit_for_bit(tmp_path: Path) -> None:
    pipe = TiMPipeline(
        tiny_model(in_channels=3),
        SamplingRecipe(
            steps=3, guidance_scale=1.5, stochasticity=0.2, class_names=[f"c{k}" for k in range(10)]
        ),
    )
    folder = pipe.save_pretrained(tmp_path / "pipe")
    assert sorted(p.name for p in folder.iterdir()) == ["model", "pipeline.json", "recipe.json"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left
    loaded = TiMPipeline.from_pretrained(folder)
    assert loaded.recipe == pipe.recipe
    a = pipe(class_labels=[1, 4], seed=2, output_type="pt").images
    b = loaded(class_labels=[1, 4], seed=2, output_type="pt").images
    assert torch.equal(a, b)
    assert torch.equal(TiMPipeline.load(folder)(class_labels=[1, 4], seed=2, output_type="pt").images, a)
    pipe.recipe.steps = 1
    pipe.save_pretrained(folder)  # replacing an existing pipeline folder is allowed
    assert TiMPipeline.from_pretrained(folder).recipe.steps == 1


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("steps", 1_000_000_000, "steps=1000000000 is invalid; use at most 1000 steps"),
        ("steps", 0, "steps=0 is invalid; use at least 1 step"),
        ("steps", "4", 'steps = "4" is not an integer; write steps as an integer'),
        ("steps", True, "steps = true is not an integer"),
        ("steps", 2.5, "steps = 2.5 is not an integer"),
        ("class_names", 5, "class_names = 5 is not a list of strings"),
        ("class_names", "abc", 'class_names = "abc" is not a list of strings'),
        ("guidance_interval", 0.5, "guidance_interval = 0.5 is not a list of two finite numbers"),
        ("guidance_interval", [0, 1, 2], "guidance_interval = [0, 1, 2] is not a list of two finite numbers"),
        ("value_range", [0, math.inf], "value_range = [0, Infinity] is not a list of two finite numbers"),
        ("value_range", [math.nan, 1], "value_range = [NaN, 1] is not a list of two finite numbers"),
        ("value_range", [1, 0], "value_range=(1.0, 0.0) is invalid; use (low, high) with low < high"),
        ("value_range", None, "value_range = null is not a list of two finite numbers"),
        ("guidance_scale", "2", 'guidance_scale = "2" is not a finite number'),
        ("base_size", [4, "4"], 'base_size = [4, "4"] is not null or a list of two integers'),
        ("path_options", [], "path_options = [] is not an object"),
        ("height", None, "height = null is not an integer"),
    ],
)
def test_a_bad_recipe_json_is_one_line_naming_the_file_and_the_key(
    tmp_path: Path, key: str, value: object, message: str
) -> None:
    """recipe.json is user input: a wrong type or a value out of range never loads (nor gives a traceback)."""
    folder = TiMPipeline(tiny_model(in_channels=3), SamplingRecipe()).save_pretrained(tmp_path / "pipe")
    recipe = json.loads((folder / "recipe.json").read_text())
    (folder / "recipe.json").write_text(
        json.dumps(recipe | {key: value})
    )  # Infinity and NaN as Python writes them
    with pytest.raises(TimError) as error:
        TiMPipeline.load(folder)
    text = str(error.value)
    assert "\n" not in text and text.startswith(f"{folder / 'recipe.json'}: ") and message in text, text


def test_broken_pipeline_folders(tmp_path: Path) -> None:
    folder = TiMPipeline(tiny_model(in_channels=3), SamplingRecipe()).save_pretrained(tmp_path / "pipe")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(TimError, match="not empty and is not a pipeline folder"):
        TiMPipeline(tiny_model(in_channels=3), SamplingRecipe()).save_pretrained(tmp_path / "other")
    with pytest.raises(TimError, match="neither a pipeline folder"):
        TiMPipeline.load(tmp_path / "other")
    with pytest.raises(TimError, match="does not exist"):
        TiMPipeline.load(tmp_path / "missing")
    recipe = json.loads((folder / "recipe.json").read_text())
    (folder / "recipe.json").write_text(json.dumps(recipe | {"stepz": 3}))
    with pytest.raises(TimError, match=r"unknown keys \['stepz'\]"):
        TiMPipeline.from_pretrained(folder)
    (folder / "recipe.json").unlink()
    with pytest.raises(TimError, match="has no recipe.json"):
        TiMPipeline.from_pretrained(folder)
    (folder / "recipe.json").write_text(json.dumps(recipe))
    (folder / "model" / "model.safetensors").unlink()
    with pytest.raises(TimError, match=r"has no model/"):
        TiMPipeline.from_pretrained(folder)
    meta = json.loads((folder / "pipeline.json").read_text())
    (folder / "pipeline.json").write_text(json.dumps(meta | {"autoencoder": "copy"}))
    with pytest.raises(TimError, match="has no autoencoder/"):
        from tim.generation.folders import part_location

        part_location(folder, json.loads((folder / "pipeline.json").read_text()), "autoencoder")


def test_from_run_builds_the_recipe_from_the_config(digits_run: Path) -> None:
    pipe = TiMPipeline.from_run(digits_run)
    recipe = pipe.recipe
    assert (recipe.steps, recipe.guidance_scale, recipe.path) == (
        3,
        1.5,
        "linear",
    )  # sample.steps=[1,3], cfg 1.5
    assert recipe.class_names == [str(k) for k in range(10)] and pipe.num_classes == 10
    out = pipe(class_labels=list(range(10)), seed=0)
    assert len(out.images) == 10 and out.images[0].size == (8, 8) and out.nfe == 6
    from tim.training import load_run

    model, _ = load_run(digits_run)
    assert torch.equal(next(iter(pipe.model.state_dict().values())), next(iter(model.state_dict().values())))
    same = TiMPipeline.load(digits_run)(class_labels=list(range(10)), seed=0, output_type="pt").images
    assert torch.equal(same, pipe(class_labels=list(range(10)), seed=0, output_type="pt").images)


def native_demo():  # noqa: ANN201 - the script as a module
    spec = importlib.util.spec_from_file_location(
        "native_resolution_demo", ROOT / "scripts" / "native_resolution_demo.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_recipe_rules_reproduce_the_native_resolution_demo() -> None:
    """The recipe a demo run gets: shift sqrt(HW / 16^2) and RoPE scale 32 / max side above 32, as the script computed."""
    from tim.training.recipe import run_recipe_fields

    demo = native_demo()
    recipe = SamplingRecipe(**run_recipe_fields(demo.run_config(1.0, 10, [])))
    largest = 32  # the demo's largest training side (MAX_SIDE)
    for size in [(16, 16), (16, 32), (32, 16), (32, 32), *demo.UNSEEN]:
        assert recipe.shift_at(*size) == resolution_shift(*size, *demo.BASE)
        expected_rope = largest / max(size) if max(size) > largest else 1.0
        assert recipe.rope_scale_at(*size) == expected_rope
    assert math.isclose(recipe.shift_at(48, 48), 3.0) and recipe.rope_scale_at(16, 48) == 2 / 3


def test_recipe_validation_and_dtype_choice() -> None:
    with pytest.raises(TimError, match="shift_rule='sqrt_area' without base_size"):
        SamplingRecipe(shift_rule="sqrt_area")
    with pytest.raises(TimError, match="guidance_interval"):
        SamplingRecipe(guidance_interval=(0.5, 0.1))
    assert SamplingRecipe.from_dict(
        SamplingRecipe(base_size=(4, 4), shift_rule="sqrt_area").to_dict()
    ).base_size == (4, 4)
    assert resolve_dtype(None, "cpu") == torch.float32 and resolve_dtype("fp32", "cpu") == torch.float32
    with pytest.raises(TimError, match="on the CPU is not supported"):
        resolve_dtype("bf16", "cpu")
    with pytest.raises(TimError, match="unknown"):
        resolve_dtype("int8", "cpu")


class CountingTextEncoder:
    """A stand-in for tim.text.TextEncoder: features from character codes, counts its calls."""

    name, dim, max_length = "test", 12, 5

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        self.calls.append(list(prompts))
        codes = torch.zeros(len(prompts), self.max_length, self.dim)
        mask = torch.zeros(len(prompts), self.max_length, dtype=torch.bool)
        for i, p in enumerate(prompts):
            for j, ch in enumerate(p[: self.max_length]):
                codes[i, j] = torch.linspace(-1, 1, self.dim) * (ord(ch) % 7) / 7
                mask[i, j] = True
        return {"context": codes, "context_mask": mask}


def test_text_prompts_and_the_null_caption(fake_autoencoder: PixelShuffleAutoencoder) -> None:
    encoder = CountingTextEncoder()
    pipe = TiMPipeline(
        tiny_model(conditioning="text", text_dim=12),
        SamplingRecipe(guidance_scale=2.0, text_max_length=5),
        autoencoder=fake_autoencoder,
        text_encoder=encoder,
    )
    out = pipe(prompt=["red", "blue"], num_images_per_prompt=2, output_type="latent")
    assert out.prompts == ["red", "red", "blue", "blue"] and encoder.calls == [["red", "red", "blue", "blue"]]
    alone = pipe(prompt="blue", output_type="latent", seed=2).images
    assert torch.allclose(out.images[2], alone[0], atol=1e-6)
    encoder.calls.clear()
    empty = pipe(prompt=["", ""], output_type="latent").images  # the model's null caption, no encoder call
    assert encoder.calls == [] and empty.shape == (2, 4, 8, 8)


def test_unmasked_text_model_cuts_each_caption_to_its_length(
    fake_autoencoder: PixelShuffleAutoencoder,
) -> None:
    """The released T2I layout attends padding: captions are cut to their real tokens, batched by length."""
    from tim.samplers import sample

    encoder = CountingTextEncoder()
    model = tiny_model(conditioning="text", text_dim=12, mask_context=False)
    pipe = TiMPipeline(
        model, SamplingRecipe(steps=2, text_max_length=5), autoencoder=fake_autoencoder, text_encoder=encoder
    )
    prompts = ["red", "a", "blue", "tan", ""]
    out = pipe(prompt=prompts, output_type="latent", seed=0, batch_size=4)
    assert out.prompts == prompts and out.seeds == [0, 1, 2, 3, 4]
    for i, p in enumerate(prompts):
        assert torch.allclose(
            out.images[i], pipe(prompt=p, output_type="latent", seed=i).images[0], atol=1e-6
        )
    features = encoder(["blue"])
    noise = torch.randn(4, 8, 8, generator=torch.Generator().manual_seed(2))[None]
    cut = {"context": features["context"][:, :4], "context_mask": features["context_mask"][:, :4]}
    expected = sample(model, noise, steps=2, cond=cut, generator=torch.Generator().manual_seed(0)).x
    assert torch.allclose(out.images[2], expected[0], atol=1e-6)


def test_a_missing_relative_path_never_goes_to_the_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys
    import types

    calls = []
    fake = types.SimpleNamespace(
        snapshot_download=lambda repo: calls.append(repo) or (_ for _ in ()).throw(OSError("offline"))
    )
    monkeypatch.setitem(sys.modules, "huggingface_hub", fake)
    with pytest.raises(TimError, match="pipelines/missing does not exist"):
        TiMPipeline.load("pipelines/missing")
    assert calls == []
    with pytest.raises(TimError, match=r"cannot fetch pipeline owner/name from the Hub \(offline\)"):
        TiMPipeline.from_pretrained("hf:owner/name")
    assert calls == ["owner/name"]


def test_half_precision_path_runs_end_to_end(fake_autoencoder: PixelShuffleAutoencoder) -> None:
    """The GPU dtype path (network in bf16, state in float64, decode in float32), exercised on the CPU via cast()."""
    full = latent_pipeline(fake_autoencoder, steps=2)
    half = latent_pipeline(PixelShuffleAutoencoder(), steps=2).cast(torch.bfloat16)
    assert half.dtype == torch.bfloat16
    a = full(class_labels=[1, 2], output_type="pt").images
    b = half(class_labels=[1, 2], output_type="pt").images
    assert b.dtype == torch.float32 and torch.isfinite(b).all() and (a - b).abs().max() < 0.1


def test_a_failed_save_leaves_the_old_folder_and_no_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = TiMPipeline(tiny_model(in_channels=3), SamplingRecipe(steps=2))
    folder = pipe.save_pretrained(tmp_path / "pipe")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    import tim.models

    def disk_full(model: object, directory: Path) -> None:
        (Path(directory)).mkdir(parents=True)
        (Path(directory) / "model.safetensors").write_bytes(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tim.models, "save_pretrained", disk_full)
    pipe.recipe.steps = 7
    with pytest.raises(TimError, match="No space left on device.*nothing was changed; free disk space"):
        pipe.save_pretrained(folder)
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert TiMPipeline.from_pretrained(folder).recipe.steps == 2
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_damaged_weight_in_a_saved_pipeline_folder_is_refused_before_loading(tmp_path: Path) -> None:
    """A flipped bit or a truncated weight file in a saved pipeline folder is one line, not garbage.

    save_pretrained records the size and SHA-256 of the network's files in pipeline.json and
    from_pretrained checks them before loading.
    """
    from tim.errors import TimError
    from tim.generation import TiMPipeline

    pipe = TiMPipeline.load("bundled:digits")
    pipe.save_pretrained(tmp_path / "p")
    meta = json.loads((tmp_path / "p" / "pipeline.json").read_text())
    assert sorted(meta["files"]) == ["model/config.json", "model/model.safetensors"]
    TiMPipeline.from_pretrained(tmp_path / "p")  # intact: loads
    weights = tmp_path / "p" / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(
        TimError, match=r"model.safetensors is damaged \(SHA-256 differs from pipeline.json\)"
    ):
        TiMPipeline.from_pretrained(tmp_path / "p")
    weights.write_bytes(bytes(data[:-10]))
    with pytest.raises(TimError, match="damaged or truncated"):
        TiMPipeline.from_pretrained(tmp_path / "p")


def test_from_released_checks_the_file_before_loading_the_autoencoder(tmp_path: Path) -> None:
    """A file that is not the preset's weights is refused by its header, before the autoencoder loads."""
    from safetensors.torch import save_file

    from tim.errors import TimError
    from tim.generation import TiMPipeline

    file = tmp_path / "not-tim.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(file))
    with pytest.raises(TimError) as caught:  # the autoencoder folder does not even exist
        TiMPipeline.from_released(file, preset="TiM-XL/2", autoencoder=tmp_path / "no-such-autoencoder")
    assert "not-tim.safetensors" in str(caught.value) and "autoencoder" not in str(caught.value).split(";")[0]


def test_a_run_writes_its_recipe_and_from_run_reads_it(digits_run: Path, tmp_path: Path) -> None:
    """Training writes recipe.json beside config.json; from_run uses it (not the dataset's name), and a
    run without one (trained before runs wrote it) gets the same recipe from its config."""
    import shutil

    from tim.errors import TimError
    from tim.generation import TiMPipeline
    from tim.training import load_config
    from tim.training.recipe import run_recipe

    stored = json.loads((digits_run / "recipe.json").read_text())
    assert stored == run_recipe(load_config(str(digits_run / "config.json")))
    assert stored["class_names"] == [str(k) for k in range(10)]
    run = tmp_path / "run"
    shutil.copytree(digits_run, run)
    assert TiMPipeline.from_run(run).recipe == TiMPipeline.from_run(digits_run).recipe
    (run / "recipe.json").write_text(json.dumps({**stored, "steps": 3, "guidance_scale": 1.5}))
    recipe = TiMPipeline.from_run(run).recipe
    assert (recipe.steps, recipe.guidance_scale) == (3, 1.5)
    (run / "recipe.json").unlink()  # an older run: derived from its config, as before
    assert TiMPipeline.from_run(run).recipe == TiMPipeline.from_run(digits_run).recipe
    (run / "recipe.json").write_text(json.dumps({**stored, "steps": "4"}))
    with pytest.raises(TimError, match=r"recipe.json: steps = \"4\" is not an integer"):
        TiMPipeline.from_run(run)
    (run / "recipe.json").write_text("[1, 2]")
    with pytest.raises(TimError, match="is not a JSON object"):
        TiMPipeline.from_run(run)
