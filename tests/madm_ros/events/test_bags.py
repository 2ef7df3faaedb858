from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from madm_ros.errors import DecodeError
from madm_ros.events.bags import EVENT_MSG_DEFINITIONS, event_typestore, iter_event_messages, read_bag_events
from madm_ros.events.codecs import PacketDecoder, packed_fields
from madm_ros.events.types import Events

REPO = Path(__file__).resolve().parents[3]
TOPIC = "/event_camera/events"


@pytest.fixture(scope="module")
def payloads(event_bag: Path) -> list[np.ndarray]:
    return [msg.events for _, _, _, msg in iter_event_messages(event_bag, TOPIC)]


def test_real_evt3_bag_decodes_to_the_published_count_with_coordinates_in_range(event_bag: Path) -> None:
    ev, stats, info = read_bag_events(event_bag)
    got = {
        "info": info,
        "events": len(ev),
        "x_max": int(ev.x.max()),
        "y_max": int(ev.y.max()),
        "on_percent": round(100 * float(ev.p.mean()), 1),
        "time_sorted": bool(np.all(np.diff(ev.t) >= 0)),
        "stats": stats.as_dict(),
    }
    assert got == {
        "info": {
            "topic": TOPIC,
            "msgtype": "event_camera_msgs/msg/EventPacket",
            "width": 640,
            "height": 480,
            "encoding": "evt3",
            "messages": 517,
            "problem": "",
            "read_note": "",
        },
        "events": 343_474,
        "x_max": 639,
        "y_max": 479,
        "on_percent": 36.4,
        "time_sorted": True,
        "stats": {
            "packets": 517,
            "events": 343_474,
            "out_of_range": 0,
            "bad_words": 0,
            "truncated_bytes": 0,
            "time_backwards": 0,
            "duplicate_packets": 0,
            "empty_packets": 0,
        },
    }


def test_packet_by_packet_equals_the_concatenated_payload_and_random_byte_splits(payloads: list[np.ndarray]) -> None:
    per_packet = PacketDecoder("evt3", 640, 480)
    a = Events.concatenate([per_packet.decode(p) for p in payloads])
    stream = np.concatenate(payloads)
    b = PacketDecoder("evt3", 640, 480).decode(stream)
    cuts = np.sort(np.random.default_rng(0).choice(len(stream), 300, replace=False))
    split = PacketDecoder("evt3", 640, 480)
    c = Events.concatenate([split.decode(piece) for piece in np.split(stream, cuts)])
    for other in (b, c):
        assert all(np.array_equal(getattr(a, f), getattr(other, f)) for f in "xytp")
    assert len(a) == 343_474
    assert split.pending_bytes == 0


def test_missing_topic_raises_listing_the_bags_topics(event_bag: Path) -> None:
    with pytest.raises(DecodeError, match=r"no topic '/dvs/events'; it has: /event_camera/events \(event_camera_msgs"):
        read_bag_events(event_bag, "/dvs/events")


def test_non_bag_path_raises_decode_error(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match=r"cannot open .*nothing as a bag: it does not exist \(check the path\)"):
        list(iter_event_messages(tmp_path / "nothing"))


def write_bag(path: Path, msgtype: str, messages: list[object], topic: str = "/events") -> None:
    from rosbags.rosbag2 import Writer

    store = event_typestore()
    with Writer(path, version=8) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=store)
        for i, msg in enumerate(messages):
            writer.write(conn, 1000 + i, store.serialize_cdr(msg, msgtype))


def header(store: object, sec: int) -> object:
    time_cls = store.types["builtin_interfaces/msg/Time"]  # type: ignore[attr-defined]
    header_cls = store.types["std_msgs/msg/Header"]  # type: ignore[attr-defined]
    return header_cls(stamp=time_cls(sec=sec, nanosec=0), frame_id="cam")


def test_packed_events_bag_round_trips_and_duplicate_seq_is_skipped(tmp_path: Path) -> None:
    store = event_typestore()
    packed_cls = store.types["madm_ros/msg/PackedEvents"]
    ev = Events.from_arrays([1, 2, 700], [3, 4, 5], [10, 20, 30], [1, 0, 1])
    msgs = [packed_cls(header=header(store, 1), height=480, width=640, seq=s, **packed_fields(ev)) for s in (1, 1, 2)]
    write_bag(tmp_path / "packed", "madm_ros/msg/PackedEvents", msgs)
    got, stats, info = read_bag_events(tmp_path / "packed")
    assert got.x.tolist() == [1, 2, 1, 2]
    assert (stats.packets, stats.duplicate_packets, stats.out_of_range, info["encoding"]) == (
        3,
        1,
        2,
        "madm_ros/msg/PackedEvents",
    )


def test_dvs_event_array_bag_reads_and_a_non_event_topic_is_refused(tmp_path: Path) -> None:
    store = event_typestore()
    event_cls, array_cls = store.types["dvs_msgs/msg/Event"], store.types["dvs_msgs/msg/EventArray"]
    time_cls = store.types["builtin_interfaces/msg/Time"]
    events = [event_cls(x=5, y=6, ts=time_cls(sec=2, nanosec=3000), polarity=True)]
    write_bag(
        tmp_path / "dvs",
        "dvs_msgs/msg/EventArray",
        [array_cls(header=header(store, 2), height=260, width=346, events=events)],
    )
    got, _, info = read_bag_events(tmp_path / "dvs")
    assert (got.x.tolist(), got.t.tolist(), info["width"]) == ([5], [2_000_003], 346)

    write_bag(tmp_path / "hdr", "std_msgs/msg/Header", [header(store, 1)], topic="/hdr")
    with pytest.raises(DecodeError, match=r"topic '/hdr' .* is std_msgs/msg/Header, not an event type"):
        read_bag_events(tmp_path / "hdr", "/hdr")
    with pytest.raises(DecodeError, match=r"no event topic; it has: /hdr \(std_msgs/msg/Header\)"):
        read_bag_events(tmp_path / "hdr")


def test_embedded_packed_events_definition_matches_the_package_msg_file() -> None:
    from rosbags.typesys import get_types_from_msg

    msg_file = REPO / "msg" / "PackedEvents.msg"
    if not msg_file.is_file():
        pytest.skip("msg/PackedEvents.msg not in this checkout")
    name = "madm_ros/msg/PackedEvents"
    assert get_types_from_msg(msg_file.read_text(), name) == get_types_from_msg(EVENT_MSG_DEFINITIONS[name], name)
