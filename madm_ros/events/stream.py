"""Event messages of one topic → stamped edge frames, surviving what live streams and bags do.

:class:`EventFrameStream` is the ROS-free heart of the event segmentation node: it decodes each
message with the decoder of its type (one stateful decoder per stream), feeds the streaming
accumulator, and maps each frame's sensor-time end to ROS time. It never raises on bad input;
instead it counts the problem by kind in its :class:`~madm_ros.problems.ProblemCounter` (the
node's or the bag tool's own), which tells the first of each kind:

- an undecodable message (unknown encoding, malformed payload, arrays of different lengths) is
  skipped and counted as ``decode_error``;
- a change of sensor size or encoding restarts the stream (``size_change``);
- time jumping backwards by more than ``restart_after_us`` (a bag played in a loop, a driver
  restart) restarts the stream (``time_jump``); smaller steps back are dropped event by event by
  the accumulator and counted there; forward jumps beyond the accumulator's ``max_gap_us`` start
  a new segment there, without the empty frames in between (counted as ``accumulate_gaps``);
- empty messages, duplicate packets, out-of-range coordinates and truncated payloads are counted
  by the decoder (:class:`~madm_ros.events.types.DecodeStats`).

Stamps: ``EventPacket`` and ``PackedEvents`` carry sensor time, so the offset between the first
message's header stamp and its sensor time (its first event for ``EventPacket``, its last for
``PackedEvents``, as their definitions say) maps sensor time to ROS time, as
event_camera_renderer does; it is measured again after every restart. ``EventArray`` events
already carry ROS time.
"""

from __future__ import annotations

from typing import Any

from madm_ros.errors import ConfigError, MadmError
from madm_ros.events.codecs import PacketDecoder, decode_packet, events_from_event_array, events_from_packed
from madm_ros.events.edge_frames import AccumulatorStats, EdgeFrameAccumulator, EdgeFrameConfig, check_edge_frame_fields
from madm_ros.events.types import EVENT_ARRAY_MESSAGES, MESSAGE_TYPES, DecodeStats, Events
from madm_ros.frame_source import Frame
from madm_ros.limits import DEFAULT_LIMITS, InputLimits, check_sensor_size
from madm_ros.problems import ProblemCounter
from madm_ros.ros_messages import stamp_to_ns

__all__ = ["MESSAGE_TYPES", "EventFrameStream"]


