from __future__ import annotations

import array
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madm_ros.errors import DecodeError, InputError
from madm_ros.events.codecs import (
    ENCODINGS,
    PacketDecoder,
    decode_packet,
    encode_evt3,
    events_from_event_array,
    events_from_packed,
    packed_fields,
)
from madm_ros.events.types import DecodeStats, Events

W, H = 640, 480


def random_events(n: int, seed: int = 0, width: int = W, height: int = H, rate_us: float = 0.1) -> Events:
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, max(1, int(n * rate_us)) + 1, n))
    return Events.from_arrays(rng.integers(0, width, n), rng.integers(0, height, n), t, rng.integers(0, 2, n))


def assert_same(a: Events, b: Events) -> None:
    assert {f: getattr(a, f).tolist() for f in "xytp"} == {f: getattr(b, f).tolist() for f in "xytp"}


# ------------------------------------------------------------------ independent test encoders
def encode_mono(ev: Events, time_base_ns: int) -> bytes:
    """bit 63 polarity, 48-62 y, 32-47 x, 0-31 dt ns (from the format description)."""
    dt = ev.t.astype(np.uint64) * np.uint64(1000) - np.uint64(time_base_ns)
    words = (
        (ev.p.astype(np.uint64) << np.uint64(63))
        | (ev.y.astype(np.uint64) << np.uint64(48))
        | (ev.x.astype(np.uint64) << np.uint64(32))
        | dt
    )
    return words.astype("<u8").tobytes()


