"""Event messages from ROS 1 / ROS 2 bags, read through madm's one bag reader (pure Python, no ROS install).

Supported message types: ``event_camera_msgs/msg/EventPacket`` (any encoding of
:class:`~madm_ros.events.codecs.PacketDecoder`), ``dvs_msgs/msg/EventArray``,
``dv_ros2_msgs/msg/EventArray`` and the package's ``madm_ros/msg/PackedEvents``. Their definitions
are registered from message text (:func:`event_typestore`), so bags recorded without the
definitions embedded read too.

The iterators here are thin layers over :class:`madm_ros.bag_source.BagSource`, which every bag
tool shares: a recording it can read only in part (a truncated file) yields what it holds, and the
caller learns why through ``info["problem"]``, or through a :class:`DecodeError` at the end when it
passed no ``info``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from madm_ros.bag_source import BagSource
from madm_ros.errors import DecodeError
from madm_ros.events.codecs import (
    PacketDecoder,
    decode_packet,
    events_from_event_array,
    events_from_packed,
)
from madm_ros.events.types import EVENT_ARRAY_MESSAGES, MESSAGE_TYPES, DecodeStats, Events

if TYPE_CHECKING:
    from rosbags.typesys.store import Typestore

__all__ = [
    "EVENT_MSG_DEFINITIONS",
    "describe_topics",
    "event_typestore",
    "iter_bag_events",
    "iter_event_messages",
    "read_bag_events",
]

EVENT_PACKET = MESSAGE_TYPES["event_packet"]
PACKED_EVENTS = MESSAGE_TYPES["packed"]
EVENT_ARRAYS = tuple(MESSAGE_TYPES[k] for k in EVENT_ARRAY_MESSAGES)
EVENT_TYPES = tuple(MESSAGE_TYPES.values())

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
    # dvs_msgs and dv_ros2_msgs: the same EventArray, each package with its own Event
    **{f"{array.split('/')[0]}/msg/Event": _EVENT for array in EVENT_ARRAYS},
    **{array: _EVENT_ARRAY.format(pkg=array.split("/")[0]) for array in EVENT_ARRAYS},
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


def event_typestore() -> Typestore:
    """Return a rosbags typestore (ROS 2 Humble base) with all event message types registered."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    types: dict[str, Any] = {}
    for name, text in EVENT_MSG_DEFINITIONS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def describe_topics(connections: list[Any]) -> str:
    """``topic (type), …`` of a bag's connections (anything with ``topic`` and ``msgtype``), for error messages."""
    return ", ".join(sorted({f"{c.topic} ({c.msgtype})" for c in connections})) or "no topics"


def _chosen_topics(source: BagSource, topic: str | None) -> list[str]:
    """``[topic]`` after checking it exists with an event type, or every event topic; errors list the bag's topics."""
    connections = source.connections
    if topic is not None:
        if topic not in source.topics:
            raise DecodeError(f"bag {source.path} has no topic {topic!r}; it has: {describe_topics(connections)}")
        if source.topics[topic] not in EVENT_TYPES:
            raise DecodeError(
                f"topic {topic!r} in {source.path} is {source.topics[topic]}, not an event type; "
                f"supported: {', '.join(EVENT_TYPES)}"
            )
        return [topic]
    chosen = [c.topic for c in connections if c.msgtype in EVENT_TYPES]
    if not chosen:
        raise DecodeError(f"bag {source.path} has no event topic; it has: {describe_topics(connections)}")
    return chosen


def _finish(source: BagSource, info: dict[str, Any] | None) -> None:
    """Hand on how the bag was read: into ``info``, or as an error when it was read only in part and nobody asked."""
    if info is not None:
        info.update(problem=source.problem, read_note=source.note)
    elif source.problem:
        raise DecodeError(f"{source.path} was read only in part: {source.problem}; the messages before that were "
                          "delivered (pass info= to accept a partial bag)")


def iter_event_messages(
    bag_path: str | Path, topic: str | None = None, *, info: dict[str, Any] | None = None
) -> Iterator[tuple[str, str, int, Any]]:
    """Yield ``(topic, msgtype, timestamp_ns, message)`` for the event messages of a bag, in log-time order.

    Args:
        bag_path: a ROS 2 bag folder or file (or a ROS 1 ``.bag`` file).
        topic: only this topic; ``None`` = every topic of a supported event type.
        info: when given, receives ``problem`` (why only part was read, empty when whole) and
            ``read_note`` (how the bag was read when not normally), and a partial read ends quietly.

    Raises:
        DecodeError: the path is not a readable bag, ``topic`` is missing or of an unsupported
            type, or the bag holds no event topic (the message lists the bag's topics); at the end,
            when the bag was read only in part and no ``info`` was passed.

    """
    with BagSource(bag_path) as source:
        for msg_topic, msgtype, timestamp, raw in source.messages(_chosen_topics(source, topic)):
            yield msg_topic, msgtype, timestamp, source.deserialize(raw, msgtype)
        _finish(source, info)


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
    stats = DecodeStats() if stats is None else stats
    report: dict[str, Any] = {} if info is None else info
    report.update({"topic": topic, "msgtype": None, "width": 0, "height": 0, "encoding": None, "messages": 0,
                   "problem": "", "read_note": ""})
    decoder: PacketDecoder | None = None
    last_seq: int | None = None
    with BagSource(bag_path) as source:
        topics = _chosen_topics(source, topic)
        if len(topics) > 1:
            raise DecodeError(f"bag {bag_path} has several event topics ({', '.join(sorted(topics))}); pass topic=")
        for msg_topic, msgtype, timestamp, raw in source.messages(topics):
            msg = source.deserialize(raw, msgtype)
            if report["messages"] == 0:
                report.update(topic=msg_topic, msgtype=msgtype, width=int(msg.width), height=int(msg.height))
                report["encoding"] = str(msg.encoding) if msgtype == EVENT_PACKET else msgtype
            report["messages"] += 1
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
        _finish(source, info)


def read_bag_events(bag_path: str | Path, topic: str | None = None) -> tuple[Events, DecodeStats, dict[str, Any]]:
    """All events of one event topic of a bag, in memory (use :func:`iter_bag_events` for long bags).

    Args:
        bag_path: the bag.
        topic: the event topic; may be left out when the bag has exactly one.

    Returns:
        ``(events, stats, info)`` with ``info`` = ``{"topic", "msgtype", "width", "height",
        "encoding", "messages", "problem", "read_note"}``; ``encoding`` is the EventPacket encoding,
        or the message type for per-event arrays and PackedEvents; ``read_note`` says how the bag was
        read when not normally.

    Raises:
        DecodeError: as :func:`iter_bag_events`, when a packet's encoding or size changes
            mid-stream, or when the bag can be read only in part (all events means all).

    """
    stats = DecodeStats()
    info: dict[str, Any] = {}
    parts = [events for _, events in iter_bag_events(bag_path, topic, stats=stats, info=info)]
    if info["problem"]:
        raise DecodeError(f"{bag_path} was read only in part: {info['problem']}; use iter_bag_events(info=...) "
                          "to take the events before that")
    return Events.concatenate(parts), stats, info


def _event_topics(bag_path: str | Path) -> list[tuple[str, str]]:
    """``(topic, msgtype)`` of the bag's event topics, without reading messages."""
    with BagSource(bag_path) as source:
        return [(c.topic, c.msgtype) for c in source.connections if c.msgtype in EVENT_TYPES]
