"""Event messages from ROS 1 / ROS 2 bags, read with ``rosbags`` (pure Python, no ROS install).

Supported message types: ``event_camera_msgs/msg/EventPacket`` (any encoding of
:class:`~madm_ros.events.codecs.PacketDecoder`), ``dvs_msgs/msg/EventArray``,
``dv_ros2_msgs/msg/EventArray`` and the package's ``madm_ros/msg/PackedEvents``. Their definitions
are registered from message text, so bags recorded without the definitions embedded read too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from madm_ros.errors import DecodeError
from madm_ros.events.codecs import (
    PacketDecoder,
    decode_packet,
    events_from_event_array,
    events_from_packed,
)
from madm_ros.events.types import DecodeStats, Events

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

__all__ = [
    "EVENT_MSG_DEFINITIONS",
    "describe_topics",
    "event_typestore",
    "iter_bag_events",
    "iter_event_messages",
    "open_bag",
    "read_bag_events",
]

EVENT_PACKET = "event_camera_msgs/msg/EventPacket"
PACKED_EVENTS = "madm_ros/msg/PackedEvents"
EVENT_ARRAYS = ("dvs_msgs/msg/EventArray", "dv_ros2_msgs/msg/EventArray")

_EVENT = """uint16 x
uint16 y
builtin_interfaces/Time ts
bool polarity
"""

_EVENT_ARRAY = """std_msgs/Header header
uint32 height
uint32 width
{pkg}/Event[] events
"""

# message type -> definition text (ROS 2 .msg syntax), as published by the drivers
EVENT_MSG_DEFINITIONS: dict[str, str] = {
    EVENT_PACKET: """std_msgs/Header header
uint32 height
uint32 width
uint64 seq
uint64 time_base
string encoding
bool is_bigendian
uint8[] events
""",
    "dvs_msgs/msg/Event": _EVENT,
    "dvs_msgs/msg/EventArray": _EVENT_ARRAY.format(pkg="dvs_msgs"),
    "dv_ros2_msgs/msg/Event": _EVENT,
    "dv_ros2_msgs/msg/EventArray": _EVENT_ARRAY.format(pkg="dv_ros2_msgs"),
    PACKED_EVENTS: """std_msgs/Header header
uint32 height
uint32 width
uint64 seq
uint16[] x
uint16[] y
int64[] t
uint8[] polarity
""",
}

EVENT_TYPES = (EVENT_PACKET, *EVENT_ARRAYS, PACKED_EVENTS)


def event_typestore() -> Typestore:
    """Return a rosbags typestore (ROS 2 Humble base) with all event message types registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict[str, Any] = {}
    for name, text in EVENT_MSG_DEFINITIONS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


@contextmanager
def open_bag(path: Path) -> Iterator[Any]:
    """Open a bag with rosbags' ``AnyReader`` and the event types registered; close it afterwards.

    Raises:
        DecodeError: the path is not a readable bag (rosbags raises several unrelated exception
            types for that; they become one error naming the path).

    """
    from rosbags.highlevel import AnyReader

    try:
        reader = AnyReader([path], default_typestore=event_typestore())
        reader.open()
    except Exception as exc:  # see the docstring
        raise DecodeError(f"cannot open {path} as a bag: {exc}") from None
    try:
        yield reader
    finally:
        reader.close()


def describe_topics(connections: list[Any]) -> str:
    """``topic (type), …`` of a bag's connections, for error messages."""
    return ", ".join(sorted({f"{c.topic} ({c.msgtype})" for c in connections})) or "no topics"


