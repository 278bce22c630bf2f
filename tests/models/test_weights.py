"""save_pretrained / from_pretrained: config.json + model.safetensors, bit-identical and strict."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
import torch

from helpers.safetensors_files import edit_header
from tim.errors import TimError
from tim.models import TIM_PRESETS, TiM, build_model, from_pretrained, save_pretrained


def perturbed(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def assert_identical(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def test_round_trip_is_bit_identical(tmp_path: Path) -> None:
    model = perturbed(build_model("TiM-tiny"))
    save_pretrained(model, tmp_path / "tiny")
    assert sorted(p.name for p in (tmp_path / "tiny").iterdir()) == ["config.json", "model.safetensors"]
    loaded = from_pretrained(tmp_path / "tiny")
    assert isinstance(loaded, TiM) and loaded.config == model.config and not loaded.training
    assert_identical(model, loaded)
    x, t, r, y = torch.randn(2, 4, 8, 8), torch.rand(2), torch.zeros(2), torch.tensor([3, 10])
    assert torch.equal(model(x, t, r, y=y), loaded(x, t, r, y=y))


def test_round_trip_text_model_keeps_null_caption(tmp_path: Path) -> None:
    model = perturbed(build_model("TiM-tiny", conditioning="text", text_dim=12))
    model.set_null_context(torch.randn(3, 12))
    save_pretrained(model, tmp_path)
    loaded = from_pretrained(tmp_path)
    assert loaded.cond_embedder.null_context.shape == (3, 12)
    assert_identical(model, loaded)


def test_round_trip_mlp(tmp_path: Path) -> None:
    model = perturbed(build_model("MLP-toy", num_classes=4))
    save_pretrained(model, tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["model_type"] == "TiMMLP" and meta["config"]["num_classes"] == 4
    assert_identical(model, from_pretrained(tmp_path))


def test_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(TimError, match="config.json"):
        from_pretrained(tmp_path / "nowhere")
    save_pretrained(build_model("TiM-tiny"), tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["config"]["depth"] = 3
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(TimError, match=r"missing \d+ \[blocks\.2\.") as info:
        from_pretrained(tmp_path)
    assert "unexpected 0 []" in str(info.value)
    meta["config"]["colour"] = "red"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(TimError, match="unknown TiMConfig keys"):
        from_pretrained(tmp_path)
    meta["model_type"] = "ResNet"
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(TimError, match="model_type"):
        from_pretrained(tmp_path)


def test_config_dict_round_trip() -> None:
    for config in TIM_PRESETS.values():
        assert type(config).from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert dataclasses.replace(TIM_PRESETS["TiM-tiny"], rope_scale=0.5).to_dict()["rope_scale"] == 0.5


# ------------------------------------------------------------------------------------------------
# Untrusted files: the header, the config and the size are checked before anything large happens.


def no_tensor_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any read of tensor data (safetensors.safe_open) fail the test."""
    import safetensors

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tensor data was read before the header was checked")

    monkeypatch.setattr(safetensors, "safe_open", refuse)


def test_integer_relabelled_tensor_is_refused_from_the_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = save_pretrained(build_model("TiM-tiny"), tmp_path)
    edit_header(folder / "model.safetensors", lambda h: h["final_layer.linear.weight"].update(dtype="I32"))
    no_tensor_reads(monkeypatch)
    with pytest.raises(TimError) as info:
        from_pretrained(folder)
    message = str(info.value)
    assert "\n" not in message and "model.safetensors" in message
    assert "tensor final_layer.linear.weight" in message and "stored as I32" in message
    assert "floating-point" in message


