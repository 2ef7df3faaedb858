"""The one label-to-frame rule: nearest frame within the tolerance, one label per frame, ties to the earlier."""

from __future__ import annotations

import numpy as np
import pytest

from madm_ros.label_matching import (
    COUNT_SLICE_TOLERANCE_NS,
    IMAGE_TOLERANCE_NS,
    NearestFrames,
    default_tolerance_ns,
)


def pairs(label_stamps, frame_stamps, tolerance) -> dict[int, int]:
    """Label → frame index when ``frame_stamps`` stream by in order."""
    matcher = NearestFrames(label_stamps, tolerance)
    for frame, stamp in enumerate(frame_stamps):
        matcher.offer(frame, int(stamp))
    return {label: m.frame for label, m in matcher.matches().items()}


def by_the_words(label_stamps, frame_stamps, tolerance) -> dict[int, int]:
    """The rule as the module docstring states it, by brute force (the reference for the random test)."""
    chosen = {}
    for label, stamp in enumerate(label_stamps):
        candidates = [(abs(f - stamp), f, i) for i, f in enumerate(frame_stamps) if abs(f - stamp) <= tolerance]
        if candidates:
            chosen[label] = min(candidates)
    kept = {}
    for label, (distance, _, frame) in chosen.items():
        key = (distance, label_stamps[label], label)
        if frame not in kept or key < kept[frame][0]:
            kept[frame] = (key, label)
    return {label: frame for frame, (_, label) in kept.items()}


def test_each_label_goes_to_its_nearest_frame_within_the_tolerance():
    frames = [0, 100, 200, 300]
    assert pairs([98, 205, 340, 420], frames, 10) == {0: 1, 1: 2}  # 340 and 420 are farther than 10 from any frame
    assert pairs([340], frames, 40) == {0: 3} and pairs([340], frames, 39) == {}  # the tolerance is inclusive
    assert pairs([150], frames, 60) == {0: 1}  # exactly between two frames: the earlier frame
    assert pairs([5], [10, 10], 5) == {0: 0}  # two frames with one stamp: the first


def test_a_frame_chosen_by_several_labels_keeps_the_nearest_and_ties_go_to_the_earlier_label():
    frames = [0, 100, 200]
    assert pairs([96, 103, 99], frames, 10) == {2: 1}  # 99 is nearest to frame 100; 96 and 103 lose it
    assert pairs([104, 96], frames, 10) == {1: 1}  # equal distance: the earlier stamp, whatever the order given
    assert pairs([100, 100], frames, 10) == {0: 1}  # identical stamps: the first label
    assert pairs([90, 140], frames, 50) == {0: 1}  # the loser is not moved to its second-nearest frame


def test_streaming_in_any_order_gives_the_batch_result_and_follows_the_words():
    rng = np.random.default_rng(1)
    for _ in range(200):
        frames = sorted(rng.integers(0, 1000, rng.integers(0, 30)).tolist())
        labels = rng.integers(-50, 1050, rng.integers(0, 30)).tolist()
        tolerance = int(rng.integers(0, 80))
        expected = by_the_words(labels, frames, tolerance)
        assert pairs(labels, frames, tolerance) == expected
        shuffled = NearestFrames(labels, tolerance)
        for index in rng.permutation(len(frames)):
            shuffled.offer(int(index), frames[index])
        assert {label: m.frame for label, m in shuffled.matches().items()} == expected


def test_offer_names_the_labels_a_frame_takes_over_so_only_their_masks_are_kept():
    matcher = NearestFrames([100, 110, 500], 20)
    assert matcher.offer(0, 95) == [0, 1]  # nearest so far of both labels within 20
    assert matcher.offer(1, 107) == [1]  # nearer to 110 (3 < 15), not to 100 (7 > 5)
    assert matcher.offer(2, 300) == []  # near no label
    assert {label: (m.frame, m.distance) for label, m in matcher.nearest.items()} == {0: (0, 5), 1: (1, 3)}


def test_default_tolerances():
    assert default_tolerance_ns("image") == default_tolerance_ns("depth") == IMAGE_TOLERANCE_NS == 1_000_000
    assert default_tolerance_ns("events", 50_000_000) == 25_000_000  # half the accumulation window
    assert default_tolerance_ns("events", 33_000_001) == 16_500_000
    assert default_tolerance_ns("events", None) == COUNT_SLICE_TOLERANCE_NS == 25_000_000  # count-sliced frames


def test_a_negative_tolerance_is_refused():
    with pytest.raises(ValueError, match="tolerance must be ≥ 0, got -1"):
        NearestFrames([0], -1)
