"""Bad inputs (model weights: the released-checkpoint converter and `from_pretrained` folders): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from helpers.bad_inputs import (
    Case,
    check_case,
    marker_of,
    never_unpickled,
    tiny_model_file,
    write_pickle,
)
from helpers.safetensors_files import edit_header


def released(path_of: Callable[[Path], Path], preset: str = "TiM-tiny") -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.models import load_released_checkpoint

        path = path_of(tmp)
        return never_unpickled(lambda: load_released_checkpoint(path, preset), tmp)

    return trigger


def _pickle_bin(tmp: Path) -> Path:
    return write_pickle(tmp / "pytorch_model.bin", torch_format=False)


def _pickle_pt(tmp: Path) -> Path:
    return write_pickle(tmp / "model.pt", torch_format=True)


def _pickle_as_safetensors(tmp: Path) -> Path:
    return write_pickle(tmp / "model.safetensors", torch_format=True)


def _truncated_safetensors(tmp: Path) -> Path:
    path, _ = tiny_model_file(tmp)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _text_file(tmp: Path) -> Path:
    path = tmp / "weights.safetensors"
    path.write_text("<html>404 Not Found</html>")
    return path


def _unknown_suffix(tmp: Path) -> Path:
    path = tmp / "weights.npz"
    path.write_bytes(b"PK\x03\x04")
    return path


def _edited_state(edit: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        from safetensors.torch import save_file

        path, state = tiny_model_file(tmp)
        edit(state)
        save_file(state, str(path))
        return path

    return make


def _drop_key(state: dict[str, torch.Tensor]) -> None:
    state.pop("final_layer.linear.weight" if "final_layer.linear.weight" in state else sorted(state)[-1])


def _add_key(state: dict[str, torch.Tensor]) -> None:
    state["blocks.9.attn.qkv.weight"] = torch.zeros(3, 3)


def _reshape_key(state: dict[str, torch.Tensor]) -> None:
    key = sorted(k for k in state if k.endswith("weight") and state[k].ndim == 2)[0]
    state[key] = torch.zeros(state[key].shape[0] + 1, state[key].shape[1])


def _nested_wrong(tmp: Path) -> Path:
    path = tmp / "model.pt"
    torch.save({"weights_here": {"w": torch.zeros(2)}, "epoch": torch.tensor(3)}, path)
    return path


def pretrained_error(edit: Callable[[Path], None]) -> Callable[[Path], str]:
    """A ``save_pretrained`` folder damaged by ``edit``, loaded with ``from_pretrained``."""

    def trigger(tmp: Path) -> str:
        from tim.models import build_model, from_pretrained, save_pretrained

        folder = save_pretrained(build_model("TiM-tiny"), tmp / "pretrained")
        edit(folder)
        return never_unpickled(lambda: from_pretrained(folder), tmp)

    return trigger


def _truncate_weights(folder: Path) -> None:
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:100])


def _pickle_weights(folder: Path) -> None:
    write_pickle(folder / "model.safetensors", torch_format=True)


def _broken_config_json(folder: Path) -> None:
    (folder / "config.json").write_text('{"model_type": "TiM", "config": {')


def _foreign_model_type(folder: Path) -> None:
    (folder / "config.json").write_text(json.dumps({"model_type": "UNet2DModel", "config": {}}))


def _remove_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def _empty_file(name: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(b"")
        return tmp / name

    return make


def _half_torch_file(tmp: Path) -> Path:
    path = tmp / "model.pt"
    torch.save({"w": torch.zeros(64)}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _int_relabelled(tmp: Path) -> Path:
    path, _ = tiny_model_file(tmp)
    return edit_header(path, lambda header: header["final_layer.linear.weight"].update(dtype="I32"))


def _huge_tensor(folder: Path) -> None:
    def add(header: dict) -> None:
        end = max(entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__")
        header["huge"] = {"dtype": "F32", "shape": [2**31], "data_offsets": [end, end + 2**33]}

    edit_header(folder / "model.safetensors", add, extra_bytes=2**33)


def _config_list(folder: Path) -> None:
    (folder / "config.json").write_text("[1, 2]")


def _config_absurd(folder: Path) -> None:
    meta = json.loads((folder / "config.json").read_text())
    meta["config"].update(hidden_size=10_000_000, num_heads=1)
    (folder / "config.json").write_text(json.dumps(meta))


CASES: list[Case] = [
    Case(
        "ckpt-pickle-bin",
        "checkpoint",
        "`.bin` pickle whose `__reduce__` runs code",
        released(_pickle_bin),
        ("pytorch_model.bin", "unsafe", "weights_only"),
        ("safetensors",),
    ),
    Case(
        "ckpt-pickle-pt",
        "checkpoint",
        "`torch.save` `.pt` whose payload runs code",
        released(_pickle_pt),
        ("model.pt", "unsafe", "weights_only"),
        ("safetensors",),
    ),
    Case(
        "ckpt-pickle-named-safetensors",
        "checkpoint",
        "a pickle renamed to `.safetensors`",
        released(_pickle_as_safetensors),
        ("model.safetensors", "not a valid safetensors"),
        ("re-download",),
    ),
    Case(
        "ckpt-truncated-safetensors",
        "checkpoint",
        "a `.safetensors` file cut in half",
        released(_truncated_safetensors),
        ("tiny.safetensors", "not a valid safetensors"),
        ("re-download",),
    ),
    Case(
        "ckpt-html-as-safetensors",
        "checkpoint",
        "an HTML error page saved as `.safetensors`",
        released(_text_file),
        ("weights.safetensors", "not a valid safetensors"),
        ("re-download",),
    ),
    Case(
        "ckpt-unknown-suffix",
        "checkpoint",
        "a `.npz` file",
        released(_unknown_suffix),
        ("weights.npz", "unknown suffix"),
        ("use .safetensors",),
    ),
    Case(
        "ckpt-missing-file",
        "checkpoint",
        "a checkpoint path that does not exist",
        released(lambda tmp: tmp / "nothing.safetensors"),
        ("nothing.safetensors", "does not exist"),
        ("local .safetensors",),
    ),
    Case(
        "ckpt-wrong-preset",
        "checkpoint",
        "`TiM-tiny` weights loaded as `TiM-digits`",
        released(lambda tmp: tiny_model_file(tmp)[0], preset="TiM-digits"),
        ("do not match the model", "missing", "unexpected", "mis-shaped"),
        ("preset/overrides",),
    ),
    Case(
        "ckpt-unknown-preset",
        "checkpoint",
        "preset name `TiM-XXL`",
        released(lambda tmp: tiny_model_file(tmp)[0], preset="TiM-XXL"),
        ("unknown preset", "TiM-XXL"),
        ("use one of", "TiM-XL/2"),
    ),
    Case(
        "ckpt-missing-key",
        "checkpoint",
        "a state dict with one tensor removed",
        released(_edited_state(_drop_key)),
        ("missing 1 [", "unexpected 0", "mis-shaped 0"),
        ("belong together",),
    ),
    Case(
        "ckpt-unexpected-key",
        "checkpoint",
        "a state dict with an extra tensor",
        released(_edited_state(_add_key)),
        ("missing 0", "unexpected 1 [blocks.9.attn.qkv.weight]"),
        ("belong together",),
    ),
    Case(
        "ckpt-misshaped-key",
        "checkpoint",
        "a state dict with one tensor of the wrong shape",
        released(_edited_state(_reshape_key)),
        ("mis-shaped 1 [", " vs "),
        ("belong together",),
    ),
    Case(
        "ckpt-no-state-dict",
        "checkpoint",
        "a `.pt` whose tensors sit under an unknown key",
        released(_nested_wrong),
        ("holds no state dict", "weights_here"),
        ("nested under one of",),
    ),
    Case(
        "ckpt-pretrained-truncated",
        "checkpoint",
        "`from_pretrained` folder with a truncated model.safetensors",
        pretrained_error(_truncate_weights),
        ("model.safetensors", "not a valid safetensors"),
        ("re-download",),
    ),
    Case(
        "ckpt-pretrained-pickle",
        "checkpoint",
        "`from_pretrained` folder whose model.safetensors is a pickle",
        pretrained_error(_pickle_weights),
        ("model.safetensors", "not a valid safetensors"),
        ("re-download",),
    ),
    Case(
        "ckpt-pretrained-bad-json",
        "checkpoint",
        "`from_pretrained` folder with a broken config.json",
        pretrained_error(_broken_config_json),
        ("config.json", "not valid JSON"),
        ("save_pretrained",),
    ),
    Case(
        "ckpt-pretrained-foreign",
        "checkpoint",
        "`from_pretrained` on another library's folder",
        pretrained_error(_foreign_model_type),
        ("model_type", "UNet2DModel"),
        ("written by save_pretrained",),
    ),
    Case(
        "ckpt-pretrained-no-weights",
        "checkpoint",
        "`from_pretrained` folder without model.safetensors",
        pretrained_error(_remove_weights),
        ("no config.json + model.safetensors",),
        ("save_pretrained",),
    ),
    Case(
        "ckpt-empty-safetensors",
        "checkpoint",
        "a zero-byte `.safetensors` file (interrupted download)",
        released(_empty_file("model.safetensors")),
        ("model.safetensors", "is empty (0 bytes)"),
        ("re-download",),
    ),
    Case(
        "ckpt-empty-pt",
        "checkpoint",
        "a zero-byte `.pt` file",
        released(_empty_file("model.pt")),
        ("model.pt", "is empty (0 bytes)"),
        ("re-download",),
    ),
    Case(
        "ckpt-half-pt",
        "checkpoint",
        "a `.pt` file cut in half",
        released(_half_torch_file),
        ("model.pt", "not a readable PyTorch checkpoint"),
        ("re-download",),
    ),
    Case(
        "ckpt-header-int-dtype",
        "checkpoint",
        "a `.safetensors` whose header relabels a float tensor as `I32`",
        released(_int_relabelled),
        ("final_layer.linear.weight", "tiny.safetensors", "stored as I32", "floating-point"),
        ("re-export",),
    ),
    Case(
        "ckpt-header-huge-tensor",
        "checkpoint",
        "`from_pretrained` on a model.safetensors whose header adds an 8 GiB tensor (refused unread)",
        pretrained_error(_huge_tensor),
        ("model.safetensors", "unexpected 1 [huge]"),
        ("belong together",),
    ),
    Case(
        "ckpt-small-file-as-xl2",
        "checkpoint",
        "`TiM-tiny` weights loaded as `TiM-XL/2` (refused from the header, nothing built)",
        released(lambda tmp: tiny_model_file(tmp)[0], preset="TiM-XL/2"),
        ("tiny.safetensors", "do not match the model", "mis-shaped"),
        ("preset/overrides",),
    ),
    Case(
        "ckpt-pretrained-config-list",
        "checkpoint",
        "`from_pretrained` folder whose config.json is a JSON list",
        pretrained_error(_config_list),
        ("config.json holds a JSON list, not an object",),
        ("save_pretrained",),
    ),
    Case(
        "ckpt-pretrained-absurd-size",
        "checkpoint",
        "`from_pretrained` folder whose config.json says `hidden_size: 10000000`",
        pretrained_error(_config_absurd),
        ("config.json describes a model of", "hidden_size 10000000", "is free"),
        ("check the sizes",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


def test_pickle_payload_is_live(tmp_path: Path) -> None:
    """The payload really runs code when unpickled, so the checkpoint rows prove something."""
    path = write_pickle(tmp_path / "model.bin", torch_format=False)
    pickle.loads(path.read_bytes())  # noqa: S301 - our own payload, to show it is live
    assert marker_of(tmp_path).read_text() == "unpickled"
