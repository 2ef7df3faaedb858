"""Edge frames: the event modality's preprocessing, shared verbatim by trainer, bag evaluation and node.

An edge frame is an 8-bit image in which every event of one slice of the stream moves its pixel by
a fixed step, saturating at 0 and 255. The per-pixel arithmetic is that of dv-processing's
``dv::EdgeMapAccumulator`` (the reference semantics, and bit-identical to it wherever both offer
the setting):

- every pixel starts at the neutral byte ``int(255 * neutral)`` (0.5 -> 127, not 128);
- an event adds ``ceil(255 * contribution)`` (0.25 -> 64, 0.1 -> 26), computed in float32 like dv,
  and the result saturates at 255 (five events reach 255 at the default);
- with ``polarity="signed"`` an OFF event subtracts the same step, saturating at 0. Saturation
  makes the result depend on the order of the events, which is why the kernel walks the events
  one by one in stream order instead of building a histogram;
- ``polarity="split"`` (not in dv) keeps OFF and ON in two such images, channel index = polarity
  (``image[0]`` OFF, ``image[1]`` ON, as in ESS's 2-channel histogram).

Slicing follows dv's ``EventStreamSlicer``; stamps are the *end* of each slice (the ROS node
publishes a frame with the time up to which it has seen the world):

- ``mode="time"``: window k covers ``[origin + k*stride_us, origin + k*stride_us + window_us)``
  in µs. With ``origin_us=None`` the origin is the first event's time, as in dv's slicer (verified
  against dv-processing 2.0.4); give an explicit origin (e.g. 0, or a label time stamp) to align
  windows to an absolute clock, so that a bag replayed from its middle gives the same windows as
  the full bag (the first frame is then the first window that contains the first event, which
  may start before it). A window is emitted once an event at or past its end has arrived (dv
  holds the trailing window the same way); windows without events are emitted as neutral frames, like dv's
  empty callbacks, so a gap of G µs in the stream yields about G / stride_us frames — unless
  ``max_gap_us`` is set: a forward jump between two events larger than that starts a new
  segment, whose windows keep the alignment; the empty windows of the gap are not emitted but
  counted (``AccumulatorStats.gaps``, ``skipped_windows``). Nodes and bag evaluation set it (a
  corrupt packet or a paused sensor would otherwise yield hours of empty frames).
  ``t_start_us``/``t_end_us`` are the window bounds (end exclusive).
- ``mode="count"``: slice k is events ``[k*stride_events, k*stride_events + window_events)`` of
  the stream; ``t_start_us``/``t_end_us`` are the times of its first and last event.

Events whose time is earlier than an event already accepted are dropped and counted
(``AccumulatorStats.time_backwards``): decoders already unwrap and order time, so this only
protects the slicer from a corrupt packet. Events outside the sensor, outside the crop or whose
rectified position leaves the image are dropped and counted too, never written.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from madm_ros.errors import ConfigError, InputError, check_known_keys
from madm_ros.events import _kernels_accumulate as kernels
from madm_ros.events.types import Events

__all__ = ["AccumulatorStats", "EdgeFrame", "EdgeFrameAccumulator", "EdgeFrameConfig", "accumulate", "check_edge_frame_fields"]

_MODES = ("time", "count")
_POLARITIES = ("ignore", "signed", "split")
_POLARITY_CODE = {"ignore": kernels.IGNORE, "signed": kernels.SIGNED, "split": kernels.SPLIT}


@dataclass(frozen=True)
class EdgeFrameConfig:
    """How events become edge frames. Every field is validated on construction (``ConfigError``).

    Attributes:
        width: Sensor width in pixels (raw event x is in ``[0, width)``). Required.
        height: Sensor height in pixels (raw event y is in ``[0, height)``). Required.
        mode: ``"time"`` slices by ``window_us``; ``"count"`` by ``window_events``. Default ``"time"``.
        window_us: Time-slice length in µs. Default 50 000 (one DSEC label interval, 20 Hz).
        stride_us: Start-to-start distance of time slices in µs; smaller than ``window_us`` gives
            overlapping (sliding) frames, larger skips events between frames. Default ``None`` =
            ``window_us`` (back-to-back windows).
        window_events: Events per slice in count mode. Default 100 000 (ESS's DSEC setting).
        stride_events: Start-to-start distance of count slices in events. Default ``None`` =
            ``window_events``.
        origin_us: Time (µs) the time windows are aligned to: window k starts at
            ``origin_us + k*stride_us``. Default ``None`` = the first event's time (dv's slicer).
        polarity: ``"ignore"`` (every event adds; dv's default), ``"signed"`` (ON adds, OFF
            subtracts, both saturating; dv with ``ignorePolarity=False``) or ``"split"`` (two
            channels, ``image[0]`` OFF and ``image[1]`` ON, each accumulated as ``"ignore"``).
            Default ``"ignore"``.
        contribution: Per-event step as a fraction of 255, in (0, 1]; the byte step is
            ``ceil(255 * contribution)`` (float32 arithmetic, like dv). Default 0.25 (step 64).
        neutral: Start value of every pixel as a fraction of 255, in [0, 1]; the byte is
            ``int(255 * neutral)`` (0.5 -> 127). Use 0.5 with ``"signed"`` so that OFF events show.
            Default 0.0.
        rectify_map: Optional float32 array ``(height, width, 2)`` as in DSEC's
            ``rectify_map.h5``: the rectified (x, y) of raw pixel (x_raw, y_raw) is
            ``rectify_map[y_raw, x_raw]``, rounded half up (``floor(v + 0.5)``); positions outside
            ``[0, width) x [0, height)`` (or NaN) are dropped and counted in
            ``AccumulatorStats.rectify_dropped``. The crop applies after rectification. The array
            is copied and made read-only; it is ignored by ``==`` and ``repr``. Default ``None``.
        crop: Optional ``(x0, y0, w, h)`` in pixels of the (rectified) image to keep; the output
            is ``h x w``. DSEC-Semantic keeps the top ``(0, 0, 640, 440)``. Events outside are
            dropped and counted in ``AccumulatorStats.cropped``. Default ``None`` = whole sensor.
        max_gap_us: Time mode: a forward jump between consecutive events larger than this (µs,
            at least ``window_us``) starts a new segment without emitting the empty windows in
            between (counted). Default ``None`` = dv's behaviour, every empty window is emitted.

    """

    width: int
    height: int
    mode: Literal["time", "count"] = "time"
    window_us: int = 50_000
    stride_us: int | None = None
    window_events: int = 100_000
    stride_events: int | None = None
    origin_us: int | None = None
    polarity: Literal["ignore", "signed", "split"] = "ignore"
    contribution: float = 0.25
    neutral: float = 0.0
    rectify_map: np.ndarray | None = field(default=None, compare=False, repr=False)
    crop: tuple[int, int, int, int] | None = None
    max_gap_us: int | None = None

    def __post_init__(self) -> None:
        for name in ("width", "height"):
            value = getattr(self, name)
            if not _is_int(value) or not 0 < value <= 65535:
                raise ConfigError(f"EdgeFrameConfig.{name} must be an integer in 1..65535, got {value!r}")
        if self.mode not in _MODES:
            raise ConfigError(f"EdgeFrameConfig.mode must be one of {_MODES}, got {self.mode!r}")
        if self.polarity not in _POLARITIES:
            raise ConfigError(f"EdgeFrameConfig.polarity must be one of {_POLARITIES}, got {self.polarity!r}")
        for name in ("window_us", "window_events"):
            value = getattr(self, name)
            if not _is_int(value) or value <= 0:
                raise ConfigError(f"EdgeFrameConfig.{name} must be a positive integer, got {value!r}")
        for name in ("stride_us", "stride_events"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value <= 0):
                raise ConfigError(f"EdgeFrameConfig.{name} must be a positive integer or None, got {value!r}")
        if self.max_gap_us is not None and (not _is_int(self.max_gap_us) or self.max_gap_us < self.window_us):
            raise ConfigError(f"EdgeFrameConfig.max_gap_us must be an integer ≥ window_us ({self.window_us}) or None, "
                              f"got {self.max_gap_us!r}")
        if self.origin_us is not None and not _is_int(self.origin_us):
            raise ConfigError(f"EdgeFrameConfig.origin_us must be an integer (µs) or None, got {self.origin_us!r}")
        if not (isinstance(self.contribution, (int, float)) and 0.0 < self.contribution <= 1.0):
            raise ConfigError(f"EdgeFrameConfig.contribution must be in (0, 1], got {self.contribution!r}")
        if not (isinstance(self.neutral, (int, float)) and 0.0 <= self.neutral <= 1.0):
            raise ConfigError(f"EdgeFrameConfig.neutral must be in [0, 1], got {self.neutral!r}")
        if self.crop is not None:
            if len(self.crop) != 4 or not all(_is_int(v) for v in self.crop):
                raise ConfigError(f"EdgeFrameConfig.crop must be (x0, y0, w, h) integers, got {self.crop!r}")
            x0, y0, w, h = self.crop
            if x0 < 0 or y0 < 0 or w <= 0 or h <= 0 or x0 + w > self.width or y0 + h > self.height:
                raise ConfigError(
                    f"EdgeFrameConfig.crop {self.crop!r} must lie inside the {self.width}x{self.height} image "
                    "with positive w and h"
                )
            object.__setattr__(self, "crop", (int(x0), int(y0), int(w), int(h)))
        # Derived tables, set once as plain attributes (not fields: ``asdict`` and YAML savers
        # see only what the user configured) so that the hot path only indexes arrays.
        self._lut: np.ndarray
        self._pixel_map: np.ndarray | None
        object.__setattr__(self, "_lut", _make_lut(self.contribution))
        pixel_map = None
        if self.rectify_map is not None:
            rectify_map = np.asarray(self.rectify_map)
            if rectify_map.shape != (self.height, self.width, 2) or not np.issubdtype(rectify_map.dtype, np.floating):
                raise ConfigError(
                    f"EdgeFrameConfig.rectify_map must be a float array of shape ({self.height}, {self.width}, 2) "
                    f"(DSEC rectify_map.h5), got {rectify_map.dtype} {rectify_map.shape}"
                )
            rectify_map = rectify_map.astype(np.float32, copy=True)
            rectify_map.flags.writeable = False
            object.__setattr__(self, "rectify_map", rectify_map)
            pixel_map = _make_pixel_map(rectify_map, self.width, self.height, self.crop_box)
        object.__setattr__(self, "_pixel_map", pixel_map)

    @property
    def crop_box(self) -> tuple[int, int, int, int]:
        """``(x0, y0, w, h)`` of the output inside the (rectified) sensor image; the whole sensor without crop."""
        return self.crop if self.crop is not None else (0, 0, self.width, self.height)

    @property
    def increment(self) -> int:
        """Byte step per event, ``ceil(255 * contribution)`` in float32 as dv computes it."""
        return int(np.ceil(np.float32(255.0) * np.float32(self.contribution)))

    @property
    def neutral_byte(self) -> int:
        """Start value of every pixel, ``int(255 * neutral)`` in float32 as dv computes it."""
        return int(np.float32(self.neutral) * np.float32(255.0))

    @property
    def frame_shape(self) -> tuple[int, ...]:
        """Shape of ``EdgeFrame.image``: ``(h, w)``, or ``(2, h, w)`` with split polarity."""
        _, _, w, h = self.crop_box
        return (2, h, w) if self.polarity == "split" else (h, w)


def check_edge_frame_fields(values: dict[str, object], what: str) -> None:
    """Refuse keys of a user-given accumulation config that are not ``EdgeFrameConfig`` fields.

    ``width`` and ``height`` are refused too: callers take them from the event stream itself.
    """
    check_known_keys(values, EdgeFrameConfig, what)
    fixed = sorted({"width", "height"} & set(values))
    if fixed:
        raise ConfigError(f"{what} must not set {fixed}: the sensor size comes from the event stream")


@dataclass(frozen=True)
class EdgeFrame:
    """One edge frame and the slice of the stream it covers.

    Attributes:
        image: uint8 ``(h, w)``, or ``(2, h, w)`` (OFF, ON) with split polarity; owned by the frame.
        t_start_us: Start of the slice in µs: the window start (time mode) or first event (count mode).
        t_end_us: End of the slice in µs and the frame's stamp: the window end, exclusive (time
            mode), or the last event's time (count mode).
        n_events: Events of the slice handed to the accumulator, including any dropped as out of
            range, cropped or not rectifiable (those are counted in ``AccumulatorStats``).

    """

    image: np.ndarray
    t_start_us: int
    t_end_us: int
    n_events: int


@dataclass
class AccumulatorStats:
    """Events the accumulator did not draw, by reason; nodes publish them in diagnostics."""

    events: int = 0  # events handed to accumulate() / push()
    frames: int = 0  # frames emitted by push() and flush()
    out_of_range: int = 0  # raw x >= width or y >= height
    cropped: int = 0  # inside the sensor but outside the crop
    rectify_dropped: int = 0  # rectified position outside the image (or NaN in the map)
    time_backwards: int = 0  # earlier than an event already accepted by push(); dropped
    gaps: int = 0  # forward jumps beyond max_gap_us: new segments
    skipped_windows: int = 0  # empty windows of those gaps, not emitted

    @property
    def dropped_events(self) -> int:
        """Events received but not drawn."""
        return self.out_of_range + self.cropped + self.rectify_dropped + self.time_backwards

    def as_dict(self) -> dict[str, int]:
        """Plain dict for JSON reports and diagnostics."""
        return dict(self.__dict__)


def accumulate(events: Events, config: EdgeFrameConfig, *, stats: AccumulatorStats | None = None) -> np.ndarray:
    """Edge frame of one slice: all of ``events``, in their order, ignoring the slicing fields.

    This is the function the trainer calls on a data set's window and the one
    :class:`EdgeFrameAccumulator` calls per slice, so both produce identical pixels.

    Args:
        events: The slice's events, in stream order (order matters with signed polarity).
        config: Image geometry, polarity and step; ``mode``/``window_*``/``stride_*`` are not used.
        stats: Counters to add this call's events and drops to (optional).

    Returns:
        A new uint8 array of shape ``config.frame_shape``.

    """
    image = np.full(config.frame_shape, config.neutral_byte, dtype=np.uint8)
    drops = _accumulate_into(image, events, config)
    if stats is not None:
        stats.events += len(events)
        stats.out_of_range += drops[0]
        stats.cropped += drops[1]
        stats.rectify_dropped += drops[2]
    return image


def _accumulate_into(image: np.ndarray, events: Events, config: EdgeFrameConfig) -> tuple[int, int, int]:
    """Draw ``events`` onto ``image`` in place; returns drops ``(out_of_range, cropped, rectify_dropped)``.

    Pieces of one slice may arrive in several calls: drawing them in order equals one call.
    """
    if len(events) == 0:
        return 0, 0, 0
    flat = image.reshape(-1)
    mode = _POLARITY_CODE[config.polarity]
    if config._pixel_map is None:
        x0, y0, w, h = config.crop_box
        drops = kernels.accumulate_direct(
            events.x, events.y, events.p, flat, config._lut, mode, config.width, config.height, x0, y0, w, h
        )
    else:
        _, _, w, h = config.crop_box
        drops = kernels.accumulate_mapped(
            events.x,
            events.y,
            events.p,
            flat,
            config._lut,
            mode,
            config.width,
            config.height,
            config._pixel_map,
            w * h,
        )
    return int(drops[0]), int(drops[1]), int(drops[2])


class EdgeFrameAccumulator:
    """Streaming slicer + accumulator: push event chunks of any size, get every completed frame.

    Slices may straddle chunk boundaries; the accumulator keeps only views of the chunks that a
    not yet completed slice still needs (no copy of the stream), and draws each slice piece by
    piece in stream order, so any chunking gives the same frames as one push.

    Args:
        config: Slicing, polarity and geometry (see :class:`EdgeFrameConfig`).

    """

    def __init__(self, config: EdgeFrameConfig) -> None:
        self.config = config
        self.stats = AccumulatorStats()
        self._reset_stream()

    def _reset_stream(self) -> None:
        self._chunks: list[tuple[int, Events]] = []  # (stream index of the chunk's first event, events)
        self._n_seen = 0  # events accepted so far (stream index of the next event)
        self._t_last: int | None = None  # latest accepted event time (µs)
        self._next = 0  # index k of the next slice to emit
        self._origin: int | None = None  # time-mode alignment, fixed by the first event

    def push(self, events: Events) -> list[EdgeFrame]:
        """Add a chunk of the stream (in time order) and return the slices it completed, oldest first."""
        if not isinstance(events, Events):
            raise InputError(f"EdgeFrameAccumulator.push expects madm_ros.events.Events, got {type(events).__name__}")
        n = len(events)
        if n == 0:
            return []
        self.stats.events += n
        last = self._t_last if self._t_last is not None else np.iinfo(np.int64).min
        if not kernels.is_sorted(events.t, last):
            keep = kernels.keep_monotonic(events.t, last)
            self.stats.time_backwards += int(n - np.count_nonzero(keep))
            events = events[keep]
            if len(events) == 0:
                return []
        if self._origin is None:
            self._start(int(events.t[0]))
        gap = self.config.max_gap_us
        if gap is None or self.config.mode != "time":
            return self._append(events)
        frames: list[EdgeFrame] = []
        cuts = (np.flatnonzero(np.diff(events.t) > gap) + 1).tolist()
        if int(events.t[0]) - self._t_last_or(events) > gap:
            cuts.insert(0, 0)
        start = 0
        for cut in [*cuts, len(events)]:
            if cut > start:
                frames += self._append(events[start:cut])
            if cut < len(events):
                frames += self._jump_to(int(events.t[cut]))
            start = cut
        return frames

    def _t_last_or(self, events: Events) -> int:
        return self._t_last if self._t_last is not None else int(events.t[0])

    def _append(self, events: Events) -> list[EdgeFrame]:
        self._chunks.append((self._n_seen, events))
        self._n_seen += len(events)
        self._t_last = int(events.t[-1])
        return self._emit_completed()

    def _jump_to(self, t_next: int) -> list[EdgeFrame]:
        """A gap before an event at ``t_next``: emit the windows holding pending events, skip the empty ones."""
        frames = []
        if self._t_last is not None:
            while self._slice_bounds(self._next)[0] <= self._t_last:
                lo, hi = self._slice_bounds(self._next)
                frames.append(self._draw(self._pieces(lo, hi), lo, hi, final=False))
                self._next += 1
        assert self._origin is not None
        config = self.config
        first = math.floor((t_next - self._origin - config.window_us) / (config.stride_us or config.window_us)) + 1
        self.stats.gaps += 1
        self.stats.skipped_windows += max(first - self._next, 0)
        self._next = max(first, self._next)
        self._chunks = []
        return frames

    def flush(self) -> EdgeFrame | None:
        """Frame of the oldest incomplete slice (everything pending from its start), then forget the stream.

        Call at the end of a bag or on shutdown. A time-mode frame keeps its nominal window end as
        stamp; ``n_events`` tells how full it is. Returns ``None`` when no event is pending. The
        next :meth:`push` starts a new stream (new alignment when ``origin_us`` is ``None``).
        """
        frame = None
        if self._origin is not None:
            lo, hi = self._slice_bounds(self._next)
            pieces = self._pieces(lo, hi)
            if pieces:
                frame = self._draw(pieces, lo, hi, final=True)
        self._reset_stream()
        return frame

    # -- slicing ------------------------------------------------------------------------------

    def _start(self, t_first: int) -> None:
        """Fix the time alignment and the first slice index from the stream's first event."""
        config = self.config
        if config.mode == "count":
            self._origin = 0
            return
        stride = config.stride_us or config.window_us
        origin = t_first if config.origin_us is None else int(config.origin_us)
        self._origin = origin
        # First window that contains t_first: origin + k*stride + window > t_first.
        self._next = math.floor((t_first - origin - config.window_us) / stride) + 1 if origin != t_first else 0

    def _slice_bounds(self, k: int) -> tuple[int, int]:
        """Slice k as [lo, hi): times in µs (time mode) or stream event indices (count mode)."""
        config = self.config
        assert self._origin is not None
        if config.mode == "time":
            lo = self._origin + k * (config.stride_us or config.window_us)
            return lo, lo + config.window_us
        lo = k * (config.stride_events or config.window_events)
        return lo, lo + config.window_events

    def _pieces(self, lo: int, hi: int) -> list[tuple[int, Events]]:
        """Return views of the pending chunks inside [lo, hi), in stream order, with their stream index."""
        pieces = []
        for start, chunk in self._chunks:
            if self.config.mode == "time":
                a, b = (int(v) for v in np.searchsorted(chunk.t, (lo, hi), side="left"))
            else:
                a, b = max(lo - start, 0), min(hi - start, len(chunk))
            if b > a:
                pieces.append((start + a, chunk[a:b]))
        return pieces

    def _emit_completed(self) -> list[EdgeFrame]:
        frames = []
        while True:
            lo, hi = self._slice_bounds(self._next)
            # dv emits a time window once an event at or past its end arrived.
            done = self._t_last >= hi if self.config.mode == "time" else self._n_seen >= hi
            if not done:
                break
            frames.append(self._draw(self._pieces(lo, hi), lo, hi, final=False))
            self._next += 1
        if frames:  # only then can buffered events have become unneeded
            self._drop_consumed(self._slice_bounds(self._next)[0])
        return frames

    def _drop_consumed(self, lo: int) -> None:
        """Forget events before ``lo`` (time or stream index), keeping views only."""
        kept = []
        for start, chunk in self._chunks:
            a = self._split_index(start, chunk, lo)
            if a < len(chunk):
                kept.append((start + a, chunk[a:] if a else chunk))
        self._chunks = kept

    def _split_index(self, start: int, chunk: Events, lo: int) -> int:
        """Position in ``chunk`` (first event at stream index ``start``) of the first event at or after ``lo``."""
        if self.config.mode == "time":
            return int(np.searchsorted(chunk.t, lo, side="left"))
        return min(max(lo - start, 0), len(chunk))

    def _draw(self, pieces: list[tuple[int, Events]], lo: int, hi: int, *, final: bool) -> EdgeFrame:
        """Frame of slice [lo, hi) from its pieces, counting each dropped event exactly once.

        Overlapping slices draw an event several times; its drops are counted only by the last
        slice that draws it, i.e. for the events before the next slice's start (all of them when
        ``final``). Events no slice covers (stride larger than the window) are skipped, not counted.
        """
        image = np.full(self.config.frame_shape, self.config.neutral_byte, dtype=np.uint8)
        next_lo = self._slice_bounds(self._next + 1)[0]
        for start, piece in pieces:
            split = len(piece) if final else self._split_index(start, piece, next_lo)
            if split:
                self._add_drops(_accumulate_into(image, piece[:split] if split < len(piece) else piece, self.config))
            if split < len(piece):
                _accumulate_into(image, piece[split:], self.config)
        n_events = sum(len(piece) for _, piece in pieces)
        self.stats.frames += 1
        if self.config.mode == "time":
            return EdgeFrame(image, lo, hi, n_events)
        return EdgeFrame(image, int(pieces[0][1].t[0]), int(pieces[-1][1].t[-1]), n_events)

    def _add_drops(self, drops: tuple[int, int, int]) -> None:
        self.stats.out_of_range += drops[0]
        self.stats.cropped += drops[1]
        self.stats.rectify_dropped += drops[2]


