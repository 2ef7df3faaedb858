from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from madm_ros.errors import ConfigError, InputError
from madm_ros.events.edge_frames import (
    AccumulatorStats,
    EdgeFrame,
    EdgeFrameAccumulator,
    EdgeFrameConfig,
    accumulate,
)
from madm_ros.events.types import Events

W, H = 96, 72


def _stream(n: int, *, seed: int = 0, width: int = W, height: int = H, duration_us: int = 200_000) -> Events:
    """Sorted random events with a dense hot spot, so that saturation and event order matter."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, width, n)
    y = rng.integers(0, height, n)
    hot = rng.random(n) < 0.3
    x[hot] = rng.integers(10, 14, hot.sum())
    y[hot] = rng.integers(20, 23, hot.sum())
    t = np.sort(rng.integers(1_000_000, 1_000_000 + duration_us, n))
    return Events.from_arrays(x, y, t, rng.integers(0, 2, n))


def _frames_equal(a: list[EdgeFrame], b: list[EdgeFrame]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(f.image, g.image)
        and (f.t_start_us, f.t_end_us, f.n_events) == (g.t_start_us, g.t_end_us, g.n_events)
        for f, g in zip(a, b, strict=False)
    )


def _push_in_chunks(config: EdgeFrameConfig, events: Events, cuts: list[int]) -> list[EdgeFrame]:
    accumulator = EdgeFrameAccumulator(config)
    frames = []
    for lo, hi in zip([0, *cuts], [*cuts, len(events)], strict=False):
        frames += accumulator.push(events[lo:hi])
    return frames


# -- dv-processing reference ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def dv_case() -> tuple[Events, object]:
    dv = pytest.importorskip("dv_processing", reason="dv-processing is the reference; without it nothing to compare")
    events = _stream(30_000, seed=3)
    store = dv.EventStore()
    for t, x, y, p in zip(events.t.tolist(), events.x.tolist(), events.y.tolist(), events.p.tolist(), strict=False):
        store.push_back(t, x, y, bool(p))
    return events, store


@pytest.mark.parametrize(
    ("polarity", "neutral", "contribution"),
    [
        ("ignore", 0.0, 0.25),
        ("ignore", 0.0, 0.1),
        ("ignore", 0.3, 0.07),
        ("signed", 0.0, 0.25),
        ("signed", 0.5, 0.25),
        ("signed", 0.5, 0.1),
        ("signed", 0.5, 0.33),
    ],
)
def test_accumulate_is_bit_identical_to_dv_edge_map_accumulator(
    dv_case: tuple[Events, object], polarity: str, neutral: float, contribution: float
) -> None:
    import dv_processing as dv

    events, store = dv_case
    reference = dv.EdgeMapAccumulator((W, H), contribution, polarity == "ignore", neutral)
    reference.accept(store)
    expected = reference.generateFrame().image

    got = accumulate(
        events, EdgeFrameConfig(width=W, height=H, polarity=polarity, neutral=neutral, contribution=contribution)
    )

    assert got.dtype == np.uint8
    assert got.shape == expected.shape == (H, W)
    assert 0 < np.count_nonzero(got == 255) < got.size  # saturation is exercised, the frame is not all white
    np.testing.assert_array_equal(got, expected)


def test_signed_polarity_depends_on_event_order_as_in_dv() -> None:
    config = EdgeFrameConfig(width=1, height=1, polarity="signed", neutral=0.5)
    on_first = Events.from_arrays([0] * 4, [0] * 4, range(4), [1, 1, 1, 0])  # 191, 255, 255 (saturated), 191
    off_first = Events.from_arrays([0] * 4, [0] * 4, range(4), [0, 1, 1, 1])  # 63, 127, 191, 255
    assert accumulate(on_first, config).tolist() == [[191]]
    assert accumulate(off_first, config).tolist() == [[255]]
    low = EdgeFrameConfig(width=1, height=1, polarity="signed")  # neutral 0: an OFF event at 0 stays at 0
    assert accumulate(Events.from_arrays([0, 0], [0, 0], [0, 1], [0, 1]), low).tolist() == [[64]]


def test_increment_and_neutral_byte_follow_dv_rounding() -> None:
    assert EdgeFrameConfig(width=1, height=1).increment == 64
    assert EdgeFrameConfig(width=1, height=1, contribution=0.1).increment == 26
    assert EdgeFrameConfig(width=1, height=1, neutral=0.5).neutral_byte == 127
    one_pixel = Events.from_arrays([0] * 5, [0] * 5, range(5), [1] * 5)
    counts = [accumulate(one_pixel[:k], EdgeFrameConfig(width=1, height=1))[0, 0] for k in range(6)]
    assert counts == [0, 64, 128, 192, 255, 255]


# -- slicing -------------------------------------------------------------------------------------


@pytest.mark.parametrize("cuts", [[1], [5000, 5001, 12_345], list(range(0, 20_000, 997))])
def test_time_windows_are_the_same_for_any_chunking(cuts: list[int]) -> None:
    events = _stream(20_000, seed=5)
    config = EdgeFrameConfig(width=W, height=H, window_us=30_000, polarity="signed", neutral=0.5)
    whole = EdgeFrameAccumulator(config).push(events)
    assert len(whole) == 6  # 200 ms of events: six complete 30 ms windows, the seventh is still open
    assert _frames_equal(_push_in_chunks(config, events, cuts), whole)


def test_time_windows_start_at_the_first_event_and_are_stamped_with_their_end() -> None:
    events = _stream(10_000, seed=6)
    t0 = int(events.t[0])
    config = EdgeFrameConfig(width=W, height=H, window_us=50_000)
    frames = EdgeFrameAccumulator(config).push(events)
    assert [(f.t_start_us - t0, f.t_end_us - t0) for f in frames] == [(k * 50_000, (k + 1) * 50_000) for k in range(3)]
    for frame in frames:
        inside = (events.t >= frame.t_start_us) & (events.t < frame.t_end_us)
        assert frame.n_events == int(inside.sum())
        np.testing.assert_array_equal(frame.image, accumulate(events[inside], config))


def test_explicit_origin_aligns_windows_to_absolute_time() -> None:
    events = _stream(5_000, seed=7)  # starts a little after t = 1 000 000 µs
    frames = EdgeFrameAccumulator(EdgeFrameConfig(width=W, height=H, window_us=40_000, origin_us=0)).push(events)
    assert frames[0].t_start_us == 1_000_000
    assert all(f.t_start_us % 40_000 == 0 and f.t_end_us == f.t_start_us + 40_000 for f in frames)


def test_a_window_is_emitted_only_once_an_event_reaches_its_end() -> None:
    accumulator = EdgeFrameAccumulator(EdgeFrameConfig(width=W, height=H, window_us=100))
    assert accumulator.push(Events.from_arrays([1, 2], [1, 1], [0, 99], [1, 1])) == []
    frames = accumulator.push(Events.from_arrays([3], [1], [100], [1]))
    assert [(f.t_start_us, f.t_end_us, f.n_events) for f in frames] == [(0, 100, 2)]


def test_empty_time_windows_are_emitted_as_neutral_frames() -> None:
    config = EdgeFrameConfig(width=W, height=H, window_us=100, neutral=0.5, polarity="signed")
    frames = EdgeFrameAccumulator(config).push(Events.from_arrays([1, 2], [1, 1], [0, 350], [1, 0]))
    assert [(f.t_start_us, f.n_events) for f in frames] == [(0, 1), (100, 0), (200, 0)]
    assert np.all(frames[1].image == 127)


def test_a_forward_gap_beyond_max_gap_starts_a_new_segment_without_empty_frames() -> None:
    config = EdgeFrameConfig(width=W, height=H, window_us=100, max_gap_us=300)
    accumulator = EdgeFrameAccumulator(config)
    frames = accumulator.push(Events.from_arrays([1, 2, 3, 4], [1, 1, 1, 1], [0, 150, 10_000_020, 10_000_130], [1] * 4))
    # the windows holding events are emitted; the 99,998 empty windows of the gap are skipped and counted
    assert [(f.t_start_us, f.n_events) for f in frames] == [(0, 1), (100, 1), (10_000_000, 1)]
    assert (accumulator.stats.gaps, accumulator.stats.skipped_windows) == (1, 99_998)
    later = accumulator.push(Events.from_arrays([5], [1], [10_000_230], [1]))  # same alignment after the gap
    assert [(f.t_start_us, f.n_events) for f in later] == [(10_000_100, 1)]
    assert accumulator.push(Events.from_arrays([6], [1], [10_000_260], [1])) == []  # a gap below the bound: normal
    unbounded = EdgeFrameAccumulator(EdgeFrameConfig(width=W, height=H, window_us=100))
    assert len(unbounded.push(Events.from_arrays([1, 2], [1, 1], [0, 10_000_020], [1, 1]))) == 100_000  # dv's way


def test_a_gap_between_pushes_is_a_gap_too_and_frames_match_the_unsplit_stream_around_it() -> None:
    events = _stream(4000, seed=12, duration_us=100_000)
    later = Events.from_arrays(events.x, events.y, events.t + 5_000_000, events.p)
    config = EdgeFrameConfig(width=W, height=H, window_us=20_000, max_gap_us=60_000)
    accumulator = EdgeFrameAccumulator(config)
    frames = accumulator.push(events) + accumulator.push(later) + accumulator.push(Events.from_arrays([1], [1], [9_999_999], [1]))
    reference = EdgeFrameAccumulator(dataclasses.replace(config, max_gap_us=None))
    expected = [f for f in reference.push(events) + reference.push(later) + reference.push(
        Events.from_arrays([1], [1], [9_999_999], [1])) if f.n_events]
    assert _frames_equal([f for f in frames if f.n_events], expected)  # every non-empty window, identical
    assert accumulator.stats.gaps == 2 and len(frames) < 20


def test_sliding_time_windows_overlap_by_window_minus_stride() -> None:
    events = _stream(20_000, seed=8)
    config = EdgeFrameConfig(width=W, height=H, window_us=40_000, stride_us=10_000)
    frames = _push_in_chunks(config, events, [3000, 9000, 9001])
    t0 = int(events.t[0])
    assert [f.t_start_us - t0 for f in frames] == [k * 10_000 for k in range(len(frames))]
    assert len(frames) == (int(events.t[-1]) - t0 - 40_000) // 10_000 + 1
    for frame in frames:
        inside = (events.t >= frame.t_start_us) & (events.t < frame.t_end_us)
        np.testing.assert_array_equal(frame.image, accumulate(events[inside], config))


def test_count_slices_hold_window_events_and_are_stamped_with_their_last_event() -> None:
    events = _stream(10_000, seed=9)
    config = EdgeFrameConfig(width=W, height=H, mode="count", window_events=3000, polarity="split")
    frames = _push_in_chunks(config, events, [100, 2999, 3000, 7777])
    assert [f.n_events for f in frames] == [3000, 3000, 3000]
    for k, frame in enumerate(frames):
        part = events[k * 3000 : (k + 1) * 3000]
        assert (frame.t_start_us, frame.t_end_us) == (int(part.t[0]), int(part.t[-1]))
        np.testing.assert_array_equal(frame.image, accumulate(part, config))


def test_sliding_count_slices_step_by_stride_events() -> None:
    events = _stream(5_000, seed=10)
    config = EdgeFrameConfig(width=W, height=H, mode="count", window_events=2000, stride_events=500)
    frames = _push_in_chunks(config, events, [1234, 1235, 4000])
    assert len(frames) == 7  # slices start at 0, 500, ..., 3000
    for k, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.image, accumulate(events[k * 500 : k * 500 + 2000], config))


def test_flush_returns_the_trailing_partial_slice_and_starts_a_new_stream() -> None:
    events = _stream(10_000, seed=11)
    config = EdgeFrameConfig(width=W, height=H, mode="count", window_events=4000)
    accumulator = EdgeFrameAccumulator(config)
    assert len(accumulator.push(events)) == 2
    tail = accumulator.flush()
    assert tail is not None
    assert tail.n_events == 2000
    np.testing.assert_array_equal(tail.image, accumulate(events[8000:], config))
    assert accumulator.flush() is None
    assert accumulator.stats.frames == 3


def test_flush_of_a_time_window_keeps_its_nominal_end() -> None:
    accumulator = EdgeFrameAccumulator(EdgeFrameConfig(width=W, height=H, window_us=1000))
    accumulator.push(Events.from_arrays([1, 2, 3], [1, 1, 1], [0, 1000, 1500], [1, 1, 1]))
    tail = accumulator.flush()
    assert tail is not None
    assert (tail.t_start_us, tail.t_end_us, tail.n_events) == (1000, 2000, 2)


def test_split_polarity_puts_off_in_channel_0_and_on_in_channel_1() -> None:
    events = Events.from_arrays([0, 0, 1, 2, 2], [0, 0, 0, 0, 0], range(5), [1, 1, 0, 1, 0])
    image = accumulate(events, EdgeFrameConfig(width=3, height=1, polarity="split"))
    assert image.shape == (2, 1, 3)
    assert image.tolist() == [[[0, 64, 64]], [[128, 0, 64]]]


def test_events_going_back_in_time_are_dropped_and_counted() -> None:
    accumulator = EdgeFrameAccumulator(EdgeFrameConfig(width=W, height=H, window_us=100))
    accumulator.push(Events.from_arrays([1, 1], [1, 1], [10, 50], [1, 1]))
    frames = accumulator.push(Events.from_arrays([1, 1, 1, 1], [1, 1, 1, 1], [40, 60, 55, 120], [1, 1, 1, 1]))
    assert accumulator.stats.time_backwards == 2
    assert [f.n_events for f in frames] == [3]
    assert frames[0].image[1, 1] == 192


# -- geometry: range, crop, rectification ---------------------------------------------------------


def test_out_of_range_events_are_dropped_and_counted_once_even_in_overlapping_windows() -> None:
    events = Events.from_arrays([5, W, 7, 3, W + 10], [5, 2, H, 3, H], [0, 10, 20, 30, 400], [1, 1, 1, 1, 1])
    stats = AccumulatorStats()
    image = accumulate(events, EdgeFrameConfig(width=W, height=H), stats=stats)
    assert (stats.events, stats.out_of_range, int(image.sum())) == (5, 3, 128)

    accumulator = EdgeFrameAccumulator(EdgeFrameConfig(width=W, height=H, window_us=100, stride_us=25))
    accumulator.push(events)
    accumulator.flush()
    assert accumulator.stats.out_of_range == 3


def test_crop_keeps_the_box_and_counts_the_rest() -> None:
    events = Events.from_arrays([0, 10, 639, 5, 5], [0, 439, 439, 440, 479], range(5), [1] * 5)
    stats = AccumulatorStats()
    image = accumulate(events, EdgeFrameConfig(width=640, height=480, crop=(0, 0, 640, 440)), stats=stats)
    assert image.shape == (440, 640)
    assert (image[0, 0], image[439, 10], image[439, 639]) == (64, 64, 64)
    assert stats.cropped == 2
    shifted = accumulate(events, EdgeFrameConfig(width=640, height=480, crop=(5, 440, 10, 40)))
    assert shifted.shape == (40, 10)
    assert np.flatnonzero(shifted).tolist() == [0, 39 * 10]


def test_rectify_map_moves_events_and_drops_those_that_leave_the_image() -> None:
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    rectify_map = np.stack([xs + 2.6, ys - 1.4], axis=-1)  # rounds to a shift of (+3, -1)
    rectify_map[0, 0] = np.nan
    config = EdgeFrameConfig(width=W, height=H, rectify_map=rectify_map, polarity="signed", neutral=0.5)
    events = Events.from_arrays([10, W - 2, 4, 0, 30], [10, 5, 0, 0, 3], range(5), [1, 1, 1, 1, 0])
    stats = AccumulatorStats()
    image = accumulate(events, config, stats=stats)
    assert image[9, 13] == 127 + 64
    assert image[2, 33] == 127 - 64
    assert np.count_nonzero(image != 127) == 2
    assert stats.rectify_dropped == 3  # x = W + 1, y = -1, NaN


def test_rectify_then_crop_counts_cropped_events_separately() -> None:
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    config = EdgeFrameConfig(width=W, height=H, rectify_map=np.stack([xs, ys + 3], axis=-1), crop=(0, 0, W, 40))
    stats = AccumulatorStats()
    image = accumulate(Events.from_arrays([1, 2, 3], [0, 37, 70], range(3), [1, 1, 1]), config, stats=stats)
    assert image.shape == (40, W)
    assert np.flatnonzero(image).tolist() == [3 * W + 1]
    assert (stats.cropped, stats.rectify_dropped) == (1, 1)


# -- configuration errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"mode": "events"}, r"mode must be one of \('time', 'count'\)"),
        ({"polarity": "both"}, r"polarity must be one of \('ignore', 'signed', 'split'\)"),
        ({"window_us": 0}, r"window_us must be a positive integer"),
        ({"stride_events": -5}, r"stride_events must be a positive integer or None"),
        ({"contribution": 0.0}, r"contribution must be in \(0, 1\]"),
        ({"neutral": 1.5}, r"neutral must be in \[0, 1\]"),
        ({"width": 0}, r"width must be an integer in 1\.\.65535"),
        ({"crop": (0, 0, 640, 500)}, r"crop \(0, 0, 640, 500\) must lie inside the 640x480 image"),
        ({"max_gap_us": 10}, r"max_gap_us must be an integer ≥ window_us \(50000\) or None"),
        (
            {"rectify_map": np.zeros((480, 640), np.float32)},
            r"rectify_map must be a float array of shape \(480, 640, 2\)",
        ),
    ],
)
def test_bad_configuration_values_raise_config_error_naming_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        EdgeFrameConfig(**{"width": 640, "height": 480, **overrides})


def test_push_rejects_anything_but_events() -> None:
    with pytest.raises(InputError, match=r"expects madm_ros\.events\.Events, got ndarray"):
        EdgeFrameAccumulator(EdgeFrameConfig(width=W, height=H)).push(np.zeros(3))
