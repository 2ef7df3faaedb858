"""Latency and throughput of the two ROS 2 segmentation nodes through real DDS, beside the bare backend, in one run.

What runs where (two processes, so that serialization and the loopback transport are paid as in a
deployment):

- **node process** (this script with ``--serve-node``): one ``ImageSegmentationNode`` or
  ``EventSegmentationNode`` with the production parameters, its own default QoS (input
  ``SENSOR_DATA``: best effort) and spun by ``madm_ros.nodes.spin.spin_nodes`` itself (what every
  node executable and ``python -m madm_ros.launch`` run; its executor class is read back from the
  node and recorded), wrapped with timers (callback, decode, accumulate, hand-over wait,
  ``Segmenter.segment`` split, publishing) and per-thread CPU counters; a fresh process per run;
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
caches at 10 Hz, than in the bare loop).

Event node: a synthetic 640×480 stream (six edges sweeping across the sensor plus 10 % noise, read
out row by row as a sensor does, so EVT 3.0 vector words occur) at each ``--rates`` Mev/s, sent in
real time as ``event_camera_msgs/EventPacket`` evt3 packets of ``--packet-ms`` (and as
``madm_ros/PackedEvents`` with ``--packed-rates``). Counted: events published vs decoded by the
node (``events_decode_events``), 50 ms edge frames expected vs produced vs masks received, the
hand-over drops (``total_dropped_frames``), latency slice end → mask received (frames are stamped
with the end of their slice on the same realtime clock). ``event_node_max_mev_s`` = the highest
rate up to which every tested rate had < 5 % frame drops (1 − masks received / frames expected);
``…_strict`` also needs < 5 % events lost and a latency p99 ≤ 250 ms (five windows).

Comparison variants, short (``--variant-image-rates``, ``--variant-rates`` evt3), same run, under
``variants`` and side by side with the shipped runs in ``variant_comparison``:
``multi_threaded_executor`` (``spin_nodes`` with rclpy's ``MultiThreadedExecutor``, the old
default, swapped in for its ``SingleThreadedExecutor`` in the node process only) and
``no_fastdds_profile`` (``FASTDDS_DEFAULT_PROFILES_FILE`` unset for the node and the publisher: Fast
DDS's built-in transports, 512 KiB shared-memory segment; run by this script in a child process,
since Fast DDS reads the profile once per process; overheads against this run's bare pipeline).

The machine is checked for other load: CPU time used by processes other than this benchmark
during the measurement is recorded and ``contended`` is set above 0.1 cores (timings from a busy
machine are inflated). Loopback discovery only and a private ROS domain (``--domain-id``, default
73; a ``ROS_DOMAIN_ID`` other than ``scripts/in-env``'s shared default 42 is kept).

    scripts/in-env python bench/node_latency.py --json bench/results/node_latency.json
"""

from __future__ import annotations

import argparse
import array
import contextlib
import gc
import json
import math
import os
import platform
import queue
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.ros_messages import split_ns, stamp_to_ns

REPO = Path(__file__).resolve().parents[1]
WIDTH, HEIGHT = 640, 480
WINDOW_US = 50_000  # the node's default accumulation_time_ms
DEFAULT_DOMAIN_ID = 73
SHARED_DOMAIN_ID = "42"  # scripts/in-env's default, shared with the demo
PREFIX = "NODE_LATENCY "  # protocol lines of the node process on its stdout
HEAVY = re.compile(r"madm_train|pytest")
DROP_LIMIT = 0.05
LATENCY_LIMIT_MS = 250.0  # five 50 ms windows: a node that keeps up answers within a window plus inference


# ---------------------------------------------------------------------------------------------- helpers


def summary(values: Any, digits: int = 3) -> dict[str, Any]:
    """Count, p50, p99, mean, max and sum of ``values`` (``None`` where empty)."""
    v = np.asarray(list(values), dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "p50": None, "p99": None, "mean": None, "max": None, "sum": 0.0}
    p50, p99 = np.percentile(v, (50, 99))
    return {"n": int(v.size), "p50": round(float(p50), digits), "p99": round(float(p99), digits),
            "mean": round(float(v.mean()), digits), "max": round(float(v.max()), digits), "sum": round(float(v.sum()), digits)}


def timed_median_ms(fn: Any, runs: int, warmup: int = 3) -> dict[str, Any]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return summary(times)


def thread_cpu() -> dict[int, tuple[str, float]]:
    """Native thread id → (label, CPU seconds) of every thread of this process (Linux /proc)."""
    ticks = os.sysconf("SC_CLK_TCK")
    names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for entry in os.listdir("/proc/self/task"):
        try:
            stat = Path(f"/proc/self/task/{entry}/stat").read_text()
            comm = Path(f"/proc/self/task/{entry}/comm").read_text().strip()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        tid = int(entry)
        out[tid] = (names.get(tid, f"native:{comm}"), (int(fields[11]) + int(fields[12])) / ticks)
    return out


