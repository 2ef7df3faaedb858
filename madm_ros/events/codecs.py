"""Event-camera payload decoders: bytes of one stream in, :class:`~madm_ros.events.types.Events` out.

One :class:`PacketDecoder` per stream turns the payloads of ``event_camera_msgs/EventPacket``
(``evt3``, ``libcaer_cmp``, ``libcaer``, ``mono``) and Prophesee RAW bodies (``evt2``, ``evt3``)
into events with µs timestamps. :func:`decode_packet` does the same for any object with the
EventPacket attributes (rclpy messages, rosbags messages, test stubs), like event_camera_py's
``Decoder``. Per-event struct arrays (``dvs_msgs`` / ``dv_ros2_msgs`` ``EventArray``) and the
package's own ``madm_ros/msg/PackedEvents`` convert with :func:`events_from_event_array`,
:func:`events_from_packed` and :func:`packed_fields`. :func:`encode_evt3` writes EVT 3.0.

Nothing here imports ROS; numba (for the EVT 2.0 / EVT 3.0 / libcaer_cmp loops) is imported on
first use.

Time, per encoding (all results in µs, int64):

- ``evt3``: the sensor's 24-bit µs counter, unwrapped past its roll-over every 2^24 µs (16.8 s);
  a stream starts wherever the counter was. ``time_base`` is undefined and ignored.
- ``evt2``: 34-bit µs counter (TIME_HIGH · 64 + 6 low bits), unwrapped the same way.
- ``mono``: ``(time_base + dt) // 1000`` with ``time_base`` and the 32-bit ``dt`` in ns.
- ``libcaer``: ``time_base // 1000 + timestamp`` with the signed 31-bit µs timestamp of each event,
  plus 2^31 µs for each roll-over inside the packet (as event_camera_codecs does).
- ``libcaer_cmp``: ``time_base // 1000 + offset``; the offset restarts in every message.

Robustness: every byte and event is accounted for in :attr:`PacketDecoder.stats` — events outside
the sensor, words with unknown codes, trailing bytes that do not form a word, events whose time is
unknown or earlier than the previous returned event, packets without events and repeated sequence
numbers. Random bytes never raise.
"""

from __future__ import annotations

import array
import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from madm_ros.errors import DecodeError, InputError
from madm_ros.events.types import DecodeStats, Events

if TYPE_CHECKING:
    from types import ModuleType

__all__ = [
    "ENCODINGS",
    "PacketDecoder",
    "decode_packet",
    "encode_evt3",
    "events_from_event_array",
    "events_from_packed",
    "packed_fields",
]

# encoding -> bytes per word; evt2 and evt3 carry state (and a split word) from one payload to the next
ENCODINGS: dict[str, int] = {"evt3": 2, "evt2": 4, "libcaer_cmp": 2, "libcaer": 8, "mono": 8}
_STATEFUL_WORDS = ("evt3", "evt2")
_MAX_TIME_BASE = 2**63 - 1

_kernels: ModuleType | None = None


def _kernel_module() -> ModuleType:
    """``madm_ros.events._kernels_decode``, imported (and numba with it) on first use."""
    global _kernels
    if _kernels is None:
        _kernels = importlib.import_module("madm_ros.events._kernels_decode")
    return _kernels


def _as_bytes(payload: object) -> np.ndarray:
    """Return a 1-D uint8 view (or copy, for lists) of a payload in any of the forms ROS tools hand out."""
    if isinstance(payload, np.ndarray):
        if payload.dtype != np.uint8:
            raise DecodeError(f"event payload must hold uint8 bytes, got a {payload.dtype} array")
        return np.ascontiguousarray(payload.reshape(-1))
    if isinstance(payload, (bytes, bytearray, memoryview, array.array)):
        return np.frombuffer(payload, dtype=np.uint8)
    if isinstance(payload, Sequence):  # rclpy may hand out a list of ints or of 1-byte bytes
        if payload and isinstance(payload[0], bytes):
            return np.frombuffer(b"".join(payload), dtype=np.uint8)
        return np.asarray(payload, dtype=np.uint8)
    raise DecodeError(f"event payload must be bytes or a uint8 array, got {type(payload).__name__}")


