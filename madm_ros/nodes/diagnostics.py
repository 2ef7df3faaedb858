"""What a node tells ``/diagnostics``: frame counts, rates and latencies, and the status level they give.

The callbacks count frames in, the inference thread counts frames out with their times; both run
at once under any executor, so :class:`FrameStats` takes a lock. The window of recent times is
bounded (``WINDOW`` frames), so a node that runs for days reports its present, not its average.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np

from madm_ros.metrics import latency_summary

__all__ = ["WINDOW", "FrameStats", "diagnostic_status"]

WINDOW = 200
"""How many recent frames the rates and latencies are taken over."""


class FrameStats:
    """Frames in, out and skipped, with the recent processing, inference and end-to-end times (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames_in = self.frames_out = self.skipped = 0
        self._recent: dict[str, deque[float]] = {k: deque(maxlen=WINDOW) for k in ("processing", "inference", "pipeline")}
        self._out_times: deque[float] = deque(maxlen=WINDOW)

    def count_in(self) -> None:
        """One frame handed to the inference thread."""
        with self._lock:
            self.frames_in += 1

    def count_skipped(self) -> None:
        """One frame not segmented because nobody subscribed to an output."""
        with self._lock:
            self.skipped += 1

    def count_out(self, done: float, processing_ms: float, inference_ms: float | None, pipeline_ms: float) -> None:
        """One frame published at ``done`` (``time.perf_counter()``); ``inference_ms`` is None when it skipped the network."""
        with self._lock:
            self.frames_out += 1
            self._recent["processing"].append(processing_ms)
            if inference_ms is not None:
                self._recent["inference"].append(inference_ms)
            self._recent["pipeline"].append(pipeline_ms)
            self._out_times.append(done)

    def as_dict(self) -> dict[str, Any]:
        """Counts, output frame rate and jitter, p50/p99 processing, p50 inference and the newest delay from real time."""
        with self._lock:
            recent = {k: list(v) for k, v in self._recent.items()}
            intervals = np.diff(self._out_times) if len(self._out_times) > 2 else np.empty(0)
            values: dict[str, Any] = {"frames_in": self.frames_in, "frames_out": self.frames_out,
                                      "skipped_no_subscribers": self.skipped}
        processing = latency_summary(recent["processing"])
        values.update({
            "frame_rate_node": float(1 / np.mean(intervals)) if intervals.size else 0.0,
            "jitter_ms": float(np.std(intervals) * 1e3) if intervals.size else 0.0,
            "processing_time_ms": processing["p50"],
            "processing_time_p99_ms": processing["p99"],
            "inference_time_ms": latency_summary(recent["inference"])["p50"],
            "current_delay_from_realtime_ms": recent["pipeline"][-1] if recent["pipeline"] else float("nan"),
        })
        return values


def diagnostic_status(name: str, hardware_id: str, failure: str, values: dict[str, Any]) -> Any:
    """A ``DiagnosticStatus``: ERROR with ``failure`` when set, WARN on any problem or dropped frame, else OK."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    if failure:
        status.level, status.message = DiagnosticStatus.ERROR, failure
    elif any(k.startswith("problem_") for k in values) or values.get("total_dropped_frames"):
        status.level, status.message = DiagnosticStatus.WARN, "running; see counters for dropped or bad input"
    else:
        status.level, status.message = DiagnosticStatus.OK, "running"
    status.values = [KeyValue(key=k, value=f"{v:.3f}" if isinstance(v, float) else str(v)) for k, v in values.items()]
    return status
