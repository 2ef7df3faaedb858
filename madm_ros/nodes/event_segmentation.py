"""Event segmentation node: ``events`` in, edge frames accumulated in real time, masks out.

The subscription callback decodes and accumulates (:class:`madm_ros.frame_source.EventFrames`),
publishes every completed edge frame on ``~/edge_frame`` (mono8: exactly the image the network
sees) and hands the newest frame to the inference thread; it never waits for inference, so a slow
model drops frames (counted) instead of events. Frames are stamped with the end of their slice
in ROS time and keep the packets' ``frame_id``.

The message type is a parameter (``message_type``: event_packet, dvs, dv, packed). Until the first
message arrives the node compares it with the type of the publishers on ``events`` and reports
a mismatch, which would otherwise look like silence.

Decoding is the node's largest cost at high event rates, so the ``events`` subscription follows
the outputs: while nobody subscribes to any output (masks, overlay, edge frame, camera info) the
node unsubscribes from ``events`` and decodes nothing; it subscribes again within
``FOLLOW_PERIOD_S`` of the first output subscriber (the accumulation then starts afresh).
Diagnostics show ``events_subscribed``.

Run alone: ``ros2 run madm_ros event_segmentation --ros-args -r events:=/event_camera/events``.
"""

from __future__ import annotations

import sys
from typing import Any

from madm_ros.errors import ConfigError
from madm_ros.events.stream import MESSAGE_TYPES
from madm_ros.frame_source import EventFrames, Frame
from madm_ros.node_params import EventParams
from madm_ros.nodes.base import SegmentationNode, qos_profile
from madm_ros.nodes.image_messages import array_to_image_msg
from madm_ros.ros_messages import message_class_of

__all__ = ["EventSegmentationNode", "main", "message_class"]


def message_class(message_type: str) -> Any:
    """The Python class of a ``message_type`` parameter value (``ConfigError`` naming the package to install)."""
    if message_type not in MESSAGE_TYPES:
        raise ConfigError(f"message_type must be one of {', '.join(MESSAGE_TYPES)}, got {message_type!r}")
    return message_class_of(MESSAGE_TYPES[message_type])


FOLLOW_PERIOD_S = 0.2
"""How often the node checks whether its outputs have subscribers (and so whether to decode events)."""


class EventSegmentationNode(SegmentationNode):
    """Accumulates ``events`` into edge frames and segments the newest one."""

    PARAMS = EventParams
    MODALITY = "events"

    def __init__(self, node_name: str = "event_segmentation", **kwargs: Any) -> None:
        self._received_any = False
        self._events: Any = None  # the events subscription while any output has a subscriber
        self._event_class: Any = None
        self._follow_timer: Any = None
        super().__init__(node_name, **kwargs)

    def _extra_image_outputs(self) -> tuple[str, ...]:
        return ("edge_frame",)

    def _subscribe(self) -> None:
        from sensor_msgs.msg import CameraInfo

        params = self.params
        try:
            cls = message_class(params.message_type)
        except ConfigError as error:
            self._failure = str(error)
            self.get_logger().error(str(error))
            return
        self._event_class = cls
        self.source = self._make_source()
        self._inputs = [self.create_subscription(CameraInfo, "camera_info", self._on_camera_info,
                                                 qos_profile(params.input_qos, 5), callback_group=self._input_group)]
        self._follow_outputs()
        self._follow_timer = self.create_timer(FOLLOW_PERIOD_S, self._follow_outputs, callback_group=self._input_group)

    def _make_source(self) -> EventFrames:
        return EventFrames(self.params, self.problems)

    def _follow_outputs(self) -> None:
        """Subscribe to ``events`` while any output has a subscriber; unsubscribe (decode nothing) otherwise."""
        listened = any(publisher.get_subscription_count() > 0 for name, publisher in self._outputs.items()
                       if name != "label_info")
        if listened and self._events is None:
            qos = qos_profile(self.params.input_qos, self.params.input_qos_depth)
            self._events = self.create_subscription(self._event_class, "events", self._on_events, qos,
                                                    callback_group=self._input_group)
            self._inputs.append(self._events)
        elif not listened and self._events is not None:
            self._inputs.remove(self._events)
            self.destroy_subscription(self._events)
            self._events = None
            self.source = self._make_source()  # the next subscriber gets a fresh stream, not a stale slice
            self.get_logger().info("no subscriber on any output: unsubscribed from events until one subscribes")

    def on_deactivate(self, state: Any) -> Any:
        """Stop following the outputs, then unsubscribe as every node does."""
        if self._follow_timer is not None:
            self.destroy_timer(self._follow_timer)
            self._follow_timer = None
        self._events = None
        return super().on_deactivate(state)

    def counters(self) -> dict[str, Any]:
        """The base counters plus whether the events subscription is open."""
        return {**super().counters(), "events_subscribed": int(self._events is not None)}

    def _camera_window(self, info: Any) -> tuple[int, int, int, int]:
        crop = self.params.crop
        return tuple(crop) if crop else super()._camera_window(info)  # type: ignore[return-value]

    def _on_events(self, message: Any) -> None:
        self._received_any = True
        self._on_input(message)

    def _publish_input_frame(self, frame: Frame, header: Any) -> None:
        if self.wanted("edge_frame"):
            self._outputs["edge_frame"].publish(array_to_image_msg(frame.array, "mono8", header))

    def _publish_diagnostics(self) -> None:
        if not self._received_any and self._events is not None:
            self._check_topic_type()
        super()._publish_diagnostics()

    def _check_topic_type(self) -> None:
        wanted = MESSAGE_TYPES[self.params.message_type]
        topic = self._events.topic_name
        for name, types in self.get_topic_names_and_types():
            if name == topic and wanted not in types:
                self.report_problem("events_type_mismatch", f"{topic} carries {', '.join(types)} but message_type is "
                                    f"{self.params.message_type} ({wanted}); set message_type to match")


def main(args: list[str] | None = None) -> int:
    """``ros2 run madm_ros event_segmentation``: one node, spun until Ctrl-C."""
    from madm_ros.nodes.spin import spin_nodes

    return spin_nodes([EventSegmentationNode], sys.argv if args is None else args)


if __name__ == "__main__":
    sys.exit(main())
