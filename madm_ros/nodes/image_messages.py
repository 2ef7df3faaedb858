"""``sensor_msgs/Image`` ↔ numpy through ``cv_bridge`` where installed, through numpy elsewhere.

Real ROS installs have cv_bridge, and users expect it to be the conversion; PyPI has no cv_bridge,
so :mod:`madm_ros.image_conversion` does the same job there. Both give identical arrays for every
encoding madm reads (a test checks this wherever cv_bridge is importable).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from madm_ros.errors import InputError
from madm_ros.image_conversion import IMAGE_ENCODINGS, array_to_image_fields, image_to_array

__all__ = ["array_to_image_msg", "cv_bridge_or_none", "image_msg_to_array"]


@functools.cache
def cv_bridge_or_none() -> Any:
    """A ``cv_bridge.CvBridge`` when the package is importable, else ``None``."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


def image_msg_to_array(message: Any) -> np.ndarray:
    """Pixels of an image message (H×W or H×W×C, native byte order, owning its memory).

    Raises:
        InputError: unsupported encoding or a message whose size fields disagree with its data.
    """
    if message.encoding not in IMAGE_ENCODINGS:
        raise InputError(f"image encoding {message.encoding!r} is not supported; supported: {', '.join(IMAGE_ENCODINGS)}")
    bridge = cv_bridge_or_none()
    if bridge is None:
        return image_to_array(message)
    try:
        return np.array(bridge.imgmsg_to_cv2(message, desired_encoding="passthrough"))
    except Exception as error:  # cv_bridge raises CvBridgeError, TypeError or ValueError on bad sizes
        raise InputError(f"{message.encoding} image {message.width}×{message.height} could not be converted: {error}") \
            from None


def array_to_image_msg(array: np.ndarray, encoding: str, header: Any) -> Any:
    """An image message holding ``array`` with ``header`` copied (stamp and frame_id)."""
    from sensor_msgs.msg import Image

    bridge = cv_bridge_or_none()
    if bridge is not None:
        message = bridge.cv2_to_imgmsg(np.ascontiguousarray(array), encoding=encoding)
    else:
        message = Image(**array_to_image_fields(array, encoding))
    message.header = header
    return message
