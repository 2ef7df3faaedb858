"""The event-camera driver messages built from interfaces/ work with rclpy exactly like the real packages.

scripts/setup-env generates ``event_camera_msgs``, ``dvs_msgs`` and ``dv_ros2_msgs`` from the copies
in interfaces/ on machines without ROS 2. These tests check that rclpy's CDR of those types is the
layout the drivers publish (byte for byte against a real bag and against rosbags' typestore), that
the decoders give the same events whichever library produced the message, and that two processes
exchange them over the loopback.
"""

from __future__ import annotations

import array
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from madm_ros.bag_source import BagSource
from madm_ros.events.bags import EVENT_MSG_DEFINITIONS, event_typestore, read_bag_events
from madm_ros.events.codecs import PacketDecoder, decode_packet, events_from_event_array
from madm_ros.events.types import DecodeStats, Events

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[2]
EVENT_PACKET = "event_camera_msgs/msg/EventPacket"
ARRAY_PACKAGES = ("dvs_msgs", "dv_ros2_msgs")
_PRIMITIVE_SIZES = {"bool": 1, "byte": 1, "char": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4,
                    "uint32": 4, "float32": 4, "int64": 8, "uint64": 8, "float64": 8}


@pytest.fixture(scope="module")
def rclpy_serialization() -> Any:
    pytest.importorskip("rclpy")
    pytest.importorskip("event_camera_msgs.msg", reason="interfaces/ not built (run scripts/setup-env)")
    import rclpy.serialization

    return rclpy.serialization


def cdr_padding(store: Any, msgtype: str, msg: Any) -> np.ndarray:
    """Offsets of the alignment padding bytes in ``msg``'s little-endian CDR (after the 4-byte header).

    Fast-CDR (rclpy) leaves padding bytes uninitialised while rosbags and recorders write zeros, so
    byte comparisons skip exactly these offsets, computed here from the type's declared fields.
    """
    from rosbags.interfaces import Nodetype

    padding: list[int] = []
    pos = 0

    def align(size: int) -> None:
        nonlocal pos
        while pos % size:
            padding.append(4 + pos)
            pos += 1

    def value(node: tuple[Any, Any], item: Any) -> None:
        nonlocal pos
        kind, arg = node
        if kind == Nodetype.BASE and arg[0] == "string":
            align(4)
            pos += 4 + len(item.encode()) + 1
        elif kind == Nodetype.BASE:
            align(_PRIMITIVE_SIZES[arg[0]])
            pos += _PRIMITIVE_SIZES[arg[0]]
        elif kind == Nodetype.NAME:
            for name, field in store.fielddefs[arg][1]:
                value(field, getattr(item, name))
        else:  # ARRAY (fixed size) or SEQUENCE (uint32 length first)
            if kind == Nodetype.SEQUENCE:
                align(4)
                pos += 4
            element = arg[0]
            if element[0] == Nodetype.BASE and element[1][0] != "string":
                if len(item):
                    align(_PRIMITIVE_SIZES[element[1][0]])
                    pos += len(item) * _PRIMITIVE_SIZES[element[1][0]]
            else:
                for member in item:
                    value(element, member)

    value((Nodetype.NAME, msgtype), msg)
    return np.asarray(padding, dtype=np.int64)


def assert_same_cdr(actual: bytes, expected: bytes, padding: np.ndarray) -> None:
    """Equal length, equal encapsulation header and equal bytes everywhere except at ``padding``."""
    a = np.frombuffer(actual, np.uint8).copy()
    b = np.frombuffer(expected, np.uint8).copy()
    assert a.shape == b.shape, f"CDR lengths differ: {len(a)} != {len(b)}"
    a[padding] = b[padding] = 0
    differing = np.flatnonzero(a != b)
    assert differing.size == 0, f"CDR bytes differ at offsets {differing[:10].tolist()}"


def rclpy_event_packet(msg: Any) -> Any:
    """An rclpy ``event_camera_msgs/msg/EventPacket`` with the fields of a rosbags one."""
    from event_camera_msgs.msg import EventPacket

    out = EventPacket(height=int(msg.height), width=int(msg.width), seq=int(msg.seq), time_base=int(msg.time_base),
                      encoding=str(msg.encoding), is_bigendian=bool(msg.is_bigendian))
    out.header.stamp.sec, out.header.stamp.nanosec = int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)
    out.header.frame_id = str(msg.header.frame_id)
    out.events = array.array("B", np.asarray(msg.events, np.uint8).tobytes())
    return out


