"""Captioned data: image folders with captions.jsonl or .txt sidecars, the synthetic scenes, bad inputs."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers.text_models import tiny_bert
from tim.data import DataConfig, build_data_source
from tim.data.images import images_to_unit_range
from tim.errors import TimError
from tim.text import TextEncoder


@pytest.fixture(scope="module")
def bert(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tiny_bert(tmp_path_factory.mktemp("caption_encoder") / "bert"))


def _image(path: Path, value: int, size: int = 8) -> None:
    """A flat RGB image whose pixels all equal ``value`` (so a batch row names its file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, dtype=np.uint8)).save(path)


def _jsonl_folder(root: Path, count: int = 6) -> dict[int, str]:
    captions = {}
    lines = []
    for k in range(count):
        _image(root / "img" / f"{k}.png", 10 * k)
        captions[10 * k] = f"picture number {k}"
        lines.append(json.dumps({"file": f"img/{k}.png", "caption": captions[10 * k]}))
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return captions


def _value(x_row: torch.Tensor) -> int:
    """The stored pixel value of a flat image row mapped back from [-1, 1]."""
    return round(float((x_row[0, 0, 0] + 1) * 255 / 2))


def _check_rows(batch: dict, captions: dict[int, str], encoder: TextEncoder) -> None:
    assert set(batch) == {"x", "context", "context_mask"}
    for row in range(len(batch["x"])):
        expected = encoder([captions[_value(batch["x"][row])]])
        torch.testing.assert_close(batch["context"][row], expected["context"][0])
        assert torch.equal(batch["context_mask"][row], expected["context_mask"][0])


def test_jsonl_folder_pairs_each_image_with_its_caption(tmp_path: Path, bert: str) -> None:
    captions = _jsonl_folder(tmp_path)
    source = build_data_source(
        DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert, max_text_length=10),
        batch_size=4,
    )
    info = source.info
    assert info.shape == (3, 8, 8) and info.num_classes == 0 and info.num_items == 6
    assert (
        info.text_dim == 32
        and set(info.text.captions) == set(captions.values())
        and info.text.max_length == 10
    )
    assert info.text.null_context.shape == (2, 32)
    reference = TextEncoder(bert, max_length=10)
    for _ in range(3):  # crosses an epoch boundary
        batch = source.next_batch()
        assert batch["context"].shape == (4, 10, 32) and batch["context"].dtype == torch.float32
        _check_rows(batch, captions, reference)
    stats = source.encoder.cache_info()
    assert (
        stats.misses == 7 and stats.hits >= 12
    )  # six captions + "" encoded once, every batch served from the cache


def test_sidecar_captions_and_uncaptioned_images(tmp_path: Path, bert: str) -> None:
    captions = {}
    for k in range(5):
        _image(tmp_path / f"{k}.png", 20 * k)
        if k != 3:
            captions[20 * k] = f"sidecar {k}"
            (tmp_path / f"{k}.txt").write_text(captions[20 * k] + "\n")
    with pytest.warns(UserWarning, match=r"1 of 5 images .* skipped, e.g. .*3\.png.*no caption"):
        source = build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert, max_bad_fraction=0.25),
            batch_size=4,
        )
    assert source.info.num_items == 4 and len(source.skipped_files) == 1
    _check_rows(source.next_batch(), captions, TextEncoder(bert))
    with pytest.raises(TimError, match="max_bad_fraction"):
        build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert), batch_size=4
        )


def test_captions_file_with_byte_order_mark(tmp_path: Path, bert: str) -> None:
    _image(tmp_path / "a.png", 0)
    (tmp_path / "captions.jsonl").write_text(
        '{"file": "a.png", "caption": "with a BOM"}\n', encoding="utf-8-sig"
    )
    source = build_data_source(
        DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert), batch_size=1
    )
    assert source.info.text.captions == ("with a BOM",)


def test_empty_caption_is_skipped(tmp_path: Path, bert: str) -> None:
    _image(tmp_path / "a.png", 0)
    _image(tmp_path / "b.png", 50)
    (tmp_path / "captions.jsonl").write_text(
        '{"file": "a.png", "caption": "kept"}\n{"file": "b.png", "caption": " "}\n'
    )
    with pytest.warns(UserWarning, match=r"1 of 2 images .*b\.png. \(empty caption on line 2"):
        source = build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert, max_bad_fraction=0.5),
            batch_size=1,
        )
    assert source.info.text.captions == ("kept",)


