"""numba kernels behind :mod:`madm_ros.events.edge_frames` (private; call through that module).

Every kernel walks the events once, in order, and applies a 256- or 512-entry byte look-up table
to the addressed pixel, exactly as dv-processing's ``EdgeMapAccumulator::generateFrame`` does.
The per-event loop (rather than a histogram) is what makes signed polarity bit-exact: a pixel that
sees ON, OFF, ON ends elsewhere than one that sees OFF, ON, ON once saturation is involved.

Layout of the look-up table ``lut`` (uint8):
- ``lut[v]`` for v in 0..255: the new value after an OFF event on a pixel of value v
  (``max(v - inc, 0)``; only read in signed mode);
- ``lut[256 + v]``: the new value after an ON event (or any event when polarity is ignored or
  split), ``min(v + inc, 255)``.

Out-of-image events are dropped and counted, never written (dv leaves them undefined).
Kernels return drop counters as a tuple ``(out_of_range, cropped, rectify_dropped)``.

``mode``: 0 = ignore polarity, 1 = signed (OFF uses the decrement half of the table),
2 = split (channel = polarity, i.e. channel 0 OFF, channel 1 ON).
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["accumulate_direct", "accumulate_mapped", "is_sorted", "keep_monotonic"]

IGNORE, SIGNED, SPLIT = 0, 1, 2

# Values of the rectify/crop pixel map for raw pixels that do not land in the output image.
MAP_RECTIFY_DROPPED = -1
MAP_CROPPED = -2


@njit(cache=True, nogil=True, boundscheck=False)
def accumulate_direct(x, y, p, image, lut, mode, width, height, x0, y0, w, h):
    """Accumulate raw coordinates into ``image`` (flat uint8, ``w*h`` or ``2*w*h``) through a crop.

    The crop [x0, x0+w) x [y0, y0+h) lies inside the sensor [0, width) x [0, height); a crop
    equal to the sensor is the no-crop case. Branches on ``mode`` are loop invariant, so LLVM
    unswitches them and each mode runs its own tight loop.
    """
    out_of_range = 0
    cropped = 0
    plane = w * h
    n = x.shape[0]
    for i in range(n):
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        cx = xi - x0
        cy = yi - y0
        if cx < 0 or cx >= w or cy < 0 or cy >= h:
            if xi >= width or yi >= height:
                out_of_range += 1
            else:
                cropped += 1
            continue
        k = cy * w + cx
        if mode == IGNORE:
            image[k] = lut[256 + np.int64(image[k])]
        elif mode == SIGNED:
            image[k] = lut[(np.int64(p[i]) << 8) + np.int64(image[k])]
        else:
            k += np.int64(p[i] != 0) * plane
            image[k] = lut[256 + np.int64(image[k])]
    return out_of_range, cropped, 0


@njit(cache=True, nogil=True, boundscheck=False)
def accumulate_mapped(x, y, p, image, lut, mode, width, height, pixel_map, plane):
    """Accumulate through a precomputed raw-pixel -> output-pixel map (rectification and crop).

    ``pixel_map`` is int32 of length ``width*height``: the flat output index of each raw pixel,
    ``MAP_RECTIFY_DROPPED`` when its rectified position leaves the image, ``MAP_CROPPED`` when it
    lands outside the crop. ``plane`` is the output's ``w*h`` (the channel stride in split mode).
    """
    out_of_range = 0
    cropped = 0
    rectify_dropped = 0
    n = x.shape[0]
    for i in range(n):
        xi = np.int64(x[i])
        yi = np.int64(y[i])
        if xi >= width or yi >= height:
            out_of_range += 1
            continue
        k = np.int64(pixel_map[yi * width + xi])
        if k < 0:
            if k == MAP_CROPPED:
                cropped += 1
            else:
                rectify_dropped += 1
            continue
        if mode == IGNORE:
            image[k] = lut[256 + np.int64(image[k])]
        elif mode == SIGNED:
            image[k] = lut[(np.int64(p[i]) << 8) + np.int64(image[k])]
        else:
            k += np.int64(p[i] != 0) * plane
            image[k] = lut[256 + np.int64(image[k])]
    return out_of_range, cropped, rectify_dropped


@njit(cache=True, nogil=True)
def is_sorted(t, last):
    """Whether ``t`` never decreases and starts at or after ``last``.

    Compares neighbours instead of a running maximum: no loop-carried dependency, so LLVM
    vectorises it and the check costs about one read of ``t``.
    """
    n = t.shape[0]
    if n == 0:
        return True
    bad = np.int64(t[0] < last)
    for i in range(1, n):
        bad += np.int64(t[i] < t[i - 1])
    return bad == 0


@njit(cache=True, nogil=True)
def keep_monotonic(t, last):
    """Boolean mask of the events not earlier than the running maximum (the slow path after ``is_sorted`` said no)."""
    keep = np.empty(t.shape[0], dtype=np.bool_)
    high = last
    for i in range(t.shape[0]):
        if t[i] < high:
            keep[i] = False
        else:
            keep[i] = True
            high = t[i]
    return keep
