"""Tiny random-initialised Hugging Face text models saved to local folders (no download).

Each folder gets the embedded MiniLM's WordPiece tokenizer files (vocab 30522), so every model
family is built with ``vocab_size=30522`` and tokenizes exactly like MiniLM.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

VOCAB = 30522  # bert-base-uncased WordPiece vocabulary (MiniLM's tokenizer)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def copy_tokenizer(folder: Path) -> None:
    """Copy MiniLM's tokenizer files into ``folder``."""
    from tim.text import default_text_encoder_path

    source = default_text_encoder_path()
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, folder / name)


def _save(model: torch.nn.Module, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    copy_tokenizer(folder)
    return folder


def tiny_bert(folder: Path, hidden: int = 32) -> Path:
    """A 2-layer BERT encoder with ``hidden``-d features."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=64,
    )
    return _save(BertModel(config), folder)


def tiny_t5(folder: Path, hidden: int = 24) -> Path:
    """A T5 encoder-decoder (1 layer each); the adapter must load only its encoder."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    config = T5Config(
        vocab_size=VOCAB,
        d_model=hidden,
        d_kv=8,
        d_ff=2 * hidden,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        decoder_start_token_id=0,
    )
    return _save(T5ForConditionalGeneration(config), folder)


def tiny_decoder_lm(folder: Path, hidden: int = 16) -> Path:
    """A 2-layer Gemma-3 causal LM (the released TiM-T2I reads Gemma-3-1B's last hidden state)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    config = Gemma3TextConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=8,
        max_position_embeddings=64,
        sliding_window=8,
        pad_token_id=0,
    )
    return _save(Gemma3ForCausalLM(config), folder)
