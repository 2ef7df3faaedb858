"""Read the messages a truncated MCAP file still holds (a recorder killed mid-write, a copy cut short).

``rosbags`` opens an MCAP file through its footer and summary, so a file without its end is
refused as a whole, although every chunk before the cut is intact. :class:`McapScanner` walks the
records from the start instead (MCAP record framing: opcode byte, little-endian u64 length, body),
as the MCAP specification allows for unindexed reading, and stops quietly at the first record that
runs past the end of the file or fails its checksum.

Only what reading needs is read: schemas (message definitions, whatever their encoding, so that a
schema ``rosbags`` refuses still yields its channel), channels with the QoS profiles rosbag2 keeps
in their metadata, and messages, inside chunks or at the top level, streaming one record at a time;
chunk decompression is rosbags' own (none, lz4, zstd). :class:`madm_ros.bag_source.BagSource` uses it
after ``rosbags`` refused a ``.mcap`` file.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

__all__ = ["McapScanner", "ScannedChannel"]

MAGIC = b"\x89MCAP0\r\n"
_SCHEMA, _CHANNEL, _MESSAGE, _CHUNK, _FOOTER, _DATA_END = 0x03, 0x04, 0x05, 0x06, 0x02, 0x0F


class _TruncatedError(Exception):
    """A record runs past the available bytes, or a chunk is damaged."""


@dataclass(frozen=True)
class ScannedChannel:
    """A channel (topic) of the file with its type name and the type's definition.

    ``encoding`` is the schema's (``ros2msg``, ``ros2idl``, or what the writer put there, e.g.
    ``unknown`` when rosbag2 found no definition); ``qos`` the channel's ``offered_qos_profiles``
    metadata (YAML text, empty when absent).
    """

    id: int
    topic: str
    msgtype: str
    encoding: str
    definition: str
    message_encoding: str = "cdr"
    qos: str = ""


class _Buffer:
    """A bounds-checked cursor over bytes (every read past the end raises :class:`_TruncatedError`)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.pos + size > len(self.data):
            raise _TruncatedError(f"a record needs {size} bytes, {len(self.data) - self.pos} left")
        out = self.data[self.pos:self.pos + size]
        self.pos += size
        return out

    def u16(self) -> int:
        return int(struct.unpack("<H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def string(self) -> str:
        return self.take(self.u32()).decode("utf-8", "replace")

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)


class McapScanner:
    """Streams the complete records of an MCAP file from its start.

    Attributes:
        stopped: Why reading ended before the file's data end (empty when it did not), set by
            :meth:`scan_channels` and by every full pass of :meth:`messages`.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.stopped = ""
        self._channels: dict[int, ScannedChannel] | None = None
        self.counts: Counter[int] = Counter()
        with open(self.path, "rb") as file:
            if file.read(len(MAGIC)) != MAGIC:
                raise ValueError(f"{self.path} is not an MCAP file (no MCAP magic at its start)")

    def scan_channels(self) -> dict[int, ScannedChannel]:
        """Channel id → channel, and message counts per channel, from one pass over the file (cached)."""
        if self._channels is None:
            channels: dict[int, ScannedChannel] = {}
            counts: Counter[int] = Counter()
            for channel, _, _ in self._walk(channels, want=None):
                counts[channel.id] += 1
            self._channels, self.counts = channels, counts
        return self._channels

    def messages(self, topics: set[str] | None = None) -> Iterator[tuple[ScannedChannel, int, bytes]]:
        """``(channel, log time ns, CDR bytes)`` of ``topics`` (all when ``None``) in file order (by time within a chunk)."""
        yield from self._walk({}, want=topics)

    # ------------------------------------------------------------------ internals
    def _walk(self, channels: dict[int, ScannedChannel], want: set[str] | None) -> Iterator[tuple[ScannedChannel, int, bytes]]:
        schemas: dict[int, tuple[str, str, str]] = {}
        size = self.path.stat().st_size
        with open(self.path, "rb") as file:
            file.seek(len(MAGIC))
            try:
                while True:
                    start = file.tell()
                    head = file.read(9)
                    if not head:
                        break
                    if len(head) < 9:
                        raise _TruncatedError("the file ends inside a record header")
                    opcode, length = head[0], struct.unpack("<Q", head[1:])[0]
                    if opcode in (_FOOTER, _DATA_END):
                        break
                    body = _read(file, length)
                    if opcode == _CHUNK:
                        yield from self._chunk(_Buffer(body), schemas, channels, want, start)
                    else:
                        yield from self._record(opcode, _Buffer(body), schemas, channels, want)
                self.stopped = ""
            except _TruncatedError as error:
                self.stopped = f"{self.path.name} is cut off at byte {start} of {size} ({error}); read up to there"

    def _chunk(self, body: _Buffer, schemas: dict[int, tuple[str, str, str]], channels: dict[int, ScannedChannel],
               want: set[str] | None, offset: int) -> Iterator[tuple[ScannedChannel, int, bytes]]:
        from rosbags.rosbag2.storage_mcap import decompress

        body.take(16)  # message start and end time
        size, crc = body.u64(), body.u32()
        compression = body.string()
        try:
            raw = decompress(body.take(body.u64()), compression, size, crc)
        except _TruncatedError:
            raise
        except Exception as error:  # rosbags' ReaderError, or the codec's own error on a damaged chunk
            raise _TruncatedError(f"damaged chunk at byte {offset}: {error}") from None
        inner = _Buffer(raw)
        found: list[tuple[ScannedChannel, int, bytes]] = []
        while inner.pos < len(inner.data):
            opcode = inner.take(1)[0]
            found.extend(self._record(opcode, _Buffer(inner.take(inner.u64())), schemas, channels, want))
        yield from sorted(found, key=lambda m: m[1])

    @staticmethod
    def _record(opcode: int, body: _Buffer, schemas: dict[int, tuple[str, str, str]],
                channels: dict[int, ScannedChannel], want: set[str] | None) -> Iterator[tuple[ScannedChannel, int, bytes]]:
        if opcode == _SCHEMA:
            key = body.u16()
            name, encoding = body.string(), body.string()
            schemas[key] = (name, encoding, body.take(body.u32()).decode("utf-8", "replace"))
        elif opcode == _CHANNEL:
            key, schema_id = body.u16(), body.u16()
            topic, message_encoding = body.string(), body.string()
            metadata = _string_map(body)
            name, encoding, text = schemas.get(schema_id, ("", "", ""))
            channels[key] = ScannedChannel(key, topic, name, encoding, text, message_encoding,
                                           metadata.get("offered_qos_profiles", ""))
        elif opcode == _MESSAGE:
            channel_id, _sequence, log_time, _publish = body.u16(), body.u32(), body.u64(), body.u64()
            channel = channels.get(channel_id)
            if channel is not None and (want is None or channel.topic in want):
                yield channel, log_time, body.rest()


def _string_map(body: _Buffer) -> dict[str, str]:
    """A record's ``map<string, string>`` (u32 byte length, then key/value strings); empty where it is damaged."""
    try:
        inner = _Buffer(body.take(body.u32()))
        out = {}
        while inner.pos < len(inner.data):
            key = inner.string()
            out[key] = inner.string()
        return out
    except _TruncatedError:
        return {}


def _read(file: BinaryIO, length: int) -> bytes:
    data = file.read(length)
    if len(data) != length:
        raise _TruncatedError(f"a record of {length} bytes has only {len(data)}")
    return data