def test_several_captions_per_image_are_several_items(tmp_path: Path, bert: str) -> None:
    _image(tmp_path / "a.png", 0)
    _image(tmp_path / "b.png", 100)
    lines = [
        {"file": "a.png", "caption": "first"},
        {"file": "a.png", "caption": "second"},
        {"file": "b.png", "caption": "third"},
    ]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    source = build_data_source(
        DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert), batch_size=3
    )
    assert source.info.num_items == 3 and source.info.text.captions == ("first", "second", "third")


def test_resume_and_rank_split_are_exact(tmp_path: Path, bert: str) -> None:
    _jsonl_folder(tmp_path, count=8)
    cfg = DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert)
    first = build_data_source(cfg, batch_size=4, seed=3)
    for _ in range(3):
        first.next_batch()
    state = first.state_dict()
    assert all(isinstance(v, int) for v in state.values())
    resumed = build_data_source(cfg, batch_size=4, seed=3)
    resumed.load_state_dict(state)
    a, b = first.next_batch(), resumed.next_batch()
    assert all(torch.equal(a[k], b[k]) for k in a)
    whole = build_data_source(cfg, batch_size=4, seed=1).next_batch()
    halves = [build_data_source(cfg, batch_size=4, seed=1, rank=r, world_size=2).next_batch() for r in (0, 1)]
    for key in whole:
        assert torch.equal(whole[key], torch.cat([h[key] for h in halves]))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"file": "img/0.png", "caption": "ok"}\nnot json at all\n', r"line 2 is not JSON"),
        ('{"file": "img/0.png"}\n', r"line 1 needs string \"file\" and \"caption\""),
        ('["img/0.png", "a caption"]\n', r"line 1 needs string"),
    ],
)
def test_bad_captions_file_lines_are_named(tmp_path: Path, bert: str, text: str, message: str) -> None:
    _image(tmp_path / "img" / "0.png", 0)
    (tmp_path / "captions.jsonl").write_text(text)
    with pytest.raises(TimError, match=message) as error:
        build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert), batch_size=1
        )
    assert "\n" not in str(error.value) and '{"file"' in str(error.value)


@pytest.mark.parametrize(
    "name",
    [
        "../secret.png",  # a real image beside the data root
        "img/../../secret.png",
        "ABSOLUTE",  # the same image by its absolute path
        "img/link.png",  # a symbolic link inside the root that leads out of it
        "outside/secret.png",  # a linked folder inside the root that leads out of it
    ],
)
def test_captions_naming_files_outside_the_data_root_are_refused(
    tmp_path: Path, bert: str, name: str
) -> None:
    root = tmp_path / "data"
    _jsonl_folder(root, count=2)
    secret = tmp_path / "secret.png"
    _image(secret, 200)
    (root / "img" / "link.png").symlink_to(secret)
    (root / "outside").symlink_to(tmp_path, target_is_directory=True)
    name = str(secret) if name == "ABSOLUTE" else name
    with (root / "captions.jsonl").open("a") as handle:
        handle.write(json.dumps({"file": name, "caption": "stolen"}) + "\n")
    with pytest.raises(TimError) as error:
        build_data_source(
            DataConfig(name="image_folder", root=str(root), text_encoder=bert, max_bad_fraction=0.9),
            batch_size=1,
        )
    message = str(error.value)
    assert "\n" not in message and f"captions.jsonl' line 3 names {name!r}" in message, message
    assert f"is not inside data.root '{root}'" in message and "relative to data.root" in message, message


def test_captions_naming_files_through_a_link_inside_the_root_are_kept(tmp_path: Path, bert: str) -> None:
    """A link that stays inside the data root is an ordinary file of it."""
    _jsonl_folder(tmp_path, count=2)
    (tmp_path / "img" / "again.png").symlink_to(tmp_path / "img" / "0.png")
    with (tmp_path / "captions.jsonl").open("a") as handle:
        handle.write(json.dumps({"file": "img/again.png", "caption": "the first one again"}) + "\n")
    source = build_data_source(
        DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert), batch_size=3
    )
    assert source.info.num_items == 3 and "the first one again" in source.info.text.captions


