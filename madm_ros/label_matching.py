"""Labels → frames by stamp: the one rule and the one default tolerance every scorer of recorded frames uses.

Labels of a recording (a label topic, a folder of ``<stamp_ns>.png``) are stamped on their own;
frames are stamped by the camera (images) or by the end of their slice (event edge frames). The
rule that pairs them must be the same wherever a score is computed (``python -m madm_ros.bag_eval``
and the labelled split of ``adapt --target-bag``), or the two report different numbers for one bag:

- each label goes to the frame whose stamp is nearest to its own, if that distance is within the
  tolerance (a tie between two frames goes to the earlier frame);
- when several labels choose one frame, the frame keeps the nearest label (a tie goes to the
  earlier label); the others stay unmatched, so every frame is scored at most once.

Default tolerance (:func:`default_tolerance_ns`): 1 ms for images, which carry their exposure
stamp and should match a label exactly; half the accumulation window for time-sliced event frames,
whose stamp is the end of a slice that a label anywhere inside the nearer half belongs to; 25 ms
for count-sliced event frames, whose spacing follows the event rate and has no fixed window.

:class:`NearestFrames` applies the rule to a stream of frames (bag evaluation keeps only each
label's nearest frame so far, never every frame), for bag evaluation and bag targets alike.
Stamps and tolerance may be in any one unit (every caller uses ns: bag_eval and bag_target alike).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["COUNT_SLICE_TOLERANCE_NS", "IMAGE_TOLERANCE_NS", "Match", "NearestFrames", "default_tolerance_ns",
           "keep_nearest_per_frame"]

IMAGE_TOLERANCE_NS = 1_000_000
"""Default label-to-image tolerance: 1 ms."""
COUNT_SLICE_TOLERANCE_NS = 25_000_000
"""Default label-to-frame tolerance for count-sliced event frames: 25 ms."""


def default_tolerance_ns(kind: str, time_window_ns: int | None = None) -> int:
    """The default tolerance for ``kind`` (``image``/``depth``/``thermal`` or ``events``), in ns.

    Args:
        kind: ``events`` for edge frames; anything else is an image topic.
        time_window_ns: The accumulation window of time-sliced event frames; ``None`` for
            count-sliced ones (ignored for images).
    """
    if kind != "events":
        return IMAGE_TOLERANCE_NS
    return COUNT_SLICE_TOLERANCE_NS if time_window_ns is None else int(time_window_ns) // 2


@dataclass(frozen=True)
class Match:
    """A label's frame: the frame's index (arrival order) and stamp, and their distance."""

    label: int
    frame: int
    frame_stamp: int
    distance: int


class NearestFrames:
    """The rule applied while frames stream by: per label, the nearest frame offered so far.

    Args:
        label_stamps: Label stamps (label ``i`` is ``label_stamps[i]``); any order, duplicates allowed.
        tolerance: Largest label-to-frame distance (same unit as the stamps); must be ≥ 0.

    Raises:
        ValueError: a negative tolerance.
    """

    def __init__(self, label_stamps: Sequence[int], tolerance: int) -> None:
        if tolerance < 0:
            raise ValueError(f"label tolerance must be ≥ 0, got {tolerance}")
        self.label_stamps = [int(s) for s in label_stamps]
        self.tolerance = int(tolerance)
        self._order = sorted(range(len(self.label_stamps)), key=lambda i: (self.label_stamps[i], i))
        self._sorted = [self.label_stamps[i] for i in self._order]
        self.nearest: dict[int, Match] = {}

    def offer(self, frame: int, stamp: int) -> list[int]:
        """Consider frame ``frame`` stamped ``stamp``; return the labels it is now the nearest frame of."""
        lo = bisect.bisect_left(self._sorted, stamp - self.tolerance)
        hi = bisect.bisect_right(self._sorted, stamp + self.tolerance)
        taken = []
        for label in self._order[lo:hi]:
            distance = abs(stamp - self.label_stamps[label])
            best = self.nearest.get(label)
            if best is None or (distance, stamp, frame) < (best.distance, best.frame_stamp, best.frame):
                self.nearest[label] = Match(label, frame, stamp, distance)
                taken.append(label)
        return taken

    def matches(self) -> dict[int, Match]:
        """Label → its frame, after each frame kept only its nearest label."""
        return keep_nearest_per_frame(self.nearest, self.label_stamps)


def keep_nearest_per_frame(nearest: Mapping[int, Match], label_stamps: Sequence[int]) -> dict[int, Match]:
    """Of the labels that chose one frame, keep the nearest (ties: the earlier label); label → match, by label."""
    kept: dict[int, Match] = {}
    for label, match in nearest.items():
        rival = kept.get(match.frame)
        key = (match.distance, label_stamps[label], label)
        if rival is None or key < (rival.distance, label_stamps[rival.label], rival.label):
            kept[match.frame] = match
    return {m.label: m for m in sorted(kept.values(), key=lambda m: m.label)}