class EventFrameStream:
    """Decode, accumulate and stamp the messages of one event topic: the frame source of event topics.

    Its frames are ``mono8`` :class:`~madm_ros.frame_source.Frame` objects, exactly the network's
    input, as :class:`~madm_ros.frame_source.ImageFrames` gives for image topics; the node callback,
    ``bag_eval`` and ``adapt --target-bag`` push messages straight into it.

    Args:
        message_type: A key of :data:`MESSAGE_TYPES`.
        edge_fields: :class:`EdgeFrameConfig` fields except ``width`` and ``height``, which come
            from the messages.
        problems: Where problems are counted (kinds ``decode_error``, ``size_change``,
            ``time_jump``, ``restarts``); a new counter of its own when None.
        restart_after_us: A step back in time larger than this restarts the stream.
        limits: A message claiming a larger sensor is refused (``decode_error``) before anything is allocated.
    """

    kind = "events"
    """The frame-source kind: the prefix of its counters in node diagnostics."""

    def __init__(self, message_type: str, edge_fields: dict[str, Any], problems: ProblemCounter | None = None,
                 restart_after_us: int = 1_000_000, limits: InputLimits = DEFAULT_LIMITS) -> None:
        if message_type not in MESSAGE_TYPES:
            raise ConfigError(f"message_type must be one of {', '.join(MESSAGE_TYPES)}, got {message_type!r}")
        check_edge_frame_fields(edge_fields, "event accumulation parameters")
        if edge_fields.get("polarity") == "split":
            raise ConfigError("polarity 'split' makes two-channel frames; segmentation models take one (ignore or signed)")
        EdgeFrameConfig(width=65535, height=65535, **edge_fields)  # validate now, not at the first message
        if restart_after_us <= 0:
            raise ConfigError(f"restart_after_us must be positive, got {restart_after_us}")
        self.message_type = message_type
        self.edge_fields = dict(edge_fields)
        self.restart_after_us = int(restart_after_us)
        self.limits = limits
        self.problems = problems if problems is not None else ProblemCounter()
        self.decode_stats = DecodeStats()  # summed over restarts
        self.accumulator_stats = AccumulatorStats()
        self.messages = 0
        self._key: tuple[str, int, int] | None = None  # (encoding, width, height) of the running stream
        self._decoder: PacketDecoder | None = None
        self._accumulator: EdgeFrameAccumulator | None = None
        self._offset_ns: int | None = None
        self._last_t: int | None = None
        self._last_stamp_ns: int | None = None

    @property
    def sensor_size(self) -> tuple[int, int] | None:
        """``(height, width)`` of the running stream, ``None`` before the first message."""
        return None if self._key is None else (self._key[2], self._key[1])

    @property
    def newest_event_stamp_ns(self) -> int | None:
        """ROS time of the newest event pushed so far (by this stream's sensor-to-ROS offset); ``None`` before any.

        A frame stamped ``S`` is emitted by the first message whose events reach past ``S``, so this
        tells which message completed a frame (``bag_play --monitor`` times latency from it).
        """
        if self._offset_ns is None or self._last_t is None:
            return None
        return self._offset_ns + self._last_t * 1000

    def counters(self) -> dict[str, int]:
        """Messages, decode and accumulation counters, flat, for diagnostics and summaries (problems: :attr:`problems`)."""
        decoder = self._decoder.stats.as_dict() if self._decoder is not None else {}
        decoded = {k: v + decoder.get(k, 0) for k, v in self.decode_stats.as_dict().items()}
        accumulated = self._accumulator.stats.as_dict() if self._accumulator is not None else {}
        summed = {k: v + accumulated.get(k, 0) for k, v in self.accumulator_stats.as_dict().items()}
        return {"messages": self.messages, **{f"decode_{k}": v for k, v in decoded.items()},
                **{f"accumulate_{k}": v for k, v in summed.items()}}

    def push(self, message: Any) -> list[Frame]:
        """Add one message; return the edge frames it completed (oldest first). Never raises on bad input.

        Each is stamped with the end of its slice in ROS time and carries the ``frame_id`` of the
        message that completed it.
        """
        self.messages += 1
        try:
            key = self._stream_key(message)
            stamp_ns = stamp_to_ns(message.header.stamp)
        except (AttributeError, TypeError, ValueError) as error:
            self._problem("decode_error", f"malformed {self.message_type} message skipped ({error})")
            return []
        if key != self._key:
            try:
                parts = self._make(key)
            except MadmError as error:  # unknown encoding, impossible size: the running stream is kept
                self._problem("decode_error", f"{self.message_type} message of an unusable stream skipped: {error}")
                return []
            if self._key is not None:
                self._problem("size_change", f"event stream changed from {self._describe(self._key)} to "
                              f"{self._describe(key)}; restarting accumulation")
                self._restart()
            self._key, (self._decoder, self._accumulator) = key, parts
        elif self._last_stamp_ns is not None and stamp_ns + self.restart_after_us * 1000 < self._last_stamp_ns:
            self._problem("time_jump", "header stamps jumped back (bag loop or driver restart); restarting accumulation")
            self._restart()
            self._key, (self._decoder, self._accumulator) = key, self._make(key)
        self._last_stamp_ns = stamp_ns
        try:
            events = self._decode(message)
        except (MadmError, ValueError, TypeError) as error:
            self._problem("decode_error", f"undecodable {self.message_type} message skipped: {error}")
            return []
        if not len(events):
            return []
        if self._last_t is not None and self._last_t - int(events.t[0]) > self.restart_after_us:
            self._problem("time_jump", "event time jumped back (bag loop or sensor restart); restarting accumulation")
            self._reset_accumulation()
        if self._offset_ns is None:
            reference = int(events.t[-1] if self.message_type == "packed" else events.t[0])
            self._offset_ns = 0 if self.message_type in EVENT_ARRAY_MESSAGES else stamp_ns - reference * 1000
        self._last_t = int(events.t[-1])
        assert self._accumulator is not None
        frame_id = str(message.header.frame_id)
        return [Frame(f.image, "mono8", self._offset_ns + f.t_end_us * 1000, frame_id) for f in self._accumulator.push(events)]

    # ------------------------------------------------------------------ internals
    def _stream_key(self, message: Any) -> tuple[str, int, int]:
        encoding = str(message.encoding) if self.message_type == "event_packet" else self.message_type
        return encoding, int(message.width), int(message.height)

    @staticmethod
    def _describe(key: tuple[str, int, int]) -> str:
        return f"{key[0]} {key[1]}x{key[2]}"

    def _make(self, key: tuple[str, int, int]) -> tuple[PacketDecoder | None, EdgeFrameAccumulator]:
        """Decoder and accumulator for a stream (``MadmError`` for an unknown encoding or bad size)."""
        encoding, width, height = key
        check_sensor_size(width, height, self.limits)
        decoder = PacketDecoder(encoding, width, height) if self.message_type == "event_packet" else None
        return decoder, EdgeFrameAccumulator(EdgeFrameConfig(width=width, height=height, **self.edge_fields))

    def _restart(self) -> None:
        """Forget the stream (its partial frame is dropped) but keep its counters."""
        if self._decoder is not None:
            for name, value in self._decoder.stats.as_dict().items():
                setattr(self.decode_stats, name, getattr(self.decode_stats, name) + value)
        self._reset_accumulation()
        self._key = self._decoder = self._accumulator = None
        self._last_stamp_ns = None
        self.problems.count("restarts")  # told as size_change or time_jump

    def _reset_accumulation(self) -> None:
        """A new accumulator and time offset, keeping the decoder (whose state the next packets need)."""
        if self._accumulator is not None:
            for name, value in self._accumulator.stats.as_dict().items():
                setattr(self.accumulator_stats, name, getattr(self.accumulator_stats, name) + value)
            self._accumulator = EdgeFrameAccumulator(self._accumulator.config)
        self._offset_ns = self._last_t = None

    def _decode(self, message: Any) -> Events:
        if self.message_type == "event_packet":
            return decode_packet(message, self._decoder)
        if self.message_type == "packed":
            return events_from_packed(message, self.decode_stats)
        return events_from_event_array(message, self.decode_stats)

    def _problem(self, kind: str, text: str) -> None:
        self.problems.report(kind, text)
