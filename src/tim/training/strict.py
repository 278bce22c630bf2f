"""Strict reading of YAML/JSON config data onto a dataclass schema, with one-line errors.

OmegaConf (the ``train`` extra) reads the files (its loader refuses duplicate keys and limits
alias expansion), applies dotted overrides and types the data by the schema's annotations. What
it does not do is here, for any schema of nested dataclasses: one-line
:class:`tim.errors.TimError` messages that name the dotted key and the allowed keys or values
(OmegaConf's own are multi-line), and range bounds given as ``gt/ge/lt/le`` field metadata.
``tim.training.config`` applies it to :class:`~tim.training.config.RunConfig`; nothing here
knows that schema.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import json
import math
import operator
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Literal

from tim.errors import TimError, first_line

# YAML aliases may expand a document to at most this many nodes (OmegaConf's loader counts them
# before building anything): a config has a few hundred, a ten-line "alias bomb" billions.
MAX_YAML_NODES = 10_000


def omegaconf() -> Any:
    """The ``omegaconf`` package (the ``train`` extra), or a one-line TimError naming the install."""
    try:
        import omegaconf
    except ImportError:
        raise TimError("omegaconf is not installed", 'pip install "transition-models[train]"') from None
    return omegaconf


def bounded(default: Any, **bounds: float) -> Any:
    """A dataclass field with a default and range bounds (``gt/ge/lt/le``) checked by :func:`check_values`."""
    return field(default=default, metadata=bounds)


def flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested plain config data -> ``{"section.key": value}`` (lists and scalars are leaves)."""
    if not isinstance(data, dict):
        return {prefix: data}
    items: dict[str, Any] = {}
    for key, value in data.items():
        items |= flat(value, f"{prefix}.{key}" if prefix else str(key))
    return items


# ----------------------------------------------------------------------------------------------
# Keys and values that the schema refuses.


def unknown_key(key: str, valid: list[str]) -> TimError:
    """``key`` is not one of ``valid``: the error suggests the closest full dotted key."""
    name = key.rpartition(".")[2]
    close = difflib.get_close_matches(name, valid, n=1)
    # Suggest the full dotted key (train.steps, not steps): that is what the user has to type.
    hint = f"did you mean '{key.removesuffix(name)}{close[0]}'? " if close else ""
    return TimError(f"unknown config key '{key}'", f"{hint}valid keys here: {', '.join(sorted(valid))}")


def annotation_at(schema: type, key: str) -> Any:
    """The schema's type at dotted ``key``; an unknown key or a key inside a scalar is a TimError."""
    annotation: Any = schema
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not dataclasses.is_dataclass(annotation):
            outer = ".".join(parts[:depth])
            raise TimError(
                f"override '{key}' goes inside '{outer}', which is not a section",
                f"override '{outer}' itself, e.g. {outer}=VALUE",
            )
        hints = typing.get_type_hints(annotation)
        if part not in hints:
            raise unknown_key(".".join(parts[: depth + 1]), list(hints))
        args = typing.get_args(annotation := hints[part])
        annotation = args[0] if type(None) in args else annotation  # an optional T: T
    return annotation