def thread_cpu_delta(before: dict[int, tuple[str, float]], wall_s: float, groups: dict[str, str]) -> dict[str, float]:
    """Cores used per thread group since ``before`` (``groups``: regex → group name, first match wins)."""
    used: dict[str, float] = defaultdict(float)
    for tid, (name, seconds) in thread_cpu().items():
        delta = seconds - before.get(tid, (name, 0.0))[1]
        label = next((group for pattern, group in groups.items() if re.search(pattern, name)), name)
        used[label] += delta
    return {k: round(v / wall_s, 3) for k, v in sorted(used.items(), key=lambda kv: -kv[1]) if v > 0}


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy since boot (all cores, /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def own_cpu_s(children: bool = True) -> float:
    """CPU seconds of this process, plus its finished (waited-for) children unless ``children`` is false."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN) if children else (resource.RUSAGE_SELF,):
        usage = resource.getrusage(who)
        total += usage.ru_utime + usage.ru_stime
    return total


def heavy_processes() -> list[str]:
    """Command lines of other heavy jobs (training runs, test suites) now running."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == os.getpid():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        if HEAVY.search(cmd) and "node_latency" not in cmd:
            found.append(f"{pid} {cmd[:160]}")
    return found


def machine_info(threads: int) -> dict[str, Any]:
    import onnxruntime

    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), "")
    return {"cpus": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)), "cpu_model": model,
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__, "onnxruntime_threads": threads,
            "rmw_implementation": os.environ.get("RMW_IMPLEMENTATION", "(default)"),
            "ros_domain_id": os.environ.get("ROS_DOMAIN_ID"),
            "ros_automatic_discovery_range": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE")}


def set_stamp(header: Any, ns: int) -> None:
    header.stamp.sec, header.stamp.nanosec = split_ns(ns)


# ---------------------------------------------------------------------------------------------- models


def export_random_student(folder: Path, modality: str, channels: int, size_hw: tuple[int, int]) -> Path:
    """A random-weight DDRNet student exported as ``python -m madm_train export`` does (like tests/conftest.py)."""
    import torch

    from madm_ros.palettes import get_label_set
    from madm_ros.preprocessing import InputSpec
    from madm_train.deploy.export import ExportOptions, export
    from madm_train.models.student import DDRNetStudent, save_student

    torch.manual_seed(0)
    student = folder / f"{modality}_student"
    save_student(DDRNetStudent(get_label_set("dsec11").num_classes, channels=channels), student, label_set="dsec11",
                 input_spec=InputSpec(modality, *size_hw))
    with open(os.devnull, "w") as quiet:
        report = export(ExportOptions(student=student, out_dir=folder / modality, argmax_stride=1, simplify=False), log=quiet)
    return Path(report["onnx"]["static"])


def resolve_models(args: argparse.Namespace, temp: Path) -> dict[str, dict[str, Any]]:
    """Modality → {path, source}: --<modality>-model, --model-dir, the built-in defaults, else a random student."""
    import hashlib

    from madm_ros.default_models import default_model_path
    from madm_ros.errors import ConfigError

    models = {}
    for modality in ("depth", "events"):
        explicit = getattr(args, f"{modality}_model")
        if explicit:
            path, source = Path(explicit), "--" + modality + "-model"
        elif args.model_dir:
            path, source = Path(args.model_dir) / f"{modality}_student.onnx", "--model-dir"
        else:
            try:
                path, source = default_model_path(modality), "built-in default model"
            except ConfigError:
                size = tuple(int(v) for v in args.fallback_size.split("x"))
                path = export_random_student(temp, modality, args.fallback_channels, size)  # type: ignore[arg-type]
                source = (f"random-weight DDRNet student (no default model found): channels {args.fallback_channels}, "
                          f"{args.fallback_size} input, arg-max stride 1, as scripts/make-default-models exports; "
                          f"speed does not depend on the weights")
        if not path.is_file():
            raise SystemExit(f"node_latency: model {path} not found")
        models[modality] = {"path": str(path), "source": source,
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}
    return models


# ---------------------------------------------------------------------------------------------- node process


class Probe:
    """Timers and CPU counters of the node process, reset by ``mark``."""

    def __init__(self) -> None:
        self.samples: dict[str, list[float]] = defaultdict(list)
        self.active = False
        self.last_callback_ns = 0

    def add(self, key: str, value: float) -> None:
        if self.active:
            self.samples[key].append(value)

    def mark(self, node: Any) -> None:
        self.samples = defaultdict(list)
        self.counters0 = node.counters()
        self.cpu0 = thread_cpu()
        self.process0 = time.process_time()
        self.wall0 = time.perf_counter()
        self.active = True

    def report(self, node: Any) -> dict[str, Any]:
        wall = time.perf_counter() - self.wall0
        counters = node.counters()
        delta = {k: v - self.counters0.get(k, 0) for k, v in counters.items()
                 if isinstance(v, int) and not isinstance(v, bool)}
        groups = {r"^ThreadPoolExecutor": "executor workers (MultiThreadedExecutor: take + deserialize + callbacks)",
                  r"-inference$": "inference thread (segment + publish masks)",
                  r"^MainThread$": "executor spin thread (spin_nodes: wait set; single-threaded also take + deserialize "
                                   "+ callbacks)",
                  r"^protocol$": "bench protocol (idle)", r"^native:": "native threads (DDS, ONNX Runtime pool, numba)"}
        return {"wall_s": round(wall, 3), "counters_delta": delta,
                "counters_end": {k: v for k, v in counters.items() if not isinstance(v, float) or math.isfinite(v)},
                "timers_ms": {k: summary(v) for k, v in self.samples.items()},
                "process_cores": round((time.process_time() - self.process0) / wall, 3),
                "thread_cores": thread_cpu_delta(self.cpu0, wall, groups),
                "native_threads": sorted({name for name, _ in thread_cpu().values() if name.startswith("native:")}),
                "last_callback_ns": self.last_callback_ns}


