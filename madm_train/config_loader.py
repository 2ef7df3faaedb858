"""Typed configuration from YAML and ``--set`` overrides: the loader every config dataclass shares.

Frozen dataclasses are the schema: :func:`build_dataclass` turns nested plain values into them,
checking every key against the fields (a misspelt key is an error naming the allowed ones and the
closest match) and every value against the field's type (``Literal`` values, tuples of fixed or
variable length, unions, ``bool``/``int``/``float``/``str``). :func:`parse_override` and
:func:`set_override` apply ``section.key=value`` overrides read as YAML scalars, keeping the raw
text where the field is text (``run.out_dir=2024`` stays ``"2024"``). The small ``at_least`` /
``in_range`` / ``positive_size`` checks give every config class the same error wording.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from madm_ros.errors import ConfigError

__all__ = [
    "at_least",
    "build_dataclass",
    "in_range",
    "mapping_fields",
    "merge_values",
    "parse_override",
    "plain",
    "positive_size",
    "set_override",
    "unknown_key",
]

# ----------------------------------------------------------------------------------------------
# Validation helpers


def positive_size(key: str, size: tuple[int, int]) -> None:
    """Refuse a [height, width] that is not two positive integers."""
    if len(size) != 2 or any(v <= 0 for v in size):
        raise ConfigError(f"{key} must be [height, width] with positive integers, got {list(size)}")


def in_range(key: str, value: float, low: float, high: float) -> None:
    """Refuse ``value`` outside [low, high], naming ``key``."""
    if not low <= value <= high:
        raise ConfigError(f"{key} must lie in [{low}, {high}], got {value}")


def at_least(key: str, value: float, low: float) -> None:
    """Refuse ``value`` below ``low``, naming ``key``."""
    if value < low:
        raise ConfigError(f"{key} must be ≥ {low}, got {value}")


def latent_input_size(key: str, size: int | None) -> None:
    """Refuse an input side other than null or a positive multiple of 64 (the VAE's ×8, the UNet's three ×2)."""
    if size is not None and (size <= 0 or size % 64):
        raise ConfigError(f"{key} must be a positive multiple of 64 or null, got {size}")


def crop_fits_input_size(crop_hw: tuple[int, int], input_size: int | None) -> None:
    """Refuse a crop a Stable Diffusion UNet cannot run at when ``method.model.input_size`` does not resize it."""
    if input_size is None and any(side % 64 for side in crop_hw):
        raise ConfigError(f"data.crop_hw {list(crop_hw)} must be multiples of 64 when method.model.input_size is "
                          "null: use e.g. [256, 256] or [512, 512], or --set method.model.input_size=512")


# ----------------------------------------------------------------------------------------------
# Merging and typed construction


def plain(value: Any) -> Any:
    """Nested dicts with tuples turned into lists: what YAML and JSON files hold."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def unknown_key(key: str, allowed: Sequence[str], source: str) -> ConfigError:
    """The error for a key that names no field: the allowed keys and the closest match."""
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], allowed, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"unknown key {key!r} in {source}{hint}; allowed keys here: {', '.join(allowed)}")


def mapping_fields(cls: type, prefix: str = "") -> frozenset[str]:
    """Dotted keys of the ``dict``-typed fields of dataclass ``cls`` and its sections: values, not sections."""
    found: set[str] = set()
    for name, tp in typing.get_type_hints(cls).items():
        if typing.get_origin(tp) is dict:
            found.add(f"{prefix}{name}")
        elif dataclasses.is_dataclass(tp):
            found |= mapping_fields(tp, f"{prefix}{name}.")
    return frozenset(found)