def _expected(annotation: Any) -> str:
    """What a value of ``annotation`` looks like, in words."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin is tuple:
        size = "a list" if args[-1:] == (Ellipsis,) else f"a list of {len(args)} values"
        return f"{size}, each {_expected(args[0])}"
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return f"a mapping of {annotation.__name__} fields"
    words = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    return words.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _wrong_value(schema: type, key: str, value: Any) -> TimError:
    expected = _expected(annotation_at(schema, key))
    if expected.startswith("one of"):
        return TimError(f"{key} = {value!r} is not allowed", f"use {expected}")
    kind = "" if isinstance(value, list) else f" has type {type(value).__name__},"
    return TimError(f"{key} = {value!r}{kind} expected {expected}", f"write {key} as {expected}")


def merge(schema: type, data: dict[str, Any]) -> Any:
    """``data`` merged onto ``schema`` and typed by OmegaConf: the built dataclass.

    What OmegaConf refuses is found key by key and said in one line: an unknown key (with the
    closest valid one) or a value of the wrong type (with what the field takes).
    """
    package = omegaconf()
    OmegaConf, refused = package.OmegaConf, package.errors.OmegaConfBaseException
    structured = OmegaConf.structured(schema)
    try:
        return OmegaConf.to_object(OmegaConf.merge(structured, data))
    except refused:
        for key, value in flat(data).items():
            annotation_at(schema, key)
            nested = functools.reduce(lambda inner, part: {part: inner}, reversed(key.split(".")), value)
            try:
                OmegaConf.merge(structured, nested)
            except refused:
                raise _wrong_value(schema, key, value) from None
        raise


_RULES = {  # bound -> (holds, symbol, the fix's words)
    "gt": (operator.gt, ">", "greater than"),
    "ge": (operator.ge, ">=", "of at least"),
    "lt": (operator.lt, "<", "below"),
    "le": (operator.le, "<=", "of at most"),
}


def check_bounds(key: str, value: Any, bounds: dict[str, float]) -> None:
    """A non-finite float, or a number outside the ``gt/ge/lt/le`` bounds, is a TimError."""
    if isinstance(value, float) and not math.isfinite(value):
        raise TimError(f"{key} = {value} is not finite", "set a finite number")
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not number or all(_RULES[rule][0](value, limit) for rule, limit in bounds.items()):
        return
    text = {rule: f"{limit:g}" if isinstance(limit, float) else str(limit) for rule, limit in bounds.items()}
    shown = f"{key} = {value:g}" if isinstance(value, float) else f"{key} = {value}"
    if len(bounds) == 1:
        ((rule, limit),) = text.items()
        raise TimError(f"{shown} must be {_RULES[rule][1]} {limit}", f"set a value {_RULES[rule][2]} {limit}")
    low, high = text.get("gt", text.get("ge")), text.get("lt", text.get("le"))  # an interval
    interval = f"{'(' if 'gt' in bounds else '['}{low}, {high}{')' if 'lt' in bounds else ']'}"
    raise TimError(f"{shown} is outside {interval}", f"set a value between {low} and {high}")


def check_values(config: Any, prefix: str = "") -> None:
    """Range-check every field of a built config against its field metadata, recursively."""
    for item in dataclasses.fields(config):
        key, value = f"{prefix}{item.name}", getattr(config, item.name)
        if dataclasses.is_dataclass(value):
            check_values(value, f"{key}.")
        else:
            check_bounds(key, value, dict(item.metadata))


# ----------------------------------------------------------------------------------------------
# Files and dotted overrides.


_YAML_PROBLEMS = {  # what OmegaConf's loader says -> (our problem, the fix)
    "nesting depth": ("is nested too deeply", "write a flat config of sections and keys"),
    "expan": (
        f"expands too far through its YAML aliases (*name): past {MAX_YAML_NODES} nodes or 100x its size",
        "write the config out without nested aliases; a run config has a few hundred entries",
    ),
    "recursive alias": ("has a recursive YAML alias", "write the values out, not an alias of an outer node"),
    "duplicate key": ("has the key '{key}' twice in one mapping ({line})", "keep one (YAML keeps the last)"),
}


def _yaml_error(error: Exception, what: str) -> TimError:
    """A YAML loader error of OmegaConf's (aliases, duplicates, syntax), in one line."""
    text = "nesting depth" if isinstance(error, RecursionError) else " ".join(str(error).split())
    mark = getattr(error, "problem_mark", None)
    line = f"line {mark.line + 1}" if mark is not None else "no line"
    key = text.split("duplicate key ")[-1].split(" ")[0]
    for said, (problem, fix) in _YAML_PROBLEMS.items():
        if said in text:
            return TimError(f"{what} {problem.format(key=key, line=line)}", fix)
    return TimError(f"{what} is not valid YAML or JSON ({line})", "fix the YAML syntax (JSON is YAML too)")


def apply_overrides(schema: type, data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Plain config ``data`` with dotted overrides applied and interpolations resolved (typed when built).

    ``overrides`` are strings like ``"optim.lr=3e-4"``; a list field of ``schema`` also takes
    comma-separated text or one value (``"sample.steps=1,2,4"``, ``"sample.steps=4"``).
    """
    package = omegaconf()
    OmegaConf = package.OmegaConf
    import yaml  # a dependency of omegaconf

    merged = OmegaConf.create(json.loads(json.dumps(data)))
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not all(key.split(".")):
            raise TimError(
                f"override '{item}' is not of the form key.sub=value", "write overrides like optim.lr=3e-4"
            )
        try:  # the value is YAML, read by OmegaConf's alias-limited loader
            value = OmegaConf.to_container(OmegaConf.from_dotlist([f"v={raw.strip()}"]))["v"]
        except (yaml.YAMLError, RecursionError) as error:
            raise _yaml_error(error, "an override") from None
        with contextlib.suppress(TimError):  # an unknown key: the build names it with its context
            listed = isinstance(value, list) or "${" in str(value)  # a list, or one after resolving
            if typing.get_origin(annotation_at(schema, key)) is tuple and not listed:
                value = (
                    [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else [value]
                )
        OmegaConf.update(merged, key, value)
    try:  # interpolations (${train.steps}) resolve against the whole config, overrides included
        return OmegaConf.to_container(merged, resolve=True)
    except package.errors.OmegaConfBaseException as error:
        where = error.full_key or "the config"
        raise TimError(
            f"{where} has an interpolation that does not resolve ({first_line(error)})",
            "refer to a key that the config has, e.g. ${train.steps}",
        ) from None


def read_file(path: Path) -> Any:
    """A YAML or JSON file as plain data, read by OmegaConf's alias-limited, duplicate-refusing loader."""
    OmegaConf = omegaconf().OmegaConf
    import yaml  # a dependency of omegaconf

    if not path.is_file():
        raise TimError(f"config file '{path}' does not exist", "pass the path of a YAML or JSON config file")
    try:
        data = OmegaConf.create(path.read_text(), max_yaml_expanded_nodes=MAX_YAML_NODES)  # JSON is YAML
    except UnicodeDecodeError:
        raise TimError(
            f"config file '{path}' is not a text file", "pass a YAML or JSON config file"
        ) from None
    except (yaml.YAMLError, RecursionError) as error:
        raise _yaml_error(error, f"config file '{path}'") from None
    except AssertionError:  # OmegaConf's answer to a document that is a bare number
        return None
    if not data:
        raise TimError(
            f"config file '{path}' is empty (no sections: blank lines or comments only)",
            "write at least one section, e.g. 'train: {steps: 1000}', or pass a preset: --config digits",
        )
    return OmegaConf.to_container(data)  # interpolations resolve in apply_overrides
