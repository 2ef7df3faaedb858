"""The event node's runs: the synthetic stream published in real time at a given Mev/s, beside the bare event path.

Counted: events published vs decoded by the node (``events_decode_events``), 50 ms edge frames
expected vs produced vs masks received, hand-over drops; latency slice end → mask received
(frames are stamped with the end of their slice on the same realtime clock). A run keeps up with
< :data:`DROP_LIMIT` frame drops; strictly, also with < :data:`DROP_LIMIT` events lost and a
latency p99 ≤ :data:`LATENCY_LIMIT_MS`.
"""

from __future__ import annotations

import gc
import time
from collections import defaultdict
from typing import Any

from bench.machine import machine_busy_s, own_cpu_s
from bench.node_bench import HEIGHT, WIDTH
from bench.node_bench.cpu import others_cores, thread_cpu, thread_cpu_delta
from bench.node_bench.event_stream import event_messages, warm_event_kernels
from bench.node_bench.node_process import NodeProcess
from bench.node_bench.stats import summary, timed_median_ms
from bench.node_bench.transport import PUBLISHER_GROUPS, BenchRos, drain, set_stamp

WINDOW_US = 50_000  # the node's default accumulation_time_ms
DROP_LIMIT = 0.05
LATENCY_LIMIT_MS = 250.0  # five 50 ms windows: a node that keeps up answers within a window plus inference


def bare_events(model: str, threads: int, rate_mev_s: float, packet_us: int, runs: int) -> dict[str, Any]:
    """One core, no ROS transport: decode, accumulate, (de)serialize per Mev; segment of one 640×480 edge frame."""
    from rclpy.serialization import deserialize_message, serialize_message

    from madm_ros.events.codecs import PacketDecoder
    from madm_ros.events.edge_frames import EdgeFrameAccumulator, EdgeFrameConfig
    from madm_ros.events.types import Events
    from madm_ros.segmenter import Segmenter

    seconds = 0.5
    built = event_messages("event_packet", rate_mev_s, seconds, packet_us, 1)
    messages = [m for _, _, m, _ in built["messages"]]
    mev = built["events"] / 1e6
    warm_event_kernels()

    def decode_all() -> list[Any]:
        decoder = PacketDecoder("evt3", WIDTH, HEIGHT)
        return [decoder.decode(m.events, seq=m.seq) for m in messages]

    decoded = decode_all()
    joined = Events.concatenate(decoded)

    def accumulate() -> None:
        accumulator = EdgeFrameAccumulator(EdgeFrameConfig(width=WIDTH, height=HEIGHT))
        for part in decoded:
            accumulator.push(part)

    raws = [serialize_message(m) for m in messages]
    cls = type(messages[0])
    per_mev = {
        "decode_evt3": timed_median_ms(decode_all, 3, 1)["p50"] / mev,
        "accumulate": timed_median_ms(accumulate, 3, 1)["p50"] / mev,
        "serialize": timed_median_ms(lambda: [serialize_message(m) for m in messages], 3, 1)["p50"] / mev,
        "deserialize": timed_median_ms(lambda: [deserialize_message(r, cls) for r in raws], 3, 1)["p50"] / mev,
    }
    segmenter = Segmenter.load(model, "onnxruntime", threads=threads)
    frame = EdgeFrameAccumulator(EdgeFrameConfig(width=WIDTH, height=HEIGHT)).push(joined)[0].image
    split: dict[str, list[float]] = defaultdict(list)
    for _ in range(3):
        segmenter.segment(frame, "mono8")
    for _ in range(runs):
        result = segmenter.segment(frame, "mono8")
        for key, value in result.timings_ms.items():
            split[key].append(value)
        split["total"].append(sum(result.timings_ms.values()))
    return {
        "stream": f"{rate_mev_s:g} Mev/s edge scene, {packet_us / 1000:g} ms evt3 packets, {built['events']} events",
        "payload_bytes_per_event": round(built["payload_bytes"] / max(built["events"], 1), 3),
        "ms_per_mev_one_core": {k: round(v, 3) for k, v in per_mev.items()},
        "mev_s_one_core": {k: round(1000 / v, 1) for k, v in per_mev.items()},
        "decode_plus_accumulate_mev_s_one_core": round(1000 / (per_mev["decode_evt3"] + per_mev["accumulate"]), 1),
        "network_input_hw": [segmenter.spec.height, segmenter.spec.width],
        "segment_ms": {k: summary(v) for k, v in split.items()},
    }


