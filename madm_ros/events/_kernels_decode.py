"""numba kernels behind :mod:`madm_ros.events.codecs` (imported lazily: numba costs ~0.3 s to import).

Every kernel reads raw bytes (``uint8``, any alignment, little-endian words assembled by hand),
keeps its stream state in a small ``int64`` array that the caller owns (so a stream split at any
word boundary decodes exactly like one buffer) and adds to a ``counts`` array:
``counts[OUT_OF_RANGE]``, ``counts[BAD_WORDS]``, ``counts[TIME_BACKWARDS]``.

An event is returned only when its pixel lies inside ``width × height`` and its time is known and
not earlier than the previous returned event of the stream; the rest are counted, never returned.
Output arrays are sized by a cheap first pass (an upper bound on the events a payload can hold),
so the caller gets views of the first ``n`` entries.
"""

from __future__ import annotations

import numpy as np
from numba import njit

OUT_OF_RANGE = 0
BAD_WORDS = 1
TIME_BACKWARDS = 2

# ---------------------------------------------------------------- EVT 3.0 (16-bit words, code in bits 12-15)
EVT3_ADDR_Y = 0x0
EVT3_ADDR_X = 0x2
EVT3_VECT_BASE_X = 0x3
EVT3_VECT_12 = 0x4
EVT3_VECT_8 = 0x5
EVT3_TIME_LOW = 0x6
EVT3_CONTINUED_4 = 0x7
EVT3_TIME_HIGH = 0x8
EVT3_PADDING = 0x9  # seen on Lucid cameras; carries nothing
EVT3_EXT_TRIGGER = 0xA
EVT3_OTHERS = 0xE
EVT3_CONTINUED_12 = 0xF
# 1 where the code is part of EVT 3.0, 0 for the unused codes (1, 0xB, 0xC, 0xD)
EVT3_KNOWN = np.array([1, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1], dtype=np.int64)

# EVT3 state slots
S3_Y, S3_BASE_X, S3_VPOL, S3_HIGH, S3_LOW, S3_WRAPS, S3_HAS_TIME, S3_LAST_T = range(8)
EVT3_STATE_SIZE = 8
# inside decode_evt3: "time known" flag above the time bits, and masks of the time fields
HAS_TIME = np.int64(1) << 62
TIME_BITS = HAS_TIME - 1
HIGH_CLEAR = ~np.int64(0xFFFFFF)  # clears high and low, keeps wraps and the flag
# index of the lowest set bit of a 12-bit vector mask (entry 0 is never read)
TRAILING_ZEROS_12 = np.array([(m & -m).bit_length() - 1 for m in range(4096)], dtype=np.int64)

# ---------------------------------------------------------------- EVT 2.0 (32-bit words, type in bits 28-31)
EVT2_CD_OFF = 0x0
EVT2_CD_ON = 0x1
EVT2_TIME_HIGH = 0x8
EVT2_EXT_TRIGGER = 0xA
EVT2_OTHERS = 0xE
EVT2_CONTINUED = 0xF
EVT2_KNOWN = np.array([1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1, 1], dtype=np.int64)

S2_HIGH, S2_WRAPS, S2_HAS_TIME, S2_LAST_T = range(4)
EVT2_STATE_SIZE = 4

# ---------------------------------------------------------------- libcaer_cmp (16-bit words, code in bits 12-15)
CMP_TIME_HIGH = 0
CMP_TIME_LOW = 1
CMP_ADDR_X = 2
CMP_ADDR_Y = 3
CMP_VECT_BASE_Y = 4
CMP_VECT_8 = 5
CMP_MAX_EVENTS = np.array([0, 0, 0, 1, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], dtype=np.int64)

SC_X, SC_BASE_Y, SC_VPOL, SC_LAST_T = range(4)
CMP_STATE_SIZE = 4


