"""EventFrameStream: what the event node does with each message, without ROS (messages built by hand)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from madm_ros.errors import ConfigError
from madm_ros.events.codecs import encode_evt3
from madm_ros.events.edge_frames import EdgeFrameAccumulator, EdgeFrameConfig
from madm_ros.events.stream import EventFrameStream
from madm_ros.events.types import Events
from madm_ros.problems import ProblemCounter

WIDTH, HEIGHT = 64, 48
EDGE = {"window_us": 10_000}


def make_events(n: int, t0: int, t1: int, seed: int = 0, width: int = WIDTH, height: int = HEIGHT) -> Events:
    rng = np.random.default_rng(seed)
    return Events(rng.integers(0, width, n).astype(np.uint16), rng.integers(0, height, n).astype(np.uint16),
                  np.sort(rng.integers(t0, t1, n)).astype(np.int64), rng.integers(0, 2, n).astype(np.uint8))


def header(stamp_ns: int, frame_id: str = "cam") -> SimpleNamespace:
    return SimpleNamespace(stamp=SimpleNamespace(sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9), frame_id=frame_id)


def packet(events: Events, stamp_ns: int, seq: int, *, encoding: str = "evt3", width: int = WIDTH,
           height: int = HEIGHT, payload: bytes | None = None) -> SimpleNamespace:
    return SimpleNamespace(header=header(stamp_ns), width=width, height=height, seq=seq, time_base=0, encoding=encoding,
                           is_bigendian=False, events=encode_evt3(events) if payload is None else payload)


def packed(events: Events, stamp_ns: int, width: int = WIDTH, height: int = HEIGHT) -> SimpleNamespace:
    return SimpleNamespace(header=header(stamp_ns), width=width, height=height, seq=0, x=events.x, y=events.y,
                           t=events.t, polarity=events.p)


def split(events: Events, parts: int) -> list[Events]:
    bounds = np.linspace(0, len(events), parts + 1).astype(int)
    return [events[bounds[i]:bounds[i + 1]] for i in range(parts)]


def test_evt3_packets_give_the_offline_frames_stamped_at_slice_end_in_ros_time():
    events = make_events(20_000, 1000, 95_000)
    stream = EventFrameStream("event_packet", EDGE)
    base_ns = 1_700_000_000 * 10**9
    frames = []
    for seq, part in enumerate(split(events, 37)):
        frames += stream.push(packet(part, base_ns + int(part.t[0]) * 1000, seq))
    offline = EdgeFrameAccumulator(EdgeFrameConfig(width=WIDTH, height=HEIGHT, **EDGE)).push(events)
    assert len(frames) == len(offline) >= 8
    for got, want in zip(frames, offline, strict=True):
        assert np.array_equal(got.array, want.image) and got.encoding == "mono8"  # the network's input
        assert got.stamp_ns == base_ns + want.t_end_us * 1000  # first packet's stamp ↔ its first event
        assert got.frame_id == "cam"
    assert stream.counters()["decode_events"] == len(events)


def test_packed_messages_map_their_last_event_to_the_header_stamp():
    events = make_events(5000, 0, 50_000, seed=1)
    stream = EventFrameStream("packed", EDGE)
    parts = split(events, 5)
    frames = []
    for part in parts:
        frames += stream.push(packed(part, 9 * 10**9 + int(part.t[-1]) * 1000))
    offline = EdgeFrameAccumulator(EdgeFrameConfig(width=WIDTH, height=HEIGHT, **EDGE)).push(events)
    assert frames and [f.stamp_ns for f in frames] == [9 * 10**9 + w.t_end_us * 1000 for w in offline[:len(frames)]]


def test_a_bag_loop_restarts_accumulation_and_is_reported_once():
    warnings = []
    problems = ProblemCounter(lambda kind, text: warnings.append(kind))
    stream = EventFrameStream("packed", EDGE, problems, restart_after_us=20_000)
    first = make_events(4000, 0, 60_000, seed=2)
    for _ in range(3):
        for part in split(first, 4):
            frames = stream.push(packed(part, 10**9 + int(part.t[-1]) * 1000))
            assert all(f.stamp_ns >= 10**9 for f in frames)
    assert warnings == ["time_jump"]
    assert problems.counts["time_jump"] == 2 and problems.counts["restarts"] == 2
    assert stream.counters()["accumulate_time_backwards"] == 0  # the loop was a restart, not 2 × 4000 dropped events


def test_bad_messages_are_counted_and_the_stream_goes_on():
    warnings = []
    problems = ProblemCounter(lambda kind, text: warnings.append((kind, text)))
    stream = EventFrameStream("event_packet", EDGE, problems)
    good = make_events(3000, 0, 40_000, seed=3)
    parts = split(good, 3)
    stream.push(packet(parts[0], 10**9, 0))
    stream.push(packet(Events.empty(), 10**9, 1))  # empty packet
    stream.push(packet(parts[1], 10**9, 1))  # duplicate seq
    stream.push(SimpleNamespace(header=header(10**9), width=WIDTH))  # malformed: no encoding/events
    stream.push(packet(parts[1], 10**9, 2, encoding="evt9"))  # unknown encoding: skipped, the stream is kept
    stream.push(packet(parts[1][:10], 10**9, 3, payload=encode_evt3(parts[1])[:-3]))  # truncated payload
    frames = stream.push(packet(parts[2], 10**9, 4))
    frames += stream.push(packet(make_events(3000, 40_000, 90_000, seed=4), 10**9, 5))
    counters = stream.counters()
    assert counters["decode_empty_packets"] >= 1 and counters["decode_duplicate_packets"] == 1
    assert problems.counts["decode_error"] == 2 and "size_change" not in problems.counts
    assert [kind for kind, _ in warnings] == ["decode_error"]
    assert "malformed" in warnings[0][1]  # logged once per kind: the evt9 packet is only counted
    assert frames, "the stream must produce frames again after bad messages"


def test_out_of_range_events_are_dropped_and_counted():
    events = make_events(1000, 0, 30_000, seed=5, width=WIDTH + 10)
    stream = EventFrameStream("packed", EDGE)
    stream.push(packed(events, 10**9))
    counters = stream.counters()
    outside = int(np.count_nonzero(events.x >= WIDTH))
    assert outside > 0 and counters["decode_out_of_range"] == outside


def test_a_size_change_restarts_with_the_new_size():
    stream = EventFrameStream("packed", EDGE)
    stream.push(packed(make_events(1000, 0, 30_000), 10**9))
    assert stream.sensor_size == (HEIGHT, WIDTH)
    frames = stream.push(packed(make_events(1000, 0, 30_000, width=128, height=96), 10**9, width=128, height=96))
    assert stream.sensor_size == (96, 128)
    assert all(f.array.shape == (96, 128) for f in frames) and stream.problems.counts["size_change"] == 1


@pytest.mark.parametrize("bad", [{"message_type": "evtX"}, {"edge": {"polarity": "split"}}, {"edge": {"window_us": -1}},
                                 {"edge": {"width": 3}}])
def test_bad_settings_are_refused_at_construction(bad):
    with pytest.raises(ConfigError):
        EventFrameStream(bad.get("message_type", "packed"), {**EDGE, **bad.get("edge", {})})
