"""Size limits on incoming frames and event sensors, checked before anything large is allocated.

A message's ``width`` and ``height`` are numbers a recording or a misbehaving driver can set to
anything: a 10000×10000 depth image costs about 6.5 GB on its way through preprocessing, and an
event packet that claims a 65535×65535 sensor makes the edge-frame accumulator ask for 4 GiB per
frame. Such sizes are refused here, from the header fields alone, with an :class:`InputError`
that a node logs and counts like any other bad message.

The defaults (4096×4096) are about twice the largest cameras madm is meant for, so no real
sensor is refused while a frame stays below 64 MiB even as float32: depth cameras deliver up to
2208×1242 (ZED 2 at 2K; RealSense D4xx 1280×720, Azure Kinect 1024×1024), the colour side of
RGB-D cameras up to 4096×3072 (Azure Kinect), thermal cameras 640×512 to 1280×1024, and event
sensors 346×260 (DAVIS346) to 1280×720 (Prophesee IMX636), 1280×960 (Samsung Gen4) and
2048×2048 at the very largest. Raise them (node parameters ``max_input_width`` /
``max_input_height``) for a larger sensor.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

from madm_ros.errors import ConfigError, InputError

__all__ = ["DEFAULT_LIMITS", "InputLimits", "check_image_size", "check_sensor_size"]


@dataclass(frozen=True)
class InputLimits:
    """Largest frame or sensor size madm accepts (see the module docstring for why these defaults).

    Attributes:
        max_width: Largest accepted width (columns), pixels.
        max_height: Largest accepted height (rows), pixels.
    """

    max_width: int = 4096
    max_height: int = 4096

    def __post_init__(self) -> None:
        for name in ("max_width", "max_height"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"InputLimits.{name} must be a positive integer (pixels), got {value!r}")


DEFAULT_LIMITS = InputLimits()
"""The limits used wherever a caller passes none (bag evaluation, the demo, tests)."""


def _pixels(value: Any, name: str, what: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        raise InputError(f"{what} {name} must be an integer number of pixels, got {value!r}") from None


def check_image_size(width: Any, height: Any, limits: InputLimits = DEFAULT_LIMITS, *, what: str = "image") -> None:
    """Refuse a frame of ``width`` × ``height`` pixels beyond ``limits``; call it before touching the pixels.

    Sizes of zero or below are left to the caller, which knows whether an empty frame is an error
    (image conversion says "no pixels" itself).

    Raises:
        InputError: ``width`` or ``height`` is not an integer, or exceeds ``limits`` (the message names
            both sizes, the limits and the parameters that raise them).
    """
    columns, rows = _pixels(width, "width", what), _pixels(height, "height", what)
    if columns > limits.max_width or rows > limits.max_height:
        raise InputError(
            f"{what} of {columns}×{rows} pixels exceeds the input limit of {limits.max_width}×{limits.max_height} "
            "(a corrupt header, or a sensor larger than madm expects); refused before allocating it. "
            "Raise max_input_width / max_input_height if the sensor really is this large"
        )


def check_sensor_size(width: Any, height: Any, limits: InputLimits = DEFAULT_LIMITS) -> None:
    """Refuse an event sensor size (from a packet or file header) that is empty or beyond ``limits``.

    Event streams call this with the width and height a message claims before building decoders
    and accumulators for them, whose frames are ``width`` × ``height``.

    Raises:
        InputError: a size is not a positive integer or exceeds ``limits``.
    """
    what = "event sensor"
    columns, rows = _pixels(width, "width", what), _pixels(height, "height", what)
    if columns <= 0 or rows <= 0:
        raise InputError(f"{what} size {columns}×{rows} has no pixels; the stream's width and height must be "
                         "positive (a corrupt or unset header)")
    check_image_size(columns, rows, limits, what=what)