def _native_words(data: np.ndarray, dtype: type[np.unsignedinteger]) -> np.ndarray:
    """Little-endian words of ``data`` as an aligned native array (a view where possible)."""
    words = data.view(np.dtype(dtype).newbyteorder("<"))
    if not words.flags.aligned:  # (flags, not ctypes.data: the latter costs ~10 µs per packet)
        words = data.copy().view(words.dtype)
    return words if words.dtype.isnative else words.astype(dtype)


class PacketDecoder:
    """Decoder of one event stream; keep one per stream and feed it the payloads in order.

    Args:
        encoding: ``evt3``, ``evt2``, ``libcaer_cmp``, ``libcaer`` or ``mono`` (see module docstring).
        width: sensor columns; events with ``x >= width`` are dropped and counted.
        height: sensor rows; events with ``y >= height`` are dropped and counted.

    ``evt3`` and ``evt2`` are stateful: time, row and vector base carry over, and trailing bytes that
    do not form a whole word wait for the next payload, so a stream cut at any byte decodes exactly
    like one buffer. Those waiting bytes are counted as ``truncated_bytes`` only by :meth:`flush`.
    For the other encodings each payload stands alone and trailing bytes are counted at once.

    Attributes:
        stats: counters of everything seen, returned and dropped (never reset by the decoder).

    """

    def __init__(self, encoding: str, width: int, height: int) -> None:
        if encoding not in ENCODINGS:
            raise DecodeError(f"unknown event encoding {encoding!r}; supported: {', '.join(sorted(ENCODINGS))}")
        for name, value in (("width", width), ("height", height)):
            if not 0 < int(value) <= 65535:
                raise DecodeError(f"sensor {name} must be in 1..65535, got {value} (encoding {encoding!r})")
        self.encoding = encoding
        self.width = int(width)
        self.height = int(height)
        self.stats = DecodeStats()
        self._word = ENCODINGS[encoding]
        self._pending = np.empty(0, np.uint8)  # start of a word split across payloads (evt2/evt3)
        self._last_seq: int | None = None
        self._last_t = 0  # last returned time (µs), for the numpy decoders
        self._state = np.zeros(8, np.int64)  # kernel stream state (see _kernels_decode)
        self._counts = np.zeros(3, np.int64)  # out_of_range, bad_words, time_backwards

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete word waiting for the next payload."""
        return len(self._pending)

    def flush(self) -> None:
        """End of stream: count the bytes of an incomplete last word as truncated and drop them."""
        self.stats.truncated_bytes += len(self._pending)
        self._pending = np.empty(0, np.uint8)

    def decode(self, payload: object, time_base: int = 0, seq: int | None = None) -> Events:
        """Decode one payload and return its events in stream order.

        Args:
            payload: raw bytes (``bytes``, ``bytearray``, ``memoryview``, ``array.array`` or a uint8
                array — the forms rclpy and rosbags hand out).
            time_base: ``EventPacket.time_base`` in ns (used by ``mono``, ``libcaer`` and
                ``libcaer_cmp``; ignored by ``evt3`` and ``evt2``).
            seq: ``EventPacket.seq``; a payload with the same ``seq`` as the previous one is a
                duplicate, counted and skipped. ``None`` disables the check.

        Returns:
            The new events; the arrays are owned by the caller.

        """
        if not 0 <= int(time_base) <= _MAX_TIME_BASE:  # checked first: a refused packet changes no state
            raise DecodeError(f"time_base must be in 0..2^63-1 ns, got {time_base} (encoding {self.encoding!r})")
        stats = self.stats
        stats.packets += 1
        if seq is not None:
            if seq == self._last_seq:
                stats.duplicate_packets += 1
                return Events.empty()
            self._last_seq = seq
        data = _as_bytes(payload)
        if self.encoding in _STATEFUL_WORDS:
            if len(self._pending):
                data = np.concatenate((self._pending, data))
            whole = len(data) - len(data) % self._word
            self._pending = data[whole:].copy()
            data = data[:whole]
        else:
            whole = len(data) - len(data) % self._word
            stats.truncated_bytes += len(data) - whole
            data = data[:whole]

        events = getattr(self, f"_decode_{self.encoding}")(data, int(time_base))
        stats.events += len(events)
        if not len(events):
            stats.empty_packets += 1
        return events

    # ------------------------------------------------------------ per-encoding decoders
    def _run_kernel(self, name: str, *args: object) -> Events:
        counts = self._counts
        counts[:] = 0
        x, y, t, p, n = getattr(_kernel_module(), name)(*args, counts)
        self._add_counts()
        return Events(x[:n], y[:n], t[:n], p[:n])

    def _add_counts(self) -> None:
        out_of_range, bad_words, time_backwards = (int(c) for c in self._counts)
        self.stats.out_of_range += out_of_range
        self.stats.bad_words += bad_words
        self.stats.time_backwards += time_backwards

    def _decode_evt3(self, data: np.ndarray, time_base: int) -> Events:
        kernels = _kernel_module()
        words = _native_words(data, np.uint16)
        size = kernels.bound_evt3(words) + 1  # +1: the kernel writes each event before checking it
        # allocated here, not in numba: numpy's large allocations use huge pages (fewer page faults)
        x, y, t, p = (
            np.empty(size, np.uint16),
            np.empty(size, np.uint16),
            np.empty(size, np.int64),
            np.empty(size, np.uint8),
        )
        counts = self._counts
        counts[:] = 0
        n = kernels.decode_evt3(words, self.width, self.height, self._state, counts, x, y, t, p)
        self._add_counts()
        return Events(x[:n], y[:n], t[:n], p[:n])

    def _decode_evt2(self, data: np.ndarray, time_base: int) -> Events:
        return self._run_kernel("decode_evt2", data, self.width, self.height, self._state)

    def _decode_libcaer_cmp(self, data: np.ndarray, time_base: int) -> Events:
        return self._run_kernel("decode_libcaer_cmp", data, self.width, self.height, time_base // 1000, self._state)

    def _decode_mono(self, data: np.ndarray, time_base: int) -> Events:
        words = data.view("<u8")
        p = (words >> np.uint64(63)).astype(np.uint8)
        y = ((words >> np.uint64(48)) & np.uint64(0x7FFF)).astype(np.int64)
        x = ((words >> np.uint64(32)) & np.uint64(0xFFFF)).astype(np.int64)
        dt = (words & np.uint64(0xFFFFFFFF)).astype(np.int64)
        # (time_base + dt) // 1000 without overflowing int64 near 2^63
        t = time_base // 1000 + (time_base % 1000 + dt) // 1000
        return self._keep(x, y, t, p)

    def _decode_libcaer(self, data: np.ndarray, time_base: int) -> Events:
        pairs = data.view("<u4").reshape(-1, 2)
        info = pairs[:, 0]
        stamp = pairs[:, 1].view("<i4")
        valid = ((info & 1) == 1) & (stamp >= 0)  # bit 0 = libcaer's valid mark
        self.stats.bad_words += int(len(valid) - np.count_nonzero(valid))
        info, stamp = info[valid], stamp[valid].astype(np.int64)
        # a smaller timestamp than the previous event = one 2^31 µs roll-over (within this packet)
        wraps = np.zeros(len(stamp), np.int64)
        if len(stamp) > 1:
            np.cumsum(stamp[1:] < stamp[:-1], out=wraps[1:])
        t = time_base // 1000 + stamp + (wraps << 31)
        x = ((info >> 17) & 0x7FFF).astype(np.int64)
        y = ((info >> 2) & 0x7FFF).astype(np.int64)
        p = ((info >> 1) & 1).astype(np.uint8)
        return self._keep(x, y, t, p)

    def _keep(self, x: np.ndarray, y: np.ndarray, t: np.ndarray, p: np.ndarray) -> Events:
        """Drop (and count) events outside the sensor or earlier than the last returned one."""
        inside = (x < self.width) & (y < self.height)
        self.stats.out_of_range += int(len(x) - np.count_nonzero(inside))
        x, y, t, p = x[inside], y[inside], t[inside], p[inside]
        if len(t):
            # an event is kept if it is not earlier than every event before it (and the previous packet)
            before = np.empty_like(t)
            before[0] = self._last_t
            np.maximum.accumulate(t[:-1], out=before[1:])
            np.maximum(before, self._last_t, out=before)
            forward = t >= before
            self.stats.time_backwards += int(len(t) - np.count_nonzero(forward))
            x, y, t, p = x[forward], y[forward], t[forward], p[forward]
            if len(t):
                self._last_t = int(t[-1])
        return Events.from_arrays(x, y, t, p)


def decode_packet(msg: Any, decoder: PacketDecoder | None = None) -> Events:
    """Decode an ``event_camera_msgs/EventPacket``-like object of any origin.

    Reads only the attributes ``encoding``, ``width``, ``height``, ``time_base``, ``events`` and
    ``seq``. Pass the stream's ``decoder`` for every message of a stream (``evt3`` keeps time
    across packets, and duplicates are detected by ``seq``); without one a fresh decoder is used,
    which suits self-contained encodings only.

    Raises:
        DecodeError: unknown encoding, or a message whose encoding or size differs from ``decoder``'s.

    """
    encoding = str(msg.encoding)
    width, height = int(msg.width), int(msg.height)
    if decoder is None:
        decoder = PacketDecoder(encoding, width, height)
    elif (encoding, width, height) != (decoder.encoding, decoder.width, decoder.height):
        raise DecodeError(
            f"message is {encoding!r} {width}x{height} but its stream's decoder was made for "
            f"{decoder.encoding!r} {decoder.width}x{decoder.height}; use one decoder per stream"
        )
    seq = getattr(msg, "seq", None)
    return decoder.decode(msg.events, time_base=int(msg.time_base), seq=None if seq is None else int(seq))


def _inside(events: Events, width: int, height: int, stats: DecodeStats | None) -> Events:
    """Drop events outside ``width × height`` (0 = size unknown, keep all) and update ``stats``."""
    if width > 0 and height > 0 and len(events):
        keep = (events.x < width) & (events.y < height)
        dropped = len(events) - int(np.count_nonzero(keep))
        if dropped:
            events = events[keep]
        if stats is not None:
            stats.out_of_range += dropped
    if stats is not None:
        stats.packets += 1
        stats.events += len(events)
        stats.empty_packets += not len(events)
    return events


def events_from_event_array(msg: Any, stats: DecodeStats | None = None) -> Events:
    """Events of a ``dvs_msgs/EventArray`` or ``dv_ros2_msgs/EventArray`` (ROS 1 or 2, any library).

    Each element's ``ts`` (``sec``/``nanosec``, or ROS 1 ``secs``/``nsecs``) becomes µs since the
    epoch, rounded down; ``polarity`` True = ON. Events outside the message's ``width × height``
    are dropped (and counted in ``stats`` when given); a size of 0 means unknown and keeps all.
    """
    items = msg.events
    if not len(items):
        return _inside(Events.empty(), 0, 0, stats)
    first = items[0].ts
    sec_name, ns_name = ("sec", "nanosec") if hasattr(first, "sec") else ("secs", "nsecs")
    x = np.fromiter((e.x for e in items), np.uint16, len(items))
    y = np.fromiter((e.y for e in items), np.uint16, len(items))
    sec = np.fromiter((getattr(e.ts, sec_name) for e in items), np.int64, len(items))
    nsec = np.fromiter((getattr(e.ts, ns_name) for e in items), np.int64, len(items))
    p = np.fromiter((bool(e.polarity) for e in items), np.uint8, len(items))
    events = Events(x, y, sec * 1_000_000 + nsec // 1000, p)
    return _inside(events, int(msg.width), int(msg.height), stats)


def events_from_packed(msg: Any, stats: DecodeStats | None = None) -> Events:
    """Events of a ``madm_ros/msg/PackedEvents`` (fields ``x``, ``y``, ``t`` µs, ``polarity``).

    Raises:
        DecodeError: the four arrays differ in length.

    """
    fields = [np.asarray(getattr(msg, name)) for name in ("x", "y", "t", "polarity")]
    lengths = {len(f) for f in fields}
    if len(lengths) != 1:
        raise DecodeError(
            "PackedEvents arrays differ in length: "
            + ", ".join(f"{n}={len(f)}" for n, f in zip(("x", "y", "t", "polarity"), fields, strict=False))
        )
    return _inside(Events.from_arrays(*fields), int(msg.width), int(msg.height), stats)


_ARRAY_TYPECODES = {"x": "H", "y": "H", "t": "q", "polarity": "B"}


def packed_fields(events: Events, *, kind: Literal["numpy", "array"] = "numpy") -> dict[str, Any]:
    """Return the array fields of a ``madm_ros/msg/PackedEvents`` for ``events``.

    Args:
        events: the events to pack.
        kind: ``"numpy"`` (contiguous arrays, what rosbags serialises) or ``"array"``
            (``array.array``, what rclpy message setters accept without a per-element check).

    Returns:
        ``{"x": uint16, "y": uint16, "t": int64 µs, "polarity": uint8}``; header, size and seq are
        the caller's.

    """
    arrays = {"x": events.x, "y": events.y, "t": events.t, "polarity": events.p}
    if kind == "numpy":
        return {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    if kind == "array":
        out = {}
        for k, v in arrays.items():
            a = array.array(_ARRAY_TYPECODES[k])
            a.frombytes(np.ascontiguousarray(v).tobytes())
            out[k] = a
        return out
    raise InputError(f"kind must be 'numpy' or 'array', got {kind!r}")


def encode_evt3(events: Events) -> bytes:
    """EVT 3.0 bytes for ``events`` that :class:`PacketDecoder` (``"evt3"``) decodes back exactly.

    Events sharing time, row and polarity with increasing x (in input order) are written as
    vector words. EVT 3.0 keeps time modulo 2^24 µs, so the decoded times equal the input only
    when the first event lies in ``[0, 2^24)``; later roll-overs are unwrapped.

    Raises:
        InputError: times negative or not in order, or coordinates above 2047 (11 bits).

    """
    n = len(events)
    if n == 0:
        return b""
    t = events.t
    if t[0] < 0 or (n > 1 and bool(np.any(t[1:] < t[:-1]))):
        raise InputError("encode_evt3 needs non-negative times in non-decreasing order")
    if int(events.x.max()) > 0x7FF or int(events.y.max()) > 0x7FF:
        raise InputError(
            f"EVT 3.0 addresses are 11 bits; got x up to {int(events.x.max())}, y up to {int(events.y.max())}"
        )
    if int(events.p.max()) > 1:
        raise InputError(f"polarity must be 0 or 1, got {int(events.p.max())}")
    gaps = int(np.sum(np.diff(t) >> 22)) if n > 1 else 0
    words = _kernel_module().encode_evt3(events.x, events.y, t, events.p, 4 * n + gaps + 1)
    return words.astype("<u2").tobytes()