def test_real_bag_through_rclpy_event_packets_decodes_to_the_same_events_and_the_same_cdr(event_bag, rclpy_serialization):
    from event_camera_msgs.msg import EventPacket

    expected, expected_stats, info = read_bag_events(event_bag)
    assert (info["msgtype"], info["encoding"]) == (EVENT_PACKET, "evt3")

    decoder: PacketDecoder | None = None
    stats = DecodeStats()
    parts: list[Events] = []
    messages = 0
    with BagSource(event_bag) as reader:
        connections = [c for c in reader.connections if c.msgtype == EVENT_PACKET]
        assert len(connections) == 1
        for _, msgtype, _, raw in reader.messages(c.topic for c in connections):
            original = reader.deserialize(raw, msgtype)
            serialized = rclpy_serialization.serialize_message(rclpy_event_packet(original))
            if messages == 0:  # the driver's bytes, reproduced by the type built here
                assert_same_cdr(serialized, bytes(raw), cdr_padding(reader.typestore, EVENT_PACKET, original))
            msg = rclpy_serialization.deserialize_message(serialized, EventPacket)
            if decoder is None:
                decoder = PacketDecoder(msg.encoding, msg.width, msg.height)
                decoder.stats = stats
            parts.append(decode_packet(msg, decoder))
            messages += 1

    got = Events.concatenate(parts)
    assert messages == info["messages"] == 517
    assert len(got) == len(expected) > 300_000
    for name in ("x", "y", "t", "p"):
        np.testing.assert_array_equal(getattr(got, name), getattr(expected, name), err_msg=name)
    assert stats.as_dict() == expected_stats.as_dict()


def event_array_fields() -> dict[str, Any]:
    """A small EventArray, with polarities of both signs and events outside the sensor (dropped on decode)."""
    return {
        "frame_id": "dvs",
        "stamp": (1_675_956_550, 318_678_998),
        "width": 346,
        "height": 260,
        "x": [0, 345, 12, 346, 100],
        "y": [0, 259, 7, 3, 260],
        "ts": [(1_675_956_550, 318_679_000), (1_675_956_550, 318_680_999), (1_675_956_551, 0),
               (1_675_956_551, 1_500), (1_675_956_552, 999_999_999)],
        "polarity": [True, False, True, False, True],
    }


def rclpy_event_array(package: str, fields: dict[str, Any]) -> Any:
    module = importlib.import_module(f"{package}.msg")
    msg = module.EventArray(width=fields["width"], height=fields["height"])
    msg.header.frame_id = fields["frame_id"]
    msg.header.stamp.sec, msg.header.stamp.nanosec = fields["stamp"]
    for x, y, (sec, nanosec), polarity in zip(fields["x"], fields["y"], fields["ts"], fields["polarity"]):
        event = module.Event(x=x, y=y, polarity=polarity)
        event.ts.sec, event.ts.nanosec = sec, nanosec
        msg.events.append(event)
    return msg


def rosbags_event_array(store: Any, package: str, fields: dict[str, Any]) -> Any:
    time, header = store.types["builtin_interfaces/msg/Time"], store.types["std_msgs/msg/Header"]
    event = store.types[f"{package}/msg/Event"]
    events = [event(x=x, y=y, ts=time(sec=sec, nanosec=nanosec), polarity=polarity)
              for x, y, (sec, nanosec), polarity in zip(fields["x"], fields["y"], fields["ts"], fields["polarity"])]
    return store.types[f"{package}/msg/EventArray"](
        header=header(stamp=time(sec=fields["stamp"][0], nanosec=fields["stamp"][1]), frame_id=fields["frame_id"]),
        height=fields["height"], width=fields["width"], events=events)


