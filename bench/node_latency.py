"""Latency and throughput of the two ROS 2 segmentation nodes through real DDS, beside the bare backend, in one run.

What runs where (two processes, so that serialization and the loopback transport are paid as in a
deployment; the pieces live in ``bench/node_bench/``):

- **node process** (``python -m bench.node_bench.node_process``): one ``ImageSegmentationNode`` or
  ``EventSegmentationNode`` with the production parameters, its own default QoS (input
  ``SENSOR_DATA``: best effort) and spun by ``madm_ros.nodes.spin.spin_nodes`` itself (what every
  node executable and ``python -m madm_ros.launch`` run; its executor class is read back from the
  node and recorded), timed through the node's public hook ``SegmentationNode.timing`` (stages
  ``frame_source`` = decode + accumulate of one message, ``callback``, ``stamp_to_handover``,
  ``handover_wait``, ``process``, ``segment_<step>`` and their sum ``segment_total``,
  ``stamp_to_mask_published``) and per-thread CPU counters; a fresh process per run;
- **bench process** (this script): the publisher (messages built before the clock starts, so the
  loop only stamps and publishes, like a C++ driver would) and the recorder of
  ``~/raw_segmentation_mask`` (the only output subscribed: the node skips colour mask and overlay
  when nobody reads them).

Both processes use the Fast DDS profile that ``scripts/in-env`` sets
(``FASTDDS_DEFAULT_PROFILES_FILE``, ``config/fastdds_loopback.xml``: 8 MiB shared-memory segment,
UDP on the loopback only); the file in effect (or "unset") is recorded under ``dds``.

Image node: 640×480 depth ``16UC1`` frames at fixed rates and closed loop (``max``: the next frame
is published when the previous mask arrived, i.e. as fast as the node keeps up); latency = header
stamp (set just before ``publish``) → mask received. Bare backend in the same run, before the
node runs: ``Segmenter.segment`` on the same frame (preprocess / inference / postprocess) and
``backend.infer`` on its tensor, same model and ONNX Runtime threads.

    node_overhead_ms = median(publish → mask received, 10 Hz run) − median(bare Segmenter.segment)

that is everything the node adds to the offline pipeline: serialization, DDS both ways,
deserialization, executor, message ↔ array conversion, the hand-over to the inference thread and
building the output message. ``…_vs_in_node_segment_ms`` subtracts the node's own
``Segmenter.segment`` time in the same run instead (the pipeline runs slower in the node, from cold
caches at 10 Hz, than in the bare loop). ``…_vs_paced_bare_ms`` subtracts the bare
``Segmenter.segment`` run once per 100 ms in the bench process, idle in between, as the node runs it
at 10 Hz: the back-to-back loop keeps caches and cores warm, which a 10 Hz pipeline never has, with
or without a node; so this one is what the node itself adds, and the headline keeps the stricter
definition the target was set with.

Event node: a synthetic 640×480 stream (six edges sweeping across the sensor plus 10 % noise, read
out row by row as a sensor does, so EVT 3.0 vector words occur) at each ``--rates`` Mev/s, sent in
real time as ``event_camera_msgs/EventPacket`` evt3 packets of ``--packet-ms`` (and as
``madm_ros/PackedEvents`` with ``--packed-rates``). Counted: events published vs decoded by the
node (``events_decode_events``), 50 ms edge frames expected vs produced vs masks received, the
hand-over drops (``total_dropped_frames``), latency slice end → mask received (frames are stamped
with the end of their slice on the same realtime clock). ``event_node_max_mev_s`` = the highest
rate up to which every tested rate had < 5 % frame drops (1 − masks received / frames expected);
``…_strict`` also needs < 5 % events lost and a latency p99 ≤ 250 ms (five windows). In the node,
decode and accumulation are timed together (the hook's ``frame_source``); their split on one core
is under ``bare.events``. The publish → callback delay of event messages is not measured (the
hook starts at the callback).

Comparison variants, short (``--variant-image-rates``, ``--variant-rates`` evt3), same run, under
``variants`` and side by side with the shipped runs in ``variant_comparison``:
``multi_threaded_executor`` (``spin_nodes`` with rclpy's ``MultiThreadedExecutor``, the old
default, swapped in for its ``SingleThreadedExecutor`` in the node process only) and
``no_fastdds_profile`` (``FASTDDS_DEFAULT_PROFILES_FILE`` unset for the node and the publisher: Fast
DDS's built-in transports, 512 KiB shared-memory segment; run by this script in a child process,
since Fast DDS reads the profile once per process; overheads against this run's bare pipeline).

The machine is checked for other load (``bench.machine``): CPU time used by processes other than
this benchmark during the measurement is recorded under ``machine.load`` and ``contended`` is set
above 0.1 cores (timings from a busy machine are inflated). Loopback discovery only and a private
ROS domain (``--domain-id``, default 73; a ``ROS_DOMAIN_ID`` other than ``scripts/in-env``'s shared
default 42 is kept).

    scripts/in-env python bench/node_latency.py --json bench/results/node_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.machine import LoadWatch, machine_info
from bench.node_bench import HEIGHT, WIDTH
from bench.node_bench.dds import dds_info
from bench.node_bench.event_runs import DROP_LIMIT, LATENCY_LIMIT_MS, WINDOW_US, bare_events, event_run
from bench.node_bench.image_runs import add_overheads, bare_image, image_run
from bench.node_bench.models import resolve_models
from bench.node_bench.summary import labelled_runs, summarise
from bench.node_bench.tables import print_tables

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DOMAIN_ID = 73
SHARED_DOMAIN_ID = "42"  # scripts/in-env's default, shared with the demo


def parse_rates(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def image_rates(text: str) -> list[str]:
    return [rate.strip() for rate in text.split(",") if rate.strip()]


def measure(args: argparse.Namespace, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Bare pipelines (not in a variant child), the shipped image and event runs, the executor variant (rclpy here)."""
    import rclpy

    packet_us = round(args.packet_ms * 1000)
    result: dict[str, Any] = {}

    def image(rate: str, executor: str = "shipped") -> dict[str, Any]:
        run = image_run(models["depth"]["path"], args.threads, rate, args.seconds, args.warmup_frames, args.input_qos, executor)
        print(f"image {rate} ({run['input_qos']}, {run['executor']}): {run['masks_received']}/{run['frames_published']} "
              f"masks, latency p50 {run['latency_ms']['p50']} ms, {run['output_fps']} fps", file=sys.stderr)
        return run

    def events(message_type: str, rate: float, executor: str = "shipped") -> dict[str, Any]:
        run = event_run(models["events"]["path"], args.threads, message_type, rate, args.seconds, packet_us, args.input_qos,
                        executor)
        print(f"{message_type} {rate:g} Mev/s ({run['executor']}): decoded {run['events_decoded']}/{run['events_published']}, "
              f"masks {run['masks_received']}/{run['frames_expected']}", file=sys.stderr)
        return run

    rclpy.init()
    try:
        if not args.variant_child:
            result["bare"] = {"depth": bare_image(models["depth"]["path"], args.threads, args.bare_runs),
                              "events": bare_events(models["events"]["path"], args.threads,
                                                    max(parse_rates(args.rates) or [1]), packet_us, args.bare_runs)}
        result["image_runs"] = [image(rate) for rate in image_rates(args.image_rates)]
        result["event_runs"] = [events(message_type, rate) for message_type, rates in
                                (("event_packet", args.rates), ("packed", args.packed_rates)) for rate in parse_rates(rates)]
        if args.multi_threaded_variant:
            variant = {"what": "spin_nodes with rclpy's MultiThreadedExecutor (the old default) swapped in for its "
                               "SingleThreadedExecutor in the node process; everything else as shipped",
                       "image_runs": [image(rate, "multi") for rate in image_rates(args.variant_image_rates)],
                       "event_runs": [events("event_packet", rate, "multi") for rate in parse_rates(args.variant_rates)]}
            used = {r["executor"] for r in variant["image_runs"] + variant["event_runs"]}
            if used - {"MultiThreadedExecutor"}:
                raise SystemExit(f"node_latency: the multi-threaded variant ran on {used}: spin_nodes no longer builds a "
                                 "SingleThreadedExecutor, update bench/node_bench/node_process.py")
            result["variants"] = {"multi_threaded_executor": variant}
    finally:
        rclpy.shutdown()
    return result


