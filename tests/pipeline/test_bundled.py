"""Bundled models (tim.pretrained, `tim models`): addressing, 16-bit storage, integrity, listing.

The machinery is tested on a tiny pipeline installed into a temporary bundled root; the models that
ship with the package are checked for what a user relies on (they verify, load, sample and carry a
complete card). How well they generate is the slow test tests/pipeline/test_bundled_scores.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from helpers.cli import run_cli
from helpers.pipeline import tiny_model
from tim import pretrained
from tim.cli.models import render_card, store_16bit, write_card
from tim.errors import TimError
from tim.generation import SamplingRecipe, TiMPipeline

pytest.importorskip("safetensors")

CARD_KEYS = (
    "name",
    "command",
    "steps",
    "images",
    "train_seconds",
    "machine",
    "recipe",
    "parameters",
    "files",
)


@pytest.fixture
def bundled_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bundled root with one model, ``tiny``: a class-conditional TiM-tiny stored in fp16."""
    root = tmp_path / "pretrained"
    folder = root / "tiny"
    TiMPipeline(tiny_model(z_dim=0, in_channels=1), SamplingRecipe(steps=2)).save_pretrained(folder)
    store_16bit(folder / "model" / "model.safetensors", torch.float16)
    write_card(folder, {"name": "tiny", "description": "a test model", "steps": 10, "images": 320})
    monkeypatch.setattr(pretrained, "ROOT", root)
    return root


def test_bundled_name_loads_16bit_weights_as_float32(bundled_root: Path) -> None:
    pipe = TiMPipeline.load("bundled:tiny")
    assert pipe.dtype == torch.float32
    reference = tiny_model(z_dim=0, in_channels=1)
    for (name, loaded), original in zip(
        pipe.model.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        if loaded.is_floating_point():  # fp16 storage: equal to the float32 original up to fp16 rounding
            torch.testing.assert_close(loaded, original.half().float(), rtol=0, atol=0, msg=name)
    images = pipe(class_labels=[1, 2], steps=2, seed=0, output_type="pt").images
    assert images.shape[0] == 2 and torch.isfinite(images).all()


def test_unknown_name_lists_the_installed_ones(bundled_root: Path) -> None:
    with pytest.raises(TimError, match=r"no bundled model 'nope'.*bundled:tiny"):
        TiMPipeline.load("bundled:nope")
    code, _, err = run_cli(["sample", "--checkpoint", "bundled:nope", "--steps", "1", "--out", "x"])
    assert code == 2 and err.count("\n") == 1 and "bundled:tiny" in err


@pytest.mark.parametrize("damage", ["truncate", "flip", "remove", "card"])
def test_damaged_bundled_file_is_one_line_naming_it(bundled_root: Path, damage: str, tmp_path: Path) -> None:
    weights = bundled_root / "tiny" / "model" / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[-7] ^= 0x10
        weights.write_bytes(bytes(data))
    elif damage == "remove":
        weights.unlink()
    else:
        (bundled_root / "tiny" / "card.json").write_text("{not json")
    code, out, err = run_cli(
        ["sample", "--checkpoint", "bundled:tiny", "--steps", "1", "--out", str(tmp_path / "o")]
    )
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "reinstall" in err and ("model.safetensors" in err or "card.json" in err)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.npz"))


def test_cli_samples_and_lists_bundled(bundled_root: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(
        [
            "sample",
            "--checkpoint",
            "bundled:tiny",
            "--class",
            "1",
            "--steps",
            "1,2",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert code == 0, err
    assert (tmp_path / "s" / "steps_001.npz").is_file() and (tmp_path / "s" / "steps_002.npz").is_file()
    code, out, _ = run_cli(["models"])
    assert code == 0 and "bundled:tiny" in out and "a test model" in out and "not scored yet" in out
    code, _, err = run_cli(["sample", "--checkpoint", "bundled:tiny", "--preset", "TiM-XL/2", "--out", "x"])
    assert code == 2 and "--preset" in err


def test_card_lists_every_file_with_its_hash(bundled_root: Path) -> None:
    card = json.loads((bundled_root / "tiny" / "card.json").read_text())
    assert set(card["files"]) == {
        "pipeline.json",
        "recipe.json",
        "model/config.json",
        "model/model.safetensors",
    }
    assert "# bundled:tiny" in render_card(card)
    assert (bundled_root / "tiny" / "model" / "model.safetensors").stat().st_mode & 0o777 == 0o644


def test_a_card_entry_outside_the_folder_is_refused(bundled_root: Path) -> None:
    card_path = bundled_root / "tiny" / "card.json"
    card = json.loads(card_path.read_text())
    card["files"]["../../etc/passwd"] = {"bytes": 1, "sha256": "0"}
    card_path.write_text(json.dumps(card))
    with pytest.raises(TimError, match="bad entry"):
        pretrained.resolve("bundled:tiny")


@pytest.mark.parametrize("name", pretrained.available())
def test_shipped_models_verify_load_and_have_cards(name: str, tmp_path: Path) -> None:
    folder = pretrained.resolve(f"bundled:{name}")  # sizes and SHA-256 against the card
    card = pretrained.read_card(folder)
    assert all(key in card for key in CARD_KEYS), sorted(set(CARD_KEYS) - set(card))
    assert card["scores"], "a shipped model is scored (tim models score)"
    assert sum(e["bytes"] for e in card["files"].values()) < 10 * 2**20
    weights = folder / "model" / "model.safetensors"
    from tim.models.weights import read_safetensors

    tensors, _ = read_safetensors(weights)
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} <= {torch.float16, torch.bfloat16}
    pipe = TiMPipeline.load(f"bundled:{name}")
    assert pipe.dtype == torch.float32


def test_shipped_models_are_the_scenes_and_digits_ones() -> None:
    assert {"scenes", "digits"} <= set(pretrained.available())
