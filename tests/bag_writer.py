"""Write small rosbag2 bags (sqlite3 or mcap) for tests, with ``rosbags`` (no ROS install needed).

Tests that read bags need bags with known content: synthetic depth / thermal / event topics,
label topics, unknown message types, truncated files. This helper builds the messages as
``rosbags`` dataclasses with the event types registered (:func:`madm_ros.events.bags.event_typestore`)
and writes them with the same ``Writer`` users' tools use, so the bytes on disk are what
``ros2 bag record`` would store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["event_packet", "image_message", "typestore", "write_bag", "write_ros1_image_bag"]

_STORE: Any = None


def typestore() -> Any:
    """The shared rosbags typestore (ROS 2 Humble types plus the event message types)."""
    global _STORE
    if _STORE is None:
        from madm_ros.events.bags import event_typestore

        _STORE = event_typestore()
    return _STORE


def _header(stamp_ns: int, frame_id: str) -> Any:
    types = typestore().types
    stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def image_message(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str = "camera") -> Any:
    """A ``sensor_msgs/msg/Image`` holding ``array`` (little-endian, unpadded rows)."""
    from madm_ros.image_conversion import array_to_image_fields

    fields = array_to_image_fields(array, encoding)
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    return typestore().types["sensor_msgs/msg/Image"](header=_header(stamp_ns, frame_id), **fields)


def event_packet(events: Any, stamp_ns: int, width: int, height: int, seq: int, frame_id: str = "evk4",
                 encoding: str = "evt3") -> Any:
    """An ``event_camera_msgs/msg/EventPacket`` with ``events`` encoded as EVT 3.0 (``time_base`` 0)."""
    from madm_ros.events.codecs import encode_evt3

    payload = np.frombuffer(encode_evt3(events), np.uint8) if len(events) else np.zeros(0, np.uint8)
    return typestore().types["event_camera_msgs/msg/EventPacket"](
        header=_header(stamp_ns, frame_id), height=height, width=width, seq=seq, time_base=0, encoding=encoding,
        is_bigendian=False, events=payload)


def _foreign_store(msgtype: str) -> Any:
    """A typestore that defines ``msgtype`` as ``uint8[] data`` (for bags with types nobody reads)."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.EMPTY)
    store.register(get_types_from_msg("uint8[] data", msgtype))
    return store


def write_bag(path: Path, topics: Mapping[str, str], messages: Iterable[tuple[str, int, Any]],
              storage: str = "sqlite3", raw: bool = False) -> Path:
    """Write ``(topic, log time ns, message)`` records into a new rosbag2 folder ``path``.

    Args:
        path: The bag folder to create (must not exist).
        topics: Topic → message type, in connection order.
        messages: Records in log-time order; the message is serialized with the typestore, or
            written as given when ``raw`` (bytes: for types the typestore does not know).
        storage: ``sqlite3`` or ``mcap``.
        raw: Messages are already CDR bytes.

    Returns:
        ``path``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    store = typestore()
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for topic, msgtype in topics.items():
            if msgtype in store.types:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store)
            else:  # a type madm does not know: stored with a one-field definition ("uint8[] data")
                connections[topic] = writer.add_connection(topic, msgtype, typestore=_foreign_store(msgtype))
        for topic, stamp_ns, message in messages:
            data = message if raw or isinstance(message, (bytes, bytearray)) else store.serialize_cdr(
                message, topics[topic])
            writer.write(connections[topic], stamp_ns, data)
    return path


def write_ros1_image_bag(path: Path, topic: str, images: Iterable[tuple[int, np.ndarray]], encoding: str) -> Path:
    """A ROS 1 ``.bag`` file with one ``sensor_msgs/Image`` topic of ``(stamp ns, array)`` frames."""
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    from madm_ros.image_conversion import array_to_image_fields

    store = get_typestore(Stores.ROS1_NOETIC)
    types = store.types
    with Writer(path) as writer:
        connection = writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=store)
        for seq, (stamp_ns, array) in enumerate(images):
            fields = array_to_image_fields(array, encoding)
            fields["data"] = np.frombuffer(fields["data"], np.uint8)
            stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9)
            header = types["std_msgs/msg/Header"](seq=seq, stamp=stamp, frame_id="camera")
            message = types["sensor_msgs/msg/Image"](header=header, **fields)
            writer.write(connection, stamp_ns, store.serialize_ros1(message, "sensor_msgs/msg/Image"))
    return path
