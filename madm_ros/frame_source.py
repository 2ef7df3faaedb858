"""One input topic's messages → stamped network frames: the path the nodes, ``bag_eval`` and ``adapt --target-bag`` share.

A frame source takes the messages of one input topic in arrival order and returns the frames they
complete. A depth or thermal ``sensor_msgs/Image`` gives one frame: its pixels (converted by
:func:`madm_ros.image_conversion.image_to_array`, or cv_bridge in a node that has it) with its
header's stamp and ``frame_id``. Event messages give the edge frames of
:class:`~madm_ros.events.stream.EventFrameStream` — exactly the network's input — stamped with the
end of their slice and the ``frame_id`` of the message that completed them.

Bad messages never raise: each is counted by kind in the source's
:class:`~madm_ros.problems.ProblemCounter` (which tells the first of each kind) and skipped. The
node pushes from its subscription callback and hands the frames to its inference thread;
``bag_eval`` segments every frame; ``adapt --target-bag`` writes them as a training folder. One
code path, so the three see identical frames (tested on the real bag).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from madm_ros.errors import MadmError
from madm_ros.limits import DEFAULT_LIMITS, InputLimits, check_image_size
from madm_ros.problems import ProblemCounter
from madm_ros.ros_messages import stamp_to_ns

if TYPE_CHECKING:
    from madm_ros.events.stream import EventFrameStream

__all__ = ["Frame", "ImageFrames", "frame_source"]


@dataclass(frozen=True)
class Frame:
    """A frame for the network with the stamp and frame id its outputs carry.

    Attributes:
        array: Image pixels as converted (H×W or H×W×C), or the uint8 edge frame.
        encoding: The image's encoding (``16UC1``, ``mono16``, …); ``mono8`` for edge frames.
        stamp_ns: ROS time: the image's header stamp, or the end of the event slice.
        frame_id: The header ``frame_id`` of the message it came from.
    """

    array: np.ndarray
    encoding: str
    stamp_ns: int
    frame_id: str


class ImageFrames:
    """``sensor_msgs/Image`` messages → one frame each; unconvertible ones counted and skipped.

    Args:
        problems: Where problems are counted (``bad_image:<encoding>``, ``size_change``).
        convert: Message → array (``image_to_array``; nodes pass their cv_bridge-aware converter).
        limits: Larger images are refused from their header, before any pixel is read.
    """

    kind = "image"

    def __init__(self, problems: ProblemCounter, convert: Callable[[Any], np.ndarray] | None = None,
                 limits: InputLimits = DEFAULT_LIMITS) -> None:
        from madm_ros.image_conversion import image_to_array

        self.problems = problems
        self.convert = convert or image_to_array
        self.limits = limits
        self._size: tuple[int, ...] | None = None
        self.messages = 0

    def push(self, message: Any) -> list[Frame]:
        """The frame of one image message (none for a message that cannot be converted)."""
        self.messages += 1
        try:
            check_image_size(message.width, message.height, self.limits, what=f"{message.encoding} image")
            array = self.convert(message)
        except MadmError as error:
            self.problems.report(f"bad_image:{message.encoding}", f"image skipped: {error}")
            return []
        size = array.shape[:2]
        if self._size is not None and size != self._size:
            self.problems.report("size_change", f"input size changed from {self._size[1]}x{self._size[0]} to "
                                 f"{size[1]}x{size[0]}; masks follow the input")
        self._size = size
        return [Frame(array, str(message.encoding), stamp_to_ns(message.header.stamp), str(message.header.frame_id))]

    def counters(self) -> dict[str, int]:
        """Nothing beyond the problems (kept for symmetry with ``EventFrameStream.counters``)."""
        return {}


def frame_source(kind: str, params: Any, problems: ProblemCounter,
                 convert: Callable[[Any], np.ndarray] | None = None) -> ImageFrames | EventFrameStream:
    """The source for an ``image`` or ``events`` topic with the node parameters ``params``.

    Both have ``push(message) -> list[Frame]``, ``counters()``, ``problems``, ``kind`` and
    ``messages``. An event topic gets an :class:`~madm_ros.events.stream.EventFrameStream` with the
    parameters' message type, accumulation, restart, gap and sensor-size settings (``convert`` is
    for images only).
    """
    if kind != "events":
        return ImageFrames(problems, convert, params.limits)
    from madm_ros.events.stream import EventFrameStream
    from madm_ros.node_params import edge_fields

    return EventFrameStream(params.message_type, edge_fields(params), problems,
                            restart_after_us=round(params.restart_after_ms * 1000), limits=params.limits)
