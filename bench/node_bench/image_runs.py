"""The image node's runs: 640×480 ``16UC1`` depth frames at a fixed rate or closed loop, beside the bare pipeline.

Latency = header stamp (set just before ``publish``) → mask received in the bench process. The
bare pipeline is ``Segmenter.segment`` and ``backend.infer`` on the same frame, model and threads,
with the message conversions and (de)serializations the node adds, timed in the bench process.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import numpy as np

from bench.machine import machine_busy_s, own_cpu_s
from bench.node_bench import HEIGHT, WIDTH
from bench.node_bench.cpu import others_cores, thread_cpu, thread_cpu_delta
from bench.node_bench.node_process import NodeProcess
from bench.node_bench.stats import difference, summary, timed_median_ms
from bench.node_bench.transport import PUBLISHER_GROUPS, BenchRos, drain, set_stamp


def depth_frame() -> np.ndarray:
    """A 640×480 depth image in mm: a floor ramp, two boxes, noise and a few holes (zeros)."""
    rng = np.random.default_rng(0)
    rows = np.linspace(12_000, 800, HEIGHT, dtype=np.float32)[:, None]
    depth = np.repeat(rows, WIDTH, axis=1)
    depth[150:330, 100:260] = 2500
    depth[200:420, 380:560] = 4200
    depth += rng.normal(0, 15, depth.shape).astype(np.float32)
    depth[rng.random(depth.shape) < 0.02] = 0
    return np.clip(depth, 0, 65535).astype(np.uint16)


def bare_image(model: str, threads: int, runs: int) -> dict[str, Any]:
    """Segmenter.segment split and backend.infer on the 640×480 depth frame, plus the message costs the node adds."""
    from rclpy.serialization import deserialize_message, serialize_message
    from sensor_msgs.msg import Image
    from std_msgs.msg import Header

    from madm_ros.image_conversion import array_to_image_fields
    from madm_ros.nodes.messages import array_to_image_msg, image_msg_to_array
    from madm_ros.preprocessing import modality_image, to_network_input
    from madm_ros.segmenter import Segmenter

    segmenter = Segmenter.load(model, "onnxruntime", threads=threads)
    frame = depth_frame()
    for _ in range(3):
        segmenter.segment(frame, "16UC1")
    back_to_back = segment_ms(segmenter, frame, runs)
    paced = segment_ms(segmenter, frame, max(10, runs // 2), rate_hz=PACED_HZ)
    tensor = to_network_input(modality_image(frame, "16UC1", segmenter.spec), segmenter.spec)[None]
    message = Image(**array_to_image_fields(frame, "16UC1"))
    labels = segmenter.segment(frame, "16UC1").labels
    mask = array_to_image_msg(labels, "mono8", Header())
    raw_in, raw_mask = serialize_message(message), serialize_message(mask)
    return {
        "network_input_hw": [segmenter.spec.height, segmenter.spec.width],
        "segment_ms": back_to_back,
        PACED_KEY: paced,
        "infer_ms": timed_median_ms(lambda: segmenter.backend.infer(tensor), runs),
        "image_msg_to_array_ms": timed_median_ms(lambda: image_msg_to_array(message), runs),
        "array_to_mask_msg_ms": timed_median_ms(lambda: array_to_image_msg(labels, "mono8", Header()), runs),
        "serialize_depth_ms": timed_median_ms(lambda: serialize_message(message), runs),
        "deserialize_depth_ms": timed_median_ms(lambda: deserialize_message(raw_in, Image), runs),
        "serialize_mask_ms": timed_median_ms(lambda: serialize_message(mask), runs),
        "deserialize_mask_ms": timed_median_ms(lambda: deserialize_message(raw_mask, Image), runs),
    }


PACED_HZ = 10
"""The rate of the paced bare pipeline: the rate of the run the node overhead is read from."""
PACED_KEY = f"segment_paced_{PACED_HZ}hz_ms"  # the bare-depth result of the run paced at PACED_HZ


def segment_ms(segmenter: Any, frame: np.ndarray, runs: int, rate_hz: float | None = None) -> dict[str, Any]:
    """:func:`summary` of ``Segmenter.segment``'s steps and total over ``runs`` calls on ``frame``.

    Back to back when ``rate_hz`` is None; else once per period at ``rate_hz``, idle in between,
    as the node runs it at that rate. Why both: at 10 Hz the CPU idles 95 % of each period, and
    the pipeline comes back to cold caches and sleeping cores; on the 2-core VM of 2026-12 that
    alone doubled ``Segmenter.segment`` (2.4 → 4.5 ms) with no node in sight. Subtracting the paced
    figure instead of the back-to-back one leaves what the node itself adds
    (``node_overhead_vs_paced_bare_ms``).
    """
    split: dict[str, list[float]] = defaultdict(list)
    for _ in range(runs):
        started = time.perf_counter()
        result = segmenter.segment(frame, "16UC1")
        for key, value in result.timings_ms.items():
            split[key].append(value)
        split["total"].append(sum(result.timings_ms.values()))
        if rate_hz is not None:
            time.sleep(max(0.0, 1.0 / rate_hz - (time.perf_counter() - started)))
    return {k: summary(v) for k, v in split.items()}


def image_run(model: str, threads: int, rate: str, seconds: float, warmup: int, input_qos: str = "",
              executor: str = "shipped") -> dict[str, Any]:
    """Depth frames into the image node at ``rate`` Hz (``max``: closed loop); latency publish → mask."""
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image

    from madm_ros.image_conversion import array_to_image_fields

    node = NodeProcess("depth", model, threads, input_qos=input_qos, executor=executor)
    try:
        ready = node.expect("ready")
        ros = BenchRos("node_latency_image", Image, "image", f"{ready['node']}/raw_segmentation_mask", QoSProfile(depth=5))
        message = Image(**array_to_image_fields(depth_frame(), "16UC1"))
        message.header.frame_id = "depth_camera"
        ros.wait_matched()
        for _ in range(warmup):  # closed loop, unmeasured: first frames allocate buffers and DDS segments
            now = time.time_ns()
            set_stamp(message.header, now)
            ros.publisher.publish(message)
            if not ros.wait_for_mask(now, 2.0):
                break
        time.sleep(0.2)
        node.ask("mark", "marked")
        with ros.arrived:
            ros.masks.clear()
        cpu0, busy0, own0 = thread_cpu(), machine_busy_s(), own_cpu_s(children=False)
        stamps, publish_ms, lost = [], [], 0
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < seconds:
            if rate != "max":
                due = start + i / float(rate)
                if (wait := due - time.perf_counter()) > 0:
                    time.sleep(wait)
            now = time.time_ns()
            set_stamp(message.header, now)
            t0 = time.perf_counter()
            ros.publisher.publish(message)
            publish_ms.append((time.perf_counter() - t0) * 1e3)
            stamps.append(now)
            if rate == "max" and not ros.wait_for_mask(now, 1.0):
                lost += 1
            i += 1
        sent_s = time.perf_counter() - start
        drained = drain(node, 20.0)
        wall = time.perf_counter() - start
        publisher_cores = thread_cpu_delta(cpu0, wall, PUBLISHER_GROUPS)
        report = node.ask("report", "report")
        busy = machine_busy_s() - busy0
        ros.close()
    finally:
        node.close()
    masks = list(ros.masks)
    latency = [(recv - stamp) / 1e6 for recv, stamp in masks]
    arrivals = sorted(recv for recv, _ in masks)
    fps = (len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) / 1e9) if len(arrivals) > 2 else None
    timers = report["timers_ms"]
    return {
        "rate_hz": rate, "input_qos": ready["input_qos"], "executor": ready["executor"], "seconds": round(sent_s, 3),
        "frames_published": len(stamps),
        "frames_in_node": report["counters_delta"].get("frames_in"), "masks_received": len(masks),
        "handover_dropped": report["counters_delta"].get("total_dropped_frames"),
        "lost_in_closed_loop": lost if rate == "max" else None,
        "input_fps": round(len(stamps) / sent_s, 2), "output_fps": None if fps is None else round(fps, 2),
        "latency_ms": summary(latency),
        "publish_call_ms": summary(publish_ms),
        "node_timers_ms": timers,
        "mask_transport_ms_p50": difference(summary(latency)["p50"], timers.get("stamp_to_mask_published", {}).get("p50")),
        "node_process_cores": report["process_cores"], "node_thread_cores": report["thread_cores"],
        "bench_thread_cores": publisher_cores,
        "machine_busy_cores": round(busy / wall, 3), "other_processes_cores": others_cores(busy, own0, report, wall),
        "drain_s": round(drained, 2),
    }


def add_overheads(run: dict[str, Any], bare_depth: dict[str, Any]) -> None:
    """The node overheads of one image run against the bare pipeline of this run."""
    run["node_overhead_ms"] = difference(run["latency_ms"]["p50"], bare_depth["segment_ms"]["total"]["p50"])
    run["node_overhead_vs_inference_ms"] = difference(run["latency_ms"]["p50"], bare_depth["infer_ms"]["p50"])
    run["node_overhead_vs_in_node_segment_ms"] = difference(
        run["latency_ms"]["p50"], run["node_timers_ms"].get("segment_total", {}).get("p50"))
    paced = bare_depth.get(PACED_KEY)
    if paced and run["rate_hz"] == str(PACED_HZ):
        run["node_overhead_vs_paced_bare_ms"] = difference(run["latency_ms"]["p50"], paced["total"]["p50"])
