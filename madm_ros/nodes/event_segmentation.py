"""Event segmentation node: ``events`` in, edge frames accumulated in real time, masks out.

The subscription callback decodes and accumulates (:class:`madm_ros.events.stream.EventFrameStream`),
publishes every completed edge frame on ``~/edge_frame`` (mono8: exactly the image the network
sees) and hands the newest frame to the inference thread; it never waits for inference, so a slow
model drops frames (counted) instead of events. Frames are stamped with the end of their slice
in ROS time and keep the packets' ``frame_id``.

The message type is a parameter (``message_type``: event_packet, dvs, dv, packed). Until the first
message arrives (again after every restart of the frame source) the node compares it with the
type of the publishers on ``events`` at each diagnostics tick and reports a mismatch, which would
otherwise look like silence.

Decoding is the node's largest cost at high event rates; like every node it takes its input only
while an output has a subscriber (:mod:`madm_ros.nodes.base`), so with nobody listening it
decodes nothing, and the accumulation starts afresh when someone subscribes.

Run alone: ``ros2 run madm_ros event_segmentation --ros-args -r events:=/event_camera/events``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from madm_ros.errors import ConfigError
from madm_ros.events.stream import MESSAGE_TYPES
from madm_ros.node_params import EventParams
from madm_ros.nodes.base import SegmentationNode
from madm_ros.ros_messages import message_class_of

if TYPE_CHECKING:
    from madm_ros.segmenter import Segmenter

__all__ = ["EventSegmentationNode", "main", "message_class"]


def message_class(message_type: str) -> Any:
    """The Python class of a ``message_type`` parameter value (``ConfigError`` naming the package to install)."""
    if message_type not in MESSAGE_TYPES:
        raise ConfigError(f"message_type must be one of {', '.join(MESSAGE_TYPES)}, got {message_type!r}")
    return message_class_of(MESSAGE_TYPES[message_type])


class EventSegmentationNode(SegmentationNode):
    """Accumulates ``events`` into edge frames and segments the newest one."""

    PARAMS = EventParams
    MODALITY = "events"
    INPUT = "events"
    INPUT_FRAME_TOPIC = "edge_frame"  # exactly the image the network sees

    def __init__(self, node_name: str = "event_segmentation", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)

    @classmethod
    def load_model(cls, params: Any, **options: Any) -> Segmenter:
        """The model, once the message package of ``message_type`` is known to be installed (else ``ConfigError``)."""
        message_class(params.message_type)
        return super().load_model(params, **options)

    def _camera_window(self, info: Any) -> tuple[int, int, int, int]:
        crop = self.params.crop
        return tuple(crop) if crop else super()._camera_window(info)  # type: ignore[return-value]

    def _input_type(self) -> tuple[str, str]:
        return MESSAGE_TYPES[self.params.message_type], "set message_type to match"


def main(args: list[str] | None = None) -> int:
    """``ros2 run madm_ros event_segmentation``: one node, spun until Ctrl-C."""
    from madm_ros.nodes.spin import spin_nodes

    return spin_nodes([EventSegmentationNode], sys.argv if args is None else args)


if __name__ == "__main__":
    sys.exit(main())
