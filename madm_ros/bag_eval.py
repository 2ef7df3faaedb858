"""``python -m madm_ros.bag_eval BAG``: the node's pipeline over a recorded bag, scored against labels, no ROS needed.

Why offline: accuracy must be measured on exactly what the robot computes, reproducibly and
without real-time drops; and a bag with the masks written back lets anyone look at them in RViz
(``ros2 bag play OUT/output_bag``). So this runs the very code the nodes run, frame by frame and in
order: ``image_to_array`` + :meth:`Segmenter.segment` for depth and thermal ``sensor_msgs/Image``
topics, :class:`~madm_ros.events.stream.EventFrameStream` + :meth:`Segmenter.segment` (``mono8``)
for event topics, configured by the node's own parameter file (``--config config/events.yaml``;
unknown keys are errors, as in the node). Every frame is segmented: nothing is dropped for lack of
time, so two runs give identical masks, and those equal the masks the live node publishes for the
frames it does not drop.

Labels: a label image topic (``--label-topic``: ``sensor_msgs/Image`` mono8 class ids, 255 =
ignore, stamped like the frames) or a folder of PNGs (``--label-dir``: single-channel uint8 class
ids named by their stamp, ``<stamp_ns>.png`` or ``<sec>_<nanosec>.png``). Each label is scored
once, against the frame whose stamp is nearest, if within ``--tolerance-ms`` (default: 1 ms for
images; half the accumulation window for events, whose frame ends follow the first event).

Outputs in ``--out``: ``report.json`` (``miou``, ``per_class_iou``, ``frames``, ``dropped``,
``latency_ms_p50``, ``latency_ms_p99`` and more), ``report.md``, ``iou.png``, ``confusion.png``,
``latency.png``, and ``output_bag/`` (raw masks, colour masks, overlays and, for events, edge
frames, stamped and logged at the input stamps). A bad bag gives a one-line message and exit code
2; when reading breaks off part way (a truncated file), everything read so far is still evaluated
and written, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import json
import re
import sys
import time
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.backends import BACKEND_CHOICES
from madm_ros.errors import ConfigError, DecodeError, InputError, MadmError
from madm_ros.node_params import load_node_config, params_from_values
from madm_ros.problems import ProblemCounter
from madm_ros.ros_messages import stamp_to_ns
from madm_ros.segmenter import load_segmenter

__all__ = ["EvalOptions", "evaluate_bag", "load_node_config", "main", "simulate_realtime_drops"]

IMAGE_TYPE = "sensor_msgs/msg/Image"
OUTPUT_TOPICS = ("raw_segmentation_mask", "colored_segmentation_mask", "segmentation_overlay", "edge_frame")
LABEL_FILE = re.compile(r"^(?:(?P<ns>\d+)|(?P<sec>\d+)_(?P<nsec>\d+))\.png$")


# ---------------------------------------------------------------------------------------------- options and parameters
@dataclass(frozen=True)
class EvalOptions:
    """What to evaluate (``--help`` explains each); ``None`` = the node parameter file's value or the default."""

    bag: Path
    out: Path
    config: Path | None = None
    model: str | None = None
    backend: str | None = None
    threads: int | None = None
    topic: str | None = None
    label_topic: str | None = None
    label_dir: Path | None = None
    tolerance_ms: float | None = None
    label_set: str | None = None
    output_bag_format: str = "sqlite3"  # sqlite3, mcap or none
    output_prefix: str | None = None
    max_frames: int | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        if self.label_topic and self.label_dir:
            raise ConfigError("give labels as --label-topic or --label-dir, not both")
        if self.output_bag_format not in ("sqlite3", "mcap", "none"):
            raise ConfigError(f"--output-bag-format must be sqlite3, mcap or none, got {self.output_bag_format!r}")
        if self.tolerance_ms is not None and not self.tolerance_ms >= 0:
            raise ConfigError(f"--tolerance-ms must be ≥ 0, got {self.tolerance_ms}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"--max-frames must be ≥ 1, got {self.max_frames}")
        if self.threads is not None and self.threads < 0:
            raise ConfigError(f"--threads must be ≥ 0 (0 = one per core), got {self.threads}")


# ---------------------------------------------------------------------------------------------- labels
class Labels:
    """Label images by stamp (ns), from a label topic (kept zlib-compressed in memory) or a folder of PNGs."""

    def __init__(self) -> None:
        self._items: dict[int, Any] = {}  # stamp -> (compressed bytes, shape) or Path
        self.stamps: list[int] = []
        self.problems: Counter[str] = Counter()
        self.notes: dict[str, str] = {}

    def _note(self, kind: str, text: str) -> None:
        self.problems[kind] += 1
        self.notes.setdefault(kind, text)

    @classmethod
    def from_dir(cls, folder: Path) -> Labels:
        """PNG files named ``<stamp_ns>.png`` or ``<sec>_<nanosec>.png``; other files are counted and ignored."""
        labels = cls()
        if not folder.is_dir():
            raise ConfigError(f"label folder {folder} does not exist")
        for file in sorted(folder.iterdir()):
            match = LABEL_FILE.match(file.name)
            if not match:
                labels._note("label_file_name", f"{file.name} in {folder} is not named <stamp_ns>.png or "
                             "<sec>_<nanosec>.png; such files are ignored")
                continue
            stamp = int(match["ns"]) if match["ns"] else int(match["sec"]) * 1_000_000_000 + int(match["nsec"])
            labels._add(stamp, file)
        labels.stamps = sorted(labels._items)
        return labels

    @classmethod
    def from_topic(cls, source: Any, topic: str) -> Labels:
        """Every message of ``topic`` (mono8 / 8UC1 images), keyed by header stamp."""
        from madm_ros.image_conversion import image_to_array

        labels = cls()
        msgtype = source.topics.get(topic)
        if msgtype is None:
            raise DecodeError(f"bag {source.path} has no label topic {topic!r}; it has: {_describe(source.topics)}")
        if msgtype != IMAGE_TYPE:
            raise DecodeError(f"label topic {topic} is {msgtype}; labels must be {IMAGE_TYPE} (mono8 class ids)")
        for _, _, _, raw in source.messages({topic}):
            try:
                message = source.deserialize(raw, msgtype)
                if message.encoding not in ("mono8", "8UC1"):
                    raise InputError(f"label images must be mono8 class ids, got {message.encoding}")
                array = image_to_array(message)
            except Exception as error:  # a malformed label message is skipped, not fatal
                labels._note("bad_label_message", f"label message on {topic} skipped: {error}")
                continue
            stamp = stamp_to_ns(message.header.stamp)
            labels._add(stamp, (zlib.compress(array.tobytes(), 1), array.shape))
        labels.stamps = sorted(labels._items)
        return labels

    def _add(self, stamp: int, item: Any) -> None:
        if stamp in self._items:
            self._note("duplicate_label", f"two labels stamped {stamp} ns; the first is used")
            return
        self._items[stamp] = item

    def near(self, stamp: int, tolerance_ns: int) -> list[int]:
        """Label stamps within ``tolerance_ns`` of ``stamp``."""
        lo = bisect.bisect_left(self.stamps, stamp - tolerance_ns)
        hi = bisect.bisect_right(self.stamps, stamp + tolerance_ns)
        return self.stamps[lo:hi]

    def load(self, stamp: int) -> np.ndarray:
        """The label image (uint8 class ids); ``InputError`` for an unreadable or multi-channel file."""
        item = self._items[stamp]
        if isinstance(item, Path):
            import cv2

            array = cv2.imread(str(item), cv2.IMREAD_UNCHANGED)
            if array is None:
                raise InputError(f"cannot read label {item}")
            if array.dtype != np.uint8 or array.ndim != 2:
                raise InputError(f"label {item} must be a single-channel 8-bit PNG of class ids, "
                                 f"got {array.dtype} with shape {array.shape}")
            return array
        data, shape = item
        return np.frombuffer(zlib.decompress(data), np.uint8).reshape(shape)


def _describe(topics: dict[str, str]) -> str:
    return ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "no topics"


# ---------------------------------------------------------------------------------------------- the run
@dataclass
class _Candidate:
    distance: int
    frame_stamp: int
    prediction: bytes
    shape: tuple[int, ...]


@dataclass
class _Run:
    """Everything the evaluation collects while it runs (turned into the report at the end)."""

    frames: int = 0
    dropped: int = 0
    messages: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    inference_ms: list[float] = field(default_factory=list)
    arrivals: list[tuple[float, float]] = field(default_factory=list)  # (log time s, processing s) per frame
    frame_stamps: list[int] = field(default_factory=list)
    best: dict[int, _Candidate] = field(default_factory=dict)  # label stamp -> nearest frame so far
    problems: Counter[str] = field(default_factory=Counter)
    notes: dict[str, str] = field(default_factory=dict)
    stopped_early: str = ""
    max_frames_reached: bool = False
    kind: str = ""

    def note(self, kind: str, text: str) -> None:
        self.problems[kind] += 1
        self.notes.setdefault(kind, text)


def simulate_realtime_drops(arrivals: Sequence[tuple[float, float]]) -> int:
    """Frames a node with one inference thread and a one-frame slot would drop at the recorded rate.

    ``arrivals`` are ``(time s, processing s)`` in arrival order; a frame that is still waiting
    when the next one arrives is replaced (:class:`~madm_ros.nodes.worker.LatestSlot`).
    """
    free_at, pending, dropped = float("-inf"), None, 0
    for t, cost in arrivals:
        if pending is not None and free_at <= t:
            free_at, pending = max(free_at, pending[0]) + pending[1], None
        if pending is not None:
            dropped += 1
            pending = (t, cost)
        elif free_at <= t:
            free_at = t + cost
        else:
            pending = (t, cost)
    return dropped


class _Pipeline:
    """One input topic through the node's steps, with the outputs, label matching and timing around them."""

    def __init__(self, kind: str, params: Any, segmenter: Any, labels: Labels | None, tolerance_ns: int,
                 output: Any, prefix: str, run: _Run) -> None:
        self.kind, self.params, self.segmenter, self.labels = kind, params, segmenter, labels
        self.tolerance_ns, self.output, self.prefix, self.run = tolerance_ns, output, prefix, run
        self.stream: Any = None
        self._size: tuple[int, ...] | None = None
        self._t0_log: int | None = None
        if kind == "events":
            from madm_ros.events.stream import EventFrameStream
            from madm_ros.node_params import edge_fields

            self.stream = EventFrameStream(params.message_type, edge_fields(params), ProblemCounter(self._stream_warning),
                                           restart_after_us=round(params.restart_after_ms * 1000))

    def _stream_warning(self, kind: str, text: str) -> None:
        """The stream counts its problems itself (merged into the run at the end); keep the first text of each kind."""
        self.run.notes.setdefault(f"events_{kind}", text)

    def finish(self) -> None:
        """Merge the event stream's problem counters into the run's."""
        if self.stream is not None:
            for kind, count in self.stream.problems.counts.items():
                self.run.problems[f"events_{kind}"] = count

    def push(self, message: Any, log_ns: int) -> None:
        """One input message (already deserialized)."""
        from madm_ros.image_conversion import image_to_array

        started = time.perf_counter()
        if self._t0_log is None:
            self._t0_log = log_ns
        if self.kind == "events":
            frames = self.stream.push(message)
            before_ms = (time.perf_counter() - started) * 1e3
            for frame in frames:
                self._frame(frame.image, "mono8", frame.stamp_ns, frame.frame_id, before_ms, log_ns, edge=True)
            return
        try:
            array = image_to_array(message)
        except InputError as error:
            self.run.note(f"bad_image:{message.encoding}", f"image skipped: {error}")
            self.run.dropped += 1
            return
        size = array.shape[:2]
        if self._size is not None and size != self._size:
            self.run.note("size_change", f"input size changed from {self._size[1]}x{self._size[0]} to {size[1]}x{size[0]}; "
                          "masks follow the input")
        self._size = size
        stamp = stamp_to_ns(message.header.stamp)
        before_ms = (time.perf_counter() - started) * 1e3
        self._frame(array, str(message.encoding), stamp, str(message.header.frame_id), before_ms, log_ns, edge=False)

    def _frame(self, array: np.ndarray, encoding: str, stamp: int, frame_id: str, before_ms: float, log_ns: int,
               edge: bool) -> None:
        start = time.perf_counter()
        try:
            segmentation = self.segmenter.segment(array, encoding)
            color = self.params.color_segmentation_mask_encoding
            colored = segmentation.colored(color)
            overlay = segmentation.overlay(self.params.overlay_alpha, color)
        except MadmError as error:
            self.run.note(f"bad_input:{type(error).__name__}", f"frame at {stamp} ns skipped: {error}")
            self.run.dropped += 1
            return
        cost = time.perf_counter() - start
        run = self.run
        run.frames += 1
        run.latencies_ms.append(before_ms + cost * 1e3)
        run.inference_ms.append(segmentation.timings_ms["inference"])
        assert self._t0_log is not None
        run.arrivals.append(((log_ns - self._t0_log) / 1e9, cost))
        run.frame_stamps.append(stamp)
        labels = segmentation.labels
        if self.output is not None:
            self.output.write_image(f"{self.prefix}/raw_segmentation_mask", labels, "mono8", stamp, frame_id)
            self.output.write_image(f"{self.prefix}/colored_segmentation_mask", colored, color, stamp, frame_id)
            self.output.write_image(f"{self.prefix}/segmentation_overlay", overlay, color, stamp, frame_id)
            if edge:
                self.output.write_image(f"{self.prefix}/edge_frame", array, "mono8", stamp, frame_id)
        if self.labels is not None:
            packed: bytes | None = None
            for label_stamp in self.labels.near(stamp, self.tolerance_ns):
                distance = abs(stamp - label_stamp)
                best = run.best.get(label_stamp)
                if best is None or distance < best.distance:
                    packed = packed or zlib.compress(labels.tobytes(), 1)
                    run.best[label_stamp] = _Candidate(distance, stamp, packed, labels.shape)


def _score(run: _Run, labels: Labels, segmenter: Any, label_set: str | None) -> Any:
    """The data-set confusion matrix over every label that found a frame (ids mapped from ``label_set`` when given)."""
    from madm_ros.metrics import ConfusionMatrix
    from madm_ros.palettes import label_mapping, remap_labels
    from madm_ros.segmenter import resize_labels

    lut = label_mapping(label_set, segmenter.label_set.name) if label_set else None
    matrix = ConfusionMatrix(segmenter.label_set.num_classes)
    for label_stamp in sorted(run.best):
        candidate = run.best[label_stamp]
        try:
            label = labels.load(label_stamp)
        except InputError as error:
            run.note("bad_label", f"label {label_stamp} skipped: {error}")
            continue
        if lut is not None:
            label = remap_labels(label, lut)
        prediction = np.frombuffer(zlib.decompress(candidate.prediction), np.uint8).reshape(candidate.shape)
        if prediction.shape != label.shape:
            run.note("label_size", f"labels are {label.shape[1]}x{label.shape[0]} but masks {prediction.shape[1]}x"
                     f"{prediction.shape[0]}; masks are resized (nearest) to the label size for scoring")
            prediction = resize_labels(prediction, label.shape)
        try:
            matrix.update(prediction, label)
        except InputError as error:
            run.note("bad_label", f"label {label_stamp} skipped: {error}")
    return matrix


def _choose_topic(source: Any, options: EvalOptions, kind_hint: str | None) -> tuple[str, str]:
    """``(topic, kind)`` of the input: ``--topic``, or the one depth / thermal / event topic the bag has."""
    from madm_ros.events.bags import EVENT_TYPES

    def kind_of(msgtype: str) -> str | None:
        return "events" if msgtype in EVENT_TYPES else "image" if msgtype == IMAGE_TYPE else None

    if options.topic is not None:
        msgtype = source.topics.get(options.topic)
        if msgtype is None:
            raise DecodeError(f"bag {source.path} has no topic {options.topic!r}; it has: {_describe(source.topics)}")
        kind = kind_of(msgtype)
        if kind is None:
            raise DecodeError(f"topic {options.topic} is {msgtype}, which is not a camera input; madm evaluates "
                              f"{IMAGE_TYPE} (depth, thermal) and {', '.join(EVENT_TYPES)}")
        if kind_hint is not None and kind != kind_hint:
            raise ConfigError(f"the parameter file is for the {kind_hint} node but topic {options.topic} is {msgtype}")
        return options.topic, kind
    candidates = sorted(t for t, m in source.topics.items() if kind_of(m) and t != options.label_topic
                        and (kind_hint is None or kind_of(m) == kind_hint))
    if len(candidates) != 1:
        found = "no depth, thermal or event topic" if not candidates else f"several inputs ({', '.join(candidates)})"
        raise DecodeError(f"bag {source.path} has {found}; choose one with --topic (topics: {_describe(source.topics)})")
    return candidates[0], kind_of(source.topics[candidates[0]]) or "image"


def _peek_encoding(source: Any, topic: str) -> str:
    for _, msgtype, _, raw in source.messages({topic}):
        try:
            return str(source.deserialize(raw, msgtype).encoding)
        except Exception:  # an undecodable first message: try the next
            continue
    raise DecodeError(f"topic {topic} has no readable message")


def _setup(options: EvalOptions, source: Any) -> tuple[str, str, Any, Any]:
    """Topic, kind, node parameters and segmenter, as the node would have them."""
    from madm_ros.events.stream import MESSAGE_TYPES
    from madm_ros.node_params import EventParams, ImageParams

    kind_hint, values = load_node_config(options.config) if options.config else (None, {})
    topic, kind = _choose_topic(source, options, kind_hint)
    values = dict(values)
    for name, value in (("model_file_path", options.model), ("backend", options.backend), ("threads", options.threads)):
        if value is not None:
            values[name] = value
    source_name = str(options.config or "parameters")
    msgtype = source.topics[topic]
    if kind == "events":
        message_type = next(k for k, v in MESSAGE_TYPES.items() if v == msgtype)
        if values.setdefault("message_type", message_type) != message_type:
            raise ConfigError(f"topic {topic} carries {msgtype} but message_type is {values['message_type']}; "
                              f"set message_type: {message_type}")
        params = params_from_values(EventParams, values, source_name)
        return topic, kind, params, load_segmenter(params, "events")
    if "modality" not in values and values.get("model_file_path"):  # the model says which
        params = params_from_values(ImageParams, values, source_name)
        segmenter = load_segmenter(params, None)
        if segmenter.modality not in ("depth", "thermal"):
            raise ConfigError(f"model {params.model_file_path} is for {segmenter.modality}, but topic {topic} carries images; "
                              "use a depth or thermal model")
        return topic, kind, dataclasses.replace(params, modality=segmenter.modality), segmenter
    if "modality" not in values:  # no model either: the encoding tells depth from thermal
        encoding = _peek_encoding(source, topic)
        values["modality"] = {"16UC1": "depth", "32FC1": "depth", "mono16": "thermal"}.get(encoding)
        if values["modality"] is None:
            raise ConfigError(f"cannot tell whether {encoding} images on {topic} are depth or thermal; "
                              "give --config (config/depth.yaml or config/thermal.yaml) or --model")
    params = params_from_values(ImageParams, values, source_name)
    return topic, kind, params, load_segmenter(params, params.modality)


def evaluate_bag(options: EvalOptions) -> dict[str, Any]:
    """Run the evaluation and write the report, plots and output bag; returns the report (``exit_code`` inside).

    Raises:
        MadmError: bad options, an unreadable bag, a missing topic or model (nothing was evaluated;
            ``report.json`` with the error is still written when ``options.out`` can be created).
    """
    from madm_ros.bag_source import BagSource, OutputBag

    run = _Run()
    report: dict[str, Any] = {"bag": str(options.bag), "error": None}
    out = Path(options.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create output folder {out}: {error}") from None
    output: Any = None
    matrix: Any = None
    segmenter: Any = None
    try:
        with BagSource(options.bag) as source:
            report.update(storage=source.storage, read_note=source.note or None)
            topic, kind, params, segmenter = _setup(options, source)
            modality = segmenter.modality
            if options.label_set:  # a label set the model's cannot be mapped from is refused before the run
                from madm_ros.palettes import label_mapping

                label_mapping(options.label_set, segmenter.label_set.name)
            labels = None
            if options.label_topic:
                labels = Labels.from_topic(source, options.label_topic)
            elif options.label_dir:
                labels = Labels.from_dir(Path(options.label_dir))
            tolerance_ms = options.tolerance_ms
            if tolerance_ms is None:
                tolerance_ms = (params.accumulation_time_ms / 2 if params.slice_method == "time" else 25.0) \
                    if kind == "events" else 1.0
            node = "event_segmentation" if kind == "events" else f"{modality}_segmentation"
            prefix = (options.output_prefix or f"/{node}").rstrip("/")
            report.update(topic=topic, msgtype=source.topics[topic], modality=modality, tolerance_ms=tolerance_ms,
                          params=params.to_dict(), model=segmenter.backend.describe(),
                          label_set=segmenter.label_set.name, output_prefix=prefix)
            if options.output_bag_format != "none":
                output = OutputBag(out / "output_bag", options.output_bag_format)
            segmenter.warm_up()  # as the node does on activate: the first frame must not pay for buffer allocation
            run.kind = kind
            pipeline = _Pipeline(kind, params, segmenter, labels, round(tolerance_ms * 1e6), output, prefix, run)
            _loop(source, topic, pipeline, options, run)
            pipeline.finish()
            if source.problem:
                run.stopped_early = source.problem
            report["stream"] = pipeline.stream.counters() if pipeline.stream is not None else {}
            if output is not None:
                output.commit()
                report["output_bag"] = {"path": str(out / "output_bag"), "format": options.output_bag_format,
                                        "topics": dict(output.counts)}
                output = None
            matrix = _score(run, labels, segmenter, options.label_set) if labels is not None else None
            report.update(_summary(run, labels, matrix, segmenter, round(tolerance_ms * 1e6)))
            if labels is not None and not report["labels_scored"]:
                if not labels.stamps:
                    why = "no labels were read" + (f" ({'; '.join(labels.notes.values())})" if labels.notes else "")
                elif not run.best:
                    why = run.notes.get("labels_without_frame", "no frame was produced")
                else:
                    why = "every matched label was unusable (see the warnings)"
                report["error"] = f"no label could be scored: {why}"
    except MadmError as error:
        report["error"] = str(error)
        report.update(_summary(run, None, None, None, 0))
        report["exit_code"] = 2
        _write_report(out, report, run, None, None)
        raise
    except KeyboardInterrupt:
        run.stopped_early = "interrupted (Ctrl-C)"
        report["error"] = run.stopped_early
        if output is not None:
            output.commit()
            output = None
        report.update(_summary(run, None, None, None, 0))
        report["exit_code"] = 130
        _write_report(out, report, run, None, None)
        return report
    finally:
        if output is not None:
            output.abort()
    report["exit_code"] = 2 if report.get("error") or run.stopped_early else 0
    _write_report(out, report, run, matrix, segmenter)
    return report


def _loop(source: Any, topic: str, pipeline: _Pipeline, options: EvalOptions, run: _Run) -> None:
    from tqdm import tqdm

    msgtype = source.topics[topic]
    with tqdm(total=source.counts.get(topic) or None, unit="msg", desc=topic, disable=not options.progress,
              file=sys.stderr, leave=False) as bar:
        for _, _, log_ns, raw in source.messages({topic}):
            bar.update(1)
            run.messages += 1
            try:
                message = source.deserialize(raw, msgtype)
            except Exception as error:  # a malformed record: skipped and counted, like a bad packet in the node
                run.note("undecodable_message", f"message at {log_ns} ns on {topic} could not be deserialized: {error}")
                continue
            pipeline.push(message, log_ns)
            if options.max_frames is not None and run.frames >= options.max_frames:
                run.max_frames_reached = True
                break


def _summary(run: _Run, labels: Labels | None, matrix: Any, segmenter: Any, tolerance_ns: int) -> dict[str, Any]:
    from madm_ros.metrics import latency_summary

    latency = latency_summary(run.latencies_ms)
    summary: dict[str, Any] = {
        "miou": None, "per_class_iou": {}, "pixel_accuracy": None, "confusion_matrix": [], "class_names": [],
        "frames": run.frames, "dropped": run.dropped, "messages": run.messages,
        "dropped_realtime_estimate": simulate_realtime_drops(run.arrivals),
        "latency_ms_p50": latency["p50"], "latency_ms_p99": latency["p99"], "latency_ms": latency,
        "inference_ms_p50": latency_summary(run.inference_ms)["p50"],
        "partial": bool(run.stopped_early), "stopped_early": run.stopped_early or None,
        "labels": 0, "labels_scored": 0, "labels_unmatched": 0, "frames_scored": 0,
    }
    if labels is not None:
        matched = set(run.best)
        last = max(run.frame_stamps, default=None)
        early = bool(run.stopped_early) or run.max_frames_reached
        unmatched = [s for s in labels.stamps if s not in matched
                     and not (early and (last is None or s > last + tolerance_ns))]
        summary.update(labels=len(labels.stamps), labels_unmatched=len(unmatched),
                       labels_not_reached=len(labels.stamps) - len(matched) - len(unmatched),
                       frames_scored=len({c.frame_stamp for c in run.best.values()}))
        for kind, count in labels.problems.items():
            run.problems[kind] += count
            run.notes.setdefault(kind, labels.notes[kind])
        if unmatched:
            stamps = sorted(run.frame_stamps)

            def gap_ms(s: int) -> float:
                i = bisect.bisect_left(stamps, s)
                near = [abs(stamps[j] - s) for j in (i - 1, i) if 0 <= j < len(stamps)]
                return min(near) / 1e6 if near else float("inf")

            run.problems["labels_without_frame"] = len(unmatched)
            run.notes["labels_without_frame"] = (
                f"{len(unmatched)} of {len(labels.stamps)} labels have no frame within ±{tolerance_ns / 1e6:g} ms "
                f"(first at {unmatched[0]} ns, nearest frame {gap_ms(unmatched[0]):.1f} ms away); raise --tolerance-ms "
                "or check that labels and frames share a clock"
                + ("; an event stream's last window closes only when a later event arrives, as in the node"
                   if run.kind == "events" else ""))
        summary["unmatched_label_stamps"] = unmatched[:20]
    if matrix is not None:
        names = list(segmenter.label_set.class_names)
        scored = matrix.as_dict(names)
        summary.update(scored, class_names=names, labels_scored=len(run.best))
    summary["warnings"] = [{"kind": k, "count": int(v), "message": run.notes.get(k, "")} for k, v in sorted(run.problems.items())]
    return summary


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return _json_ready(value.item())
    return value


def _write_report(out: Path, report: dict[str, Any], run: _Run, matrix: Any, segmenter: Any) -> None:
    from madm_ros.atomic_io import atomic_write_bytes
    from madm_ros.atomic_io import atomic_write_png as write_png
    from madm_ros.eval_plots import confusion_figure, iou_bars_figure, latency_figure

    report = _json_ready(report)
    figures: list[tuple[str, str]] = []
    if segmenter is not None and matrix is not None and report.get("labels_scored"):
        names = list(segmenter.label_set.class_names)
        iou = [report["per_class_iou"][n] for n in names]
        write_png(out / "iou.png", iou_bars_figure(names, iou, segmenter.label_set.palette(),
                                                   f"IoU per class (%), mIoU {100 * (report['miou'] or 0):.2f}"))
        write_png(out / "confusion.png", confusion_figure(matrix.matrix, names, "Confusion matrix"))
        figures += [("IoU per class", "iou.png"), ("Confusion matrix", "confusion.png")]
    if run.latencies_ms:
        write_png(out / "latency.png", latency_figure(run.latencies_ms, "Processing time per frame"))
        figures.append(("Processing time per frame", "latency.png"))
    report["figures"] = [name for _, name in figures]
    atomic_write_bytes(out / "report.json", (json.dumps(report, indent=1) + "\n").encode())
    atomic_write_bytes(out / "report.md", _markdown(report, matrix, segmenter, figures).encode())


def _fmt(value: Any, digits: int = 2, scale: float = 1.0) -> str:
    return "–" if value is None else f"{scale * value:.{digits}f}"


def _markdown(report: dict[str, Any], matrix: Any, segmenter: Any, figures: list[tuple[str, str]]) -> str:
    lines = [f"# Offline evaluation of `{report['bag']}`", ""]
    if report.get("error"):
        lines += [f"**Stopped:** {report['error']}", ""]
    elif report.get("stopped_early"):
        lines += [f"**Partial results:** {report['stopped_early']}", ""]
    model = report.get("model") or {}
    lines += ["| | |", "| --- | --- |",
              f"| topic | `{report.get('topic', '–')}` ({report.get('msgtype', '–')}, {report.get('storage', '–')}) |",
              f"| model | `{model.get('path', '–')}` on {model.get('backend', '–')} ({report.get('label_set', '–')}) |",
              f"| messages read | {report['messages']} |",
              f"| frames segmented | {report['frames']} |",
              f"| inputs dropped (unusable) | {report['dropped']} |",
              f"| drops at the recorded rate (estimate, one inference thread) | {report['dropped_realtime_estimate']} |",
              f"| processing time p50 / p99 | {_fmt(report['latency_ms_p50'])} / {_fmt(report['latency_ms_p99'])} ms |",
              f"| inference p50 | {_fmt(report['inference_ms_p50'])} ms |"]
    if report.get("labels"):
        lines += [f"| labels / scored / without frame | {report['labels']} / {report['labels_scored']} / "
                  f"{report['labels_unmatched']} (±{report.get('tolerance_ms')} ms) |",
                  f"| **mIoU** | **{_fmt(report['miou'], scale=100)} %** |",
                  f"| pixel accuracy | {_fmt(report['pixel_accuracy'], scale=100)} % |"]
    lines.append("")
    if matrix is not None and segmenter is not None and report.get("labels_scored"):
        lines += ["## IoU per class", "", matrix.table(list(segmenter.label_set.class_names)), ""]
    if report.get("warnings"):
        lines += ["## Warnings", ""] + [f"- `{w['kind']}` ×{w['count']}: {w['message']}".rstrip(": ")
                                         for w in report["warnings"]] + [""]
    if figures:
        lines += ["## Figures", ""] + [f"![{title}]({name})" for title, name in figures] + [""]
    bag = report.get("output_bag")
    if bag:
        lines += ["## Output bag", "", f"`{bag['path']}` ({bag['format']}): "
                  + ", ".join(f"`{t}` ({n})" for t, n in bag["topics"].items()), "",
                  f"Play it into RViz with `ros2 bag play {bag['path']}` (or `python -m madm_ros.bag_play {bag['path']}`).",
                  ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    """The ``--help`` of ``python -m madm_ros.bag_eval``."""
    parser = argparse.ArgumentParser(
        prog="python -m madm_ros.bag_eval",
        description="Run a segmentation node's pipeline over a depth, thermal or event topic of a bag (rosbag2 sqlite3 "
                    "or mcap, rosbag1), score the masks against labels and write report.md, report.json, plots and a "
                    "bag of masks, colour masks, overlays and edge frames. No ROS installation is needed.",
        epilog="Labels: --label-topic (sensor_msgs/Image mono8 class ids, 255 = ignore, stamped like the frames) or "
               "--label-dir (PNG class ids named <stamp_ns>.png or <sec>_<nanosec>.png). Each label is scored against "
               "the frame with the nearest stamp within --tolerance-ms. Exit codes: 0 done, 2 bad input or a bag that "
               "broke off part way (what was read is still evaluated and written).",
    )
    parser.add_argument("bag", type=Path, help="bag folder, or a single .mcap/.db3/.bag file")
    parser.add_argument("--out", type=Path, default=Path("bag_eval_out"), help="output folder (default: bag_eval_out)")
    parser.add_argument("--config", type=Path, help="the node's parameter file (config/events.yaml, depth.yaml, "
                        "thermal.yaml or your copy): the same settings as the node; default: the node's defaults")
    parser.add_argument("--model", help="model file; overrides model_file_path (default: the built-in model)")
    parser.add_argument("--backend", choices=BACKEND_CHOICES, help="overrides backend")
    parser.add_argument("--threads", type=int, help="ONNX Runtime CPU threads (0 = one per core); overrides threads")
    parser.add_argument("--topic", help="input topic (default: the bag's only depth, thermal or event topic)")
    labels = parser.add_mutually_exclusive_group()
    labels.add_argument("--label-topic", help="label image topic in the same bag")
    labels.add_argument("--label-dir", type=Path, help="folder of label PNGs named by stamp")
    parser.add_argument("--label-set", choices=("cityscapes19", "dsec11", "fmb9", "fmb15", "deliver25"),
                        help="label ids are of this set and are mapped to the model's (default: already the model's)")
    parser.add_argument("--tolerance-ms", type=float, help="largest label-to-frame stamp distance (default: 1 ms for "
                        "images, half the accumulation window for events)")
    parser.add_argument("--output-bag-format", choices=("sqlite3", "mcap", "none"), default="sqlite3",
                        help="storage of OUT/output_bag (default sqlite3; none: no bag)")
    parser.add_argument("--output-prefix", help="namespace of the output topics (default: /<node name>, e.g. "
                        "/event_segmentation, like the node's private topics)")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (0 done, 2 bad input or partial results)."""
    args = build_parser().parse_args(argv)
    try:
        options = EvalOptions(bag=args.bag, out=args.out, config=args.config, model=args.model, backend=args.backend,
                              threads=args.threads, topic=args.topic, label_topic=args.label_topic, label_dir=args.label_dir,
                              tolerance_ms=args.tolerance_ms, label_set=args.label_set, output_bag_format=args.output_bag_format,
                              output_prefix=args.output_prefix, max_frames=args.max_frames,
                              progress=not args.no_progress and sys.stderr.isatty())
        report = evaluate_bag(options)
    except MadmError as error:
        print(f"bag_eval: {error}", file=sys.stderr)
        return 2
    if not report.get("labels_scored"):
        miou = "no labels scored"
    else:
        miou = f"mIoU {_fmt(report['miou'], scale=100)} % over {report['labels_scored']} labels"
    print(f"{report['frames']} frames, {miou}, processing p50 {_fmt(report['latency_ms_p50'])} ms, "
          f"p99 {_fmt(report['latency_ms_p99'])} ms; report in {args.out / 'report.md'}")
    error = report.get("error") or ""
    for warning in report.get("warnings", []):
        if warning["message"] not in error:
            print(f"warning: {warning['message']} (×{warning['count']})", file=sys.stderr)
    if error:
        print(f"bag_eval: {error}", file=sys.stderr)
    elif report.get("stopped_early"):
        print(f"bag_eval: partial results: {report['stopped_early']}", file=sys.stderr)
    return int(report["exit_code"])


if __name__ == "__main__":
    sys.exit(main())
