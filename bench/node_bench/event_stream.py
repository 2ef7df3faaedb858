"""The synthetic event stream the event node is fed, and its messages, built before the clock starts.

A 640×480 sensor watching six edges sweep across it plus 10 % noise, read out row by row as a
sensor does (so EVT 3.0 vector words occur), cut into ``event_camera_msgs/EventPacket`` evt3 or
``madm_ros/PackedEvents`` messages of one packet length each.
"""

from __future__ import annotations

import array
from typing import Any

import numpy as np

from bench.node_bench import HEIGHT, WIDTH


def edge_scene(n: int, period_us: int, seed: int) -> Any:
    """``n`` events over ``[0, period_us)`` µs on 640×480: six edges sweeping at 0.3-1.2 px/ms plus 10 % noise.

    Like bench/event_throughput.py's "edge" stream, but read out as a sensor does: within one µs,
    by polarity, row and increasing column (so EVT 3.0 vector words occur); each edge has one polarity.
    The first event is at t = 0.
    """
    from madm_ros.events.types import Events

    rng = np.random.default_rng(seed)
    t = rng.integers(0, period_us, n)
    edge = rng.integers(0, 6, n)
    angle = rng.uniform(0, np.pi, 6)[edge]
    speed = rng.uniform(0.3, 1.2, 6)[edge] / 1000.0
    offset = rng.uniform(0, WIDTH, 6)[edge]
    along = rng.uniform(-400, 400, n)
    across = offset + speed * t + rng.normal(0, 1.5, n)
    x = np.mod(np.rint(WIDTH / 2 + (across - 320) * np.cos(angle) - along * np.sin(angle)), WIDTH).astype(np.int64)
    y = np.mod(np.rint(HEIGHT / 2 + (across - 320) * np.sin(angle) + along * np.cos(angle)), HEIGHT).astype(np.int64)
    p = (edge % 2).astype(np.int64)
    noise = rng.random(n) < 0.1
    x[noise] = rng.integers(0, WIDTH, int(noise.sum()))
    y[noise] = rng.integers(0, HEIGHT, int(noise.sum()))
    key = np.sort(((t * 2 + p) * HEIGHT + y) * WIDTH + x)
    x, rest = key % WIDTH, key // WIDTH
    y, rest = rest % HEIGHT, rest // HEIGHT
    p, t = rest % 2, rest // 2
    t[0] = 0
    return Events.from_arrays(x, y, t, p)


def event_messages(message_type: str, rate_mev_s: float, seconds: float, packet_us: int, seed: int) -> dict[str, Any]:
    """Every message of one run: ``messages`` as (due µs, stamp µs, message, events), and the totals.

    At most 250 ms of scene are synthesized and repeated (shifted in time), so that building a
    50 Mev/s run takes seconds, not minutes.
    """
    from madm_ros.events.codecs import encode_evt3, packed_fields
    from madm_ros.nodes.event_segmentation import message_class

    cls = message_class(message_type)
    period_us = min(round(seconds * 1e6), 250_000) // packet_us * packet_us or packet_us
    scene = edge_scene(max(1, round(rate_mev_s * period_us)), period_us, seed)
    bounds = np.searchsorted(scene.t, np.arange(0, period_us + packet_us, packet_us))
    total_us = round(seconds * 1e6) // packet_us * packet_us
    messages, payload_bytes, events_total, t_last = [], 0, 0, 0
    for seq, lo in enumerate(range(0, total_us, packet_us)):
        k, within = divmod(lo, period_us)
        i = within // packet_us
        chunk = scene[bounds[i]:bounds[i + 1]]
        if not len(chunk):
            continue
        if k:
            chunk = type(chunk)(chunk.x, chunk.y, chunk.t + k * period_us, chunk.p)
        if message_type == "event_packet":
            payload = array.array("B")
            payload.frombytes(encode_evt3(chunk))
            message = cls(height=HEIGHT, width=WIDTH, seq=seq, time_base=0, encoding="evt3", is_bigendian=False,
                          events=payload)
            payload_bytes += len(payload)
            reference = int(chunk.t[0])  # EventPacket: header stamp = time of the first event
        else:
            message = cls(height=HEIGHT, width=WIDTH, seq=seq, **packed_fields(chunk, kind="array"))
            payload_bytes += 13 * len(chunk)
            reference = int(chunk.t[-1])  # PackedEvents: header stamp = time of the last event
        message.header.frame_id = "event_camera"
        messages.append((lo + packet_us, reference, message, len(chunk)))
        events_total += len(chunk)
        t_last = int(chunk.t[-1])
    return {"messages": messages, "payload_bytes": payload_bytes, "events": events_total, "t_last_us": t_last}


def warm_event_kernels() -> None:
    """Load (or compile) the numba decode and accumulate kernels before the clock starts."""
    from madm_ros.events.codecs import PacketDecoder, encode_evt3
    from madm_ros.events.edge_frames import EdgeFrameAccumulator, EdgeFrameConfig

    events = edge_scene(20_000, 120_000, 0)
    PacketDecoder("evt3", WIDTH, HEIGHT).decode(encode_evt3(events))
    EdgeFrameAccumulator(EdgeFrameConfig(width=WIDTH, height=HEIGHT)).push(events)
