"""The node process's timers: the node's public ``timing`` hook, collected between ``mark`` and ``report``.

The node calls :meth:`Probe.add` with (stage, milliseconds) — ``frame_source`` (decode and
accumulate of one message), ``callback``, ``stamp_to_handover``, ``handover_wait``, ``process``,
``segment_<step>`` and ``stamp_to_mask_published`` (see ``madm_ros.nodes.base``). The probe adds
``segment_total``, the sum of one frame's ``segment_<step>`` (the in-node counterpart of the bare
``Segmenter.segment``), and remembers when the last callback ended (how far behind the node was
when the publisher stopped).
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from typing import Any

from bench.node_bench.cpu import thread_cpu, thread_cpu_delta
from bench.node_bench.stats import summary

THREAD_GROUPS = {
    r"^ThreadPoolExecutor": "executor workers (MultiThreadedExecutor: take + deserialize + callbacks)",
    r"-inference$": "inference thread (segment + publish masks)",
    r"^MainThread$": "executor spin thread (spin_nodes: wait set; single-threaded also take + deserialize + callbacks)",
    r"^protocol$": "bench protocol (idle)",
    r"^native:": "native threads (DDS, ONNX Runtime pool, numba)",
}


class Probe:
    """Stage timings from the node's hook and CPU per thread, reset by :meth:`mark`."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.active = False
        self.last_callback_ns = 0
        self._segment: float | None = None  # the current frame's segment_<step> sum (inference thread only)

    def add(self, stage: str, milliseconds: float) -> None:
        """The node's ``timing`` hook (called from the executor and the inference thread)."""
        if stage == "callback":
            self.last_callback_ns = time.time_ns()
        if not self.active:
            return
        if stage == "handover_wait":  # the inference thread starts a frame
            self._segment = None
        elif stage.startswith("segment_"):
            self._segment = (self._segment or 0.0) + milliseconds
        elif stage == "process" and self._segment is not None:
            self.samples["segment_total"].append(self._segment)
            self._segment = None
        self.samples[stage].append(milliseconds)

    def mark(self, node: Any) -> None:
        """Start measuring: timers empty, counters and CPU times taken now."""
        self.samples = defaultdict(list)
        self.counters0 = node.counters()
        self.cpu0 = thread_cpu()
        self.process0 = time.process_time()
        self.wall0 = time.perf_counter()
        self.active = True

    def report(self, node: Any) -> dict[str, Any]:
        """Everything since :meth:`mark`: timer summaries, counter deltas, cores per process and thread group."""
        wall = time.perf_counter() - self.wall0
        counters = node.counters()
        delta = {k: v - self.counters0.get(k, 0) for k, v in counters.items()
                 if isinstance(v, int) and not isinstance(v, bool)}
        return {"wall_s": round(wall, 3), "counters_delta": delta,
                "counters_end": {k: v for k, v in counters.items() if not isinstance(v, float) or math.isfinite(v)},
                "timers_ms": {k: summary(v) for k, v in list(self.samples.items())},
                "process_cores": round((time.process_time() - self.process0) / wall, 3),
                "thread_cores": thread_cpu_delta(self.cpu0, wall, THREAD_GROUPS),
                "native_threads": sorted({name for name, _ in thread_cpu().values() if name.startswith("native:")}),
                "last_callback_ns": self.last_callback_ns}
