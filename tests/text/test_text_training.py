"""A tiny text-conditioned TiM: training on captioned scenes, resume, load_run and prompt sampling on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.text_models import tiny_bert
from tim.errors import TimError
from tim.models import from_pretrained
from tim.samplers import sample
from tim.training import load_config, load_run, train
from tim.training.text import GRID_PROMPTS_FILE, run_text_encoder


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_bert(tmp_path_factory.mktemp("t2i_encoder") / "bert", hidden=32))


@pytest.fixture(autouse=True)
def _one_thread():  # noqa: ANN202
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical comparisons need one reduction order
    yield
    torch.set_num_threads(threads)


def tiny_t2i(bert: str, *overrides: str):  # noqa: ANN201
    """scenes_t2i shrunk to seconds: 24x24 scenes, a 2-block 32-wide TiM, the tiny BERT encoder."""
    return load_config(
        "scenes_t2i",
        [
            f"data.text_encoder={bert}",
            "data.num_images=32",
            "data.image_size=24",
            "data.max_text_length=12",
            "model.input_size=24",
            "model.hidden_size=32",
            "model.depth=2",
            "model.num_heads=2",
            "model.modulation_rank=16",
            "model.encoder_depth=1",
            "model.text_dim=32",
            "train.batch_size=8",
            "train.steps=4",
            "train.checkpoint_every=2",
            "train.log_every=1",
            "train.progress=false",
            "train.device=cpu",
            "train.time_limit=0",
            "optim.warmup_steps=0",
            "sample.num=4",
            "sample.steps=1,2",
            *overrides,
        ],
    )


def test_text_run_trains_saves_null_prompt_and_samples_from_prompts(tmp_path: Path, bert: str) -> None:
    cfg = tiny_t2i(bert)
    run = train(cfg, tmp_path / "run")
    model, loaded_cfg = load_run(run)
    encoder = run_text_encoder(loaded_cfg)
    assert encoder is not None and encoder.dim == 32 and encoder.max_length == 12
    # The null caption is the encoder's features of "" and was saved with the weights.
    torch.testing.assert_close(model.cond_embedder.null_context, encoder.null_context())
    exported = from_pretrained(run / "pretrained")  # the exported EMA folder carries it too
    assert torch.equal(exported.cond_embedder.null_context, model.cond_embedder.null_context)
    assert (run / "samples" / "step_00000004_nfe_1.png").is_file()
    rows = (run / "samples" / GRID_PROMPTS_FILE).read_text().splitlines()
    assert len(rows) == 2 and all(line.split(": ", 1)[1] for line in rows)
    prompts = ["a red circle", "two blue squares", "a green triangle left of a yellow circle"]
    cond = encoder(prompts)
    noise = torch.randn(3, *model.sample_shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        guided = sample(model, noise, steps=2, cond=cond, uncond=model.null_cond(cond), guidance_scale=2.0)
        plain = sample(model, noise, steps=2, cond=cond)
    assert guided.x.shape == (3, 3, 24, 24) and torch.isfinite(guided.x).all() and guided.nfe == 4
    assert not torch.equal(guided.x, plain.x)  # the prompts and the null prompt give different predictions
    # encoder([""]) is exactly the model's null condition, so CFG against it is no guidance at all.
    empty = encoder([""] * 3)
    with torch.no_grad():
        same = sample(model, noise, steps=2, cond=empty, uncond=model.null_cond(empty), guidance_scale=3.0)
        unguided = sample(model, noise, steps=2, cond=empty)
    torch.testing.assert_close(same.x, unguided.x)


def test_pooled_text_run_round_trips(tmp_path: Path, bert: str) -> None:
    """model.pooled_text=true trains, and its pooled caption path survives load_run and the export."""
    run = train(tiny_t2i(bert, "model.pooled_text=true", "sample.num=0"), tmp_path / "run")
    model, cfg = load_run(run)
    exported = from_pretrained(run / "pretrained")
    assert model.config.pooled_text and exported.config.pooled_text
    pooled = model.cond_embedder.pool_mlp.fc_out.weight
    assert pooled.abs().sum() > 0  # trained, not the zero it would be if the path were dropped
    torch.testing.assert_close(exported.cond_embedder.pool_mlp.fc_out.weight, pooled)
    encoder = run_text_encoder(cfg)
    cond = encoder(["a red circle", "two blue squares"])
    x_t, t = torch.randn(2, *model.sample_shape, generator=torch.Generator().manual_seed(0)), torch.ones(2)
    with torch.no_grad():  # the caption changes the output through the pooled vector alone too
        for block in model.blocks:
            block.cross_attn.proj.weight.zero_()
        swapped = {key: value.flip(0) for key, value in cond.items()}
        assert not torch.allclose(model(x_t, t, 0 * t, **cond)[0], model(x_t, t, 0 * t, **swapped)[0])


def test_text_run_resumes_bit_identically(tmp_path: Path, bert: str) -> None:
    straight = train(tiny_t2i(bert, "sample.num=0"), tmp_path / "straight")
    half = train(tiny_t2i(bert, "sample.num=0", "train.steps=2"), tmp_path / "resumed")
    assert half.exists()
    resumed = train(tiny_t2i(bert, "sample.num=0"), tmp_path / "resumed")
    a, _ = load_run(straight, which="model")
    b, _ = load_run(resumed, which="model")
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.text_dim=48"],
            r"model.text_dim=48 but the text encoder .* gives 32-d features; set model.text_dim=32",
        ),
        (
            [
                "model.preset=TiM-digits",
                "model.in_channels=3",
                "model.num_classes=0",
                "model.conditioning=class",
            ],
            r"the data carries caption features but model.conditioning='class'; set model.conditioning=text",
        ),
    ],
)
def test_model_and_captions_must_agree(tmp_path: Path, bert: str, overrides: list[str], message: str) -> None:
    with pytest.raises(TimError, match=message):
        train(tiny_t2i(bert, *overrides), tmp_path / "run")


def test_text_model_without_captions(tmp_path: Path) -> None:
    cfg = load_config(
        "digits",
        [
            "model.conditioning=text",
            "model.text_dim=8",
            "train.steps=1",
            "train.device=cpu",
            "model.num_classes=0",
        ],
    )
    with pytest.raises(
        TimError, match=r"needs captions, but the data has none; set data.text_encoder=minilm"
    ):
        train(cfg, tmp_path / "run")


def test_documented_text_to_image_block_runs() -> None:
    """The Python example of docs/text-to-image.md trains a step and samples."""
    import re

    page = (Path(__file__).resolve().parents[2] / "docs" / "text-to-image.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL) if "t2i = sample" in b]
    namespace: dict = {}
    exec(compile(block, "docs/text-to-image.md", "exec"), namespace)  # noqa: S102 - our own documentation
    assert namespace["t2i"].shape == (2, 3, 32, 32) and torch.isfinite(namespace["t2i"]).all()
    assert bool(namespace["out"].loss.isfinite())


@pytest.mark.slow
def test_scenes_t2i_preset_trains_with_minilm(tmp_path: Path) -> None:
    """The real preset (4,096 scenes, MiniLM, TiM-scenes at batch 64) for two steps; about a minute on 2 cores."""
    cfg = load_config(
        "scenes_t2i",
        [
            "train.steps=2",
            "train.progress=false",
            "train.time_limit=0",
            "sample.num=4",
            "sample.steps=1",
            "train.device=cpu",
        ],
    )
    run = train(cfg, tmp_path / "run")
    model, loaded = load_run(run)
    encoder = run_text_encoder(loaded)
    assert (
        encoder.name == "minilm" and encoder.dim == model.config.text_dim == 384 and encoder.max_length == 16
    )
    torch.testing.assert_close(model.cond_embedder.null_context, encoder.null_context())
    assert (run / "samples" / GRID_PROMPTS_FILE).read_text().count("\n") == 2