def event_run(model: str, threads: int, message_type: str, rate_mev_s: float, seconds: float, packet_us: int,
              input_qos: str = "", executor: str = "shipped") -> dict[str, Any]:
    """A synthetic stream at ``rate_mev_s`` published in real time into the event node."""
    from rclpy.qos import QoSProfile

    from madm_ros.nodes.event_segmentation import message_class

    built_start = time.perf_counter()
    built = event_messages(message_type, rate_mev_s, seconds, packet_us, 0)
    build_s = time.perf_counter() - built_start
    node = NodeProcess("events", model, threads, message_type, input_qos, executor)
    try:
        ready = node.expect("ready")
        ros = BenchRos(f"node_latency_events_{message_type}", message_class(message_type), "events",
                       f"{ready['node']}/raw_segmentation_mask", QoSProfile(depth=1000))
        ros.wait_matched()
        node.ask("mark", "marked")
        gc.collect()
        cpu0, busy0, own0 = thread_cpu(), machine_busy_s(), own_cpu_s(children=False)
        publish_ms, lag_ms = [], []
        base_ns = time.time_ns()
        start = time.perf_counter()
        for due_us, reference_us, message, _ in built["messages"]:
            due = start + due_us / 1e6
            if (wait := due - time.perf_counter()) > 0:
                time.sleep(wait)
            now = time.perf_counter()
            lag_ms.append((now - due) * 1e3)
            set_stamp(message.header, base_ns + reference_us * 1000)
            ros.publisher.publish(message)
            publish_ms.append((time.perf_counter() - now) * 1e3)
        sent_s = time.perf_counter() - start
        last_publish_ns = time.time_ns()
        drained = drain(node, 30.0)
        wall = time.perf_counter() - start
        bench_cores = thread_cpu_delta(cpu0, wall, PUBLISHER_GROUPS)
        report = node.ask("report", "report")
        busy = machine_busy_s() - busy0
        ros.close()
    finally:
        node.close()
    del built["messages"]
    masks = list(ros.masks)
    latency = summary((recv - stamp) / 1e6 for recv, stamp in masks)
    delta = report["counters_delta"]
    expected = built["t_last_us"] // WINDOW_US
    received_events = delta.get("events_decode_events", 0)
    arrivals = sorted(recv for recv, _ in masks)
    fps = (len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) / 1e9) if len(arrivals) > 2 else None
    drop = 1 - len(masks) / expected if expected else None
    lost = 1 - received_events / built["events"] if built["events"] else None
    behind_s = max(0.0, (report["last_callback_ns"] - last_publish_ns) / 1e9)
    sent = len(publish_ms)
    keeps_up = drop is not None and drop < DROP_LIMIT
    return {
        "message_type": message_type, "rate_mev_s": rate_mev_s, "executor": ready["executor"], "input_qos": ready["input_qos"],
        "seconds": round(sent_s, 3),
        "build_s": round(build_s, 1), "packet_ms": packet_us / 1000, "messages_published": sent,
        "events_published": built["events"], "payload_mb_s": round(built["payload_bytes"] / 1e6 / sent_s, 1),
        "payload_bytes_per_event": round(built["payload_bytes"] / max(built["events"], 1), 3),
        "achieved_input_mev_s": round(built["events"] / 1e6 / sent_s, 2),
        "messages_received": delta.get("events_messages"), "events_decoded": received_events,
        "events_lost_fraction": None if lost is None else round(lost, 4),
        "frames_expected": expected, "edge_frames": delta.get("frames_in"),
        "handover_dropped": delta.get("total_dropped_frames"), "masks_received": len(masks),
        "frame_drop_fraction": None if drop is None else round(drop, 4),
        "mask_fps": None if fps is None else round(fps, 2),
        "latency_slice_end_to_mask_ms": latency,
        "node_behind_at_end_s": round(behind_s, 3), "drain_s": round(drained, 2),
        "publisher_lag_ms": summary(lag_ms), "publish_call_ms": summary(publish_ms),
        "node_timers_ms": report["timers_ms"],
        "node_process_cores": report["process_cores"], "node_thread_cores": report["thread_cores"],
        "bench_thread_cores": bench_cores,
        "machine_busy_cores": round(busy / wall, 3),
        "other_processes_cores": others_cores(busy, own0, report, wall),
        "problems": {k: v for k, v in delta.items() if k.startswith(("problem_", "events_decode_", "events_accumulate_"))
                     and v and k not in ("events_decode_events", "events_decode_packets", "events_accumulate_events",
                                         "events_accumulate_frames")},
        "keeps_up": keeps_up,
        "keeps_up_strict": keeps_up and lost is not None and lost < DROP_LIMIT
        and latency["p99"] is not None and latency["p99"] <= LATENCY_LIMIT_MS,
    }
