"""Write small rosbag2 bags (sqlite3 or mcap) for tests, with ``rosbags`` (no ROS install needed).

Tests that read bags need bags with known content: synthetic depth / thermal / event topics,
label topics, unknown message types, truncated files. This helper builds the messages as
``rosbags`` dataclasses with the event types registered (:func:`madm_ros.events.bags.event_typestore`)
and writes them with the same ``Writer`` users' tools use, so the bytes on disk are what
``ros2 bag record`` would store.

Recordings of other rosbag2 versions are made from such a bag by changing what differs:
:func:`edit_metadata` rewrites ``metadata.yaml`` as another version wrote it, ``definitions=``
stores message definitions as another recorder did (:func:`rosidl_idl_definition`: the ``ros2idl``
text rosbag2 stores when no ``.msg`` file exists), and :func:`qos_profile` gives the recorded QoS.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["edit_metadata", "event_packet", "image_message", "qos_profile", "rosidl_idl_definition", "typestore",
           "write_bag", "write_ros1_image_bag"]

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


def qos_profile(reliability: str = "best_effort", durability: str = "volatile", depth: int = 10) -> Any:
    """A rosbags ``Qos`` as a recorder stores it for a publisher (``keep_last``, no deadlines)."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    never = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability[reliability.upper()], QosDurability[durability.upper()],
               never, never, QosLiveliness.AUTOMATIC, never, False)


def write_bag(path: Path, topics: Mapping[str, str], messages: Iterable[tuple[str, int, Any]],
              storage: str = "sqlite3", raw: bool = False, *, version: int = 9,
              qos: Mapping[str, Sequence[Any]] | None = None,
              definitions: Mapping[str, tuple[str, str]] | None = None) -> Path:
    """Write ``(topic, log time ns, message)`` records into a new rosbag2 folder ``path``.

    Args:
        path: The bag folder to create (must not exist).
        topics: Topic → message type, in connection order.
        messages: Records in log-time order; the message is serialized with the typestore, or
            written as given when ``raw`` (bytes: for types the typestore does not know).
        storage: ``sqlite3`` or ``mcap``.
        raw: Messages are already CDR bytes.
        version: metadata.yaml version as rosbags writes it (8: QoS as a YAML string, 9: as a list).
        qos: Topic → offered QoS profiles (:func:`qos_profile`); none by default.
        definitions: Message type → ``(definition text, RIHS01 hash)`` stored instead of the
            typestore's (text starting with rosbag2's ``IDL:`` separator is stored as ``ros2idl``).

    Returns:
        ``path``.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    store = typestore()
    with Writer(path, version=version, storage_plugin=plugin) as writer:
        connections = {}
        for topic, msgtype in topics.items():
            offered = list((qos or {}).get(topic, ()))
            if definitions and msgtype in definitions:
                text, rihs01 = definitions[msgtype]
                connections[topic] = writer.add_connection(topic, msgtype, msgdef=text, rihs01=rihs01,
                                                            offered_qos_profiles=offered)
            elif msgtype in store.types:
                connections[topic] = writer.add_connection(topic, msgtype, typestore=store, offered_qos_profiles=offered)
            else:  # a type madm does not know: stored with a one-field definition ("uint8[] data")
                connections[topic] = writer.add_connection(topic, msgtype, typestore=_foreign_store(msgtype),
                                                           offered_qos_profiles=offered)
        for topic, stamp_ns, message in messages:
            data = message if raw or isinstance(message, (bytes, bytearray)) else store.serialize_cdr(
                message, topics[topic])
            writer.write(connections[topic], stamp_ns, data)
    return path


def edit_metadata(bag: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Rewrite ``bag/metadata.yaml`` after ``change`` edited its ``rosbag2_bagfile_information`` mapping in place."""
    import yaml

    document = yaml.safe_load((bag / "metadata.yaml").read_text())
    change(document["rosbag2_bagfile_information"])
    (bag / "metadata.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
    return bag


# rosidl_adapter's IDL of the event packet and its dependencies, as `rosidl generate` writes them
_ROSIDL_IDL = {
    "event_camera_msgs/msg/EventPacket": """\
// generated from rosidl_adapter/resource/msg.idl.em
// with input from event_camera_msgs/msg/EventPacket.msg
// generated code does not contain a copyright notice

#include "std_msgs/msg/Header.idl"

module event_camera_msgs {
  module msg {
    @verbatim (language="comment", text=
      "This message contains a packet of camera events")
    struct EventPacket {
      @verbatim (language="comment", text=
        "standard ROS header")
      std_msgs::msg::Header header;

      uint32 height;

      uint32 width;

      @verbatim (language="comment", text=
        "sequence number to detect lost messages")
      uint64 seq;

      uint64 time_base;

      string encoding;

      boolean is_bigendian;

      sequence<uint8> events;
    };
  };
};
""",
    "std_msgs/msg/Header": """\
// generated from rosidl_adapter/resource/msg.idl.em
// with input from std_msgs/msg/Header.msg
// generated code does not contain a copyright notice

#include "builtin_interfaces/msg/Time.idl"

module std_msgs {
  module msg {
    @verbatim (language="comment", text=
      "Standard metadata for higher-level stamped data types.")
    struct Header {
      builtin_interfaces::msg::Time stamp;

      @verbatim (language="comment", text=
        "Transform frame with which this data is associated.")
      string frame_id;
    };
  };
};
""",
    "builtin_interfaces/msg/Time": """\
// generated from rosidl_adapter/resource/msg.idl.em
// with input from builtin_interfaces/msg/Time.msg
// generated code does not contain a copyright notice


module builtin_interfaces {
  module msg {
    struct Time {
      int32 sec;

      @verbatim (language="comment", text=
        "The nanoseconds component, valid in the range [0, 1e9).")
      uint32 nanosec;
    };
  };
};
""",
}


def rosidl_idl_definition(msgtype: str = "event_camera_msgs/msg/EventPacket") -> str:
    """The ``ros2idl`` definition rosbag2 stores for ``msgtype`` when it finds only ``.idl`` files.

    rosbag2_cpp's LocalMessageDefinitionSource joins the type's IDL and its dependencies', each
    after a line of 80 ``=`` and ``IDL: <type>``; rosidl's IDL starts with ``#include`` lines.
    """
    order = [msgtype] + [name for name in _ROSIDL_IDL if name != msgtype]
    separator = "=" * 80 + "\n"
    return "\n".join(f"{separator}IDL: {name}\n{_ROSIDL_IDL[name]}" for name in order)


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