def encode_libcaer(ev: Events, time_base_ns: int, valid: np.ndarray | None = None) -> bytes:
    """libcaer polarity events: uint32 data (bit 0 valid, 1 polarity, 2-16 y, 17-31 x) + int32 µs timestamp."""
    valid = np.ones(len(ev), np.uint32) if valid is None else valid.astype(np.uint32)
    data = valid | (ev.p.astype(np.uint32) << 1) | (ev.y.astype(np.uint32) << 2) | (ev.x.astype(np.uint32) << 17)
    stamp = (ev.t - time_base_ns // 1000) % (1 << 31)
    out = np.empty((len(ev), 2), "<u4")
    out[:, 0] = data
    out[:, 1] = stamp
    return out.tobytes()


def encode_libcaer_cmp(ev: Events, time_base_ns: int) -> bytes:
    """One libcaer_cmp message (reference/events.md appendix): time words on change, x word on
    change, events sharing time, x and polarity grouped into vectors by ``y >> 3``."""
    base = time_base_ns // 1000
    words: list[int] = []
    high = low = x_cur = None
    i, n = 0, len(ev)
    while i < n:
        off = int(ev.t[i]) - base
        assert 0 <= off < 1 << 24
        if off >> 12 != high:
            high = off >> 12
            words.append(0x0000 | high)
        if off & 0xFFF != low:
            low = off & 0xFFF
            words.append(0x1000 | low)
        x = int(ev.x[i])
        if x != x_cur:
            x_cur = x
            words.append(0x2000 | x)
        # run of same time, x, polarity and same y >> 3 with increasing y
        j = i + 1
        while (
            j < n
            and ev.t[j] == ev.t[i]
            and ev.x[j] == ev.x[i]
            and ev.p[j] == ev.p[i]
            and ev.y[j] >> 3 == ev.y[i] >> 3
            and ev.y[j] > ev.y[j - 1]
        ):
            j += 1
        pol = int(ev.p[i])
        if j - i == 1:
            words.append(0x3000 | (pol << 11) | int(ev.y[i]))
        else:
            base_y = int(ev.y[i]) & ~7
            mask = 0
            for k in range(i, j):
                mask |= 1 << (int(ev.y[k]) - base_y)
            words += [0x4000 | (pol << 11) | base_y, 0x5000 | mask]
        i = j
    return np.array(words, "<u2").tobytes()


# ------------------------------------------------------------------ round trips
def test_encode_evt3_round_trips_random_events() -> None:
    ev = random_events(20_000)
    assert_same(PacketDecoder("evt3", W, H).decode(encode_evt3(ev)), ev)


def test_encode_evt3_writes_vector_words_for_events_sharing_time_and_row_and_they_round_trip() -> None:
    x = [0, 1, 5, 11, 12, 30, 31, 600, 601, 639, 3, 7]
    ev = Events.from_arrays(x, [9] * 10 + [10, 10], [100] * 12, [1] * 10 + [0, 0])
    payload = encode_evt3(ev)
    codes = np.frombuffer(payload, "<u2") >> 12
    assert {3, 4, 5} <= set(codes.tolist())  # VECT_BASE_X, VECT_12 and VECT_8 all used
    assert len(codes) < len(ev) + 4
    assert_same(PacketDecoder("evt3", W, H).decode(payload), ev)


def test_encode_evt3_unwraps_times_past_the_24_bit_rollover_and_long_gaps() -> None:
    t = [5, 4_000_000, (1 << 24) - 1, 1 << 24, (1 << 24) + 17, 3 << 24, (10 << 24) + 123]
    ev = Events.from_arrays(range(len(t)), [1] * len(t), t, [1] * len(t))
    assert_same(PacketDecoder("evt3", W, H).decode(encode_evt3(ev)), ev)


def test_encode_evt3_rejects_unsorted_times() -> None:
    ev = Events.from_arrays([1, 2], [1, 1], [10, 5], [0, 1])
    with pytest.raises(InputError, match="non-decreasing"):
        encode_evt3(ev)


def test_mono_payload_decodes_back_exactly() -> None:
    ev = random_events(5_000, seed=1)
    tb = 1_700_000_000_000_000_123
    ev = Events(ev.x, ev.y, ev.t + tb // 1000 + 1, ev.p)
    got = PacketDecoder("mono", W, H).decode(encode_mono(ev, tb), time_base=tb)
    assert_same(got, ev)


def test_libcaer_payload_decodes_back_exactly_including_a_31_bit_rollover() -> None:
    ev = random_events(5_000, seed=2)
    tb = 1_700_000_000_000_000_000
    t = ev.t + tb // 1000 + (1 << 31) - 200  # the sensor counter rolls over inside the packet
    ev = Events(ev.x, ev.y, t, ev.p)
    got = PacketDecoder("libcaer", W, H).decode(encode_libcaer(ev, tb), time_base=tb)
    assert_same(got, ev)


def test_libcaer_events_without_the_valid_mark_are_skipped_and_counted() -> None:
    ev = random_events(10, seed=3)
    valid = np.array([1, 0] * 5)
    dec = PacketDecoder("libcaer", W, H)
    got = dec.decode(encode_libcaer(ev, 0, valid), time_base=0)
    assert_same(got, ev[valid == 1])
    assert dec.stats.bad_words == 5


def test_libcaer_cmp_message_decodes_back_exactly_with_vectors() -> None:
    rng = np.random.default_rng(4)
    n = 3_000
    t = rng.integers(0, 1 << 14, n) * 1000  # offsets need both time words
    t[: n // 2] = rng.integers(0, 50, n // 2)  # dense half: many events share time and column
    x = rng.integers(0, 4, n)
    y = rng.integers(0, 64, n)
    p = rng.integers(0, 2, n)
    order = np.lexsort((y, p, x, t))
    ev = Events.from_arrays(x[order], y[order], t[order], p[order])
    tb = 1_675_956_550_318_916_461
    ev = Events(ev.x, ev.y, ev.t + tb // 1000, ev.p)
    payload = encode_libcaer_cmp(ev, tb)
    assert 5 in set((np.frombuffer(payload, "<u2") >> 12).tolist())
    assert_same(PacketDecoder("libcaer_cmp", W, H).decode(payload, time_base=tb), ev)


def test_libcaer_cmp_time_offsets_restart_in_every_message() -> None:
    dec = PacketDecoder("libcaer_cmp", W, H)
    a = Events.from_arrays([1, 2], [3, 4], [1_000_000, 1_000_010], [1, 0])
    b = Events.from_arrays([5], [6], [2_000_000], [1])
    got = Events.concatenate(
        [
            dec.decode(encode_libcaer_cmp(a, 1_000_000_000), 1_000_000_000),
            dec.decode(encode_libcaer_cmp(b, 2_000_000_000), 2_000_000_000),
        ]
    )
    assert_same(got, Events.concatenate([a, b]))


# ------------------------------------------------------------------ EVT3 streaming
def test_evt3_stream_cut_at_every_byte_of_a_short_stream_decodes_like_one_buffer() -> None:
    ev = random_events(300, seed=5)
    payload = encode_evt3(ev)
    for cut in range(len(payload) + 1):
        dec = PacketDecoder("evt3", W, H)
        got = Events.concatenate([dec.decode(payload[:cut]), dec.decode(payload[cut:])])
        assert_same(got, ev)
        assert dec.pending_bytes == 0


def test_evt3_odd_trailing_byte_waits_for_the_next_payload_and_flush_counts_it() -> None:
    dec = PacketDecoder("evt3", W, H)
    dec.decode(encode_evt3(random_events(3)) + b"\x01")
    assert (dec.pending_bytes, dec.stats.truncated_bytes) == (1, 0)
    dec.flush()
    assert (dec.pending_bytes, dec.stats.truncated_bytes) == (0, 1)


def test_evt3_events_before_the_first_time_high_are_dropped_as_time_unknown() -> None:
    words = np.array([0x0000 | 7, 0x2000 | 5, 0x8000 | 1, 0x6000 | 2, 0x2000 | 6], "<u2")
    dec = PacketDecoder("evt3", W, H)
    got = dec.decode(words.tobytes())
    assert_same(got, Events.from_arrays([6], [7], [(1 << 12) | 2], [0]))
    assert dec.stats.time_backwards == 1


def test_evt3_time_going_back_without_a_rollover_drops_and_counts_the_events() -> None:
    words = np.array(
        [0x8000 | 100, 0x6000 | 50, 0x0000 | 1, 0x2000 | 1, 0x8000 | 99, 0x2000 | 2, 0x8000 | 100, 0x2000 | 3], "<u2"
    )
    dec = PacketDecoder("evt3", W, H)
    got = dec.decode(words.tobytes())
    assert got.x.tolist() == [1, 3]
    assert dec.stats.time_backwards == 1


def test_evt3_out_of_sensor_events_are_dropped_and_counted() -> None:
    ev = Events.from_arrays([10, 700, 20, 30], [5, 5, 479, 480], [1, 2, 3, 4], [1, 1, 0, 0])
    dec = PacketDecoder("evt3", W, H)
    got = dec.decode(encode_evt3(ev))
    assert got.x.tolist() == [10, 20]
    assert dec.stats.out_of_range == 2


# ------------------------------------------------------------------ packets, errors
def test_unknown_encoding_raises_decode_error_listing_the_supported_ones() -> None:
    with pytest.raises(DecodeError, match=r"'evt4'.*evt2, evt3, libcaer, libcaer_cmp, mono"):
        PacketDecoder("evt4", W, H)


def test_zero_sensor_size_is_rejected() -> None:
    with pytest.raises(DecodeError, match=r"width must be in 1\.\.65535"):
        PacketDecoder("evt3", 0, H)


def test_duplicate_sequence_number_is_skipped_and_counted() -> None:
    payload = encode_evt3(random_events(50))
    dec = PacketDecoder("evt3", W, H)
    first = dec.decode(payload, seq=7)
    again = dec.decode(payload, seq=7)
    assert (len(first), len(again)) == (50, 0)
    assert (dec.stats.packets, dec.stats.duplicate_packets, dec.stats.events) == (2, 1, 50)


def test_empty_payloads_are_counted_as_empty_packets() -> None:
    for encoding in ENCODINGS:
        dec = PacketDecoder(encoding, W, H)
        assert len(dec.decode(b"", seq=1)) == 0
        assert dec.stats.empty_packets == 1, encoding


def test_stateless_encodings_count_trailing_bytes_at_once() -> None:
    dec = PacketDecoder("mono", W, H)
    dec.decode(b"\x00" * 11)
    assert dec.stats.truncated_bytes == 3


def test_decode_packet_reads_only_the_event_packet_attributes_of_any_object() -> None:
    ev = random_events(100, seed=6)
    tb = 5_000_000_000
    ev = Events(ev.x, ev.y, ev.t + tb // 1000, ev.p)
    msg = SimpleNamespace(
        encoding="mono", width=W, height=H, time_base=tb, events=array.array("B", encode_mono(ev, tb)), seq=3
    )
    assert_same(decode_packet(msg), ev)


def test_decode_packet_refuses_a_decoder_of_another_stream() -> None:
    msg = SimpleNamespace(encoding="evt3", width=W, height=H, time_base=0, events=b"", seq=0)
    with pytest.raises(DecodeError, match="one decoder per stream"):
        decode_packet(msg, PacketDecoder("evt3", 346, 260))


def test_event_array_messages_convert_with_microsecond_times_and_range_check() -> None:
    def event(x: int, y: int, sec: int, ns: int, pol: bool) -> SimpleNamespace:
        return SimpleNamespace(x=x, y=y, ts=SimpleNamespace(sec=sec, nanosec=ns), polarity=pol)

    msg = SimpleNamespace(
        width=346,
        height=260,
        events=[event(1, 2, 10, 1_999, True), event(400, 2, 10, 5_000, False), event(3, 4, 11, 0, False)],
    )
    stats = DecodeStats()
    got = events_from_event_array(msg, stats)
    assert_same(got, Events.from_arrays([1, 3], [2, 4], [10_000_001, 11_000_000], [1, 0]))
    assert (stats.packets, stats.events, stats.out_of_range) == (1, 2, 1)


def test_packed_fields_round_trip_through_events_from_packed_in_both_kinds() -> None:
    ev = random_events(100, seed=7)
    for kind in ("numpy", "array"):
        fields = packed_fields(ev, kind=kind)
        assert isinstance(fields["t"], np.ndarray if kind == "numpy" else array.array)
        assert_same(events_from_packed(SimpleNamespace(width=W, height=H, **fields)), ev)


def test_packed_events_with_unequal_arrays_raise() -> None:
    msg = SimpleNamespace(width=W, height=H, x=[1, 2], y=[1], t=[1, 2], polarity=[0, 1])
    with pytest.raises(DecodeError, match="differ in length: x=2, y=1"):
        events_from_packed(msg)


def test_importing_the_decoders_imports_neither_ros_nor_numba() -> None:
    code = (
        "import sys, madm_ros.events.codecs, madm_ros.events.raw_files, madm_ros.events.bags; "
        "print(sorted(m for m in ('rclpy', 'numba', 'rosbags') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ fuzz
def expected_counts(encoding: str, payload: bytes) -> tuple[int, int]:
    """(events the payload's words announce, words with an unknown code) — computed independently."""
    if encoding in ("evt3", "libcaer_cmp"):
        w = np.frombuffer(payload[: len(payload) // 2 * 2], "<u2").astype(np.int64)
        code = w >> 12
        popcount = np.array([bin(v).count("1") for v in range(4096)])
        if encoding == "evt3":
            events = (code == 2).sum() + popcount[w[code == 4] & 0xFFF].sum() + popcount[w[code == 5] & 0xFF].sum()
            bad = np.isin(code, [1, 11, 12, 13]).sum()
        else:
            events = (code == 3).sum() + popcount[w[code == 5] & 0xFF].sum()
            bad = (code > 5).sum()
        return int(events), int(bad)
    if encoding == "evt2":
        w = np.frombuffer(payload[: len(payload) // 4 * 4], "<u4") >> 28
        return int((w <= 1).sum()), int(np.isin(w, [2, 3, 4, 5, 6, 7, 9, 11, 12, 13]).sum())
    w = np.frombuffer(payload[: len(payload) // 8 * 8], "<u8")
    if encoding == "mono":
        return len(w), 0
    data, stamp = (w & np.uint64(1)), (w >> np.uint64(32)).astype(np.uint32).view(np.int32)
    valid = int(((data == 1) & (stamp >= 0)).sum())
    return valid, len(w) - valid


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    encoding=st.sampled_from(sorted(ENCODINGS)),
    payloads=st.lists(st.binary(max_size=300), min_size=1, max_size=4),
    size=st.tuples(st.integers(1, 700), st.integers(1, 500)),
    time_base=st.integers(0, 2**62),
)
def test_random_bytes_never_crash_and_the_counters_explain_every_word_and_event(
    encoding: str, payloads: list[bytes], size: tuple[int, int], time_base: int
) -> None:
    dec = PacketDecoder(encoding, *size)
    got = [dec.decode(p, time_base=time_base) for p in payloads]
    dec.flush()
    s = dec.stats
    stream = b"".join(payloads)
    if encoding in ("evt3", "evt2"):  # one stream: split words carry over
        announced, bad = expected_counts(encoding, stream)
        assert s.truncated_bytes == len(stream) % ENCODINGS[encoding]
    else:  # each payload stands alone
        counts = [expected_counts(encoding, p) for p in payloads]
        announced, bad = sum(c[0] for c in counts), sum(c[1] for c in counts)
        assert s.truncated_bytes == sum(len(p) % ENCODINGS[encoding] for p in payloads)
    returned = sum(len(e) for e in got)
    assert s.bad_words == bad
    assert announced == returned + s.out_of_range + s.time_backwards
    assert s.events == returned
    assert s.packets == len(payloads)
    assert s.empty_packets == sum(1 for e in got if len(e) == 0)
    for e in got:
        assert np.all(e.x < size[0])
        assert np.all(e.y < size[1])
    times = np.concatenate([e.t for e in got])
    assert np.all(np.diff(times) >= 0)
