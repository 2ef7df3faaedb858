"""Problems with the input, counted by kind and told once: the one counter nodes, bag tools and the event stream share.

Bad input never stops madm: a node keeps running, a bag tool keeps reading. What it does instead
is count each problem by a short kind (``decode_error``, ``bad_image:32FC3``, ``invalid_frame``,
…), tell the first of each kind to whoever listens (the node's logger, the bag tool's stderr) with a
sentence that says what happened and what to do, and report the counts (diagnostics, report.json).
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

__all__ = ["ProblemCounter"]


class ProblemCounter:
    """Counts problems by kind; the first of each kind goes to ``on_first`` with its explanation.

    Thread-safe: a node's input callbacks and inference thread report into one counter.

    Args:
        on_first: Called with ``(kind, text)`` the first time each kind occurs (e.g. a logger).
    """

    def __init__(self, on_first: Callable[[str, str], None] | None = None) -> None:
        self.on_first = on_first
        self.counts: Counter[str] = Counter()
        self.first_text: dict[str, str] = {}
        self._lock = threading.Lock()

    def report(self, kind: str, text: str, count: int = 1) -> None:
        """Count ``count`` problems of ``kind``; the first of the kind is told with ``text``."""
        with self._lock:
            self.counts[kind] += count
            first = kind not in self.first_text
            if first:
                self.first_text[kind] = text
        if first and self.on_first is not None:
            self.on_first(kind, text)

    def count(self, kind: str, count: int = 1) -> None:
        """Count without telling (for problems the caller reports itself, e.g. as an error)."""
        with self._lock:
            self.counts[kind] += count
            self.first_text.setdefault(kind, kind)

    def as_dict(self, prefix: str = "") -> dict[str, int]:
        """The counts as a plain dict, keys prefixed (e.g. ``problem_``)."""
        with self._lock:
            return {f"{prefix}{kind}": count for kind, count in self.counts.items()}

    def __bool__(self) -> bool:
        return bool(self.counts)
