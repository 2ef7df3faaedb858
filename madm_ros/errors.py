"""Errors raised by madm: each message names the bad input and what to do about it.

Nodes catch :class:`MadmError`, log it, count it in diagnostics and keep running; command-line
tools turn it into a one-line message and exit code 2.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["BackendError", "ConfigError", "DecodeError", "InputError", "MadmError", "check_known_keys", "close_name"]


class MadmError(Exception):
    """Base class of every error madm raises on purpose."""


class InputError(MadmError, ValueError):
    """An image, label or array is not what the caller said it is (encoding, shape, range)."""


class DecodeError(MadmError, ValueError):
    """An event payload, file or bag could not be decoded (unknown encoding, corrupt or truncated data)."""


class ConfigError(MadmError, ValueError):
    """A configuration value or parameter is missing, unknown or out of range."""


class BackendError(MadmError, RuntimeError):
    """An inference backend cannot be used: library missing, model or engine file corrupt, engine built elsewhere."""


def close_name(name: str, known: Iterable[str]) -> str | None:
    """The one of ``known`` that ``name`` is most likely a misspelling of, if any is close enough."""
    import difflib

    close = difflib.get_close_matches(name, list(known), 1, 0.8)
    return close[0] if close else None


def check_known_keys(values: Mapping[str, Any], cls: type, what: str) -> None:
    """Refuse keys of ``values`` that are not fields of the dataclass ``cls`` (``what`` names the source).

    Configuration read from files is checked this way so that a misspelt key is an error instead
    of a silently ignored setting.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        guesses = [f"{close} for {key}" for key in unknown if (close := close_name(key, known))]
        hint = f" (did you mean {', '.join(guesses)}?)" if guesses else ""
        raise ConfigError(f"unknown {what} keys {unknown}{hint}; known: {sorted(known)}")