def _is_int(value: object) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _make_lut(contribution: float) -> np.ndarray:
    """Dv's table: ``[0:256]`` after an OFF event (signed mode), ``[256:512]`` after an ON/any event."""
    step = int(np.ceil(np.float32(255.0) * np.float32(contribution)))
    values = np.arange(256, dtype=np.int32)
    lut = np.concatenate([np.maximum(values - step, 0), np.minimum(values + step, 255)]).astype(np.uint8)
    lut.flags.writeable = False
    return lut


def _make_pixel_map(
    rectify_map: np.ndarray, width: int, height: int, crop_box: tuple[int, int, int, int]
) -> np.ndarray:
    """Raw pixel -> flat output index (or a negative drop code), rounding half up like ``floor(v + 0.5)``."""
    x0, y0, w, h = crop_box
    with np.errstate(invalid="ignore"):
        rx = np.floor(rectify_map[..., 0].astype(np.float64) + 0.5)
        ry = np.floor(rectify_map[..., 1].astype(np.float64) + 0.5)
        inside = (rx >= 0) & (rx < width) & (ry >= 0) & (ry < height)  # NaN compares False
        in_crop = inside & (rx >= x0) & (rx < x0 + w) & (ry >= y0) & (ry < y0 + h)
    pixel_map = np.full((height, width), kernels.MAP_RECTIFY_DROPPED, dtype=np.int32)
    pixel_map[inside & ~in_crop] = kernels.MAP_CROPPED
    pixel_map[in_crop] = ((ry[in_crop] - y0) * w + (rx[in_crop] - x0)).astype(np.int32)
    pixel_map = pixel_map.reshape(-1)
    pixel_map.flags.writeable = False
    return pixel_map