@njit(cache=True, nogil=True)
def _bound16(buf, table):  # pragma: no cover - compiled
    """Upper bound of the events in a stream of 16-bit words (code in the top nibble)."""
    bound = 0
    for i in range(buf.size // 2):
        bound += table[buf[2 * i + 1] >> 4]
    return bound


@njit(cache=True, nogil=True)
def bound_evt3(words):  # pragma: no cover - compiled
    """Most events the EVT 3.0 ``words`` can hold (ADDR_X: 1, VECT_12: 12, VECT_8: 8).

    Counted with compares only (codes 4 and 5 are the words whose top three bits are 010), which
    LLVM vectorises: twice as fast as a per-code table look-up.
    """
    addr_x = 0
    vectors = 0
    vect_12 = 0
    for i in range(words.size):
        addr_x += (words[i] >> 12) == EVT3_ADDR_X
        vectors += (words[i] >> 13) == EVT3_VECT_12 >> 1
        vect_12 += (words[i] >> 12) == EVT3_VECT_12
    return addr_x + 8 * vectors + 4 * vect_12


@njit(cache=True, nogil=True)
def decode_evt3(words, width, height, state, counts, xs, ys, ts, ps):  # pragma: no cover - compiled
    """Decode EVT 3.0 ``words`` (uint16) into ``xs, ys, ts, ps``; returns the number of events.

    The output arrays need ``bound_evt3(words) + 1`` entries: events are written before they are
    checked, and kept by advancing the count. Time is ``wraps·2^24 + high·2^12 + low`` µs. A
    TIME_HIGH more than half the 24-bit range below the previous one is a roll-over; a smaller
    step back is time going backwards (events are dropped until the time is again at or past the
    last returned event). Events before the stream's first TIME_HIGH have no time and are
    dropped as ``time_backwards`` too.

    Written for speed on sparse streams (about three words per event, TIME_HIGH words at random
    places), where branch mispredictions and loop-carried chains cost more than the arithmetic:
    - ``high_t`` holds wraps, high and a "has time" flag (bit 62) in one register, and ``last_t``
      carries the same flag, so ``cur_t >= last_t`` alone says "time known and not backwards";
    - the time of a returned event only grows, so ``last_t = max(last_t, cur_t)`` replaces
      bookkeeping of when it was returned;
    - indices are cast to unsigned, which spares numba's negative-index wrap-around code.
    """
    y = state[S3_Y]
    base_x = state[S3_BASE_X]
    vpol = state[S3_VPOL]
    high_t = (state[S3_WRAPS] << 24) | (state[S3_HIGH] << 12) | (state[S3_HAS_TIME] << 62)
    low = state[S3_LOW]
    last_t = state[S3_LAST_T] | HAS_TIME
    cur_t = high_t | low
    n = 0
    backwards = 0
    out_of_range = 0
    bad = 0
    n_words = words.size
    i = 0
    while i < n_words:
        # tight loop over the common words; anything else breaks out to the slow path below
        # (keeping the vector code out of this loop doubles its speed)
        while i < n_words:
            w = np.int64(words[np.uint64(i)])
            code = w >> 12
            if code == EVT3_ADDR_X:
                x = w & 0x7FF
                if x < width and y < height:
                    xs[np.uint64(n)] = x
                    ys[np.uint64(n)] = y
                    ts[np.uint64(n)] = cur_t & TIME_BITS
                    ps[np.uint64(n)] = (w >> 11) & 1
                    keep = np.int64(cur_t >= last_t)
                    n += keep
                    backwards += 1 - keep
                    last_t = max(last_t, cur_t)
                else:
                    out_of_range += 1
            elif code == EVT3_ADDR_Y:
                y = w & 0x7FF
            elif code == EVT3_TIME_LOW:
                low = w & 0xFFF
                cur_t = high_t | low
            else:
                break
            i += 1
        if i >= n_words:
            break
        w = np.int64(words[np.uint64(i)])
        code = w >> 12
        i += 1
        if code == EVT3_TIME_HIGH:
            h = w & 0xFFF
            wrap = (high_t >> 62) & np.int64(((high_t >> 12) & 0xFFF) - h > 2048)
            high_t = ((high_t & HIGH_CLEAR) + (wrap << 24)) | HAS_TIME | (h << 12)
            cur_t = high_t | low
        elif code == EVT3_VECT_BASE_X:
            base_x = w & 0x7FF
            vpol = (w >> 11) & 1
        elif code in (EVT3_VECT_12, EVT3_VECT_8):
            mask = w & 0xFFF
            span = 12
            if code == EVT3_VECT_8:
                mask = w & 0xFF
                span = 8
            # one pass per set bit (vectors carry about two events on real streams, not 12)
            inside_y = y < height
            keep = np.int64(cur_t >= last_t)
            t_out = cur_t & TIME_BITS
            n_before = n
            while mask != 0:
                x = base_x + TRAILING_ZEROS_12[mask]
                mask &= mask - 1
                if x < width and inside_y:
                    xs[np.uint64(n)] = x
                    ys[np.uint64(n)] = y
                    ts[np.uint64(n)] = t_out
                    ps[np.uint64(n)] = vpol
                    n += keep
                    backwards += 1 - keep
                else:
                    out_of_range += 1
            if n != n_before:
                last_t = cur_t
            base_x += span
        elif EVT3_KNOWN[code] == 0:
            bad += 1
        # EXT_TRIGGER, OTHERS, CONTINUED_4/12 and padding carry no CD event

    state[S3_Y] = y
    state[S3_BASE_X] = base_x
    state[S3_VPOL] = vpol
    state[S3_HIGH] = (high_t >> 12) & 0xFFF
    state[S3_LOW] = low
    state[S3_WRAPS] = (high_t & TIME_BITS) >> 24
    state[S3_HAS_TIME] = (high_t >> 62) & 1
    state[S3_LAST_T] = last_t & TIME_BITS
    counts[OUT_OF_RANGE] += out_of_range
    counts[BAD_WORDS] += bad
    counts[TIME_BACKWARDS] += backwards
    return n


@njit(cache=True, nogil=True)
def decode_evt2(buf, width, height, state, counts):  # pragma: no cover - compiled
    """Decode whole 32-bit EVT 2.0 words of ``buf``; returns ``(x, y, t, p, n)``.

    Time is ``wraps·2^34 + high·2^6 + low`` µs (``low`` = 6 bits of each CD word). Roll-over and
    backwards handling as in :func:`decode_evt3`, with half of the 28-bit TIME_HIGH range.
    """
    n_words = buf.size // 4
    bound = 0
    for i in range(n_words):
        if (buf[4 * i + 3] >> 4) <= EVT2_CD_ON:
            bound += 1
    xs = np.empty(bound, np.uint16)
    ys = np.empty(bound, np.uint16)
    ts = np.empty(bound, np.int64)
    ps = np.empty(bound, np.uint8)

    high = state[S2_HIGH]
    wraps = state[S2_WRAPS]
    has_time = state[S2_HAS_TIME]
    last_t = state[S2_LAST_T]
    base_t = (wraps << 34) | (high << 6)
    n = 0
    out_of_range = 0
    backwards = 0
    bad = 0
    for i in range(n_words):
        j = 4 * i
        w = np.int64(buf[j]) | (np.int64(buf[j + 1]) << 8) | (np.int64(buf[j + 2]) << 16) | (np.int64(buf[j + 3]) << 24)
        kind = w >> 28
        if kind <= EVT2_CD_ON:
            x = (w >> 11) & 0x7FF
            y = w & 0x7FF
            if x < width and y < height:
                t = base_t | ((w >> 22) & 0x3F)
                if has_time != 0 and t >= last_t:
                    xs[n] = x
                    ys[n] = y
                    ts[n] = t
                    ps[n] = kind
                    n += 1
                    last_t = t
                else:
                    backwards += 1
            else:
                out_of_range += 1
        elif kind == EVT2_TIME_HIGH:
            h = w & 0xFFFFFFF
            if has_time != 0:
                if h < high and high - h > (1 << 27):
                    wraps += 1
            else:
                has_time = 1
            high = h
            base_t = (wraps << 34) | (high << 6)
        elif EVT2_KNOWN[kind] == 0:
            bad += 1

    state[S2_HIGH] = high
    state[S2_WRAPS] = wraps
    state[S2_HAS_TIME] = has_time
    state[S2_LAST_T] = last_t
    counts[OUT_OF_RANGE] += out_of_range
    counts[BAD_WORDS] += bad
    counts[TIME_BACKWARDS] += backwards
    return xs, ys, ts, ps, n


@njit(cache=True, nogil=True)
def decode_libcaer_cmp(buf, width, height, time_base_us, state, counts):  # pragma: no cover - compiled
    """Decode one libcaer_cmp message (see reference/events.md appendix); returns ``(x, y, t, p, n)``.

    The µs offset restarts at 0 in every message; x, vector base and polarity carry over.
    """
    n_words = buf.size // 2
    bound = _bound16(buf, CMP_MAX_EVENTS)
    xs = np.empty(bound, np.uint16)
    ys = np.empty(bound, np.uint16)
    ts = np.empty(bound, np.int64)
    ps = np.empty(bound, np.uint8)

    x = state[SC_X]
    base_y = state[SC_BASE_Y]
    vpol = state[SC_VPOL]
    last_t = state[SC_LAST_T]
    high = 0
    low = 0
    cur_t = time_base_us
    time_ok = cur_t >= last_t
    x_ok = x < width
    n = 0
    out_of_range = 0
    backwards = 0
    bad = 0
    for i in range(n_words):
        w = np.int64(buf[2 * i]) | (np.int64(buf[2 * i + 1]) << 8)
        code = w >> 12
        if code == CMP_ADDR_Y:
            y = w & 0x7FF
            if x_ok and y < height:
                if time_ok:
                    xs[n] = x
                    ys[n] = y
                    ts[n] = cur_t
                    ps[n] = (w >> 11) & 1
                    n += 1
                    last_t = cur_t
                else:
                    backwards += 1
            else:
                out_of_range += 1
        elif code in (CMP_TIME_LOW, CMP_TIME_HIGH):
            if code == CMP_TIME_LOW:
                low = w & 0xFFF
            else:
                high = (w & 0xFFF) << 12
            cur_t = time_base_us + (high | low)
            time_ok = cur_t >= last_t
        elif code == CMP_ADDR_X:
            x = w & 0x7FF
            x_ok = x < width
        elif code == CMP_VECT_BASE_Y:
            base_y = w & 0x7FF
            vpol = (w >> 11) & 1
        elif code == CMP_VECT_8:
            mask = w & 0xFF
            k = 0
            while mask != 0:
                if mask & 1:
                    y = base_y + k
                    if x_ok and y < height:
                        if time_ok:
                            xs[n] = x
                            ys[n] = y
                            ts[n] = cur_t
                            ps[n] = vpol
                            n += 1
                            last_t = cur_t
                        else:
                            backwards += 1
                    else:
                        out_of_range += 1
                mask >>= 1
                k += 1
            base_y += 8
        else:
            bad += 1

    state[SC_X] = x
    state[SC_BASE_Y] = base_y
    state[SC_VPOL] = vpol
    state[SC_LAST_T] = last_t
    counts[OUT_OF_RANGE] += out_of_range
    counts[BAD_WORDS] += bad
    counts[TIME_BACKWARDS] += backwards
    return xs, ys, ts, ps, n


@njit(cache=True, nogil=True)
def encode_evt3(x, y, t, p, max_words):  # pragma: no cover - compiled
    """EVT 3.0 words for time-ordered events; see :func:`madm_ros.events.codecs.encode_evt3`.

    Runs of consecutive events with equal time, row and polarity and increasing x become
    VECT_BASE_X + VECT_12 / VECT_8 words; a lone event becomes ADDR_X. A TIME_HIGH is written
    whenever the high 12 bits change, with extra TIME_HIGH words on gaps of 2^22 µs or more so
    the decoder never misses a roll-over.
    """
    out = np.empty(max_words, np.uint16)
    m = 0
    n = x.size
    cur_high = -1  # unwrapped t >> 12 of the last TIME_HIGH written
    cur_low = -1
    cur_y = -1
    i = 0
    while i < n:
        ti = t[i]
        hi = ti >> 12
        if hi != cur_high:
            if cur_high >= 0:
                while hi - cur_high >= 1024:
                    cur_high += 1024
                    out[m] = (EVT3_TIME_HIGH << 12) | (cur_high & 0xFFF)
                    m += 1
            out[m] = (EVT3_TIME_HIGH << 12) | (hi & 0xFFF)
            m += 1
            cur_high = hi
            cur_low = -1
        lo = ti & 0xFFF
        if lo != cur_low:
            out[m] = (EVT3_TIME_LOW << 12) | lo
            m += 1
            cur_low = lo
        yi = np.int64(y[i])
        if yi != cur_y:
            out[m] = (EVT3_ADDR_Y << 12) | yi
            m += 1
            cur_y = yi
        pi = np.int64(p[i])
        # length of the run that can share vector words
        j = i + 1
        while j < n and t[j] == ti and y[j] == y[i] and p[j] == p[i] and x[j] > x[j - 1]:
            j += 1
        if j - i == 1:
            out[m] = (EVT3_ADDR_X << 12) | (pi << 11) | np.int64(x[i])
            m += 1
            i = j
            continue
        k = i
        while k < j:
            base = np.int64(x[k])
            out[m] = (EVT3_VECT_BASE_X << 12) | (pi << 11) | base
            m += 1
            # consecutive windows of 12 (or a last one of 8) as long as each has an event
            while k < j and np.int64(x[k]) < base + 12:
                mask = 0
                while k < j and np.int64(x[k]) < base + 12:
                    mask |= 1 << (np.int64(x[k]) - base)
                    k += 1
                if mask < 256 and (k == j or np.int64(x[k]) >= base + 24):
                    out[m] = (EVT3_VECT_8 << 12) | mask
                    m += 1
                    base += 8
                else:
                    out[m] = (EVT3_VECT_12 << 12) | mask
                    m += 1
                    base += 12
        i = j
    return out[:m]
