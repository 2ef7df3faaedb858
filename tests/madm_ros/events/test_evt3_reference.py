"""The EVT 3.0 kernel against a plain-Python decoder written from the format description.

The kernel is tuned for speed (flags folded into the time register, set-bit loops over vector
masks, unsigned indices); this reference spells the format out word by word, so any shortcut
that changes an event, a counter or the state carried between payloads shows up here.
"""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from madm_ros.events import _kernels_decode
from madm_ros.events.codecs import PacketDecoder


def reference_evt3(words: list[int], width: int, height: int) -> tuple[list[tuple[int, int, int, int]], dict[str, int]]:
    """Events ``(x, y, t, p)`` and counters of an EVT 3.0 word stream, with madm's drop policy.

    Policy: events outside ``width × height`` are ``out_of_range``; events before the first
    TIME_HIGH, or earlier than the last returned event, are ``time_backwards``; codes 1, 0xB,
    0xC, 0xD are ``bad_words``. A TIME_HIGH more than 2048 below the previous one is a 2^24 µs
    roll-over.
    """
    events: list[tuple[int, int, int, int]] = []
    counts = {"out_of_range": 0, "time_backwards": 0, "bad_words": 0}
    y = base_x = vpol = high = low = wraps = 0
    has_time = False
    last = 0

    def emit(x: int, p: int) -> None:
        nonlocal last
        t = (wraps << 24) | (high << 12) | low
        if x >= width or y >= height:
            counts["out_of_range"] += 1
        elif not has_time or t < last:
            counts["time_backwards"] += 1
        else:
            events.append((x, y, t, p))
            last = t

    for w in words:
        code, value = w >> 12, w & 0xFFF
        if code == 0x0:  # ADDR_Y
            y = value & 0x7FF
        elif code == 0x2:  # ADDR_X
            emit(value & 0x7FF, value >> 11)
        elif code == 0x3:  # VECT_BASE_X
            base_x, vpol = value & 0x7FF, value >> 11
        elif code in (0x4, 0x5):  # VECT_12, VECT_8
            span = 12 if code == 0x4 else 8
            for k in range(span):
                if value >> k & 1:
                    emit(base_x + k, vpol)
            base_x += span
        elif code == 0x6:  # TIME_LOW
            low = value
        elif code == 0x8:  # TIME_HIGH
            if has_time and high - value > 2048:
                wraps += 1
            high, has_time = value, True
        elif code in (0x1, 0xB, 0xC, 0xD):
            counts["bad_words"] += 1
    return events, counts


# codes weighted like real streams (mostly ADDR_Y/ADDR_X/TIME_LOW/TIME_HIGH), every code possible
CODES = st.sampled_from([0x0] * 6 + [0x2] * 6 + [0x6] * 4 + [0x8] * 3 + [0x3, 0x3, 0x4, 0x5, 0x5] + list(range(16)))
WORDS = st.lists(st.tuples(CODES, st.integers(0, 0xFFF)).map(lambda cv: cv[0] << 12 | cv[1]), max_size=300)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=WORDS,
    cuts=st.lists(st.integers(0, 600), max_size=4),
    size=st.sampled_from([(640, 480), (100, 50), (2048, 2048), (1, 1)]),
)
def test_evt3_kernel_matches_the_reference_for_any_word_stream_and_any_cut(
    words: list[int], cuts: list[int], size: tuple[int, int]
) -> None:
    expected, counts = reference_evt3(words, *size)
    codes = np.array(words, dtype=np.uint16) >> 12
    # the output arrays are sized by this bound; an undercount would write past their end
    assert _kernels_decode.bound_evt3(np.array(words, dtype=np.uint16)) == (
        np.count_nonzero(codes == 2) + 12 * np.count_nonzero(codes == 4) + 8 * np.count_nonzero(codes == 5)
    )
    data = np.array(words, dtype="<u2").tobytes()
    decoder = PacketDecoder("evt3", *size)
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    pieces = [decoder.decode(data[a:b]) for a, b in itertools.pairwise(bounds)]
    got = [(int(x), int(y), int(t), int(p)) for e in pieces for x, y, t, p in zip(e.x, e.y, e.t, e.p)]
    assert got == expected
    stats = decoder.stats
    assert (stats.out_of_range, stats.time_backwards, stats.bad_words) == (
        counts["out_of_range"],
        counts["time_backwards"],
        counts["bad_words"],
    )


def test_reference_sees_a_rollover_and_a_step_back_like_the_format_says() -> None:
    """The reference itself on a hand-made stream: a drop of the high word by more than 2048 adds
    2^24 µs, a smaller drop is time going back (dropped until time catches up)."""
    words = [0x2007, 0x8FFF, 0x6001, 0x0005, 0x2003, 0x8000, 0x6002, 0x2804, 0x8F00, 0x2006, 0x8E00, 0x2002, 0x8F01, 0x2001]
    events, counts = reference_evt3(words, 640, 480)
    assert events == [
        (3, 5, (0xFFF << 12) | 1, 0),
        (4, 5, (1 << 24) | 2, 1),
        (6, 5, (1 << 24) | (0xF00 << 12) | 2, 0),
        (1, 5, (1 << 24) | (0xF01 << 12) | 2, 0),
    ]
    # 0x2007: before any TIME_HIGH; 0x2002: under 0xE00 after 0xF00
    assert counts == {"out_of_range": 0, "time_backwards": 2, "bad_words": 0}
