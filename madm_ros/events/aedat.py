r"""AEDAT4 files (iniVation DV software, dv-processing, DVXplorer / DAVIS recordings).

Decoding is done by the ``aedat`` package (Rust, maintained by ICNS), imported on first use. It
yields packets of one stream at a time; this module keeps the events of one event stream, checks
them against the stream's sensor size and re-batches them into chunks of a chosen size.

File layout, as far as this reader needs it: the magic line ``#!AER-DAT4.0\\r\\n``, a little-endian
uint32 length and an ``IOHeader`` flatbuffer whose ``infoNode`` is an XML tree naming each output
stream (``/outInfo/<id>/originalOutputName``, e.g. ``events``) with its type identifier (``EVTS``
for polarity events) and size (``info/sizeX``, ``info/sizeY``); then LZ4/ZSTD-compressed packets.
``aedat`` exposes stream ids, types and sizes but not stream names, so names are read from the
header XML here.

Timestamps are microseconds since the Unix epoch, as the camera wrote them (int64 here).
"""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.errors import DecodeError
from madm_ros.events.types import DecodeStats, Events

__all__ = ["AEDAT4_MAGIC", "AedatFile"]

AEDAT4_MAGIC = b"#!AER-DAT4.0\r\n"


def _import_aedat() -> Any:
    try:
        import aedat
    except ImportError:
        raise ImportError(
            "reading AEDAT4 files needs the 'aedat' package: pip install aedat (pinned in requirements.lock)"
        ) from None
    return aedat


def _stream_names(path: Path) -> dict[int, str]:
    """Stream id → output name from the file header's XML; empty when the header names none."""
    with path.open("rb") as file:
        magic = file.read(len(AEDAT4_MAGIC))
        length_bytes = file.read(4)
        if magic != AEDAT4_MAGIC or len(length_bytes) != 4:
            return {}
        header = file.read(struct.unpack("<I", length_bytes)[0])
    match = re.search(rb"<dv .*?</dv>", header, flags=re.DOTALL)
    if match is None:
        return {}
    try:
        root = ET.fromstring(match.group(0).decode("utf-8", errors="replace"))
    except ET.ParseError:
        return {}
    names: dict[int, str] = {}
    for out_info in root.iter("node"):
        if out_info.get("name") != "outInfo":
            continue
        for stream in out_info.findall("node"):
            name = stream.find("attr[@key='originalOutputName']")
            if name is not None and name.text and (stream.get("name") or "").isdigit():
                names[int(stream.get("name", ""))] = name.text
    return names


class AedatFile:
    """Events of one event stream of an AEDAT4 file, read in order, chunk by chunk.

    Args:
        path: The ``.aedat4`` file.
        stream: Name of the event stream to read (``originalOutputName`` in the header, e.g.
            ``"events"``); ``None`` takes the event stream with the lowest id.

    Attributes:
        width, height: Sensor size of the chosen stream, in pixels.
        encoding: Always ``"aedat4"``.
        stream_name: Name of the chosen stream (``""`` if the header names none).
        stats: Counters of the last pass over the file (``packets``, ``empty_packets``, ``events``,
            ``out_of_range``). Events are returned in file order; they are not re-sorted.

    Raises:
        DecodeError: If the file is not an AEDAT4 file, is truncated or corrupt, has no event stream,
            or has no stream called ``stream``. The message names the file.
    """

    encoding = "aedat4"

    def __init__(self, path: str | Path, *, stream: str | None = None) -> None:
        self.path = Path(path)
        self.stats = DecodeStats()
        with self.path.open("rb") as file:
            magic = file.read(len(AEDAT4_MAGIC))
        if magic != AEDAT4_MAGIC:
            raise DecodeError(f"{self.path}: not an AEDAT4 file (it does not start with '#!AER-DAT4.0')")
        streams = self._decoder().id_to_stream()
        names = _stream_names(self.path)
        event_ids = sorted(i for i, info in streams.items() if info.get("type") == "events")
        if not event_ids:
            raise DecodeError(f"{self.path}: the AEDAT4 file has no event stream (streams: {streams})")
        if stream is None:
            self.stream_id = event_ids[0]
        else:
            matching = [i for i in event_ids if names.get(i) == stream]
            if not matching:
                available = ", ".join(repr(names.get(i, str(i))) for i in event_ids)
                raise DecodeError(f"{self.path}: no event stream named {stream!r}; event streams: {available}")
            self.stream_id = matching[0]
        self.stream_name = names.get(self.stream_id, "")
        self.width = int(streams[self.stream_id]["width"])
        self.height = int(streams[self.stream_id]["height"])

    def _decoder(self) -> Any:
        try:
            return _import_aedat().Decoder(self.path)
        except RuntimeError as error:
            raise DecodeError(f"{self.path}: corrupt or truncated AEDAT4 file ({error})") from None

    def _packets(self) -> Iterator[Events]:
        """Events of the chosen stream, one AEDAT4 packet at a time, with out-of-range events removed."""
        self.stats = DecodeStats()
        decoder = self._decoder()
        while True:
            try:
                packet = next(decoder)
            except StopIteration:
                return
            except RuntimeError as error:
                raise DecodeError(f"{self.path}: corrupt or truncated AEDAT4 file ({error})") from None
            if packet["stream_id"] != self.stream_id or "events" not in packet:
                continue
            raw = packet["events"]
            self.stats.packets += 1
            if len(raw) == 0:
                self.stats.empty_packets += 1
                continue
            events = Events.from_arrays(raw["x"], raw["y"], raw["t"].astype(np.int64), raw["on"])
            inside = (events.x < self.width) & (events.y < self.height)
            if not inside.all():
                self.stats.out_of_range += int(len(events) - inside.sum())
                events = events[inside]
            self.stats.events += len(events)
            yield events

    def chunks(self, max_events: int = 1_000_000) -> Iterator[Events]:
        """Yield the stream's events in file order, ``max_events`` per chunk (the last may be shorter)."""
        if max_events < 1:
            raise ValueError(f"max_events must be at least 1, got {max_events}")
        pending: list[Events] = []
        pending_count = 0
        for events in self._packets():
            pending.append(events)
            pending_count += len(events)
            while pending_count >= max_events:
                joined = Events.concatenate(pending)
                yield joined[:max_events]
                rest = joined[max_events:]
                pending, pending_count = ([rest] if len(rest) else []), len(rest)
        if pending_count:
            yield Events.concatenate(pending)

    def read_all(self) -> Events:
        """All events of the stream at once (for files that fit in memory)."""
        return Events.concatenate(list(self._packets()))