def merge_values(base: dict[str, Any], new: Mapping[str, Any], *, prefix: str, source: str,
                 mappings: frozenset[str] = frozenset()) -> None:
    """Write ``new`` into ``base`` key by key (sections recursively); a key ``base`` lacks is an error.

    ``mappings`` (from :func:`mapping_fields`) are dict-valued fields, replaced as a whole.
    """
    for key, value in new.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            raise unknown_key(dotted, list(base), source)
        if isinstance(base[key], dict) and dotted not in mappings:
            if not isinstance(value, Mapping):
                raise ConfigError(f"{dotted} in {source} must be a mapping of keys {', '.join(base[key])}, "
                                  f"got {value!r}")
            merge_values(base[key], value, prefix=f"{dotted}.", source=source, mappings=mappings)
        else:
            base[key] = value


def parse_override(text: str) -> tuple[list[str], Any, str]:
    """``"a.b=value"`` → (``["a", "b"]``, value read as YAML, raw text)."""
    import yaml

    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value, e.g. optim.lr=1e-5")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {text!r}: value is not a YAML scalar or list ({error})") from None
    return key.strip().split("."), value, raw


def set_override(tree: dict[str, Any], keys: list[str], value: Any, raw: str,
                 mappings: frozenset[str] = frozenset()) -> None:
    """Apply one parsed override to the nested values ``tree`` (the key must exist; ``mappings`` as in merge_values)."""
    node = tree
    for depth, key in enumerate(keys):
        dotted = ".".join(keys[: depth + 1])
        if not isinstance(node, dict) or ".".join(keys[:depth]) in mappings:
            raise ConfigError(f"--set {'.'.join(keys)}: {'.'.join(keys[:depth])} is not a section")
        if key not in node:
            raise unknown_key(dotted, list(node), "--set")
        if depth == len(keys) - 1:
            if isinstance(node[key], dict) and dotted not in mappings:
                raise ConfigError(f"--set {dotted}=… names a whole section; set one of its keys: "
                                  f"{', '.join(f'{dotted}.{k}' for k in node[key])}")
            # A value that YAML reads as a number stays text where the field is text (run.out_dir=2024).
            node[key] = _Override((value, raw))
        node = node[key]


def build_dataclass(cls: type, values: Mapping[str, Any], prefix: str = "", *, built: Mapping[str, Any] | None = None) -> Any:
    """Construct the frozen dataclass ``cls`` from plain ``values``, converting and checking each field.

    ``built`` passes fields the caller constructed itself (a tagged section such as ``method``).
    """
    hints = typing.get_type_hints(cls)
    kwargs = dict(built or {})
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if f.name not in values or f.name in kwargs:
            continue
        value = values[f.name]
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            kwargs[f.name] = build_dataclass(tp, value, f"{key}.")
        elif isinstance(value, _Override):
            parsed, raw = value
            text_wanted = _wants_str(tp) and parsed is not None and not isinstance(parsed, str)
            kwargs[f.name] = _convert(raw.strip() if text_wanted else parsed, tp, key)
        else:
            kwargs[f.name] = _convert(value, tp, key)
    return cls(**kwargs)


class _Override(tuple):
    """A (parsed value, raw text) pair from ``--set``, so that text fields can keep the raw text."""


def _wants_str(tp: Any) -> bool:
    return tp is str or (_is_union(tp) and str in typing.get_args(tp))


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if _is_union(tp):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} values ({', '.join(_type_name(a) for a in args)})"
    if typing.get_origin(tp) is dict:
        key_type, value_type = typing.get_args(tp)
        return f"a mapping of {_type_name(key_type)} to {_type_name(value_type)}"
    return {bool: "true/false", int: "an integer", float: "a number", str: "text", type(None): "null"}.get(tp, str(tp))


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(value: Any, tp: Any, key: str) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"{key} must be {_type_name(tp)}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool):
            raise bad()
        return value
    if _is_union(tp):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError:
                pass
        raise bad()
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or isinstance(value, str):
            raise bad()
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise bad()
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad()
        return {_convert(k, key_type, f"{key} key {k!r}"): _convert(v, value_type, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # PyYAML reads 1e-5 (no dot) as text
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise ConfigError(f"{key}: unsupported field type {tp}")  # internal: a field type this loader cannot read
