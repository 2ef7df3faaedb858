from __future__ import annotations

import math

import numpy as np
import pytest

from madm_ros.errors import ConfigError, InputError
from madm_ros.events.simulator import EventSimulator, EventSimulatorConfig, simulate

H, W = 24, 64
DARK, BRIGHT = 0.1, 0.8


def _bar(left: int, width: int = 8) -> np.ndarray:
    frame = np.full((H, W), DARK)
    frame[:, left : left + width] = BRIGHT
    return frame


def _steps(n_pixels: float, threshold: float) -> int:
    """Events one threshold model predicts for a jump between DARK and BRIGHT."""
    eps = EventSimulatorConfig().log_eps
    return math.floor((math.log(BRIGHT + eps) - math.log(DARK + eps)) / threshold) * int(n_pixels)


def test_a_bright_bar_moving_right_fires_on_at_its_leading_and_off_at_its_trailing_edge() -> None:
    events = simulate([_bar(10), _bar(13), _bar(16)], [0, 1000, 2000], EventSimulatorConfig(sigma=0.0))
    on_columns = np.unique(events.x[events.p == 1]).tolist()
    off_columns = np.unique(events.x[events.p == 0]).tolist()
    assert on_columns == [18, 19, 20, 21, 22, 23]  # the bar's right edge moves from x=17 to x=23
    assert off_columns == [10, 11, 12, 13, 14, 15]  # the left edge leaves x=10..15 dark
    assert np.unique(events.y).tolist() == list(range(H))
    # The columns covered first fire first: x=18..20 in the first interval, x=21..23 in the second.
    assert events.t[events.x == 18].max() < 1000 <= events.t[events.x == 21].min()
    assert len(events) == _steps(6 * H, 0.2) * 2


def test_a_static_scene_produces_no_events() -> None:
    rng = np.random.default_rng(0)
    texture = rng.random((H, W))
    events = simulate([texture] * 5, [0, 1000, 2000, 3000, 4000], EventSimulatorConfig(sigma=0.05))
    assert len(events) == 0


@pytest.mark.parametrize("threshold", [0.1, 0.2, 0.35, 0.5])
def test_each_pixel_fires_once_per_threshold_its_log_intensity_crosses(threshold: float) -> None:
    config = EventSimulatorConfig(c_on=threshold, c_off=threshold, sigma=0.0)
    up = simulate([np.full((H, W), DARK), np.full((H, W), BRIGHT)], [0, 10_000], config)
    down = simulate([np.full((H, W), BRIGHT), np.full((H, W), DARK)], [0, 10_000], config)
    assert (len(up), int(up.p.sum())) == (_steps(H * W, threshold), _steps(H * W, threshold))
    assert (len(down), int(down.p.sum())) == (_steps(H * W, threshold), 0)


def test_more_contrast_gives_proportionally_more_events() -> None:
    config = EventSimulatorConfig(sigma=0.0, c_on=0.1, c_off=0.1)
    counts = []
    for ratio in (2.0, 4.0, 8.0):
        events = simulate([np.full((H, W), 0.1), np.full((H, W), 0.1 * ratio)], [0, 1000], config)
        counts.append(len(events) // (H * W))
    # log(2)/0.1 = 6.9, log(4)/0.1 = 13.9, log(8)/0.1 = 20.8 (log_eps shifts these slightly down)
    assert counts == [6, 13, 20]


def test_a_change_spanning_several_thresholds_fires_at_interpolated_times_inside_the_interval() -> None:
    config = EventSimulatorConfig(sigma=0.0, c_on=0.5, log_eps=1e-9)
    start, end = 1_000_000, 1_010_000
    events = simulate([np.full((1, 1), 0.1), np.full((1, 1), 0.1 * math.e**2.1)], [start, end], config)
    # log intensity rises by 2.1 linearly over 10 ms: crossings at k * 0.5 / 2.1 * 10 ms, floored to µs
    assert events.t.tolist() == [1_002_380, 1_004_761, 1_007_142, 1_009_523]
    assert events.p.tolist() == [1, 1, 1, 1]


def test_the_refractory_period_delays_or_suppresses_events() -> None:
    frames, times = [np.full((1, 1), 0.1), np.full((1, 1), 0.1 * math.e**2)], [0, 10_000]
    config = EventSimulatorConfig(sigma=0.0, c_on=0.5, log_eps=1e-9, refractory_us=4000)
    events = simulate(frames, times, config)
    # 2500 fires; 5000 waits until 6500; 7500 is past threshold again only at 10 500 > end -> next interval
    assert events.t.tolist() == [2500, 6500]
    assert np.all(np.diff(events.t) >= 4000)

    rng = np.random.default_rng(1)
    sequence = [rng.random((H, W)) for _ in range(20)]
    busy = simulate(sequence, [k * 500 for k in range(20)], EventSimulatorConfig(refractory_us=1500))
    for pixel in np.unique(busy.y.astype(np.int64) * W + busy.x):
        mask = busy.y.astype(np.int64) * W + busy.x == pixel
        assert np.all(np.diff(busy.t[mask]) >= 1500)


def test_output_is_time_sorted_and_within_the_frame_interval() -> None:
    rng = np.random.default_rng(2)
    simulator = EventSimulator(EventSimulatorConfig())
    simulator.step(rng.random((H, W)), 5000)
    events = simulator.step(rng.random((H, W)), 7000)
    assert len(events) > 100
    assert np.all(np.diff(events.t) >= 0)
    assert events.t.min() >= 5000
    assert events.t.max() <= 7000
    assert 0.2 < events.p.mean() < 0.8


def test_the_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    rng = np.random.default_rng(3)
    frames = [rng.random((H, W)) for _ in range(4)]
    times = [0, 1000, 2000, 3000]
    a = simulate(frames, times, EventSimulatorConfig(seed=7))
    b = simulate(frames, times, EventSimulatorConfig(seed=7))
    c = simulate(frames, times, EventSimulatorConfig(seed=8))
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in "xytp")
    assert len(a) != len(c) or not np.array_equal(a.t, c.t)


def test_uint8_frames_are_read_as_intensity_over_255() -> None:
    config = EventSimulatorConfig(sigma=0.0)
    as_bytes = [np.rint(_bar(left) * 255).astype(np.uint8) for left in (10, 12)]
    from_bytes = simulate(as_bytes, [0, 1000], config)
    from_float = simulate([frame / 255.0 for frame in as_bytes], [0, 1000], config)
    assert len(from_bytes) > 0
    assert all(np.array_equal(getattr(from_bytes, f), getattr(from_float, f)) for f in "xytp")


def test_bad_inputs_and_configuration_raise() -> None:
    with pytest.raises(ConfigError, match=r"c_on must be a positive number, got 0"):
        EventSimulatorConfig(c_on=0)
    with pytest.raises(ConfigError, match=r"refractory_us must be an integer >= 0"):
        EventSimulatorConfig(refractory_us=-1)
    simulator = EventSimulator()
    simulator.step(np.zeros((H, W)), 100)
    with pytest.raises(InputError, match=r"frame time 100 µs is not after the previous frame's 100 µs"):
        simulator.step(np.zeros((H, W)), 100)
    with pytest.raises(InputError, match=r"differs from the first frame's \(24, 64\)"):
        simulator.step(np.zeros((H, W + 1)), 200)
    with pytest.raises(InputError, match="non-negative linear intensities"):
        simulator.step(np.full((H, W), -1.0), 300)
    with pytest.raises(InputError, match="got 2 frames but 1 time stamps"):
        simulate([np.zeros((H, W))] * 2, [0])
