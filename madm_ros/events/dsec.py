"""DSEC event files (``<sequence>/events/left/events.h5``) and their ``rectify_map.h5``.

Layout (Gehrig et al., DSEC, RA-L 2021; datasets read with h5py):

- ``/events/x``, ``/events/y`` (uint16), ``/events/t`` (µs relative to ``t_offset``, commonly
  uint32), ``/events/p`` (uint8, 1 = ON) — one row per event, time-ordered;
- ``/t_offset`` (int64 scalar, µs): added to ``t`` to align events with the image and label
  timestamps; this reader always returns absolute times ``t + t_offset``;
- ``/ms_to_idx`` (uint64): ``ms_to_idx[ms]`` is the index of the first event with
  ``t >= ms * 1000``, so a time window is found in O(1) and refined inside one millisecond.

The published files are compressed with Blosc/ZSTD, an HDF5 filter plug-in that h5py gets from
the ``hdf5plugin`` package; it is imported (if installed) before the file is opened.

The left event camera is 640×480 and is stored **unrectified**. ``rectify_map.h5`` (dataset
``rectify_map``, shape (480, 640, 2), float32) gives rectified (x, y) = ``rectify_map[y, x]``;
this reader only loads it — rectification belongs to the edge-frame accumulator.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from madm_ros.errors import DecodeError
from madm_ros.events.types import DecodeStats, Events

__all__ = ["HDF5_MAGIC", "DsecEventsFile", "load_rectify_map"]

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_REQUIRED = ("events/x", "events/y", "events/t", "events/p", "ms_to_idx", "t_offset")


def _open_h5(path: Path) -> Any:
    """Open an HDF5 file read-only, with the compression plug-ins registered when available."""
    import h5py

    with contextlib.suppress(ImportError):
        import hdf5plugin  # noqa: F401  (registers Blosc/ZSTD and other filters with HDF5)
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as error:
        raise DecodeError(f"{path}: cannot open as HDF5 (corrupt or truncated file: {error})") from None


def _read_error(path: Path, error: Exception) -> DecodeError:
    hint = ""
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        hint = "; DSEC files are Blosc/ZSTD-compressed: pip install hdf5plugin"
    return DecodeError(f"{path}: cannot read event data ({error}){hint}")


def load_rectify_map(path: str | Path, *, width: int = 640, height: int = 480) -> np.ndarray:
    """Load DSEC's ``rectify_map.h5`` as a float32 array of shape (height, width, 2).

    ``map[y, x] = (x_rect, y_rect)``, sub-pixel and possibly outside the image.

    Raises:
        DecodeError: If the file cannot be read, has no ``rectify_map`` dataset, or its shape is not
            (height, width, 2).
    """
    path = Path(path)
    with _open_h5(path) as file:
        if "rectify_map" not in file:
            raise DecodeError(f"{path}: missing dataset 'rectify_map' (is this DSEC's rectify_map.h5?)")
        try:
            rectify_map = np.asarray(file["rectify_map"][()], dtype=np.float32)
        except (OSError, ValueError) as error:
            raise _read_error(path, error) from None
    if rectify_map.shape != (height, width, 2):
        raise DecodeError(
            f"{path}: rectify_map has shape {rectify_map.shape}, expected ({height}, {width}, 2) for the "
            f"{width}x{height} event camera"
        )
    return rectify_map


class DsecEventsFile:
    """Random and sequential access to a DSEC ``events.h5`` (see module docstring).

    Args:
        path: The ``events.h5`` file.
        rectify_map_path: Optional ``rectify_map.h5`` of the same camera; loaded into
            :attr:`rectify_map` for the edge-frame accumulator (events are returned unrectified).
        width, height: Sensor size in pixels (DSEC's event cameras: 640×480). Events outside are
            dropped and counted in ``stats.out_of_range``.

    Attributes:
        width, height, encoding (``"dsec"``), t_offset_us, rectify_map (float32 (height, width, 2)
        or ``None``), stats (counters accumulated over all reads of this object).

    Use as a context manager (or call :meth:`close`) to release the HDF5 handle.

    Raises:
        DecodeError: If the file is not readable HDF5 or lacks a DSEC dataset (all missing ones are
            named), or the rectify map is malformed.
    """

    encoding = "dsec"

    def __init__(
        self,
        path: str | Path,
        rectify_map_path: str | Path | None = None,
        *,
        width: int = 640,
        height: int = 480,
    ) -> None:
        self.path = Path(path)
        self.width = width
        self.height = height
        self.stats = DecodeStats()
        self.rectify_map = (
            None if rectify_map_path is None else load_rectify_map(rectify_map_path, width=width, height=height)
        )
        self._file = _open_h5(self.path)
        missing = [name for name in _REQUIRED if name not in self._file]
        if missing:
            self._file.close()
            raise DecodeError(
                f"{self.path}: not a DSEC events.h5, missing dataset(s) {', '.join('/' + m for m in missing)}"
            )
        events = self._file["events"]
        self._x, self._y, self._t, self._p = events["x"], events["y"], events["t"], events["p"]
        lengths = {name: len(events[name]) for name in ("x", "y", "t", "p")}
        if len(set(lengths.values())) != 1:
            self._file.close()
            raise DecodeError(f"{self.path}: /events datasets differ in length: {lengths}")
        self.num_events = lengths["t"]
        try:
            self.t_offset_us = int(np.asarray(self._file["t_offset"][()]).reshape(-1)[0])
            self._ms_to_idx = np.asarray(self._file["ms_to_idx"][()], dtype=np.int64).reshape(-1)
        except (OSError, ValueError, IndexError) as error:
            self._file.close()
            raise _read_error(self.path, error) from None

    def close(self) -> None:
        """Release the HDF5 file."""
        self._file.close()

    def __enter__(self) -> DsecEventsFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __len__(self) -> int:
        return self.num_events

    def _read(self, start: int, stop: int) -> Events:
        """Events ``[start, stop)`` in file order, absolute times, out-of-range events dropped."""
        self.stats.packets += 1
        if stop <= start:
            self.stats.empty_packets += 1
            return Events.empty()
        try:
            t = np.asarray(self._t[start:stop], dtype=np.int64) + self.t_offset_us
            events = Events.from_arrays(self._x[start:stop], self._y[start:stop], t, self._p[start:stop])
        except (OSError, ValueError) as error:
            raise _read_error(self.path, error) from None
        inside = (events.x < self.width) & (events.y < self.height)
        if not inside.all():
            self.stats.out_of_range += int(len(events) - inside.sum())
            events = events[inside]
        self.stats.events += len(events)
        return events

    def _first_index_at_or_after(self, t_rel: int) -> int:
        """Index of the first event with relative time ``>= t_rel``: ms_to_idx, then a scan of one millisecond."""
        if t_rel <= 0:
            return 0
        table, ms = self._ms_to_idx, t_rel // 1000
        if len(table) == 0:
            lo, hi = 0, self.num_events
        elif ms >= len(table):
            lo, hi = int(table[-1]), self.num_events
        else:
            lo = int(table[ms])
            hi = int(table[ms + 1]) if ms + 1 < len(table) else self.num_events
        lo, hi = min(lo, self.num_events), min(max(hi, lo), self.num_events)
        try:
            times = np.asarray(self._t[lo:hi], dtype=np.int64)
        except (OSError, ValueError) as error:
            raise _read_error(self.path, error) from None
        return lo + int(np.searchsorted(times, t_rel, side="left"))

    def events_between(self, t_start_us: int, t_end_us: int) -> Events:
        """Events with absolute time in ``[t_start_us, t_end_us)`` (µs, i.e. ``t + t_offset``)."""
        if t_end_us <= t_start_us:
            return Events.empty()
        start = self._first_index_at_or_after(t_start_us - self.t_offset_us)
        stop = self._first_index_at_or_after(t_end_us - self.t_offset_us)
        return self._read(start, stop)

    def chunks(self, max_events: int = 1_000_000) -> Iterator[Events]:
        """Yield all events in file order, ``max_events`` per chunk (the last may be shorter)."""
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        for start in range(0, self.num_events, max_events):
            yield self._read(start, min(start + max_events, self.num_events))

    def read_all(self) -> Events:
        """All events at once (a full DSEC sequence holds hundreds of millions: prefer chunks)."""
        return self._read(0, self.num_events)
