"""``sensor_msgs/Image`` ↔ numpy without cv_bridge (which is not on PyPI).

Reads only the attributes ``height``, ``width``, ``encoding``, ``is_bigendian``, ``step`` and
``data``, so rclpy messages, rosbags messages and test stubs all work. Rows may be padded
(``step`` larger than ``width`` × pixel size) and data may be big-endian; both are honoured,
and the result is always a native-endian array that owns its memory.

Sizes are checked against :class:`~madm_ros.limits.InputLimits` from the header fields, before
the pixel data is read or copied, so a message claiming a huge image cannot make madm allocate it.
"""

from __future__ import annotations

import array as pyarray
from typing import Any

import numpy as np

from madm_ros.errors import InputError
from madm_ros.limits import DEFAULT_LIMITS, InputLimits, check_image_size

__all__ = ["IMAGE_ENCODINGS", "array_to_image_fields", "image_to_array"]

IMAGE_ENCODINGS: dict[str, tuple[type[np.generic], int]] = {
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "8UC3": (np.uint8, 3),
}
"""Encodings madm reads and writes: dtype and channels per pixel."""


def image_to_array(message: Any, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """The pixels of an image message as an H×W or H×W×C array of the encoding's dtype.

    Args:
        message: Anything with the ``sensor_msgs/Image`` fields (rclpy, rosbags, a namespace).
        limits: Largest width and height accepted; checked before ``data`` is touched.

    Raises:
        InputError: unsupported encoding, no pixels, a size beyond ``limits``, or ``step``/``data``
            too short for the size the message claims.
    """
    encoding = message.encoding
    if encoding not in IMAGE_ENCODINGS:
        raise InputError(f"image encoding {encoding!r} is not supported; supported: {', '.join(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height, width, step = int(message.height), int(message.width), int(message.step)
    if height <= 0 or width <= 0:
        raise InputError(f"{encoding} image has no pixels ({width}×{height})")
    check_image_size(width, height, limits, what=f"{encoding} image")
    row_bytes = width * channels * np.dtype(dtype).itemsize
    data = message.data  # bytes (tests), array.array (rclpy) or a uint8 ndarray (rosbags)
    data = np.frombuffer(data, np.uint8) if isinstance(data, (bytes, bytearray, memoryview, pyarray.array)) else (
        np.asarray(data, dtype=np.uint8).reshape(-1))
    if step < row_bytes or data.size < step * (height - 1) + row_bytes:
        raise InputError(
            f"{encoding} image {width}×{height} needs step ≥ {row_bytes} and {step * (height - 1) + row_bytes} bytes, "
            f"got step {step} and {data.size} bytes (truncated or mis-described message)"
        )
    rows = np.lib.stride_tricks.as_strided(data, shape=(height, row_bytes), strides=(step, 1))
    big = bool(message.is_bigendian)
    typed = np.ascontiguousarray(rows).view(np.dtype(dtype).newbyteorder(">" if big else "<"))
    array = typed.astype(dtype, copy=True).reshape(height, width, channels)
    return array[:, :, 0] if channels == 1 else array


def array_to_image_fields(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """Field values of an image message holding ``array`` (little-endian, unpadded rows)."""
    if encoding not in IMAGE_ENCODINGS:
        raise InputError(f"image encoding {encoding!r} is not supported; supported: {', '.join(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    expected_ndim = 2 if channels == 1 else 3
    if array.dtype != dtype or array.ndim != expected_ndim or (channels > 1 and array.shape[2] != channels):
        raise InputError(f"{encoding} needs a {np.dtype(dtype).name} array with {channels} channel(s), "
                         f"got {array.dtype} with shape {array.shape}")
    little = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<"))
    return {
        "height": array.shape[0],
        "width": array.shape[1],
        "encoding": encoding,
        "is_bigendian": 0,
        "step": array.shape[1] * channels * np.dtype(dtype).itemsize,
        "data": little.tobytes(),
    }