def node_classes(probe: Probe) -> dict[str, Any]:
    """The two nodes with timers around their stages (behaviour unchanged)."""
    from madm_ros.nodes.base import FrameJob
    from madm_ros.nodes.event_segmentation import EventSegmentationNode
    from madm_ros.nodes.image_segmentation import ImageSegmentationNode

    def timed(fn: Any, key: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                probe.add(key, (time.perf_counter() - start) * 1e3)
        return wrapper

    class Timed:
        def _load_segmenter(self) -> Any:
            segmenter = super()._load_segmenter()  # type: ignore[misc]
            segment = segmenter.segment

            def timed_segment(array: Any, encoding: str) -> Any:
                result = segment(array, encoding)
                for key, value in result.timings_ms.items():
                    probe.add(f"segment_{key}", value)
                probe.add("segment_total", sum(result.timings_ms.values()))
                return result
            segmenter.segment = timed_segment
            return segmenter

        def submit(self, job: FrameJob) -> None:
            probe.add("slice_end_to_frame_ready" if isinstance(self, EventSegmentationNode) else "stamp_to_handover",
                      (time.time_ns() - stamp_to_ns(job.header.stamp)) / 1e6)
            super().submit(job)  # type: ignore[misc]

        def _process(self, job: FrameJob) -> None:
            start = time.perf_counter()
            probe.add("handover_wait", (start - job.received) * 1e3)
            super()._process(job)  # type: ignore[misc]
            probe.add("process", (time.perf_counter() - start) * 1e3)
            probe.add("stamp_to_mask_published", (time.time_ns() - stamp_to_ns(job.header.stamp)) / 1e6)

    class TimedEventNode(Timed, EventSegmentationNode):
        def _subscribe(self) -> None:
            super()._subscribe()
            if self.stream is not None:  # instance attributes shadow the methods push() looks up
                self.stream._decode = timed(self.stream._decode, "decode")  # type: ignore[method-assign]
                self.stream.push = timed(self.stream.push, "decode_accumulate")  # type: ignore[method-assign]

        def _on_events(self, message: Any) -> None:
            start = time.perf_counter()
            if self.params.message_type == "event_packet" and message.time_base:  # the bench puts the publish time here
                probe.add("publish_to_callback", (time.time_ns() - int(message.time_base)) / 1e6)
            super()._on_events(message)
            probe.add("callback", (time.perf_counter() - start) * 1e3)
            probe.last_callback_ns = time.time_ns()

    class TimedImageNode(Timed, ImageSegmentationNode):
        def _on_image(self, message: Any) -> None:
            start = time.perf_counter()
            super()._on_image(message)
            probe.add("callback", (time.perf_counter() - start) * 1e3)
            probe.last_callback_ns = time.time_ns()

    return {"events": TimedEventNode, "depth": TimedImageNode}


def warm_event_kernels() -> None:
    """Load (or compile) the numba decode and accumulate kernels before the clock starts."""
    from madm_ros.events.codecs import PacketDecoder, encode_evt3
    from madm_ros.events.edge_frames import EdgeFrameAccumulator, EdgeFrameConfig

    events = edge_scene(20_000, 120_000, 0)
    PacketDecoder("evt3", WIDTH, HEIGHT).decode(encode_evt3(events))
    EdgeFrameAccumulator(EdgeFrameConfig(width=WIDTH, height=HEIGHT)).push(events)


def serve_node(args: argparse.Namespace) -> int:
    """The node process: ``spin_nodes`` spins the node in the main thread; a ``protocol`` thread says ``ready``, then
    answers ``mark`` / ``counters`` / ``report`` on stdin and ends the process as Ctrl-C does (``rclpy.shutdown``)."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed goes to stderr

    def say(word: str, payload: Any = None) -> None:
        protocol.write(PREFIX + word + ("" if payload is None else " " + json.dumps(payload)) + "\n")

    import rclpy
    from rclpy.parameter import Parameter

    from madm_ros.nodes.spin import spin_nodes

    if args.serve_node == "events":
        warm_event_kernels()
    probe = Probe()
    overrides = [Parameter("model_file_path", value=args.model), Parameter("threads", value=args.threads),
                 Parameter("backend", value="onnxruntime")]
    if args.serve_node == "events":
        overrides.append(Parameter("message_type", value=args.message_type))
    else:
        overrides.append(Parameter("modality", value="depth"))
    if args.input_qos:
        overrides.append(Parameter("input_qos", value=args.input_qos))

    def answer(node: Any) -> None:
        while node.executor is None:  # spin_nodes adds the node right after the factory returns
            time.sleep(0.01)
        say("ready", {"node": node.get_fully_qualified_name(), "executor": type(node.executor).__name__,
                      "input_qos": node.params.input_qos})
        for line in sys.stdin:
            command = line.strip()
            if command == "mark":
                probe.mark(node)
                say("marked")
            elif command == "counters":
                say("counters", {**{k: v for k, v in node.counters().items() if isinstance(v, int)},
                                 "last_callback_ns": probe.last_callback_ns})
            elif command == "report":
                say("report", probe.report(node))
                break
        rclpy.shutdown()  # spin_nodes returns and destroys the node, as after Ctrl-C

    def factory(**kwargs: Any) -> Any:
        node = node_classes(probe)[args.serve_node](**kwargs)
        if node.segmenter is None or node.failure:
            say("failed", node.failure)
            raise SystemExit(1)
        threading.Thread(target=answer, args=(node,), name="protocol", daemon=True).start()
        return node

    with contextlib.ExitStack() as stack:
        if args.executor == "multi":  # the comparison variant: spin_nodes with the old default executor
            from unittest import mock

            from rclpy.executors import MultiThreadedExecutor

            stack.enter_context(mock.patch("rclpy.executors.SingleThreadedExecutor", MultiThreadedExecutor))
        return spin_nodes([factory], ["node_latency"], node_kwargs=[{"parameter_overrides": overrides}])


class NodeProcess:
    """A node process started by the bench, talked to over its stdin / stdout."""

    def __init__(self, kind: str, model: str, threads: int, message_type: str = "", input_qos: str = "",
                 executor: str = "shipped") -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--serve-node", kind, "--model", model,
                   "--threads", str(threads), "--executor", executor]
        if message_type:
            command += ["--message-type", message_type]
        if input_qos:
            command += ["--input-qos", input_qos]
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - the node's stderr, closed in close()
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(PREFIX):
                self.lines.put(line[len(PREFIX):].rstrip("\n"))
        self.lines.put("exited")

    def expect(self, word: str, timeout: float = 60.0) -> Any:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = "timeout"
        name, _, payload = line.partition(" ")
        if name != word:
            self.log.seek(0)
            raise RuntimeError(f"node process said {line[:300]!r} instead of {word!r}; its log ends:\n{self.log.read()[-3000:]}")
        return json.loads(payload) if payload else None

    def ask(self, command: str, answer: str, timeout: float = 30.0) -> Any:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.expect(answer, timeout)

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
            self.proc.wait(timeout=20)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# ---------------------------------------------------------------------------------------------- bench process ROS side


class BenchRos:
    """The bench's rclpy node: one publisher and the mask recorder, spun in a background thread."""

    def __init__(self, name: str, msg_type: Any, topic: str, mask_topic: str, publisher_qos: Any) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        self.node = rclpy.create_node(name)
        self.publisher = self.node.create_publisher(msg_type, topic, publisher_qos)
        self.masks: list[tuple[int, int]] = []  # (received time_ns, stamp_ns)
        self.arrived = threading.Condition()
        self.subscription = self.node.create_subscription(Image, mask_topic, self._on_mask, 1000)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, name="recorder", daemon=True)
        self.thread.start()

    def _on_mask(self, message: Any) -> None:
        now = time.time_ns()
        with self.arrived:
            self.masks.append((now, stamp_to_ns(message.header.stamp)))
            self.arrived.notify_all()

    def wait_matched(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.publisher.get_subscription_count() > 0 and self.subscription.get_publisher_count() > 0:
                time.sleep(0.3)  # let both directions finish matching
                return
            time.sleep(0.05)
        raise RuntimeError(f"node and bench did not discover each other in {timeout} s")

    def wait_for_mask(self, stamp: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not any(s == stamp for _, s in self.masks[-5:]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
        return True

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()


PUBLISHER_GROUPS = {r"^MainThread$": "publisher loop (stamp + publish: serialize + DDS write)",
                    r"^recorder$": "mask recorder", r"^native:": "native threads (DDS)"}


def drain(node: NodeProcess, timeout: float) -> float:
    """Wait until the node has stopped taking messages and finished every frame; return the seconds waited."""
    start = time.monotonic()
    previous = None
    while time.monotonic() - start < timeout:
        counters = node.ask("counters", "counters")
        state = (counters.get("events_messages", counters.get("frames_in")), counters["frames_out"])
        done = counters["frames_out"] + counters["total_dropped_frames"] + counters["skipped_no_subscribers"]
        if state == previous and done >= counters["frames_in"]:
            break
        previous = state
        time.sleep(0.4)
    time.sleep(0.3)  # the last masks on their way to the recorder
    return time.monotonic() - start


# ---------------------------------------------------------------------------------------------- image node


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
    from madm_ros.nodes.image_messages import array_to_image_msg, image_msg_to_array
    from madm_ros.preprocessing import modality_image, to_network_input
    from madm_ros.segmenter import Segmenter

    segmenter = Segmenter.load(model, "onnxruntime", threads=threads)
    frame = depth_frame()
    split: dict[str, list[float]] = defaultdict(list)

    def segment() -> None:
        result = segmenter.segment(frame, "16UC1")
        for key, value in result.timings_ms.items():
            split[key].append(value)
        split["total"].append(sum(result.timings_ms.values()))

    for _ in range(3):
        segmenter.segment(frame, "16UC1")
    for _ in range(runs):
        segment()
    tensor = to_network_input(modality_image(frame, "16UC1", segmenter.spec), segmenter.spec)[None]
    message = Image(**array_to_image_fields(frame, "16UC1"))
    labels = segmenter.segment(frame, "16UC1").labels
    mask = array_to_image_msg(labels, "mono8", Header())
    raw_in, raw_mask = serialize_message(message), serialize_message(mask)
    return {
        "network_input_hw": [segmenter.spec.height, segmenter.spec.width],
        "segment_ms": {k: summary(v) for k, v in split.items()},
        "infer_ms": timed_median_ms(lambda: segmenter.backend.infer(tensor), runs),
        "image_msg_to_array_ms": timed_median_ms(lambda: image_msg_to_array(message), runs),
        "array_to_mask_msg_ms": timed_median_ms(lambda: array_to_image_msg(labels, "mono8", Header()), runs),
        "serialize_depth_ms": timed_median_ms(lambda: serialize_message(message), runs),
        "deserialize_depth_ms": timed_median_ms(lambda: deserialize_message(raw_in, Image), runs),
        "serialize_mask_ms": timed_median_ms(lambda: serialize_message(mask), runs),
        "deserialize_mask_ms": timed_median_ms(lambda: deserialize_message(raw_mask, Image), runs),
    }


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
        "mask_transport_ms_p50": _diff(summary(latency)["p50"], timers.get("stamp_to_mask_published", {}).get("p50")),
        "node_process_cores": report["process_cores"], "node_thread_cores": report["thread_cores"],
        "bench_thread_cores": publisher_cores,
        "machine_busy_cores": round(busy / wall, 3), "other_processes_cores": others_cores(busy, own0, report, wall),
        "drain_s": round(drained, 2),
    }


def others_cores(busy_s: float, own0: float, report: dict[str, Any], wall: float) -> float:
    """Cores used during a run by processes other than the bench and its node process."""
    own = own_cpu_s(children=False) - own0 + report["process_cores"] * report["wall_s"]
    return round(max(0.0, busy_s - own) / wall, 3)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


# ---------------------------------------------------------------------------------------------- event node


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
    """Every message of one run, built before the clock starts: (due µs, message, events) and totals."""
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
            if message_type == "event_packet":
                message.time_base = time.time_ns()  # ignored by evt3 decoding; the node's timer reads it
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
    latency = [(recv - stamp) / 1e6 for recv, stamp in masks]
    delta = report["counters_delta"]
    expected = built["t_last_us"] // WINDOW_US
    received_events = delta.get("events_decode_events", 0)
    arrivals = sorted(recv for recv, _ in masks)
    fps = (len(arrivals) - 1) / ((arrivals[-1] - arrivals[0]) / 1e9) if len(arrivals) > 2 else None
    drop = 1 - len(masks) / expected if expected else None
    lost = 1 - received_events / built["events"] if built["events"] else None
    behind_s = max(0.0, (report["last_callback_ns"] - last_publish_ns) / 1e9)
    sent = len(publish_ms)
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
        "latency_slice_end_to_mask_ms": summary(latency),
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
        "keeps_up": drop is not None and drop < DROP_LIMIT,
        "keeps_up_strict": drop is not None and drop < DROP_LIMIT and lost is not None and lost < DROP_LIMIT
        and summary(latency)["p99"] is not None and summary(latency)["p99"] <= LATENCY_LIMIT_MS,
    }


# ---------------------------------------------------------------------------------------------- report


def where_time_goes(run: dict[str, Any], variant: str = "") -> dict[str, Any]:
    """CPU per stage of one event run, in cores (1.0 = one core busy the whole run), from the run's own timers."""
    timers = run["node_timers_ms"]
    seconds = run["seconds"] + run["drain_s"]

    def cores(key: str) -> float:
        return round(timers.get(key, {}).get("sum", 0.0) / 1e3 / seconds, 3)

    decode = cores("decode")
    push = cores("decode_accumulate")
    callback = cores("callback")
    threads = run["node_thread_cores"]
    workers = sum(v for k, v in threads.items() if k.startswith("executor workers"))
    spin = sum(v for k, v in threads.items() if k.startswith("executor spin"))
    per_s = (run["messages_received"] or 0) / seconds
    return {
        "run": f"{run['message_type']} {run['rate_mev_s']:g} Mev/s, {run['executor']}"
               + (f" (variant {variant})" if variant else ""),
        "messages_per_s": round(per_s, 1),
        "node_us_per_message_all_threads": round(run["node_process_cores"] / per_s * 1e6, 1) if per_s else None,
        "node: rclpy executor (wait set, take, deserialize: executor thread CPU outside the callback)":
            round(max(0.0, spin + workers - callback), 3),
        "node: decode": decode,
        "node: accumulate + stamping": round(push - decode, 3),
        "node: rest of callback (edge frame hand-over)": round(callback - push, 3),
        "node: inference thread (segment + publish)": cores("process"),
        "node: all threads": run["node_process_cores"],
        "node threads": run["node_thread_cores"],
        "bench (publisher) threads": run["bench_thread_cores"],
        "publish() calls": round(run["publish_call_ms"]["sum"] / 1e3 / seconds, 3),
        "machine busy": run["machine_busy_cores"],
        "other processes": run["other_processes_cores"],
    }


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


VARIANT_TAGS = {"multi_threaded_executor": "multi-exec", "no_fastdds_profile": "no-profile"}


def labelled_runs(result: dict[str, Any], kind: str) -> list[tuple[str, dict[str, Any]]]:
    """(variant tag, run) of the shipped runs (tag '') and then of every variant, for ``kind`` image_runs / event_runs."""
    out = [("", run) for run in result.get(kind, [])]
    for name, variant in result.get("variants", {}).items():
        out += [(VARIANT_TAGS.get(name, name), run) for run in variant.get(kind, [])]
    return out


def print_tables(result: dict[str, Any]) -> None:
    dds = result.get("dds", {})
    print(f"\nFast DDS profile: {dds.get('fastdds_profiles_file') or dds.get('transports')}")
    if result.get("bare"):
        bare = result["bare"]["depth"]
        print(f"bare depth pipeline (640x480 16UC1, network {bare['network_input_hw']}): segment p50 "
              f"{fmt(bare['segment_ms']['total']['p50'], 2)} ms = preprocess {fmt(bare['segment_ms']['preprocess']['p50'], 2)} "
              f"+ inference {fmt(bare['segment_ms']['inference']['p50'], 2)} + postprocess "
              f"{fmt(bare['segment_ms']['postprocess']['p50'], 2)}; backend.infer {fmt(bare['infer_ms']['p50'], 2)} ms")
    print(f"{'image node':<20}{'in fps':>8}{'out fps':>9}{'masks':>9}{'drops':>7}{'lat p50':>9}{'lat p99':>9}"
          f"{'overhead':>10}{'vs node':>9}   (ms; overhead = lat p50 - bare segment; vs node = - in-node segment)")
    for tag, run in labelled_runs(result, "image_runs"):
        label = f"{run['rate_hz'] + (' Hz' if run['rate_hz'] != 'max' else '')} {tag}"
        print(f"{label:<20}{fmt(run['input_fps']):>8}{fmt(run['output_fps']):>9}"
              f"{str(run['masks_received']) + '/' + str(run['frames_published']):>9}{fmt(run['handover_dropped']):>7}"
              f"{fmt(run['latency_ms']['p50'], 2):>9}{fmt(run['latency_ms']['p99'], 2):>9}"
              f"{fmt(run.get('node_overhead_ms'), 2):>10}{fmt(run.get('node_overhead_vs_in_node_segment_ms'), 2):>9}")
    if result.get("bare"):
        events = result["bare"]["events"]
        print(f"\nbare event path, one core: decode {events['mev_s_one_core']['decode_evt3']} Mev/s, accumulate "
              f"{events['mev_s_one_core']['accumulate']} Mev/s, deserialize {events['mev_s_one_core']['deserialize']} Mev/s "
              f"({events['payload_bytes_per_event']} B/event); segment 640x480 edge frame p50 "
              f"{fmt(events['segment_ms']['total']['p50'], 2)} ms")
    print(f"{'event node':<22}{'in Mev/s':>9}{'dec/s':>9}{'lost':>7}{'frames':>8}{'masks':>7}{'drop':>7}"
          f"{'lat p50':>9}{'lat p99':>9}{'behind s':>9}{'node cores':>11}{'ok':>4}")
    for tag, run in labelled_runs(result, "event_runs"):
        label = f"{'evt3' if run['message_type'] == 'event_packet' else 'packed'} {run['rate_mev_s']:g} {tag}"
        latency = run["latency_slice_end_to_mask_ms"]
        frames = f"{run['edge_frames']}/{run['frames_expected']}"
        print(f"{label:<22}{fmt(run['achieved_input_mev_s'], 2):>9}{fmt(run['events_decoded'] / 1e6 / run['seconds'], 2):>9}"
              f"{fmt(100 * (run['events_lost_fraction'] or 0)) + '%':>7}{frames:>8}"
              f"{run['masks_received']:>7}{fmt(100 * (run['frame_drop_fraction'] or 0)) + '%':>7}{fmt(latency['p50']):>9}"
              f"{fmt(latency['p99']):>9}{fmt(run['node_behind_at_end_s'], 2):>9}{fmt(run['node_process_cores'], 2):>11}"
              f"{('yes' if run['keeps_up_strict'] else 'drop' if not run['keeps_up'] else 'lag'):>4}")
    print(f"(executor: {', '.join(sorted({r['executor'] for _, r in labelled_runs(result, 'event_runs')}))}; "
          f"variants: {', '.join(f'{t} = {n}' for n, t in VARIANT_TAGS.items() if n in result.get('variants', {})) or 'none'})")
    for line in result.get("notes", []):
        print("note:", line)
    print("\nwhere the time goes (cores):")
    for item in result.get("where_time_goes", []):
        print(" ", json.dumps(item))
    print(f"\nnode_overhead_ms {result.get('node_overhead_ms')}  event_node_max_mev_s {result.get('event_node_max_mev_s')} "
          f"(strict {result.get('event_node_max_mev_s_strict')})  contended {result.get('contended')}  "
          f"targets {result.get('targets')}")


def parse_rates(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def image_rates(text: str) -> list[str]:
    return [rate.strip() for rate in text.split(",") if rate.strip()]


def dds_info() -> dict[str, Any]:
    """The RMW and the Fast DDS XML profile in effect for this process and its children (FASTDDS_DEFAULT_PROFILES_FILE)."""
    import hashlib

    info: dict[str, Any] = {"rmw_implementation": os.environ.get("RMW_IMPLEMENTATION", "(default)")}
    path = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")
    if not path:
        return info | {"fastdds_profiles_file": None,
                       "transports": "FASTDDS_DEFAULT_PROFILES_FILE unset: Fast DDS built-in transports "
                                     "(512 KiB shared-memory segment, UDPv4 on every interface)"}
    file = Path(path).resolve()
    shipped = (REPO / "config" / "fastdds_loopback.xml").resolve()
    info |= {"fastdds_profiles_file": str(file.relative_to(REPO)) if file.is_relative_to(REPO) else str(file),
             "is_shipped_profile": file == shipped}
    try:
        text = file.read_text()
    except OSError as error:
        return info | {"error": str(error)}
    return info | {"sha256": hashlib.sha256(text.encode()).hexdigest()[:16],
                   "shm_segment_bytes": [int(v) for v in re.findall(r"<segment_size>\s*(\d+)", text)],
                   "udp_interface_whitelist": re.findall(r"<address>\s*([^<\s]+)", text)}


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
                                 "SingleThreadedExecutor, update serve_node")
            result["variants"] = {"multi_threaded_executor": variant}
    finally:
        rclpy.shutdown()
    return result


def add_overheads(run: dict[str, Any], bare_depth: dict[str, Any]) -> None:
    """The node overheads of one image run against the bare pipeline of this run."""
    run["node_overhead_ms"] = _diff(run["latency_ms"]["p50"], bare_depth["segment_ms"]["total"]["p50"])
    run["node_overhead_vs_inference_ms"] = _diff(run["latency_ms"]["p50"], bare_depth["infer_ms"]["p50"])
    run["node_overhead_vs_in_node_segment_ms"] = _diff(
        run["latency_ms"]["p50"], run["node_timers_ms"].get("segment_total", {}).get("p50"))


def summarise(result: dict[str, Any]) -> None:
    """Headline keys from the shipped runs (node overhead, event node maximum rate, targets); variants side by side."""
    image = [r for r in result["image_runs"] if r["latency_ms"]["p50"] is not None]
    headline = next((r for r in image if r["rate_hz"] == "10"), image[0] if image else None)
    result["node_overhead_ms"] = headline["node_overhead_ms"] if headline else None
    result["node_overhead_vs_inference_ms"] = headline["node_overhead_vs_inference_ms"] if headline else None
    result["node_overhead_vs_in_node_segment_ms"] = headline.get("node_overhead_vs_in_node_segment_ms") if headline else None
    result["node_overhead_run"] = (f"{headline['rate_hz']} Hz, input_qos {headline['input_qos']}, {headline['executor']}"
                                   if headline else None)
    evt3 = [r for r in result["event_runs"] if r["message_type"] == "event_packet"]
    packed = [r for r in result["event_runs"] if r["message_type"] == "packed"]
    result["event_node_max_mev_s"] = max_rate_kept(evt3, "keeps_up")
    result["event_node_max_mev_s_strict"] = max_rate_kept(evt3, "keeps_up_strict")
    result["event_node_max_mev_s_packed"] = max_rate_kept(packed, "keeps_up")
    result["event_node_max_mev_s_packed_strict"] = max_rate_kept(packed, "keeps_up_strict")
    max_rate = max((r["rate_mev_s"] for r in evt3), default=None)
    result["where_time_goes"] = [where_time_goes(r) for r in result["event_runs"] if r["rate_mev_s"] == max_rate] + [
        where_time_goes(r, name) for name, variant in result.get("variants", {}).items()
        for r in variant.get("event_runs", []) if r["rate_mev_s"] == max_rate]
    result["variant_comparison"] = variant_comparison(result)
    result["targets"] = {
        "node_overhead_le_5_ms": result["node_overhead_ms"] is not None and result["node_overhead_ms"] <= 5,
        "event_node_keeps_up_50_mev_s": any(r["rate_mev_s"] >= 50 and r["keeps_up_strict"] for r in evt3),
    }
    result["notes"] = notes(result, evt3)


def brief(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """The few numbers of one run that the variant comparison shows."""
    if run is None:
        return None
    if "rate_hz" in run:
        return {"executor": run["executor"], "masks_received": run["masks_received"], "frames_published": run["frames_published"],
                "latency_p50_ms": run["latency_ms"]["p50"], "latency_p99_ms": run["latency_ms"]["p99"],
                "node_overhead_ms": run.get("node_overhead_ms")}
    latency = run["latency_slice_end_to_mask_ms"]
    return {"executor": run["executor"], "events_lost_fraction": run["events_lost_fraction"],
            "frame_drop_fraction": run["frame_drop_fraction"], "latency_p50_ms": latency["p50"], "latency_p99_ms": latency["p99"],
            "node_process_cores": run["node_process_cores"], "keeps_up_strict": run["keeps_up_strict"]}


def variant_comparison(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each variant run beside the shipped run at the same rate."""
    rows = []
    for name, variant in result.get("variants", {}).items():
        for run in variant.get("image_runs", []):
            shipped = next((r for r in result["image_runs"] if r["rate_hz"] == run["rate_hz"]), None)
            rows.append({"variant": name, "run": f"image {run['rate_hz']} Hz", "shipped": brief(shipped),
                         "with_variant": brief(run)})
        for run in variant.get("event_runs", []):
            shipped = next((r for r in result["event_runs"] if r["message_type"] == run["message_type"]
                            and r["rate_mev_s"] == run["rate_mev_s"]), None)
            rows.append({"variant": name, "run": f"{run['message_type']} {run['rate_mev_s']:g} Mev/s", "shipped": brief(shipped),
                         "with_variant": brief(run)})
    return rows


def notes(result: dict[str, Any], evt3: list[dict[str, Any]]) -> list[str]:
    """Plain-language findings derived from the runs (nothing here is typed in by hand)."""
    out = []
    if "dds" in result and not result["dds"].get("fastdds_profiles_file"):
        out.append("FASTDDS_DEFAULT_PROFILES_FILE was unset: the shipped runs used Fast DDS's built-in transports, "
                   "not scripts/in-env's profile")
    lossy = [r for r in evt3 if r["keeps_up"] and not r["keeps_up_strict"]]
    if lossy:
        worst = max(lossy, key=lambda r: r["events_lost_fraction"] or 0)
        out.append(f"event_node_max_mev_s counts frames only: every 50 ms window still completes when events are lost; "
                   f"at {worst['rate_mev_s']:g} Mev/s the node lost {worst['events_lost_fraction']:.0%} of the events and "
                   f"answered {worst['latency_slice_end_to_mask_ms']['p50']:.0f} ms after the slice end (p50)")

    def words(run: dict[str, Any]) -> str:
        if "masks_received" in run and "frames_published" in run:
            return (f"{run['masks_received']}/{run['frames_published']} frames answered, latency p50 "
                    f"{fmt(run['latency_p50_ms'])} ms")
        return (f"{run['events_lost_fraction']:.1%} of events lost, {run['frame_drop_fraction']:.1%} frames dropped, latency "
                f"p50 {fmt(run['latency_p50_ms'])} ms, {run['node_process_cores']} cores")

    for row in result.get("variant_comparison", []):
        if row["shipped"] and row["with_variant"]:
            out.append(f"{row['run']}: shipped {words(row['shipped'])}; {row['variant']} {words(row['with_variant'])}")
    return out


def max_rate_kept(runs: list[dict[str, Any]], flag: str) -> float | None:
    """The highest tested rate up to which every tested rate kept up (``None`` if the lowest did not)."""
    best = None
    for run in sorted(runs, key=lambda r: r["rate_mev_s"]):
        if not run[flag]:
            break
        best = run["rate_mev_s"]
    return best


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
    parser.add_argument("--serve-node", choices=("depth", "events"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--message-type", default="event_packet", help=argparse.SUPPRESS)
    parser.add_argument("--executor", default="shipped", choices=("shipped", "multi"), help=argparse.SUPPRESS)
    parser.add_argument("--variant-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve_node:
        return serve_node(args)

    environment_domain = os.environ.get("ROS_DOMAIN_ID", "")
    domain = args.domain_id if args.domain_id is not None else (
        int(environment_domain) if environment_domain.isdigit() and environment_domain != SHARED_DOMAIN_ID else DEFAULT_DOMAIN_ID)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"

    heavy_before = heavy_processes()
    load_before = os.getloadavg()
    busy0, own0, wall0 = machine_busy_s(), own_cpu_s(), time.perf_counter()
    with tempfile.TemporaryDirectory() as temp:
        result: dict[str, Any] = {"machine": machine_info(args.threads), "dds": dds_info()}
        models = resolve_models(args, Path(temp))
        if args.variant_child:  # runs only: the parent keeps the bare pipeline, the load check and the summary
            args.json.write_text(json.dumps(result | measure(args, models)) + "\n")
            return 0
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
    wall = time.perf_counter() - wall0
    others = max(0.0, (machine_busy_s() - busy0) - (own_cpu_s() - own0)) / wall
    heavy_after = heavy_processes()

    result["node_overhead_definition"] = (
        "median latency of the image node (header stamp set just before publish in the bench process -> "
        "~/raw_segmentation_mask received there; 640x480 16UC1 depth; the 10 Hz run, as shipped: spin_nodes' executor, "
        "the node's input_qos, scripts/in-env's Fast DDS profile) minus the median of the bare Segmenter.segment "
        "(preprocess + inference + postprocess) on the same frame, model and threads in the same run; "
        "node_overhead_vs_inference_ms subtracts the bare backend.infer median instead")
    result["event_node_max_mev_s_definition"] = (
        f"highest tested EventPacket evt3 input rate (shipped runs) up to which every tested rate had < {DROP_LIMIT:.0%} "
        f"frame drops (1 - masks received / 50 ms frames expected from the published stream); _strict also needs "
        f"< {DROP_LIMIT:.0%} of the published events missing at the node and a slice end -> mask latency p99 <= "
        f"{LATENCY_LIMIT_MS:g} ms; null when no tested rate qualifies")
    result["contended"] = others > 0.1 or bool(heavy_before or heavy_after)
    result["load"] = {"other_processes_cores_mean": round(others, 3), "load_average_before": [round(v, 2) for v in load_before],
                      "load_average_after": [round(v, 2) for v in os.getloadavg()], "heavy_processes_before": heavy_before,
                      "heavy_processes_after": heavy_after, "wall_s": round(wall, 1)}
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
