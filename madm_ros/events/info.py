"""Inspect an event recording: counts, sensor size, time span, decoder losses, and one edge frame.

These inputs are recognised by their content, not their name:

- Prophesee RAW (``.raw``): ASCII header lines starting with ``%``, then EVT 2.0/2.1/3.0 words
  (:class:`madm_ros.events.raw_files.RawFile`);
- AEDAT4 (``.aedat4``): iniVation DV files starting with ``#!AER-DAT4.0``
  (:class:`madm_ros.events.aedat.AedatFile`);
- DSEC ``events.h5``: HDF5 with ``/events/{x,y,t,p}``, ``/ms_to_idx``, ``/t_offset``
  (:class:`madm_ros.events.dsec.DsecEventsFile`; times are reported with ``t_offset`` added);
- rosbag2 (a bag directory with ``metadata.yaml`` or storage files, or one ``.db3`` / ``.mcap``
  file) and ROS 1 ``.bag`` files holding event messages (:mod:`madm_ros.events.bags`), read by
  madm's one bag reader (:class:`madm_ros.bag_source.BagSource`): recordings of other rosbag2
  versions and truncated MCAP files read as they do in every other madm tool, and the report says
  so (``problem``: read only in part; ``read_note``: how the bag was read when not normally).

Every reader is consumed chunk by chunk, so files larger than memory can be described.
Used by ``python -m madm_ros.events info``; the functions here are what tests call.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from madm_ros.bag_source import BAG_MAGIC
from madm_ros.errors import DecodeError, InputError
from madm_ros.events.aedat import AEDAT4_MAGIC
from madm_ros.events.dsec import HDF5_MAGIC
from madm_ros.events.types import DecodeStats, Events

__all__ = ["FORMATS", "LOSS_COUNTERS", "describe", "detect_format", "first_edge_frame"]

FORMATS: dict[str, str] = {
    "prophesee_raw": "Prophesee RAW file (EVT 2.0/2.1/3.0 after '%' header lines)",
    "aedat4": "AEDAT4 file (iniVation DV, '#!AER-DAT4.0'); the first event stream is read",
    "dsec": "DSEC events.h5 (HDF5: /events/{x,y,t,p}, /ms_to_idx, /t_offset); times include t_offset",
    "rosbag2": "rosbag2 directory or .db3/.mcap file with event_camera_msgs/EventPacket messages",
    "rosbag1": "ROS 1 .bag file with event messages (dvs_msgs/EventArray, EventPacket)",
}

LOSS_COUNTERS = ("out_of_range", "bad_words", "truncated_bytes", "time_backwards", "duplicate_packets")
"""DecodeStats counters that explain lost events or bytes; their sum is reported as ``dropped``."""

_CHUNK_EVENTS = 1_000_000
_BAG_FORMATS = ("rosbag2", "rosbag1")


class EventSource(Protocol):
    """What :func:`describe` needs from a reader."""

    width: int
    height: int
    encoding: str
    stats: DecodeStats

    def chunks(self, max_events: int = ...) -> Iterator[Events]: ...


def detect_format(path: str | Path) -> str:
    """Name the format of ``path`` (a key of :data:`FORMATS`) from its first bytes or, for a folder, its files.

    Raises:
        InputError: If the path does not exist.
        DecodeError: If it is empty, a folder without a bag, or no known event format.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file or directory")
    if path.is_dir():
        if (path / "metadata.yaml").is_file() or any(path.glob("*.db3")) or any(path.glob("*.mcap")):
            return "rosbag2"
        raise DecodeError(f"{path}: directory is not a rosbag2 bag (no metadata.yaml, .db3 or .mcap file inside)")
    with path.open("rb") as file:
        head = file.read(16)
    if not head:
        raise DecodeError(f"{path}: empty file")
    if head.startswith(AEDAT4_MAGIC):
        return "aedat4"
    if head.startswith(HDF5_MAGIC):
        return "dsec"
    storage = next((kind for magic, kind in BAG_MAGIC if head.startswith(magic)), None)
    if storage is not None:
        return "rosbag1" if storage == "rosbag1" else "rosbag2"
    if head.startswith(b"%"):
        return "prophesee_raw"
    raise DecodeError(
        f"{path}: unknown event file format (first bytes {head[:8]!r}); expected a Prophesee RAW, AEDAT4, "
        "DSEC events.h5 or rosbag2 file (see --help)"
    )


class _BagEvents:
    """A bag's event topic seen through the reader interface (width, height, encoding, stats, chunks).

    Messages are decoded one at a time (:func:`madm_ros.events.bags.iter_bag_events`); the first is
    read on opening because the sensor size and encoding come from it. A bag readable only in part
    is described up to where it breaks off, with ``info["problem"]`` saying why.
    """

    def __init__(self, path: Path, topic: str | None) -> None:
        from madm_ros.events.bags import iter_bag_events
        from madm_ros.events.types import DecodeStats

        self.path, self.topic = path, topic
        self.stats, self.info = DecodeStats(), {}
        self._messages = iter_bag_events(path, topic, stats=self.stats, info=self.info)
        self._first = next(self._messages, None)
        self.width, self.height = int(self.info["width"]), int(self.info["height"])
        self.encoding = str(self.info["encoding"])

    def chunks(self, max_events: int = _CHUNK_EVENTS) -> Iterator[Events]:
        pending = [] if self._first is None else [self._first]
        for _, events in itertools.chain(pending, self._messages):
            for start in range(0, len(events), max_events):
                yield events[start : start + max_events]


