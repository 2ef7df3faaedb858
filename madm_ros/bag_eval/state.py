"""What one evaluation collects while frames stream by, turned into the report at the end."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from madm_ros.label_matching import NearestFrames
from madm_ros.problems import ProblemCounter

__all__ = ["OverlaySample", "RunState"]


class OverlaySample:
    """An evenly spaced sample of at most ``count`` overlays from a stream of unknown length.

    Why this way: the number of frames is known only at the end (event topics make as many frames
    as their events fill), and keeping every overlay would grow with the recording. So every
    ``stride``-th frame is kept, zlib-compressed; when more than ``2 × count`` are held the stride
    doubles and every other one is dropped. At the end :meth:`chosen` spreads ``count`` over them.
    """

    def __init__(self, count: int) -> None:
        self.count = count
        self.stride = 1
        self._kept: dict[int, tuple[int, tuple[int, ...], bytes]] = {}

    def wants(self, index: int) -> bool:
        """Whether frame ``index`` (0-based, in segmentation order) would be kept."""
        return self.count > 0 and index % self.stride == 0

    def add(self, index: int, stamp_ns: int, overlay: np.ndarray) -> None:
        """Keep the RGB overlay of frame ``index`` (call only where :meth:`wants` says so)."""
        self._kept[index] = (stamp_ns, overlay.shape, zlib.compress(np.ascontiguousarray(overlay).tobytes(), 1))
        if len(self._kept) > 2 * self.count:
            self.stride *= 2
            self._kept = {i: v for i, v in self._kept.items() if i % self.stride == 0}

    def chosen(self) -> list[tuple[int, int, np.ndarray]]:
        """``(frame index, stamp ns, RGB overlay)`` of at most ``count`` evenly spaced frames, in order."""
        indices = sorted(self._kept)
        if len(indices) > self.count:
            picks = np.unique(np.round(np.linspace(0, len(indices) - 1, self.count)).astype(int))
            indices = [indices[i] for i in picks]
        chosen = []
        for index in indices:
            stamp, shape, data = self._kept[index]
            chosen.append((index, stamp, np.frombuffer(zlib.decompress(data), np.uint8).reshape(shape)))
        return chosen


@dataclass
class RunState:
    """Counters, timings, label candidates and the overlay sample of one run.

    ``predictions`` holds, per label index, the packed mask of its nearest frame so far (one
    compressed mask shared by the labels of one frame): never every frame's mask.
    """

    problems: ProblemCounter
    matcher: NearestFrames | None = None
    overlays: OverlaySample = field(default_factory=lambda: OverlaySample(0))
    kind: str = ""
    frames: int = 0
    dropped: int = 0
    invalid_frames: int = 0
    messages: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (log time s, processing s) per frame
    frame_stamps: list[int] = field(default_factory=list)
    predictions: dict[int, tuple[int, bytes, tuple[int, ...]]] = field(default_factory=dict)  # label -> (frame, mask)
    scored_labels: int = 0
    stopped_early: str = ""
    max_frames_reached: bool = False