def test_huge_declared_tensor_is_refused_before_it_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An 8 GiB tensor in the header (the file really that long, sparse) is refused by key, unread."""
    folder = save_pretrained(build_model("TiM-tiny"), tmp_path)
    weights = folder / "model.safetensors"

    def add_huge(header: dict) -> None:
        end = max(entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__")
        header["huge"] = {"dtype": "F32", "shape": [2**31], "data_offsets": [end, end + 2**33]}

    edit_header(weights, add_huge, extra_bytes=2**33)
    no_tensor_reads(monkeypatch)
    with pytest.raises(TimError, match=r"unexpected 1 \[huge\]"):
        from_pretrained(folder)
    os.truncate(weights, weights.stat().st_size - 2**33)  # the same header, the data cut off
    with pytest.raises(TimError, match=r"tensor 'huge' has data_offsets \[\d+, \d+\] outside the file"):
        from_pretrained(folder)


def test_misshaped_huge_tensor_is_refused_by_shape(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_pretrained(build_model("TiM-tiny"), tmp_path)
    weights = folder / "model.safetensors"

    def grow(header: dict) -> None:
        entry = header["final_layer.linear.weight"]
        start = entry["data_offsets"][0]
        entry.update(shape=[2**20, 2**10], data_offsets=[start, start + 2**32])

    edit_header(weights, grow)
    with pytest.raises(TimError, match="not a valid safetensors file.*final_layer.linear.weight"):
        from_pretrained(folder)  # offsets overlap and run past the file: refused as corrupt
    no_tensor_reads(monkeypatch)
    with pytest.raises(TimError, match="header length"):
        (folder / "model.safetensors").write_bytes((2**40).to_bytes(8, "little") + b"{}")
        from_pretrained(folder)


def test_config_json_that_is_not_an_object_is_one_line(tmp_path: Path) -> None:
    folder = save_pretrained(build_model("TiM-tiny"), tmp_path)
    for text, kind in (("[1, 2]", "list"), ('"TiM"', "string"), ("null", "null")):
        (folder / "config.json").write_text(text)
        with pytest.raises(TimError, match=f"config.json holds a JSON {kind}, not an object"):
            from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({"model_type": "TiM", "config": [1]}))
    with pytest.raises(TimError, match="'config' entry of .*config.json is a JSON list"):
        from_pretrained(folder)


def test_absurd_config_is_refused_before_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = save_pretrained(build_model("TiM-tiny"), tmp_path)
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(hidden_size=10_000_000, num_heads=1)
    (folder / "config.json").write_text(json.dumps(meta))

    def never(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was built")

    monkeypatch.setattr(TiM, "__init__", never)
    with pytest.raises(TimError) as info:
        from_pretrained(folder)
    message = str(info.value)
    assert "config.json describes a model of" in message and "hidden_size 10000000" in message
    assert "TiB to build" in message and "is free" in message and "check the sizes" in message


def test_estimated_parameters_are_exact_for_every_preset() -> None:
    from tim.models import MLP_PRESETS
    from tim.models.weights import estimated_parameters

    variants = []
    for config in TIM_PRESETS.values():
        variants += [
            config,
            dataclasses.replace(config, conditioning="text", text_dim=40, pooled_text=True, z_dim=0),
            dataclasses.replace(
                config,
                conditioning="none",
                qk_norm=False,
                interval_attention=False,
                decoupled_time_embedding=False,
            ),
        ]
    variants += list(MLP_PRESETS.values())
    for config in variants:
        with torch.device("meta"):
            real = sum(p.numel() for p in build_model(config).parameters())
        assert estimated_parameters(config) == real, config


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_exported_weights_get_the_umask_mode(mask: int, tmp_path: Path) -> None:
    """safetensors writes 0600; an exported folder's files get 0o666 & ~umask like any new file."""
    import stat

    model = build_model("MLP-toy", hidden_size=8, depth=1)
    previous = os.umask(mask)
    try:
        folder = save_pretrained(model, tmp_path / "export")
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()}
    assert modes == {"config.json": 0o666 & ~mask, "model.safetensors": 0o666 & ~mask}, modes
    assert from_pretrained(folder).config == model.config  # and the file is whole


def _raw_header(path: Path, text: bytes) -> None:
    """Replace the whole header of ``path`` by ``text`` (keeping the data bytes)."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + length :])


def _entry(**change: object):  # noqa: ANN202 - a header edit
    def edit(header: dict) -> None:
        header["final_layer.linear.weight"].update(change)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (b"not json at all", "its header is not JSON"),
        (b"[1, 2, 3]", "its header is not a JSON object"),
        (b'{"__metadata__": {"format": 5}}', "its __metadata__ is not a map of strings"),
        (_entry(dtype="Q7"), "has an unknown dtype 'Q7'"),
        (_entry(shape=[4, -1]), "not a list of sizes"),
        (_entry(shape="4x4"), "not a list of sizes"),
        (_entry(data_offsets=[0]), "not [begin, end]"),
        (_entry(data_offsets=[8, 4]), "outside the file"),
        (_entry(shape=[1]), "but spans"),
    ],
)
def test_every_malformed_header_entry_is_one_line_before_any_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: object, message: str
) -> None:
    """The header of an untrusted safetensors file is checked field by field, tensors unread."""
    folder = save_pretrained(build_model("TiM-tiny"), tmp_path)
    weights = folder / "model.safetensors"
    if isinstance(edit, bytes):
        _raw_header(weights, edit)
    else:
        edit_header(weights, edit)  # type: ignore[arg-type]
    no_tensor_reads(monkeypatch)
    with pytest.raises(TimError) as caught:
        from_pretrained(folder)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_header_entry_that_is_not_an_object_is_one_line(tmp_path: Path) -> None:
    folder = save_pretrained(build_model("TiM-tiny"), tmp_path)
    edit_header(folder / "model.safetensors", lambda header: header.update({"final_layer.linear.weight": 3}))
    with pytest.raises(TimError, match="has no dtype, shape and data_offsets"):
        from_pretrained(folder)
