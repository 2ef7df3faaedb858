"""Percentile summaries of timings, and a timed loop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np


def summary(values: Iterable[float], digits: int = 3) -> dict[str, Any]:
    """Count, p50, p99, mean, max and sum of ``values`` (``None`` where empty; the sum gives CPU per stage)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "p50": None, "p99": None, "mean": None, "max": None, "sum": 0.0}
    p50, p99 = np.percentile(v, (50, 99))
    return {"n": int(v.size), "p50": round(float(p50), digits), "p99": round(float(p99), digits),
            "mean": round(float(v.mean()), digits), "max": round(float(v.max()), digits), "sum": round(float(v.sum()), digits)}


def timed_median_ms(fn: Callable[[], Any], runs: int, warmup: int = 3) -> dict[str, Any]:
    """:func:`summary` of ``runs`` timed calls of ``fn`` in ms, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return summary(times)


def difference(a: float | None, b: float | None) -> float | None:
    """``a - b`` rounded, ``None`` where either is missing (a run that produced no mask)."""
    return None if a is None or b is None else round(a - b, 3)


def fmt(value: Any, digits: int = 1) -> str:
    """A figure for a table or a note: ``-`` where missing, floats to ``digits`` decimals."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)
