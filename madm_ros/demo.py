"""``make demo`` / ``python -m madm_ros.demo``: the event segmentation pipeline, end to end, on any machine.

Without arguments it renders a few synthetic street scenes with the project's event camera
simulator, plays their events in real time as ``event_camera_msgs/EventPacket`` (evt3, as a
Prophesee driver would) into the event segmentation node running the built-in default model, and
records what the node publishes. It stops after ``--seconds`` and leaves in ``--out``:

- ``edge_frames/``, ``masks/`` (class ids), ``colored/``, ``overlays/``: PNGs of the first
  ``--max-images`` frames, named by frame stamp;
- ``panels/``: one PNG per scored frame (the first ``--max-images``), edge frame | coloured mask |
  coloured ground truth under their titles, over a legend of the classes they show;
- ``demo.gif``: those panels as an animation (the first 60, 5 per second;
  :func:`madm_ros.eval_plots.write_animation`);
- ``summary.json``: frames in and masks out, drops, latency percentiles (slice end → mask
  received), the node's processing time, the mIoU against the scenes' labels, the panel count and
  the animation's file name. ``miou`` averages the classes in the ground truth or the prediction
  (a class predicted but absent from every scene counts with IoU 0); ``miou_present`` averages
  only the classes in the ground truth, named in ``classes_present``.

The same command runs on recorded or live data: ``--bag BAG`` plays a bag into the node (as
``python -m madm_ros.bag_play`` does) and ``--topic T`` listens to a live topic; neither has labels,
so their summary has no mIoU and their panels show edge frame | coloured mask | overlay. Everything
stays on the loopback in a private ROS domain.

A second run into the same ``--out`` (``make demo`` twice) replaces the first: where ``--out``
holds a demo's ``summary.json``, the PNGs and the animation that demo wrote (stamp-named PNGs in
its five folders, ``demo.gif``) are removed first, so the folders never mix runs; any other file is
left alone, and a folder without a demo summary is not touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes, atomic_write_png
from madm_ros.backends import BACKEND_CHOICES
from madm_ros.errors import MadmError
from madm_ros.events.types import MESSAGE_TYPES
from madm_ros.label_matching import default_tolerance_ns
from madm_ros.metrics import json_ready
from madm_ros.ros_messages import split_ns, stamp_to_ns

if TYPE_CHECKING:
    from madm_ros.palettes import LabelSet

__all__ = ["ANIMATION_FPS", "ANIMATION_MAX_FRAMES", "DemoConfig", "main", "run_demo"]

ANIMATION_FPS = 5.0
"""Frames per second of the run's animation: slow enough to compare the three columns of each panel."""
ANIMATION_MAX_FRAMES = 60
"""The animation shows at most this many panels (the first ones), keeping the file small."""
DEFAULT_SCENES: tuple[tuple[int, int], str] = ((192, 256), "varied")
"""Sensor size (H, W) and scene set for a model without a card: those of today's default students."""

@dataclass(frozen=True)
class DemoConfig:
    """What the demo runs (see ``--help``)."""

    out: Path = Path("demo_out")
    seconds: float = 8.0
    bag: Path | None = None
    topic: str | None = None
    model: str = ""
    backend: str = "auto"
    message_type: str = "event_packet"
    scene_frames: int = 24
    seed: int = 7
    max_images: int = 40
    threads: int = 0


@dataclass
class SceneFrame:
    """One label interval of the built-in source: its events and the label at its end."""

    t_end_us: int
    label: np.ndarray
    events: Any  # madm_ros.events.types.Events


def scene_settings(model: str) -> tuple[tuple[int, int], str]:
    """Sensor size and scene set the demo renders: what the model was trained on, from its card.

    The event camera must match the training data, not only its aspect: an edge frame's look
    depends on the sensor's resolution (a one-pixel edge becomes fainter the more it is shrunk to
    the network's size). A model without a card gets :data:`DEFAULT_SCENES`.
    """
    from madm_ros.default_models import default_model_path, model_card

    try:
        path = Path(model) if model else default_model_path("events")
    except MadmError:
        return DEFAULT_SCENES
    data = model_card(path).get("data", {})
    size = data.get("generate_hw")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        return DEFAULT_SCENES
    return (size[0], size[1]), str(data.get("scenes", "street"))