def iter_event_messages(bag_path: str | Path, topic: str | None = None) -> Iterator[tuple[str, str, int, Any]]:
    """Yield ``(topic, msgtype, timestamp_ns, message)`` for the event messages of a bag, in log-time order.

    Args:
        bag_path: a ROS 2 bag folder (or a ROS 1 ``.bag`` file).
        topic: only this topic; ``None`` = every topic of a supported event type.

    Raises:
        DecodeError: the path is not a readable bag, ``topic`` is missing or of an unsupported
            type, or the bag holds no event topic; the message lists the bag's topics.

    """
    path = Path(bag_path)
    with open_bag(path) as reader:
        connections = list(reader.connections)
        if topic is not None:
            chosen = [c for c in connections if c.topic == topic]
            if not chosen:
                raise DecodeError(f"bag {path} has no topic {topic!r}; it has: {describe_topics(connections)}")
            unsupported = [c for c in chosen if c.msgtype not in EVENT_TYPES]
            if unsupported:
                raise DecodeError(
                    f"topic {topic!r} in {path} is {unsupported[0].msgtype}, not an event type; "
                    f"supported: {', '.join(EVENT_TYPES)}"
                )
        else:
            chosen = [c for c in connections if c.msgtype in EVENT_TYPES]
            if not chosen:
                raise DecodeError(f"bag {path} has no event topic; it has: {describe_topics(connections)}")
        for connection, timestamp, raw in reader.messages(connections=chosen):
            msg = reader.deserialize(raw, connection.msgtype)
            yield connection.topic, connection.msgtype, timestamp, msg


def iter_bag_events(
    bag_path: str | Path,
    topic: str | None = None,
    *,
    stats: DecodeStats | None = None,
    info: dict[str, Any] | None = None,
) -> Iterator[tuple[int, Events]]:
    """Decoded events of one event topic, one message at a time: ``(log time in ns, events)``.

    Streams (a long bag is never held in memory). ``stats`` and ``info`` (see
    :func:`read_bag_events`), when given, are filled in as messages are decoded.

    Raises:
        DecodeError: as :func:`iter_event_messages`, or when ``topic`` is left out and the bag has
            several event topics.

    """
    if topic is None:
        topics = sorted({t for t, *_ in _event_topics(bag_path)})
        if len(topics) > 1:
            raise DecodeError(f"bag {bag_path} has several event topics ({', '.join(topics)}); pass topic=")
    stats = DecodeStats() if stats is None else stats
    info = {} if info is None else info
    info.update({"topic": topic, "msgtype": None, "width": 0, "height": 0, "encoding": None, "messages": 0})
    decoder: PacketDecoder | None = None
    last_seq: int | None = None
    for msg_topic, msgtype, timestamp, msg in iter_event_messages(bag_path, topic):
        if info["messages"] == 0:
            info.update(topic=msg_topic, msgtype=msgtype, width=int(msg.width), height=int(msg.height))
            info["encoding"] = str(msg.encoding) if msgtype == EVENT_PACKET else msgtype
        info["messages"] += 1
        if msgtype == EVENT_PACKET:
            if decoder is None:
                decoder = PacketDecoder(str(msg.encoding), int(msg.width), int(msg.height))
                decoder.stats = stats
            yield timestamp, decode_packet(msg, decoder)
        elif msgtype == PACKED_EVENTS:
            if last_seq is not None and int(msg.seq) == last_seq:
                stats.packets += 1
                stats.duplicate_packets += 1
                continue
            last_seq = int(msg.seq)
            yield timestamp, events_from_packed(msg, stats)
        else:
            yield timestamp, events_from_event_array(msg, stats)


def read_bag_events(bag_path: str | Path, topic: str | None = None) -> tuple[Events, DecodeStats, dict[str, Any]]:
    """All events of one event topic of a bag, in memory (use :func:`iter_bag_events` for long bags).

    Args:
        bag_path: the bag.
        topic: the event topic; may be left out when the bag has exactly one.

    Returns:
        ``(events, stats, info)`` with ``info`` = ``{"topic", "msgtype", "width", "height",
        "encoding", "messages"}``; ``encoding`` is the EventPacket encoding, or the message type
        for per-event arrays and PackedEvents.

    Raises:
        DecodeError: as :func:`iter_bag_events`, or when a packet's encoding or size changes mid-stream.

    """
    stats = DecodeStats()
    info: dict[str, Any] = {}
    parts = [events for _, events in iter_bag_events(bag_path, topic, stats=stats, info=info)]
    return Events.concatenate(parts), stats, info


def _event_topics(bag_path: str | Path) -> list[tuple[str, str]]:
    """``(topic, msgtype)`` of the bag's event connections, without reading messages."""
    with open_bag(Path(bag_path)) as reader:
        return [(c.topic, c.msgtype) for c in reader.connections if c.msgtype in EVENT_TYPES]