def test_captions_naming_missing_files_are_reported(tmp_path: Path, bert: str) -> None:
    _jsonl_folder(tmp_path, count=3)
    with (tmp_path / "captions.jsonl").open("a") as handle:
        handle.write(json.dumps({"file": "img/gone.png", "caption": "lost"}) + "\n")
    with pytest.raises(TimError, match=r"gone\.png.*line 4 of captions\.jsonl.*max_bad_fraction"):
        build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert), batch_size=2
        )
    with pytest.warns(UserWarning, match=r"1 of 4 images .*gone\.png"):
        source = build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert, max_bad_fraction=0.5),
            batch_size=2,
        )
    assert source.info.num_items == 3 and "lost" not in source.info.text.captions


def test_folder_without_any_caption(tmp_path: Path, bert: str) -> None:
    _image(tmp_path / "a.png", 0)
    with pytest.raises(TimError, match=r"no image under .* has a caption; write .*captions\.jsonl"):
        build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert), batch_size=1
        )


def test_scenes_source_carries_caption_features(bert: str) -> None:
    from tim.data.scenes import render_scenes

    source = build_data_source(DataConfig(name="scenes", text_encoder=bert, num_images=24), batch_size=6)
    images, captions, _ = render_scenes(24, seed=0, size=32)
    assert source.info.shape == (3, 32, 32) and source.info.num_items == 24
    assert set(source.info.text.captions) == set(captions)
    peek = copy.deepcopy(source.inner)
    expected = peek.next_batch()
    batch = source.next_batch()
    assert torch.equal(batch["x"], expected["x"]) and batch["x"].min() >= -1 and batch["x"].max() <= 1
    assert batch["x"].min() == -1  # black background
    texts = [source.info.text.captions[i] for i in expected["y"].tolist()]
    torch.testing.assert_close(batch["context"], TextEncoder(bert)(texts)["context"])
    # The stored pixels are the renderer's images, in [-1, 1].
    stored = images_to_unit_range(images.transpose(0, 3, 1, 2))
    assert any(torch.equal(batch["x"][0], image) for image in stored)
    plain = build_data_source(DataConfig(name="scenes", num_images=8), batch_size=4).next_batch()
    assert set(plain) == {"x"}


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"name": "digits", "text_encoder": "minilm"}, r"data.text_encoder='minilm' needs captioned data"),
        ({"name": "scenes", "hflip": True}, r"hflip=true mirrors scenes"),
        ({"name": "scenes", "channels": 1}, r"data.channels=1 but the scenes are RGB"),
        ({"name": "scenes", "max_text_length": 0}, r"data.max_text_length=0 must be >= 1"),
    ],
)
def test_config_errors(config: dict, message: str) -> None:
    with pytest.raises(TimError, match=message):
        DataConfig(**config)


def test_unknown_text_encoder_folder(tmp_path: Path) -> None:
    _jsonl_folder(tmp_path, count=1)
    with warnings.catch_warnings(), pytest.raises(TimError, match=r"neither 'minilm' nor a local folder"):
        build_data_source(
            DataConfig(name="image_folder", root=str(tmp_path), text_encoder=str(tmp_path / "no")),
            batch_size=1,
        )


def test_bucketed_captioned_folder(tmp_path: Path, bert: str) -> None:
    captions = {}
    for k, (h, w) in enumerate([(8, 8), (8, 8), (8, 12), (8, 12)]):
        path = tmp_path / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((h, w, 3), 30 * k, dtype=np.uint8)).save(path)
        captions[30 * k] = f"bucket image {k}"
        path.with_suffix(".txt").write_text(captions[30 * k])
    source = build_data_source(
        DataConfig(name="image_folder", root=str(tmp_path), text_encoder=bert, bucketed=True), batch_size=2
    )
    assert source.info.sizes == ((8, 8), (8, 12)) and source.info.text_dim == 32
    reference = TextEncoder(bert)
    for _ in range(4):
        batch = source.next_batch()
        assert batch["x"].shape[2:] in ((8, 8), (8, 12)) and len(batch["context"]) == len(batch["x"])
        _check_rows(batch, captions, reference)
