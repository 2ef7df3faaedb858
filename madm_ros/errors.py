"""Errors raised by madm: each message names the bad input and what to do about it.

Nodes catch :class:`MadmError`, log it, count it in diagnostics and keep running; command-line
tools turn it into a one-line message and exit code 2.
"""

from __future__ import annotations

__all__ = ["ConfigError", "DecodeError", "InputError", "MadmError"]


class MadmError(Exception):
    """Base class of every error madm raises on purpose."""


class InputError(MadmError, ValueError):
    """An image, label or array is not what the caller said it is (encoding, shape, range)."""


class DecodeError(MadmError, ValueError):
    """An event payload, file or bag could not be decoded (unknown encoding, corrupt or truncated data)."""


class ConfigError(MadmError, ValueError):
    """A configuration value or parameter is missing, unknown or out of range."""
