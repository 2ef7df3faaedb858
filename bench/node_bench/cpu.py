"""CPU per thread of this process, and other processes' CPU during one run (Linux ``/proc``).

Per thread, because "the node uses 1.3 cores" does not say whether the executor, the inference
thread or DDS's own threads are busy; the thread names group them (``groups`` below).
"""

from __future__ import annotations

import os
import re
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.machine import own_cpu_s


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Native thread id → (label, CPU seconds) of every thread of this process.

    Threads Python started carry their name; the others (DDS, ONNX Runtime, numba) ``native:<comm>``.
    """
    ticks = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for entry in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{entry}/stat").read_text()
            comm = Path(f"/proc/self/task/{entry}/comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        tid = int(entry)
        out[tid] = (names.get(tid, f"native:{comm}"), (int(fields[11]) + int(fields[12])) / ticks)
    return out


def thread_cpu_delta(before: dict[int, tuple[str, float]], wall_s: float, groups: dict[str, str]) -> dict[str, float]:
    """Cores used per thread group since ``before`` (``groups``: regex → group name, first match wins)."""
    used: dict[str, float] = defaultdict(float)
    for tid, (name, seconds) in thread_cpu().items():
        delta = seconds - before.get(tid, (name, 0.0))[1]
        label = next((group for pattern, group in groups.items() if re.search(pattern, name)), name)
        used[label] += delta
    return {k: round(v / wall_s, 3) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0}


def others_cores(busy_s: float, own0: float, report: dict[str, Any], wall: float) -> float:
    """Cores used during a run by processes other than the bench (``own0``: its CPU at the start) and its node process."""
    own = own_cpu_s(children=False) - own0 + report["process_cores"] * report["wall_s"]
    return round(max(0.0, busy_s - own) / wall, 3)