@contextmanager
def open_event_source(path: str | Path, *, topic: str | None = None,
                      sensor_size: tuple[int, int] | None = None) -> Iterator[tuple[str, EventSource]]:
    """Detect the format of ``path`` and open the matching reader; yields (format name, reader), then closes it.

    ``sensor_size`` (width, height) is for Prophesee RAW files whose header does not say it; the
    other formats carry their size.
    """
    path = Path(path)
    kind = detect_format(path)
    if topic is not None and kind not in _BAG_FORMATS:
        raise InputError(f"{path}: --topic only applies to rosbag2 input, this is {FORMATS[kind]}")
    if sensor_size is not None and kind != "prophesee_raw":
        raise InputError(f"{path}: --sensor-size only applies to Prophesee RAW files; {FORMATS[kind]} carries its size")
    if kind == "aedat4":
        from madm_ros.events.aedat import AedatFile

        yield kind, AedatFile(path)
    elif kind == "dsec":
        from madm_ros.events.dsec import DsecEventsFile

        with DsecEventsFile(path) as dsec:
            yield kind, dsec
    elif kind == "prophesee_raw":
        from madm_ros.events.raw_files import RawFile

        width, height = sensor_size if sensor_size is not None else (None, None)
        yield kind, RawFile(path, width=width, height=height)
    else:
        yield kind, _BagEvents(path, topic)


def _extras(kind: str, source: Any) -> dict[str, Any]:
    """Format-specific fields worth printing."""
    if kind == "dsec":
        return {"t_offset_us": source.t_offset_us}
    if kind == "aedat4":
        return {"stream": source.stream_name}
    if kind == "prophesee_raw":
        return {"header": dict(source.header), "geometry_source": source.geometry_source}
    if kind in _BAG_FORMATS:
        return {key: value for key, value in source.info.items() if key not in ("width", "height", "encoding")}
    return {}


def describe(path: str | Path, topic: str | None = None, *, sensor_size: tuple[int, int] | None = None,
             max_events: int = _CHUNK_EVENTS) -> dict[str, Any]:
    """Summarise an event recording in one JSON-serialisable dict, reading it ``max_events`` at a time.

    Keys: ``path``, ``format``, ``encoding``, ``width``, ``height``, ``events``, ``on_events``,
    ``t_first_us`` / ``t_last_us`` (first and last event in stream order, µs; ``None`` without
    events), ``duration_us``, ``dropped`` (sum of :data:`LOSS_COUNTERS`), ``stats`` (all decoder
    counters) and format-specific extras (DSEC ``t_offset_us``, AEDAT4 ``stream``, RAW ``header`` and
    ``geometry_source``, bag ``topic``, ``msgtype``, ``messages``, ``problem`` (why the bag was read
    only in part; empty when whole) and ``read_note`` (how it was read when not normally)), and
    ``warning`` (empty unless more was lost than decoded: a sign of the wrong encoding or a corrupt
    file, which would otherwise pass as a short recording).

    Raises:
        InputError, DecodeError: For a missing, unknown, corrupt or truncated input (message names it).
    """
    path = Path(path)
    count = on = 0
    t_first: int | None = None
    t_last: int | None = None
    with open_event_source(path, topic=topic, sensor_size=sensor_size) as (kind, source):
        for chunk in source.chunks(max_events):
            if not len(chunk):
                continue
            if t_first is None:
                t_first = int(chunk.t[0])
            t_last = int(chunk.t[-1])
            count += len(chunk)
            on += int(np.count_nonzero(chunk.p))
        stats = source.stats.as_dict()
        extras = _extras(kind, source)
    dropped = sum(int(stats.get(name, 0)) for name in LOSS_COUNTERS)
    warning = ""
    if dropped > count and int(stats.get("out_of_range", 0)) * 2 > dropped:
        warning = (f"most events ({stats['out_of_range']}) lie outside the {source.width}x{source.height} sensor: "
                   "is the sensor size right (--sensor-size, or the header's)?")
    elif dropped > count:
        warning = (f"more was lost ({dropped} words or events) than decoded ({count} events): the data may not be "
                   f"{source.encoding} (check the header's format) or the file is corrupt")
    return {
        "path": str(path),
        "format": kind,
        "encoding": source.encoding,
        "width": int(source.width),
        "height": int(source.height),
        "events": count,
        "on_events": on,
        "t_first_us": t_first,
        "t_last_us": t_last,
        "duration_us": None if t_first is None or t_last is None else t_last - t_first,
        "dropped": dropped,
        "stats": stats,
        "warning": warning,
        **extras,
    }


def first_edge_frame(
    path: str | Path, *, topic: str | None = None, sensor_size: tuple[int, int] | None = None, window_us: int = 50_000,
    max_events: int = _CHUNK_EVENTS
) -> np.ndarray:
    """Edge frame (uint8, height × width) of the events in ``[t_first, t_first + window_us)``.

    Uses :func:`madm_ros.events.edge_frames.accumulate` with its default settings for a time
    window of ``window_us``; stops reading once the window has passed.
    """
    from madm_ros.events.edge_frames import EdgeFrameConfig, accumulate

    if window_us <= 0:
        raise InputError(f"window_us must be positive, got {window_us}")
    parts: list[Events] = []
    t_end: int | None = None
    with open_event_source(path, topic=topic, sensor_size=sensor_size) as (_, source):
        for chunk in source.chunks(max_events):
            if not len(chunk):
                continue
            if t_end is None:
                t_end = int(chunk.t[0]) + window_us
            parts.append(chunk[chunk.t < t_end])
            if chunk.t[-1] >= t_end:
                break
        width, height = int(source.width), int(source.height)
    config = EdgeFrameConfig(width=width, height=height, mode="time", window_us=window_us)
    return accumulate(Events.concatenate(parts), config)