def render_scenes(frames: int, seed: int, size_hw: tuple[int, int] = DEFAULT_SCENES[0],
                  scenes: str = DEFAULT_SCENES[1]) -> tuple[list[SceneFrame], tuple[int, int]]:
    """Synthetic ``scenes`` rendered by a ``size_hw`` event camera, one 50 ms event window per label.

    Frames follow each other without gaps (``frame_interval_us`` = ``event_window_us``), and
    sequences are laid end to end on one clock, so the events form one continuous stream.
    """
    from tqdm import tqdm

    from madm_ros.synthetic.generate import SynthConfig, render_sequence, sequence_length

    per_sequence = 12
    config = SynthConfig(frames=frames, height=size_hw[0], width=size_hw[1], frames_per_sequence=per_sequence, seed=seed,
                         frame_interval_us=50_000, event_window_us=50_000, modalities=("events",), scenes=scenes)
    scenes: list[SceneFrame] = []
    offset = 0
    with tqdm(total=frames, desc="demo: rendering synthetic scenes", unit="frame", file=sys.stderr,
              disable=None) as progress:  # None: no bar when stderr is no terminal (logs, CI)
        for seq in range((frames + per_sequence - 1) // per_sequence):
            for frame in render_sequence(config, seq):
                events = frame.events
                events.t[:] += offset
                scenes.append(SceneFrame(frame.stamp_us + offset, frame.label, events))
                progress.update()
            offset += sequence_length(config, seq) * config.frame_interval_us  # the next window starts where this ended
    return scenes, (config.height, config.width)


class SyntheticEventSource:
    """Publishes the rendered scenes in real time as event packets (10 ms each), looping until stopped."""

    def __init__(self, node: Any, scenes: list[SceneFrame], size_hw: tuple[int, int], message_type: str) -> None:
        from madm_ros.nodes.event_segmentation import message_class

        self.node, self.scenes, self.size_hw, self.message_type = node, scenes, size_hw, message_type
        self.message_cls = message_class(message_type)
        self.publisher = node.create_publisher(self.message_cls, "events", 1000)
        self.period_us = scenes[-1].t_end_us  # one loop of the scenes; the next loop's first window follows on
        self.labels: dict[int, np.ndarray] = {}  # t_end_us on the played clock → label
        self.events_sent = 0
        self.packets_sent = 0
        self.start_wall = 0.0
        self.base_ns = 0
        self._stop = threading.Event()

    def _message(self, chunk: Any, seq: int) -> Any:
        from madm_ros.events.codecs import encode_evt3, packed_fields

        cls = self.message_cls
        height, width = self.size_hw
        reference = int(chunk.t[0] if self.message_type == "event_packet" else chunk.t[-1])
        if self.message_type == "event_packet":
            message = cls(height=height, width=width, seq=seq, time_base=0, encoding="evt3", is_bigendian=False,
                          events=encode_evt3(chunk))
        else:
            message = cls(height=height, width=width, seq=seq, **packed_fields(chunk, kind="array"))
        message.header.stamp.sec, message.header.stamp.nanosec = split_ns(self.base_ns + reference * 1000)
        message.header.frame_id = "demo_event_camera"
        return message

    def run(self, seconds: float) -> None:
        """Play for ``seconds`` of wall time (call from a thread)."""
        self.start_wall = time.monotonic()
        self.base_ns = time.time_ns()
        seq = 0
        loop = 0
        while not self._stop.is_set():
            for scene in self.scenes:
                shift = loop * self.period_us
                self.labels[scene.t_end_us + shift] = scene.label
                events = scene.events
                for lo in range(scene.t_end_us - 50_000, scene.t_end_us, 10_000):
                    chunk = events[(events.t >= lo) & (events.t < lo + 10_000)]
                    due = self.start_wall + (lo + 10_000 + shift) / 1e6
                    while (wait := due - time.monotonic()) > 0 and not self._stop.is_set():
                        time.sleep(min(wait, 0.005))
                    if self._stop.is_set() or time.monotonic() - self.start_wall > seconds:
                        return
                    if len(chunk):  # (boolean indexing copied the events: shifting leaves the scene intact)
                        chunk.t[:] += shift
                        self.publisher.publish(self._message(chunk, seq))
                        self.events_sent += len(chunk)
                        self.packets_sent += 1
                        seq += 1
            loop += 1

    def stop(self) -> None:
        """End playback early."""
        self._stop.set()


@dataclass
class Received:
    """Messages of one output topic, with their arrival times (monotonic seconds)."""

    messages: list[tuple[float, Any]] = field(default_factory=list)


class DemoRecorder:
    """Subscribes to the event node's outputs and keeps what arrives."""

    TOPICS = ("edge_frame", "raw_segmentation_mask", "colored_segmentation_mask", "segmentation_overlay")

    def __init__(self, node: Any, node_name: str) -> None:
        from sensor_msgs.msg import Image

        self.received = {topic: Received() for topic in self.TOPICS}
        self._lock = threading.Lock()
        for topic in self.TOPICS:
            node.create_subscription(Image, f"/{node_name}/{topic}", self._callback(topic), 1000)

    def _callback(self, topic: str) -> Any:
        def keep(message: Any) -> None:
            with self._lock:
                self.received[topic].messages.append((time.monotonic(), message))
        return keep

    def snapshot(self) -> dict[str, list[tuple[float, Any]]]:
        """A copy of everything received so far."""
        with self._lock:
            return {topic: list(r.messages) for topic, r in self.received.items()}


def _pixels(message: Any) -> np.ndarray:
    """The pixels of an image message (class ids, grey or colour), colour ones as RGB whatever their encoding."""
    from madm_ros.image_conversion import image_to_array

    image = image_to_array(message)
    return image[:, :, ::-1] if message.encoding == "bgr8" else image


IMAGE_FOLDERS = {"edge_frame": "edge_frames", "raw_segmentation_mask": "masks", "colored_segmentation_mask": "colored",
                 "segmentation_overlay": "overlays"}
"""Topic → the folder of ``--out`` its first messages are saved in (as ``<stamp>.png``)."""
PANEL_FOLDER = "panels"
ANIMATION_STEM = "demo"
"""The animation is ``--out/demo.gif``."""


def _remove_earlier_results(out: Path) -> int:
    """Remove what an earlier demo wrote into ``out`` (stamp-named PNGs in its folders, the animation); return how many.

    Only where ``out/summary.json`` is a demo's: a folder of someone's data (``masks/000123.png``)
    is never touched.
    """
    try:
        earlier_summary = json.loads((out / "summary.json").read_text())
    except (OSError, ValueError):
        return 0
    if not (isinstance(earlier_summary, dict) and {"edge_frames", "masks_out", "images"} <= set(earlier_summary)):
        return 0
    earlier = [path for folder in (*IMAGE_FOLDERS.values(), PANEL_FOLDER) for path in (out / folder).glob("*.png")
               if path.stem.isdigit()]
    earlier += [path for path in (out / f"{ANIMATION_STEM}.gif",) if path.is_file()]
    for path in earlier:
        path.unlink()
    return len(earlier)


def _save_images(out: Path, received: dict[str, list[tuple[float, Any]]], max_images: int) -> dict[str, int]:
    written = {}
    for topic, folder in IMAGE_FOLDERS.items():
        (out / folder).mkdir(parents=True, exist_ok=True)
        messages = received[topic][:max_images]
        for _, message in messages:
            atomic_write_png(out / folder / f"{stamp_to_ns(message.header.stamp)}.png", _pixels(message))
        written[folder] = len(messages)
    return written


def _played_us(source: SyntheticEventSource, message: Any) -> int:
    """A message's stamp on the source's played clock (µs since playback began), where the labels live."""
    return (stamp_to_ns(message.header.stamp) - source.base_ns) // 1000


def _match_labels(source: SyntheticEventSource, masks: list[tuple[float, Any]], tolerance_ns: int) -> dict[int, np.ndarray]:
    """Mask stamp (ns) → its scene label, for the masks that are scored, in arrival order.

    Labels and masks are paired by the package's one rule (:mod:`madm_ros.label_matching`, as
    ``bag_eval`` pairs them): each label with its nearest mask within ``tolerance_ns``, one label per
    mask. The score and the panels both read this one mapping, so a panel's ground truth is the
    label its mask was scored against.
    """
    from madm_ros.label_matching import NearestFrames

    label_times = sorted(source.labels)
    matcher = NearestFrames([t * 1000 for t in label_times], tolerance_ns)
    for index, (_, message) in enumerate(masks):
        matcher.offer(index, _played_us(source, message) * 1000)
    matches = sorted(matcher.matches().values(), key=lambda match: match.frame)
    return {stamp_to_ns(masks[m.frame][1].header.stamp): source.labels[label_times[m.label]] for m in matches}


def _latencies(source: SyntheticEventSource, masks: list[tuple[float, Any]]) -> list[float]:
    """Slice end (when the source played it) → mask arrival, in ms."""
    return [(arrived - (source.start_wall + _played_us(source, message) / 1e6)) * 1e3 for arrived, message in masks]


def _score(masks: list[tuple[float, Any]], labels: dict[int, np.ndarray], label_set: LabelSet) -> dict[str, Any]:
    """MIoU of the masks against their labels (``labels``: from :func:`_match_labels`), two ways.

    ``miou`` is :class:`~madm_ros.metrics.ConfusionMatrix`'s: the mean over the classes in the ground
    truth *or* the prediction, so a class the model predicts but the scenes never show counts with
    IoU 0. ``miou_present`` averages only the classes in the ground truth (``classes_present``),
    which says how well the scene's own classes are found; it is never below ``miou``.
    """
    from madm_ros.metrics import ConfusionMatrix
    from madm_ros.palettes import subset_miou

    by_stamp = {stamp_to_ns(message.header.stamp): message for _, message in masks}
    matrix = ConfusionMatrix(label_set.num_classes)
    for stamp, label in labels.items():
        matrix.update(_pixels(by_stamp[stamp]), label)
    if not labels:
        return {"miou": None, "miou_present": None, "classes_present": [], "per_class_iou": None, "frames_scored": 0}
    scores = matrix.as_dict(label_set.class_names)
    present = [name for name, row in zip(label_set.class_names, matrix.matrix) if row.sum() > 0]  # rows: ground truth
    return {"miou": scores["miou"], "miou_present": subset_miou(scores["per_class_iou"], present),
            "classes_present": present, "per_class_iou": scores["per_class_iou"], "frames_scored": len(labels)}


def _save_panels(out: Path, received: dict[str, list[tuple[float, Any]]], label_set: LabelSet,
                 labels: dict[int, np.ndarray] | None, max_images: int) -> tuple[int, str | None]:
    """Write ``panels/`` and the animation; return how many panels and the animation's file name.

    Each panel is edge frame | coloured mask | coloured ground truth (``labels``, the scored
    masks only) or, without labels, edge frame | coloured mask | overlay. The edge frame and overlay
    are the node's messages with the mask's stamp; both colour columns use the node's palette.
    """
    from madm_ros.eval_plots import side_by_side_figure, write_animation
    from madm_ros.palettes import IGNORE_INDEX, colorize

    overlays = {stamp_to_ns(m.header.stamp): m for _, m in received["segmentation_overlay"]}
    needed = labels if labels is not None else overlays  # the masks whose third column exists
    masks = [(t, m) for t, m in received["raw_segmentation_mask"] if stamp_to_ns(m.header.stamp) in needed]
    (out / PANEL_FOLDER).mkdir(parents=True, exist_ok=True)
    panels = []
    for (_, mask), (_, edge) in _pair_by_stamp(masks, received["edge_frame"])[:max_images]:
        stamp = stamp_to_ns(mask.header.stamp)
        prediction = _pixels(mask)
        shown = [prediction] if labels is None else [prediction, labels[stamp]]
        present = np.unique(np.concatenate([ids.ravel() for ids in shown]))
        right = colorize(labels[stamp], label_set) if labels is not None else _pixels(overlays[stamp])
        seconds = (stamp - stamp_to_ns(masks[0][1].header.stamp)) / 1e9
        panel = side_by_side_figure(
            [_pixels(edge), colorize(prediction, label_set), right],
            [f"edge frame, t = {seconds:.2f} s", "prediction", "ground truth" if labels is not None else "overlay"],
            [int(c) for c in present if c != IGNORE_INDEX], label_set)
        atomic_write_png(out / PANEL_FOLDER / f"{stamp}.png", panel)
        panels.append(panel)
    animation = write_animation(out / ANIMATION_STEM, panels[:ANIMATION_MAX_FRAMES], ANIMATION_FPS)
    return len(panels), animation.name if animation else None


def run_demo(config: DemoConfig) -> dict[str, Any]:
    """Run the demo and return the summary (also written to ``config.out / "summary.json"``)."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from madm_ros.bag_play import BagPlayer
    from madm_ros.metrics import latency_summary
    from madm_ros.nodes.event_segmentation import EventSegmentationNode, message_class

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if config.seconds <= 0:
        raise MadmError(f"--seconds must be positive, got {config.seconds}")
    config.out.mkdir(parents=True, exist_ok=True)
    scenes: list[SceneFrame] = []
    source_name = str(config.bag) if config.bag else config.topic
    message_type = config.message_type
    if config.bag is None and config.topic is None:
        try:
            message_class(message_type)
        except MadmError as error:
            print(f"demo: {error}; publishing madm_ros/PackedEvents instead", file=sys.stderr)
            message_type = "packed"
        sensor_hw, scene_set = scene_settings(config.model)
        scenes, size_hw = render_scenes(config.scene_frames, config.seed, sensor_hw, scene_set)
        source_name = f"synthetic {scene_set} scenes, {size_hw[0]}x{size_hw[1]} event camera"
    source_topic = "events" if config.bag is None and config.topic is None else None

    rclpy.init()
    node_name = "event_segmentation"
    try:
        remap = [] if source_topic else ["-r", f"events:={config.topic or '/event_camera/events'}"]
        if config.bag is not None and config.topic is None:
            from madm_ros.events.bags import read_bag_events  # noqa: F401 - fails early on a missing rosbags
            remap = ["-r", f"events:={_bag_event_topic(config.bag)}"]
        segmenter = EventSegmentationNode(node_name, cli_args=["--ros-args", *remap], parameter_overrides=[
            Parameter("model_file_path", value=config.model), Parameter("backend", value=config.backend),
            Parameter("threads", value=config.threads), Parameter("message_type", value=message_type),
            Parameter("input_qos", value="DEFAULT")])
        if segmenter.segmenter is None:
            raise MadmError(f"the event segmentation node could not start: {segmenter.failure}")
        harness = rclpy.create_node("demo")
        recorder = DemoRecorder(harness, node_name)
        executor = SingleThreadedExecutor()  # as spin_nodes: inference has its own thread
        executor.add_node(segmenter)
        executor.add_node(harness)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        source = None
        messages_sent: int | None = None  # live topics: unknown
        started = time.monotonic()
        if scenes:
            source = SyntheticEventSource(harness, scenes, size_hw, message_type)
            _wait_for_match(source.publisher)
            print(f"demo: playing {len(scenes)} synthetic frames in a loop for {config.seconds:g} s", file=sys.stderr)
            source.run(config.seconds)
            messages_sent = source.packets_sent
        elif config.bag is not None:
            player = BagPlayer(harness, config.bag, topics=[_bag_event_topic(config.bag)])
            player.wait_for_subscribers(10)
            print(f"demo: playing {config.bag} for at most {config.seconds:g} s", file=sys.stderr)
            timer = threading.Timer(config.seconds, player.stop)
            timer.start()
            messages_sent = player.play().messages
            timer.cancel()
        else:
            print(f"demo: listening to {config.topic} for {config.seconds:g} s", file=sys.stderr)
            time.sleep(config.seconds)
        _wait_until_idle(segmenter, recorder, messages_sent)
        elapsed = time.monotonic() - started
        received = recorder.snapshot()
        counters = segmenter.counters()
        labels = segmenter.segmenter.label_set if segmenter.segmenter else None
        params = segmenter.params or segmenter.read_params()
        window_ns = round(params.accumulation_time_ms * 1e6) if params.slice_method == "time" else None
        executor.shutdown(timeout_sec=5)
        described = segmenter.segmenter.backend.describe() if segmenter.segmenter else {}
        segmenter.destroy_node()
        harness.destroy_node()
    finally:
        if rclpy.ok():
            rclpy.shutdown()

    masks = received["raw_segmentation_mask"]
    summary: dict[str, Any] = {
        "source": source_name,
        "message_type": message_type,
        "model": described.get("path"), "backend": described.get("backend"),
        "seconds": round(elapsed, 3),
        "events_in": counters.get("events_decode_events", 0),
        "edge_frames": len(received["edge_frame"]), "frames_in": counters.get("frames_in", 0),
        "masks_out": len(masks), "dropped_frames": counters.get("total_dropped_frames", 0),
        "node_processing_ms": {"p50": counters.get("processing_time_ms"), "p99": counters.get("processing_time_p99_ms")},
        "inference_ms_p50": counters.get("inference_time_ms"),
        "problems": {k: v for k, v in counters.items() if k.startswith("problem_")},
    }
    matched: dict[int, np.ndarray] | None = None
    if source is not None and labels is not None:
        matched = _match_labels(source, masks, default_tolerance_ns("events", window_ns))
        summary["latency_ms"] = latency_summary(_latencies(source, masks))
        summary.update(_score(masks, matched, labels))
        summary["events_published"] = source.events_sent
    else:
        latencies = [(arrived - received_edge) * 1e3 for (arrived, _), (received_edge, _)
                     in _pair_by_stamp(masks, received["edge_frame"])]
        summary["latency_ms"] = latency_summary(latencies)  # edge frame seen → mask seen, both at the recorder
        summary["miou"] = None
    removed = _remove_earlier_results(config.out)
    if removed:
        print(f"demo: replaced the earlier demo's results in {config.out} ({removed} files)", file=sys.stderr)
    summary["images"] = _save_images(config.out, received, config.max_images)
    if labels is not None:
        summary["panels"], summary["animation"] = _save_panels(config.out, received, labels, matched, config.max_images)
    atomic_write_bytes(config.out / "summary.json", (json.dumps(json_ready(summary), indent=2) + "\n").encode())
    return summary


def _bag_event_topic(bag: Path) -> str:
    from madm_ros.events.bags import _event_topics

    topics = _event_topics(bag)
    if not topics:
        raise MadmError(f"{bag} has no event topic (EventPacket, dvs/dv EventArray or PackedEvents)")
    return topics[0][0]


def _pair_by_stamp(masks: list[tuple[float, Any]], edges: list[tuple[float, Any]]) -> list[tuple[Any, Any]]:
    by_stamp = {stamp_to_ns(m.header.stamp): (t, m) for t, m in edges}
    return [((t, m), by_stamp[stamp_to_ns(m.header.stamp)]) for t, m in masks if stamp_to_ns(m.header.stamp) in by_stamp]


def _wait_for_match(publisher: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)


def _wait_until_idle(node: Any, recorder: DemoRecorder, messages_sent: int | None, timeout: float = 10.0) -> None:
    """Let the last messages into the node, its last frames through it and to the recorder."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if messages_sent is not None and (node.source is None or node.source.messages < messages_sent):
            time.sleep(0.05)
            continue
        counters = node.counters()
        done = counters["frames_out"] + counters["total_dropped_frames"] + counters["skipped_no_subscribers"]
        if done >= counters["frames_in"] and len(recorder.snapshot()["raw_segmentation_mask"]) >= counters["frames_out"]:
            return
        time.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; exit code 2 names a problem with the input or setup."""
    parser = argparse.ArgumentParser(prog="python -m madm_ros.demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DemoConfig.out, help="output folder (default: demo_out)")
    parser.add_argument("--seconds", type=float, default=DemoConfig.seconds, help="how long to play (default 8)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--bag", type=Path, help="play this bag's event topic instead of the synthetic scenes")
    source.add_argument("--topic", help="segment this live event topic instead (no source is started)")
    parser.add_argument("--model", default="", help="ONNX model (default: the built-in models/events_student.onnx)")
    parser.add_argument("--backend", default="auto", choices=BACKEND_CHOICES, help="default auto")
    parser.add_argument("--message-type", default="event_packet", choices=tuple(MESSAGE_TYPES),
                        help="event message type of --topic, or the one the synthetic source publishes (default "
                             "event_packet: evt3)")
    parser.add_argument("--scene-frames", type=int, default=DemoConfig.scene_frames,
                        help="synthetic 50 ms frames rendered before playing, then looped (default 24)")
    parser.add_argument("--max-images", type=int, default=DemoConfig.max_images,
                        help="PNGs kept per output (default 40)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime CPU threads (default 0: one per core)")
    args = parser.parse_args(argv)
    config = DemoConfig(out=args.out, seconds=args.seconds, bag=args.bag, topic=args.topic, model=args.model,
                        backend=args.backend, message_type=args.message_type, scene_frames=args.scene_frames,
                        max_images=args.max_images, threads=args.threads)
    try:
        summary = run_demo(config)
    except MadmError as error:
        print(f"demo: {error}", file=sys.stderr)
        return 2
    miou = summary.get("miou")
    print(f"demo: {summary['events_in']} events → {summary['edge_frames']} edge frames → {summary['masks_out']} masks "
          f"({summary['dropped_frames']} dropped), latency p50 {summary['latency_ms']['p50']:.1f} ms"
          + (f", mIoU {100 * miou:.1f} % on {summary['frames_scored']} labelled frames" if miou is not None else ""))
    print(f"demo: wrote {config.out / 'summary.json'} and PNGs in {config.out}/"
          + (f", side-by-side panels in {config.out / PANEL_FOLDER}/" if summary.get("panels") else "")
          + (f", the animation {config.out / summary['animation']}" if summary.get("animation") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