def run_no_profile_variant(args: argparse.Namespace, models: dict[str, dict[str, Any]], folder: Path) -> dict[str, Any]:
    """The variant rates again in a child process (bench and its node processes) without FASTDDS_DEFAULT_PROFILES_FILE."""
    out = folder / "variant.json"
    command = [sys.executable, str(Path(__file__).resolve()), "--variant-child", "--json", str(out),
               "--depth-model", models["depth"]["path"], "--events-model", models["events"]["path"],
               "--threads", str(args.threads), "--seconds", str(args.seconds), "--image-rates", args.variant_image_rates,
               "--rates", args.variant_rates, "--packed-rates", "", "--packet-ms", str(args.packet_ms),
               "--warmup-frames", str(args.warmup_frames), "--domain-id", os.environ["ROS_DOMAIN_ID"],
               "--no-multi-threaded-variant", "--no-builtin-transports-variant"]
    if args.input_qos:
        command += ["--input-qos", args.input_qos]
    env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    subprocess.run(command, check=True, env=env)
    child = json.loads(out.read_text())
    return {"what": "FASTDDS_DEFAULT_PROFILES_FILE unset for the node and the publisher (Fast DDS built-in transports); "
                    "spin_nodes' executor and the node's QoS as shipped; overheads against this run's bare pipeline",
            "dds": child["dds"], "image_runs": child["image_runs"], "event_runs": child["event_runs"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=REPO / "bench/results/node_latency.json",
                        help="result file (default bench/results/node_latency.json)")
    parser.add_argument("--model-dir", help="folder with depth_student.onnx and events_student.onnx")
    parser.add_argument("--depth-model", help="depth model (default: --model-dir, else the built-in default)")
    parser.add_argument("--events-model", help="event model (default: --model-dir, else the built-in default)")
    parser.add_argument("--fallback-channels", type=int, default=16, help="random student width when no model exists")
    parser.add_argument("--fallback-size", default="64x128", help="random student input HxW when no model exists")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime CPU threads (node parameter threads)")
    parser.add_argument("--seconds", type=float, default=4.0, help="publishing time per run")
    parser.add_argument("--image-rates", default="10,30,max", help="depth frame rates in Hz; max = closed loop")
    parser.add_argument("--rates", default="1,10,25,50", help="event rates in Mev/s (EventPacket evt3)")
    parser.add_argument("--packed-rates", default="1,10,25,50", help="event rates in Mev/s as PackedEvents ('' = none)")
    parser.add_argument("--packet-ms", type=float, default=1.0, help="event message length in ms (default 1)")
    parser.add_argument("--input-qos", default="",
                        help="input_qos of both nodes (default: the node's own, SENSOR_DATA: best effort)")
    parser.add_argument("--multi-threaded-variant", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the variant rates on spin_nodes with rclpy's MultiThreadedExecutor (the old default) "
                             "in place of its SingleThreadedExecutor (default: on)")
    parser.add_argument("--builtin-transports-variant", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the variant rates with FASTDDS_DEFAULT_PROFILES_FILE unset (Fast DDS built-in "
                             "transports) in a child process; skipped when it is unset already (default: on)")
    parser.add_argument("--variant-image-rates", default="10", help="depth frame rates of the variants (Hz; max = closed loop)")
    parser.add_argument("--variant-rates", default="1,50", help="EventPacket evt3 rates of the variants (Mev/s)")
    parser.add_argument("--bare-runs", type=int, default=50, help="timed runs of the bare pipeline")
    parser.add_argument("--warmup-frames", type=int, default=5, help="unmeasured closed-loop frames before each image run")
    parser.add_argument("--domain-id", type=int, help=f"ROS_DOMAIN_ID (default {DEFAULT_DOMAIN_ID}, or ROS_DOMAIN_ID "
                        f"when set to anything but {SHARED_DOMAIN_ID})")
    parser.add_argument("--variant-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    environment_domain = os.environ.get("ROS_DOMAIN_ID", "")
    domain = args.domain_id if args.domain_id is not None else (
        int(environment_domain) if environment_domain.isdigit() and environment_domain != SHARED_DOMAIN_ID else DEFAULT_DOMAIN_ID)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    watch = LoadWatch()
    with tempfile.TemporaryDirectory() as temp:
        models = resolve_models(args, Path(temp))
        if args.variant_child:  # runs only: the parent keeps the bare pipeline, the machine, the load and the summary
            args.json.write_text(json.dumps({"dds": dds_info()} | measure(args, models)) + "\n")
            return 0
        result: dict[str, Any] = {"machine": None, "dds": dds_info()}  # machine: filled in at the end, with the load
        result["models"] = models
        print("models:", json.dumps(models), file=sys.stderr)
        result.update(measure(args, models))
        if args.builtin_transports_variant:
            if result["dds"].get("fastdds_profiles_file"):
                result.setdefault("variants", {})["no_fastdds_profile"] = run_no_profile_variant(args, models, Path(temp))
            else:
                print("node_latency: FASTDDS_DEFAULT_PROFILES_FILE is unset, so the runs above already are the "
                      "no-profile variant", file=sys.stderr)
    for _, run in labelled_runs(result, "image_runs"):
        add_overheads(run, result["bare"]["depth"])
    summarise(result)
    result["machine"] = machine_info(
        ("onnxruntime", "numba"), watch, onnxruntime_threads=args.threads,
        rmw_implementation=os.environ.get("RMW_IMPLEMENTATION", "(default)"), ros_domain_id=os.environ.get("ROS_DOMAIN_ID"),
        ros_automatic_discovery_range=os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE"))

    result["node_overhead_definition"] = (
        "median latency of the image node (header stamp set just before publish in the bench process -> "
        "~/raw_segmentation_mask received there; 640x480 16UC1 depth; the 10 Hz run, as shipped: spin_nodes' executor, "
        "the node's input_qos, scripts/in-env's Fast DDS profile) minus the median of the bare Segmenter.segment "
        "(preprocess + inference + postprocess) on the same frame, model and threads in the same run; "
        "node_overhead_vs_inference_ms subtracts the bare backend.infer median instead, node_overhead_vs_paced_bare_ms "
        "the median of the bare Segmenter.segment run once per 100 ms (idle in between, as at 10 Hz)")
    result["event_node_max_mev_s_definition"] = (
        f"highest tested EventPacket evt3 input rate (shipped runs) up to which every tested rate had < {DROP_LIMIT:.0%} "
        f"frame drops (1 - masks received / 50 ms frames expected from the published stream); _strict also needs "
        f"< {DROP_LIMIT:.0%} of the published events missing at the node and a slice end -> mask latency p99 <= "
        f"{LATENCY_LIMIT_MS:g} ms; null when no tested rate qualifies")
    result["contended"] = result["machine"]["load"]["contended"]  # the headline flag; details under machine.load
    result["settings"] = {"seconds": args.seconds, "image_rates": args.image_rates, "rates_mev_s": args.rates,
                          "packed_rates_mev_s": args.packed_rates, "packet_ms": args.packet_ms, "threads": args.threads,
                          "input_qos": args.input_qos or "node default (SENSOR_DATA: best effort)",
                          "executor": "madm_ros.nodes.spin.spin_nodes (class recorded per run)",
                          "variant_image_rates": args.variant_image_rates, "variant_rates_mev_s": args.variant_rates,
                          "publisher_qos": "reliable, volatile (image depth 5, events depth 1000)",
                          "sensor": f"{WIDTH}x{HEIGHT}", "window_ms": WINDOW_US / 1000,
                          "outputs_subscribed": ["~/raw_segmentation_mask"]}
    result["method"] = __doc__.split("\n\n", 1)[1].split("    scripts/in-env")[0].strip()
    print_tables(result)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1) + "\n")
    print("->", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
