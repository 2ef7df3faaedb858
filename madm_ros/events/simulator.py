"""Event simulator: an ideal DVS pixel model that turns an image sequence into :class:`Events`.

Why it exists: the project ships without data, so demos, tests and the synthetic scene generator
need event streams with known geometry. The model is the contrast-threshold model used by ESIM and
v2e (without their photoreceptor low-pass, leak and shot noise):

- each pixel tracks the log intensity ``L = log(I + log_eps)`` of a linear intensity ``I`` in [0, 1]
  (uint8 frames are divided by 255; float frames are taken as they are);
- between two frames ``L`` moves linearly in time from the old to the new value;
- a pixel fires ON when ``L`` reaches ``ref + C_on`` and OFF when it reaches ``ref - C_off``; each
  event moves the pixel's reference level ``ref`` by that threshold, so a change spanning several
  thresholds gives several events, each stamped at its own linearly interpolated crossing time;
- per-pixel thresholds are ``C + sigma * N(0, 1)`` drawn once per simulator (fixed-pattern
  mismatch, v2e's ``sigma_thres``), clipped below at ``min_threshold``;
- after an event a pixel is blind for ``refractory_us``: a crossing inside that time fires at its
  end if ``L`` is still past the threshold then (the reference only moves when an event is emitted,
  as in v2e), otherwise it is lost;
- times are floored to whole µs, which keeps refractory gaps of an integer number of µs exact.

Deterministic: the only randomness is the threshold draw from ``numpy.random.default_rng(seed)``.
Output of each step is sorted by time (stable: ties keep row-major pixel order).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numba import njit

from madm_ros.errors import ConfigError, InputError
from madm_ros.events.types import Events

__all__ = ["EventSimulator", "EventSimulatorConfig", "simulate"]


@dataclass(frozen=True)
class EventSimulatorConfig:
    """Pixel model parameters (all validated on construction with ``ConfigError``).

    Attributes:
        c_on: Mean ON contrast threshold, in log-intensity units (> 0). Default 0.2 (v2e).
        c_off: Mean OFF contrast threshold, in log-intensity units (> 0). Default 0.2 (v2e).
        sigma: Standard deviation of the per-pixel threshold mismatch, log units (>= 0). Default
            0.03 (v2e); 0 gives identical thresholds everywhere.
        min_threshold: Lower clip of the per-pixel thresholds, log units (> 0). Default 0.01.
        refractory_us: Dead time after each event of a pixel, µs (>= 0). Default 0.
        log_eps: Offset inside the logarithm, in linear intensity units (> 0), so that black
            pixels have a finite log intensity. Default 1e-3.
        seed: Seed of the threshold draw (``numpy.random.default_rng``). Default 0.

    """

    c_on: float = 0.2
    c_off: float = 0.2
    sigma: float = 0.03
    min_threshold: float = 0.01
    refractory_us: int = 0
    log_eps: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("c_on", "c_off", "min_threshold", "log_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ConfigError(f"EventSimulatorConfig.{name} must be a positive number, got {value!r}")
        if not isinstance(self.sigma, (int, float)) or not self.sigma >= 0:
            raise ConfigError(f"EventSimulatorConfig.sigma must be >= 0, got {self.sigma!r}")
        if (
            isinstance(self.refractory_us, bool)
            or not isinstance(self.refractory_us, (int, np.integer))
            or (self.refractory_us < 0)
        ):
            raise ConfigError(
                f"EventSimulatorConfig.refractory_us must be an integer >= 0 (µs), got {self.refractory_us!r}"
            )


class EventSimulator:
    """Streaming simulator: feed frames with their times, get the events since the previous frame.

    Args:
        config: Pixel model (see :class:`EventSimulatorConfig`).

    The first :meth:`step` only sets every pixel's reference level and returns no events; the
    frame size is fixed by it. Frame times must increase strictly.

    """

    def __init__(self, config: EventSimulatorConfig | None = None) -> None:
        self.config = config if config is not None else EventSimulatorConfig()
        self._log: np.ndarray | None = None  # log intensity of the previous frame, float64 (H, W)
        self._ref: np.ndarray | None = None  # reference level per pixel
        self._last_event: np.ndarray | None = None  # time of the last event per pixel (µs, float)
        self._c_on: np.ndarray | None = None
        self._c_off: np.ndarray | None = None
        self._t_prev: int | None = None

    def step(self, frame: np.ndarray, t_us: int) -> Events:
        """Events fired between the previous frame and ``frame`` at ``t_us`` (µs), sorted by time."""
        log = self._log_intensity(frame)
        t_us = int(t_us)
        if self._log is None:
            self._init_state(log)
            self._t_prev = t_us
            return Events.empty()
        assert self._t_prev is not None
        assert self._ref is not None
        assert self._last_event is not None
        if log.shape != self._log.shape:
            raise InputError(f"frame shape {log.shape} differs from the first frame's {self._log.shape}")
        if t_us <= self._t_prev:
            raise InputError(f"frame time {t_us} µs is not after the previous frame's {self._t_prev} µs")
        args = (
            self._log.reshape(-1),
            log.reshape(-1),
            self._ref.reshape(-1),
            self._last_event.reshape(-1),
            self._c_on.reshape(-1),
            self._c_off.reshape(-1),
            float(self._t_prev),
            float(t_us),
            float(self.config.refractory_us),
        )
        counts = _count_events(*args)
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        n = int(offsets[-1])
        t = np.empty(n, dtype=np.int64)
        index = np.empty(n, dtype=np.int64)
        p = np.empty(n, dtype=np.uint8)
        _emit_events(*args, offsets, t, index, p)
        self._log = log
        self._t_prev = t_us
        order = np.argsort(t, kind="stable")
        width = log.shape[1]
        index = index[order]
        return Events((index % width).astype(np.uint16), (index // width).astype(np.uint16), t[order], p[order])

    def _log_intensity(self, frame: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame)
        if frame.ndim != 2:
            raise InputError(f"frame must be a 2-D grey image (H, W), got shape {frame.shape}")
        if frame.shape[0] > 65536 or frame.shape[1] > 65536:
            raise InputError(f"frame {frame.shape} is larger than event coordinates allow (65536)")
        if frame.dtype == np.uint8:
            intensity = frame.astype(np.float64) / 255.0
        elif np.issubdtype(frame.dtype, np.floating):
            intensity = frame.astype(np.float64)
            if not np.all(np.isfinite(intensity)) or intensity.min(initial=0.0) < 0:
                raise InputError("float frames must hold finite, non-negative linear intensities (nominally 0..1)")
        else:
            raise InputError(f"frame dtype must be uint8 or float, got {frame.dtype}")
        return np.log(intensity + self.config.log_eps)

    def _init_state(self, log: np.ndarray) -> None:
        config = self.config
        rng = np.random.default_rng(config.seed)
        self._c_on = np.maximum(config.c_on + config.sigma * rng.standard_normal(log.shape), config.min_threshold)
        self._c_off = np.maximum(config.c_off + config.sigma * rng.standard_normal(log.shape), config.min_threshold)
        self._log = log
        self._ref = log.copy()
        self._last_event = np.full(log.shape, -np.inf)


def simulate(
    frames: Sequence[np.ndarray] | np.ndarray,
    times_us: Sequence[int] | np.ndarray,
    config: EventSimulatorConfig | None = None,
) -> Events:
    """All events of an image sequence: ``frames[i]`` is the image at ``times_us[i]`` (µs)."""
    if len(frames) != len(times_us):
        raise InputError(f"got {len(frames)} frames but {len(times_us)} time stamps")
    simulator = EventSimulator(config)
    return Events.concatenate([simulator.step(frame, t) for frame, t in zip(frames, times_us, strict=False)])


@njit(cache=True, inline="always")
def _pixel(a, b, ref, last, c_on, c_off, t0, t1, refractory, write, out_t, out_p, out_i, pos, pixel):
    """Walk one pixel from log value ``a`` at ``t0`` to ``b`` at ``t1``; returns (events, ref, last).

    Candidates: the earliest time in [t0, t1] at which the pixel is out of refractory and past
    ``ref + c_on`` (ON) or ``ref - c_off`` (OFF); fire the earlier, move ``ref``, repeat.
    """
    dt = t1 - t0
    slope = (b - a) / dt
    count = 0
    while True:
        ready = max(t0, last + refractory)
        if ready > t1:
            break
        fire = np.inf
        polarity = 0
        for sign in (1, -1):
            level = ref + c_on if sign == 1 else ref - c_off
            # Interval of [t0, t1] where sign * (L(t) - level) >= 0, with L linear.
            if slope == 0.0:
                if sign * (a - level) >= 0.0:
                    lo, hi = t0, t1
                else:
                    continue
            else:
                tc = t0 + (level - a) / slope
                if sign * slope > 0.0:
                    lo, hi = max(tc, t0), t1
                else:
                    lo, hi = t0, min(tc, t1)
            start = max(lo, ready)
            if start <= hi and start < fire:
                fire = start
                polarity = sign
        if polarity == 0:
            break
        if write:
            out_t[pos + count] = np.int64(np.floor(fire))
            out_p[pos + count] = 1 if polarity == 1 else 0
            out_i[pos + count] = pixel
        count += 1
        ref = ref + c_on if polarity == 1 else ref - c_off
        last = fire
    return count, ref, last


@njit(cache=True)
def _count_events(a, b, ref, last, c_on, c_off, t0, t1, refractory):
    """Events per pixel for this frame interval, without changing any state."""
    counts = np.empty(a.shape[0], dtype=np.int64)
    dummy_t = np.empty(0, dtype=np.int64)
    dummy_p = np.empty(0, dtype=np.uint8)
    for i in range(a.shape[0]):
        counts[i] = _pixel(
            a[i], b[i], ref[i], last[i], c_on[i], c_off[i], t0, t1, refractory, False, dummy_t, dummy_p, dummy_t, 0, i
        )[0]
    return counts


@njit(cache=True)
def _emit_events(a, b, ref, last, c_on, c_off, t0, t1, refractory, offsets, out_t, out_i, out_p):
    """Write every pixel's events at ``offsets[pixel]`` and update ``ref`` / ``last`` in place."""
    for i in range(a.shape[0]):
        _, ref[i], last[i] = _pixel(
            a[i], b[i], ref[i], last[i], c_on[i], c_off[i], t0, t1, refractory, True, out_t, out_p, out_i, offsets[i], i
        )
