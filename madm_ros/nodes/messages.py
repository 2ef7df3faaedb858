"""The messages a node reads and builds: images ↔ numpy, each frame's header, camera info scaled to the masks, labels.

Images go through ``cv_bridge`` where installed and through numpy elsewhere: real ROS installs
have cv_bridge, and users expect it to be the conversion; PyPI has no cv_bridge, so
:mod:`madm_ros.image_conversion` does the same job there. Both give identical arrays for every
encoding madm reads (a test checks this wherever cv_bridge is importable).
"""

from __future__ import annotations

import copy
import functools
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from madm_ros.errors import InputError
from madm_ros.image_conversion import IMAGE_ENCODINGS, array_to_image_fields, image_to_array
from madm_ros.ros_messages import split_ns
from madm_ros.segmenter import UNLABELLED

if TYPE_CHECKING:
    from madm_ros.frame_source import Frame
    from madm_ros.segmenter import Segmenter

__all__ = ["array_to_image_msg", "cv_bridge_or_none", "frame_header", "image_msg_to_array", "label_info_message",
           "scale_camera_matrix", "scaled_camera_info"]


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


def frame_header(frame: Frame) -> Any:
    """The ``std_msgs/Header`` every output of ``frame`` carries: its stamp and frame id."""
    from builtin_interfaces.msg import Time
    from std_msgs.msg import Header

    sec, nanosec = split_ns(frame.stamp_ns)
    return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame.frame_id)


def scale_camera_matrix(values: Any, sx: float, sy: float, columns: int) -> list[float]:
    """Scale a row-major camera matrix (``K``: 3 columns, ``P``: 4) to an image resized by ``sx``, ``sy``.

    Rows 0 and 1 (focal lengths, principal point, and for ``P`` the baseline term) scale with x
    and y; row 2 is unchanged, as image_proc's resize does.
    """
    out = [float(v) for v in values]
    for c in range(columns):
        out[c] *= sx
        out[columns + c] *= sy
    return out


def scaled_camera_info(info: Any, window: tuple[int, int, int, int], mask_hw: tuple[int, ...], header: Any) -> Any:
    """``info`` cropped to ``window`` (``x0, y0, width, height``: the event crop) and scaled to the masks, with ``header``.

    Why: RViz's Camera display and depth-to-cloud tools take the masks' intrinsics from the
    camera info beside them, which must describe the mask's pixels, not the camera's.
    """
    out = copy.deepcopy(info)
    out.header = header
    x0, y0, width, height = window
    sx, sy = mask_hw[1] / width, mask_hw[0] / height
    k, p = list(out.k), list(out.p)
    k[2] -= x0
    k[5] -= y0
    p[2] -= x0
    p[6] -= y0
    out.k = scale_camera_matrix(k, sx, sy, 3)
    out.p = scale_camera_matrix(p, sx, sy, 4)
    out.width, out.height = int(mask_hw[1]), int(mask_hw[0])
    out.binning_x = out.binning_y = 0
    out.roi.x_offset = out.roi.y_offset = out.roi.width = out.roi.height = 0
    out.roi.do_rectify = False
    return out


def label_info_message(segmenter: Segmenter, stamp: Any) -> Any:
    """``madm_ros/SegmentationInfo`` of a loaded model: class names, palette, modality, file name and SHA-256."""
    from madm_ros.msg import SegmentationInfo

    path = Path(str(segmenter.backend.describe().get("path", "")))
    digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    labels = segmenter.label_set
    info = SegmentationInfo(class_names=list(labels.class_names), palette=labels.palette().reshape(-1).tolist(),
                            unlabelled_id=UNLABELLED, modality=segmenter.modality, model_name=path.name,
                            model_sha256=digest)
    info.header.stamp = stamp
    return info