@pytest.mark.parametrize("package", ARRAY_PACKAGES)
def test_hand_built_event_arrays_decode_and_serialize_like_the_rosbags_type(package, rclpy_serialization):
    fields = event_array_fields()
    msg = rclpy_event_array(package, fields)
    assert type(msg).__module__.startswith(f"{package}.msg")
    back = rclpy_serialization.deserialize_message(rclpy_serialization.serialize_message(msg), type(msg))

    stats = DecodeStats()
    events = events_from_event_array(back, stats)
    np.testing.assert_array_equal(events.x, np.array([0, 345, 12], np.uint16))
    np.testing.assert_array_equal(events.y, np.array([0, 259, 7], np.uint16))
    np.testing.assert_array_equal(events.t, np.array([1_675_956_550_318_679, 1_675_956_550_318_680, 1_675_956_551_000_000]))
    np.testing.assert_array_equal(events.p, np.array([1, 0, 1], np.uint8))
    assert (stats.events, stats.out_of_range) == (3, 2)

    store = event_typestore()
    msgtype = f"{package}/msg/EventArray"
    reference = rosbags_event_array(store, package, fields)
    expected = bytes(store.serialize_cdr(reference, msgtype))
    serialized = rclpy_serialization.serialize_message(msg)
    assert_same_cdr(serialized, expected, cdr_padding(store, msgtype, reference))
    # and each library reads the other's bytes
    assert store.deserialize_cdr(serialized, msgtype) == reference
    assert rclpy_serialization.deserialize_message(expected, type(msg)) == msg


def msg_fields(text: str) -> list[str]:
    """``type name`` lines of a .msg text, comments and blank lines dropped, package prefixes unified."""
    lines = (re.sub(r"#.*", "", line).strip() for line in text.splitlines())
    return [re.sub(r"^\w+/(msg/)?(?=Event\b)", "", " ".join(line.split())) for line in lines if line]


@pytest.mark.parametrize("msgtype", [t for t in EVENT_MSG_DEFINITIONS if not t.startswith("madm_ros/")])
def test_interfaces_copies_match_the_definitions_rosbags_reads_bags_with(msgtype):
    package, _, name = msgtype.split("/")
    text = (REPO / "interfaces" / package / "msg" / f"{name}.msg").read_text()
    assert text.startswith("# Mirrors "), "each copy says which upstream package it mirrors"
    assert msg_fields(text) == msg_fields(EVENT_MSG_DEFINITIONS[msgtype])


PEER = r"""
import json, sys, time
import rclpy
from event_camera_msgs.msg import EventPacket
from dvs_msgs.msg import Event as DvsEvent, EventArray as DvsEventArray
from dv_ros2_msgs.msg import Event as DvEvent, EventArray as DvEventArray

def messages():
    packet = EventPacket(width=640, height=480, seq=9, time_base=123, encoding="evt3")
    packet.header.frame_id = "event_camera"
    packet.events = bytes(range(256)) * 4
    out = {"/madm_test/packet": packet}
    for topic, array_type, event_type in (("/madm_test/dvs", DvsEventArray, DvsEvent),
                                          ("/madm_test/dv", DvEventArray, DvEvent)):
        msg = array_type(width=346, height=260)
        msg.events = [event_type(x=i, y=2 * i, polarity=bool(i % 2)) for i in range(50)]
        msg.events[-1].ts.sec = 77
        out[topic] = msg
    return out

def digest(topic, msg):
    if topic == "/madm_test/packet":
        return [msg.encoding, msg.seq, msg.time_base, bytes(msg.events).hex()]
    return [msg.width, msg.height, [[e.x, e.y, e.ts.sec, e.polarity] for e in msg.events]]

rclpy.init()
node = rclpy.create_node("madm_test_" + sys.argv[1])
sent = messages()
deadline = time.monotonic() + 30
if sys.argv[1] == "talk":
    publishers = [(node.create_publisher(type(m), t, 10), m) for t, m in sent.items()]
    while time.monotonic() < deadline:
        for publisher, msg in publishers:
            if publisher.get_subscription_count() > 0:
                publisher.publish(msg)
        rclpy.spin_once(node, timeout_sec=0.05)
    sys.exit(0)
received = {}
for topic, msg in sent.items():
    node.create_subscription(type(msg), topic, lambda m, t=topic: received.setdefault(t, digest(t, m)), 10)
while len(received) < len(sent) and time.monotonic() < deadline:
    rclpy.spin_once(node, timeout_sec=0.05)
print(json.dumps({"received": received, "sent": {t: digest(t, m) for t, m in sent.items()}}))
sys.exit(0 if len(received) == len(sent) else 1)
"""


def test_two_processes_exchange_all_three_driver_message_types(ros_domain, rclpy_serialization):
    listener = subprocess.Popen([sys.executable, "-c", PEER, "listen"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
    talker = subprocess.Popen([sys.executable, "-c", PEER, "talk"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        out, err = listener.communicate(timeout=60)
    finally:
        talker.kill()
        talker.wait()
    assert listener.returncode == 0, err + out
    result = json.loads(out)
    assert result["received"] == result["sent"]
    assert len(result["received"]) == 3
