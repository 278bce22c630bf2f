"""Save and load our own networks: a directory with ``config.json`` + ``model.safetensors``.

This is the Hugging Face layout, so a directory works offline from a local path and can be
uploaded as is. ``config.json`` is ``{"model_type": "TiM" | "TiMMLP", "config": {...},
"format_version": 1}``. Loading is strict (every key and shape must match) and never unpickles.

Weight files are untrusted input, so loading goes in this order, each step refusing with one line:
the config is parsed and its size estimated against the free memory (:func:`check_model_fits`);
the expected layout comes from a model built on the meta device (nothing allocated); the
safetensors header is parsed on its own (:func:`read_safetensors_header`: a capped length, offsets
inside the file) and compared with that layout (every key, every shape, floating-point dtypes for
floating-point tensors, total bytes) before a single tensor is read; only then is the real model
built and filled.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from tim.errors import TimError, first_line
from tim.io import write_json, write_safetensors

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1
MAX_CONFIG_BYTES = 2**20  # a config.json is a few hundred bytes; more is not a config
MAX_HEADER_BYTES = 100 * 2**20  # the safetensors library's own limit on the JSON header
# Bytes per element of the safetensors dtypes we can meet; any other name is refused.
DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U64": 8,
    "U32": 4,
    "U16": 2,
    "U8": 1,
    "BOOL": 1,
}
FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")  # what a floating-point parameter may be stored as
TORCH_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}
MAX_NULL_CONTEXT_TOKENS = 2**16  # the stored null caption's length follows the text encoder (256 for Gemma)
BUILD_BYTES_PER_PARAMETER = 4  # models are built in fp32
BUILD_BYTES_PER_BLOCK = 64 * 2**10  # Python objects of one block's modules (measured ~42 KiB for TiM)


def save_pretrained(model: nn.Module, directory: str | Path) -> Path:
    """Write ``model``'s config and weights to ``directory`` (created if needed).

    Args:
        model: a :class:`tim.models.TiM` or :class:`tim.models.TiMMLP`.
        directory: target folder.

    Returns:
        The directory path.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta: dict[str, Any] = {
        "model_type": type(model).__name__,
        "config": cast(Any, model).config.to_dict(),  # TiM or TiMMLP: a dataclass config
        "format_version": FORMAT_VERSION,
    }
    write_json(directory / CONFIG_NAME, meta, indent=2, sort_keys=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    write_safetensors(directory / WEIGHTS_NAME, state, metadata={"format": "pt"})
    return directory


def parse_config_json(
    meta: object, source: str | Path = CONFIG_NAME
) -> tuple[Callable[[Any], nn.Module], Any]:
    """The model class and its config described by the contents of a ``config.json`` (nothing built)."""
    from tim.models.mlp import MLPConfig, TiMMLP
    from tim.models.tim import TiM, TiMConfig

    kinds: dict[str, tuple[Callable[[Any], nn.Module], Any]] = {
        "TiM": (TiM, TiMConfig),
        "TiMMLP": (TiMMLP, MLPConfig),
    }
    if not isinstance(meta, dict):
        raise TimError(
            f"{source} holds a JSON {_json_kind(meta)}, not an object",
            "re-export the folder with save_pretrained or restore config.json",
        )
    meta = cast(dict[str, Any], meta)
    if meta.get("model_type") not in kinds or "config" not in meta:
        raise TimError(
            f"config.json has model_type {meta.get('model_type')!r}",
            f"expected one of {sorted(kinds)} with a 'config' entry (written by save_pretrained)",
        )
    if not isinstance(meta["config"], dict):
        raise TimError(
            f"the 'config' entry of {source} is a JSON {_json_kind(meta['config'])}, not an object",
            "re-export the folder with save_pretrained or restore config.json",
        )
    model_cls, config_cls = kinds[meta["model_type"]]
    return model_cls, config_cls.from_dict(meta["config"])


def _json_kind(value: object) -> str:
    """``list``, ``string``, ``number``... for messages about parsed JSON."""
    names: dict[type, str] = {
        list: "list",
        str: "string",
        int: "number",
        float: "number",
        bool: "boolean",
        dict: "object",
    }
    return "null" if value is None else names.get(type(value), type(value).__name__)


def model_from_config_json(meta: object, source: str | Path = CONFIG_NAME) -> nn.Module:
    """Build an (initialised) model from the contents of a ``config.json`` (refused if it cannot fit)."""
    model_cls, config = parse_config_json(meta, source)
    check_model_fits(config, source)
    return model_cls(config)


def estimated_parameters(config: Any) -> int:
    """Parameter count of the network a ``TiMConfig`` or ``MLPConfig`` describes, in closed form.

    Nothing is built, so an absurd config (``hidden_size: 10000000``) costs nothing to price;
    ``tests/models/test_weights.py`` checks the formula against every preset's real count.
    """
    from tim.models.layers import TIME_FREQUENCY_DIM, swiglu_hidden_size
    from tim.models.tim import TiMConfig

    def linear(inputs: int, outputs: int, bias: bool = True) -> int:
        return inputs * outputs + (outputs if bias else 0)

    def swiglu(inputs: int, hidden: int, outputs: int) -> int:
        return 2 * linear(inputs, hidden) + linear(hidden, outputs)

    time_embedders = 2 if config.decoupled_time_embedding else 1
    if not isinstance(config, TiMConfig):  # MLPConfig
        H = config.hidden_size
        conditioning = (config.num_classes + 1) * H if config.num_classes > 0 else 0
        blocks = config.depth * (2 * linear(H, H) + linear(H, 3 * H))
        return (
            linear(config.dim, H)
            + time_embedders * (linear(TIME_FREQUENCY_DIM, H) + linear(H, H))
            + conditioning
            + blocks
            + 2 * H
            + linear(H, config.dim)
        )
    D, p, C = config.hidden_size, config.patch_size, config.in_channels
    text = config.conditioning == "text"
    qk_norm = 4 * config.head_dim if config.qk_norm else 0
    attention = linear(D, 3 * D) + linear(D, D) + qk_norm
    attention += 3 * D * D if config.interval_attention else 0
    cross = linear(D, D) + linear(D, 2 * D) + linear(D, D) + qk_norm if text else 0
    block = (
        attention
        + cross
        + swiglu(D, swiglu_hidden_size(D, config.mlp_ratio), D)
        + swiglu(D, config.modulation_rank, (9 if text else 6) * D)
    )
    if config.conditioning == "class":
        conditioning = (config.num_classes + 1) * D
    elif text:
        T = config.text_dim
        conditioning = 2 * T + swiglu(T, 4 * D, D) + (swiglu(T, D, D) if config.pooled_text else 0)
    else:
        conditioning = 0
    P = config.projector_dim
    projector = linear(D, P) + linear(P, P) + linear(P, config.z_dim) if config.z_dim > 0 else 0
    return (
        C * p * p * D
        + D
        + time_embedders * (linear(TIME_FREQUENCY_DIM, D) + linear(D, D))
        + conditioning
        + config.depth * block
        + projector
        + swiglu(D, D // 2, 2 * D)
        + linear(D, p * p * C)
    )


def check_model_fits(config: Any, source: str | Path) -> None:
    """Refuse, in one line naming ``source`` and the size, a model that cannot fit in free memory.

    Models are built in fp32 on the CPU: 4 bytes per parameter plus the Python objects of every
    block. The estimate is a lower bound (the weights read from the file are not counted), so it
    refuses only models that certainly do not fit.
    """
    from tim.system import available_memory, format_bytes

    parameters = estimated_parameters(config)
    needed = BUILD_BYTES_PER_PARAMETER * parameters + BUILD_BYTES_PER_BLOCK * config.depth
    free, where = available_memory("cpu")
    if needed > free:
        raise TimError(
            f"{source} describes a model of {parameters:,} parameters (depth {config.depth}, "
            f"hidden_size {config.hidden_size}) that needs {format_bytes(needed)} to build, but "
            f"{format_bytes(free)} is free ({where})",
            "check the sizes in the config (the file may be corrupt or edited), or free memory",
        )


def expected_layout(build: Callable[[], nn.Module]) -> dict[str, TensorInfo]:
    """The state-dict layout of the model ``build()`` makes, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = build()
    return tensor_layout(model.state_dict())


def from_pretrained(directory: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a model written by :func:`save_pretrained` (strict), in eval mode.

    Args:
        directory: folder with ``config.json`` and ``model.safetensors``.
        device: where to put the weights.

    Returns:
        The model, bit-identical to the one saved.
    """
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    if not config_path.is_file() or not weights_path.is_file():
        raise TimError(
            f"{directory} has no {CONFIG_NAME} + {WEIGHTS_NAME}", "pass a folder written by save_pretrained"
        )
    model_cls, config = parse_config_json(read_config_json(config_path), config_path)
    check_model_fits(config, config_path)
    # Keys, shapes, dtypes and sizes are checked against the header before any tensor is read.
    tensors, _ = read_safetensors(weights_path, expected=expected_layout(lambda: model_cls(config)))
    model = model_cls(config)
    load_state_dict_strict(model, tensors, source=str(weights_path))
    return model.to(device).eval()


@dataclass(frozen=True)
class TensorInfo:
    """What a stored tensor is: its dtype (a safetensors name such as ``F32``) and shape."""

    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        """Number of elements."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes of its data."""
        return self.numel * DTYPE_BYTES.get(self.dtype, 8)


def tensor_layout(state: Mapping[str, Tensor]) -> dict[str, TensorInfo]:
    """Name -> dtype and shape of every tensor of a state dict."""
    return {k: TensorInfo(TORCH_DTYPES.get(v.dtype, str(v.dtype)), tuple(v.shape)) for k, v in state.items()}


def check_layout(found: Mapping[str, TensorInfo], expected: Mapping[str, TensorInfo], source: str) -> None:
    """One TimError line unless ``found`` (a file's tensors) can be loaded into ``expected`` (a model's).

    Every key must be present and no other, shapes must match (:func:`shapes_compatible`), a
    floating-point tensor must be stored as F32/F16/BF16/F64 (integers relabelled in a header
    would otherwise be cast into garbage weights) and any other tensor with its own dtype, and the
    total size must stay within what the model can hold at 8 bytes per element.
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    misshaped = sorted(
        f"{k} {found[k].shape} vs {expected[k].shape}"
        for k in set(found) & set(expected)
        if not shapes_compatible(k, found[k].shape, expected[k].shape)
    )
    if missing or unexpected or misshaped:
        raise TimError(
            f"weights in {source} do not match the model: missing {summarise(missing)}, "
            f"unexpected {summarise(unexpected)}, mis-shaped {summarise(misshaped)}",
            "check that the checkpoint and the model config (preset/overrides) belong together",
        )
    for key in sorted(found):
        stored, wanted = found[key].dtype, expected[key].dtype
        floating = wanted in FLOAT_DTYPES
        if (stored not in FLOAT_DTYPES) if floating else (stored != wanted):
            raise TimError(
                f"tensor {key} in {source} is stored as {stored}, "
                + ("not as a floating-point type (F32, F16, BF16 or F64)" if floating else f"not {wanted}"),
                "re-export or re-download the weights (the file is corrupt or was edited)",
            )
    declared = sum(info.nbytes for info in found.values())
    limit = 8 * sum(
        max(info.numel, found[key].numel) if key.endswith("null_context") else info.numel
        for key, info in expected.items()
    )
    if declared > limit:  # unreachable after the checks above; kept as the last line of defence
        raise TimError(
            f"{source} declares {declared:,} bytes of tensors, more than the model's {limit:,} at 8 bytes each",
            "re-export or re-download the weights (the file is corrupt or was edited)",
        )


def load_state_dict_strict(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` into ``model``; any missing, unexpected, mis-shaped or mis-typed key raises one TimError line."""
    check_layout(tensor_layout(state), tensor_layout(model.state_dict()), source)
    model.load_state_dict(state, strict=True)


def shapes_compatible(key: str, stored: Sequence[int], expected: Sequence[int]) -> bool:
    """Equal shapes, except the null caption, whose length M0 (at most 65536) follows the text encoder."""
    stored, expected = tuple(stored), tuple(expected)
    if key.endswith("null_context"):
        return len(stored) == 2 and 1 <= stored[0] <= MAX_NULL_CONTEXT_TOKENS and stored[1] == expected[1]
    return stored == expected


def summarise(names: list[str], limit: int = 6) -> str:
    """``[a, b, c, ... (+n more)]`` for error messages."""
    shown = ", ".join(names[:limit])
    more = f", ... (+{len(names) - limit} more)" if len(names) > limit else ""
    return f"{len(names)} [{shown}{more}]"


def read_config_json(path: Path) -> dict[str, Any]:
    """The contents of a ``config.json`` (a JSON object); anything else is a one-line TimError."""
    fix = "re-export the folder with save_pretrained or restore config.json"
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise TimError(f"{path} cannot be read ({first_line(error)})", fix) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise TimError(f"{path} is larger than {MAX_CONFIG_BYTES:,} bytes, so it is not a model config", fix)
    try:
        meta = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as error:
        raise TimError(f"{path} is not valid JSON ({first_line(error)})", fix) from None
    if not isinstance(meta, dict):
        raise TimError(f"{path} holds a JSON {_json_kind(meta)}, not an object", fix)
    return cast(dict[str, Any], meta)


def read_safetensors_header(path: Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Dtype and shape of every tensor of a safetensors file, and its metadata, reading only the header.

    The header is 8 bytes of little-endian length, then that much JSON. The length is capped at
    :data:`MAX_HEADER_BYTES` and the file size; every tensor must have a known dtype, a shape of
    non-negative integers and data offsets inside the file that match its size. A violation is one
    TimError line naming the file and the tensor.
    """
    path = Path(path)
    _refuse_empty(path)

    def bad(reason: str) -> TimError:
        return TimError(
            f"{path} is not a valid safetensors file ({reason})",
            "re-download or re-export it (it is truncated, corrupt or in another format)",
        )

    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            length = int.from_bytes(handle.read(8).ljust(8, b"\0"), "little")
            if size < 8 or length > min(MAX_HEADER_BYTES, size - 8):
                raise bad(f"its header length {length:,} does not fit the {size:,}-byte file")
            text = handle.read(length)
    except OSError as error:
        raise bad(first_line(error)) from None
    try:
        header = json.loads(text.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        raise bad("its header is not JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    header = cast(dict[str, Any], header)
    metadata: object = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
        isinstance(v, str) for v in cast(dict[str, Any], metadata).values()
    ):
        raise bad("its __metadata__ is not a map of strings")
    data_size = size - 8 - length
    layout: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        info = _tensor_entry(entry, data_size)
        if isinstance(info, str):
            raise bad(f"tensor {name!r} {info}")
        layout[name] = info
    return layout, cast(dict[str, str], metadata)


def _tensor_entry(entry: object, data_size: int) -> TensorInfo | str:
    """A header entry as TensorInfo, or what is wrong with it."""
    if not isinstance(entry, dict):
        return "has no dtype, shape and data_offsets"
    entry = cast(dict[str, Any], entry)
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        return f"has an unknown dtype {dtype!r}"

    def whole(value: object) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    if not isinstance(shape, list) or not all(whole(n) for n in cast(list[Any], shape)):
        return f"has shape {shape!r}, not a list of sizes"
    if (
        not isinstance(offsets, list)
        or len(cast(list[Any], offsets)) != 2
        or not all(whole(n) for n in cast(list[Any], offsets))
    ):
        return f"has data_offsets {offsets!r}, not [begin, end]"
    info = TensorInfo(dtype, tuple(cast(list[int], shape)))
    begin, end = cast(list[int], offsets)
    if not begin <= end <= data_size:
        return f"has data_offsets [{begin}, {end}] outside the file's {data_size:,} data bytes"
    if end - begin != info.nbytes:
        return f"declares {dtype} {info.shape} ({info.nbytes:,} bytes) but spans {end - begin:,} bytes"
    return info


def read_safetensors(
    path: Path, expected: Mapping[str, TensorInfo] | None = None
) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file; a corrupt or foreign file is a one-line TimError.

    The header is parsed and checked first (:func:`read_safetensors_header`); with ``expected``
    (a model's :func:`expected_layout`) its keys, shapes, dtypes and total size are compared with
    it (:func:`check_layout`) before any tensor data is read.
    """
    from safetensors import SafetensorError, safe_open  # [train] extra

    layout, _ = read_safetensors_header(path)
    if expected is not None:
        check_layout(layout, expected, str(path))
    try:
        with safe_open(str(path), framework="pt") as f:  # pyright: ignore[reportUnknownVariableType]  -- untyped
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}  # pyright: ignore[reportUnknownVariableType, reportUnknownMemberType]
    except (SafetensorError, OSError) as error:
        raise TimError(
            f"{path} is not a valid safetensors file ({first_line(error)})",
            "re-download or re-export it (it is truncated, corrupt or in another format)",
        ) from None


def _refuse_empty(path: Path) -> None:
    """A zero-byte file (an interrupted download or copy) gets its own clear message."""
    if Path(path).is_file() and Path(path).stat().st_size == 0:
        raise TimError(
            f"{path} is empty (0 bytes)", "re-download or copy it again (the transfer did not finish)"
        )


def torch_load_weights_only(path: Path) -> object:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickles."""
    import pickle

    _refuse_empty(path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise TimError(
            f"{path} holds Python objects that are unsafe to unpickle (torch.load weights_only=True "
            "refused them; nothing was executed)",
            "get the weights as .safetensors, or re-save only the state dict of tensors",
        ) from None
    except Exception as error:  # noqa: BLE001 - any other failure: not a readable checkpoint
        raise TimError(
            f"{path} is not a readable PyTorch checkpoint ({first_line(error)})",
            "re-download it or convert it to .safetensors",
        ) from None
