"""The one event record every decoder returns and every accumulator consumes.

Events are a structure of arrays (not a numpy structured array) because the hot loops read one
field at a time and ROS messages carry the fields as separate primitive arrays.

Conventions, used everywhere in madm:
- ``x`` uint16 column (0 = left), ``y`` uint16 row (0 = top);
- ``t`` int64 **microseconds** on the sensor clock of the stream (absolute where the format says
  so, e.g. ``time_base`` of libcaer packets or DSEC's ``t_offset``; EVT3 streams start wherever the
  sensor counter was and are unwrapped past its 2^24 µs roll-over);
- ``p`` uint8 polarity, 1 = ON (brighter), 0 = OFF.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["EVENT_ARRAY_MESSAGES", "MESSAGE_TYPES", "DecodeStats", "Events"]


MESSAGE_TYPES: dict[str, str] = {
    "event_packet": "event_camera_msgs/msg/EventPacket",
    "dvs": "dvs_msgs/msg/EventArray",
    "dv": "dv_ros2_msgs/msg/EventArray",
    "packed": "madm_ros/msg/PackedEvents",
}
"""``message_type`` parameter value → ROS message type the event node subscribes to."""

EVENT_ARRAY_MESSAGES: tuple[str, ...] = ("dvs", "dv")
"""The ``message_type`` values whose messages are ``EventArray``s: each event carries its own ROS time stamp."""


@dataclass(frozen=True)
class Events:
    """Time-ordered events of one stream as four equally long arrays (see module docstring)."""

    x: np.ndarray
    y: np.ndarray
    t: np.ndarray
    p: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.x)
        for name, dtype in (("x", np.uint16), ("y", np.uint16), ("t", np.int64), ("p", np.uint8)):
            array = getattr(self, name)
            if array.dtype != dtype or array.ndim != 1 or len(array) != n:
                raise ValueError(
                    f"Events.{name} must be a 1-D {np.dtype(dtype).name} array of length {n}, "
                    f"got {array.dtype} with shape {array.shape}"
                )

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def empty(cls) -> Events:
        """No events."""
        return cls.from_arrays([], [], [], [])

    @classmethod
    def from_arrays(cls, x: object, y: object, t: object, p: object) -> Events:
        """Build from any array-likes, converting (and copying only where needed) to the record's dtypes."""
        return cls(
            np.asarray(x, dtype=np.uint16).reshape(-1),
            np.asarray(y, dtype=np.uint16).reshape(-1),
            np.asarray(t, dtype=np.int64).reshape(-1),
            np.asarray(p, dtype=np.uint8).reshape(-1),
        )

    @classmethod
    def concatenate(cls, parts: list[Events]) -> Events:
        """Join streams pieces in order (a single part is returned as is)."""
        if len(parts) == 1:
            return parts[0]
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(e, f) for e in parts]) for f in ("x", "y", "t", "p")))

    def __getitem__(self, index: slice | np.ndarray) -> Events:
        """Select events by slice or boolean / integer index array."""
        return Events(self.x[index], self.y[index], self.t[index], self.p[index])


@dataclass
class DecodeStats:
    """Counters a decoder keeps so that every dropped byte or event is accounted for.

    Nodes publish them in diagnostics; the ``info`` CLI prints their sum as ``dropped``.
    """

    packets: int = 0  # payloads / chunks handed to the decoder
    events: int = 0  # events returned to the caller
    out_of_range: int = 0  # events dropped because x >= width or y >= height
    bad_words: int = 0  # words with an unknown type or code, skipped
    truncated_bytes: int = 0  # bytes at the end of a payload that did not form a whole word
    time_backwards: int = 0  # events dropped because their time went backwards beyond the tolerance
    duplicate_packets: int = 0  # packets seen twice (same sequence number), skipped
    empty_packets: int = 0  # packets without any event

    @property
    def dropped_events(self) -> int:
        """Events decoded but not returned."""
        return self.out_of_range + self.time_backwards

    def as_dict(self) -> dict[str, int]:
        """Plain dict for JSON reports and diagnostics."""
        return dict(self.__dict__)
