"""Bag-derived target sets: frames of a user's depth, thermal or event topic, cached in the folder layout.

``extract_bag_frames`` reads a rosbag2 (sqlite3 or mcap; rosbag1 where ``rosbags`` can) with
``rosbags`` and writes what the ROS node would see before its preprocessing: depth and thermal
images unchanged (``image_to_array``), event topics decoded, accumulated and stamped by the event
node's own pipeline (:class:`madm_ros.events.stream.EventFrameStream`, the message type taken from
the topic's type). ``FolderDataset`` then applies the shared preprocessing, so training on a bag
and running the node on the same bag feed the network identical tensors. Frame stamps are the
header stamps the node publishes (µs): the image's own, or the edge frame's.

``extract_bag_target`` adds a label topic (``sensor_msgs/Image``, ``mono8`` class ids, 255 =
ignore): each label goes to the frame nearest to its header stamp within a tolerance, and those
frames become the labelled evaluation split (``<out>/test``), held out of the frames adapted to
(``<out>/target``) unless every frame is labelled. ``prepare_bag_target`` does this for an
:class:`~madm_train.config.AdaptConfig` whose ``data.target_bag`` is set (``python -m madm_train
adapt --target-bag BAG --target-topic TOPIC [--target-label-topic TOPIC]``).

Both folders are caches: reused when the bag (path, size, modification time), topics and settings
are unchanged, and rewritten otherwise.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError, DecodeError, InputError, MadmError
from madm_ros.folder_layout import LABELS_DIR, FolderMeta, frame_name, write_image

__all__ = ["BagTarget", "default_tolerance_us", "event_settings", "extract_bag_frames", "extract_bag_target",
           "prepare_bag_target"]

IMAGE_TYPES = ("sensor_msgs/msg/Image",)
LABEL_ENCODINGS = ("mono8", "8UC1")
GENERATOR_NAME = "madm_train.data.bag_target"
MARKER_FILE = "bag_target.json"
"""Written first into an ``extract_bag_target`` folder (marks it as ours) and rewritten last (complete)."""


def _bag_identity(bag: Path) -> dict[str, Any]:
    files = sorted(p for p in (bag.iterdir() if bag.is_dir() else [bag]) if p.is_file())
    return {"path": str(bag.resolve()), "files": [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]}


def _stamp_us(header: Any) -> int:
    from madm_ros.ros_messages import stamp_to_ns

    return stamp_to_ns(header.stamp) // 1000


def _event_message_types() -> dict[str, str]:
    """ROS message type → the event node's ``message_type`` value."""
    from madm_ros.events.stream import MESSAGE_TYPES

    return {msgtype: name for name, msgtype in MESSAGE_TYPES.items()}


def _connections(reader: Any, bag: Path, topic: str, modality: str, what: str = "") -> list[Any]:
    """The connections of ``topic``; ``DecodeError`` naming the bag's topics or the type wanted."""
    from madm_ros.events.bags import describe_topics

    connections = [c for c in reader.connections if c.topic == topic]
    if not connections:
        raise DecodeError(f"bag {bag} has no {what}topic {topic!r}; it has: {describe_topics(list(reader.connections))}")
    msgtype = connections[0].msgtype
    if modality == "events":
        if msgtype not in _event_message_types():
            raise DecodeError(f"topic {topic!r} is {msgtype}, not an event type; the event node reads "
                              f"{', '.join(_event_message_types())}")
    elif msgtype not in IMAGE_TYPES:
        raise DecodeError(f"{what}topic {topic!r} is {msgtype}, not sensor_msgs/msg/Image"
                          + ("" if what else f" ({modality} frames are images; event topics are modality events)"))
    return connections


def _image_frames(bag: Path, topic: str, modality: str) -> Iterator[tuple[int, np.ndarray, str]]:
    """``(header stamp µs, array, encoding)`` of every image on ``topic``."""
    from madm_ros.bag_source import BagSource
    from madm_ros.image_conversion import image_to_array

    with BagSource(bag) as reader:
        connections = _connections(reader, bag, topic, modality)
        for _, msgtype, _, raw in reader.messages(c.topic for c in connections):
            msg = reader.deserialize(raw, msgtype)
            yield _stamp_us(msg.header), image_to_array(msg), str(msg.encoding)


@dataclasses.dataclass
class _StreamReport:
    """What the event pipeline met on the way (filled while frames are drawn)."""

    message_type: str = ""
    stream: Any = None  # the EventFrameStream, for its sensor size and counters
    warnings: list[str] = dataclasses.field(default_factory=list)


def _event_frames(bag: Path, topic: str, events_config: dict[str, Any], restart_after_us: int,
                  report: _StreamReport) -> Iterator[tuple[int, np.ndarray, str]]:
    """``(ROS stamp µs, edge frame, "mono8")``: exactly what the event node publishes as ``edge_frame``."""
    from madm_ros.bag_source import BagSource
    from madm_ros.events.stream import EventFrameStream
    from madm_ros.problems import ProblemCounter

    with BagSource(bag) as reader:
        connections = _connections(reader, bag, topic, "events")
        report.message_type = _event_message_types()[connections[0].msgtype]
        stream = EventFrameStream(report.message_type, events_config,
                                  ProblemCounter(lambda kind, text: report.warnings.append(f"{kind}: {text}")),
                                  restart_after_us=restart_after_us)
        report.stream = stream
        shape = None
        for _, msgtype, _, raw in reader.messages(c.topic for c in connections):
            for frame in stream.push(reader.deserialize(raw, msgtype)):
                if shape is not None and frame.image.shape != shape:
                    raise DecodeError(f"event topic {topic!r} changes sensor size mid-bag ({shape[1]}x{shape[0]} to "
                                      f"{frame.image.shape[1]}x{frame.image.shape[0]}); extract each part on its own")
                shape = frame.image.shape
                yield frame.stamp_ns // 1000, frame.image, "mono8"


def _frames(bag: Path, topic: str, modality: str, events_config: dict[str, Any] | None, restart_after_us: int,
            report: _StreamReport) -> Iterator[tuple[int, np.ndarray, str]]:
    """``(stamp µs, array in the layout's encoding, encoding)`` of every frame of ``topic``."""
    if modality == "events":
        source = _event_frames(bag, topic, events_config or {}, restart_after_us, report)
    else:
        source = _image_frames(bag, topic, modality)
    first_encoding = None
    for stamp, image, encoding in source:
        if first_encoding is None:
            first_encoding = encoding
        elif encoding != first_encoding:
            raise DecodeError(f"topic {topic!r} changes encoding from {first_encoding} to {encoding} mid-bag")
        if encoding == "32FC1":  # stored as the 16UC1 millimetres of the layout; invalid stays 0
            valid = np.isfinite(image) & (image > 0)
            image = np.where(valid, np.clip(np.rint(image * 1000), 1, 65535), 0).astype(np.uint16)
            encoding = "16UC1"
        yield stamp, image, encoding


def _check_request(bag: Path, modality: str, every: int, events_config: dict[str, Any] | None) -> dict[str, Any] | None:
    if modality not in ("depth", "thermal", "events"):
        raise ConfigError(f"bag-derived sets are depth, thermal or events, got {modality!r}")
    if every < 1:
        raise ConfigError(f"every must be ≥ 1, got {every}")
    if not bag.exists():
        raise InputError(f"bag {bag} not found")
    if modality != "events":
        return None
    from madm_ros.events.edge_frames import check_edge_frame_fields

    events_config = dict(events_config or {})
    check_edge_frame_fields(events_config, "events_config")
    if events_config.get("polarity") == "split":
        raise ConfigError("the folder layout stores one-channel edge frames; use polarity 'ignore' or 'signed'")
    return events_config


def _edge_meta(report: _StreamReport, events_config: dict[str, Any]) -> dict[str, Any]:
    """``FolderMeta.events`` of the stream: its EdgeFrameConfig, less the rectify map."""
    from madm_ros.events.edge_frames import EdgeFrameConfig

    assert report.stream is not None and report.stream.sensor_size is not None  # a frame was made
    height, width = report.stream.sensor_size
    config = EdgeFrameConfig(width=width, height=height, **events_config)
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "rectify_map"}


def _notes(modality: str, bag: Path, topic: str, report: _StreamReport) -> dict[str, str]:
    text = f"extracted from {bag} topic {topic}"
    if modality == "events":
        text += f" ({report.message_type}) by madm_ros.events.stream.EventFrameStream, as the event node"
        problems = {**report.stream.problems.as_dict(), **{k: v for k, v in report.stream.counters().items()
                                                          if v and k == "accumulate_gaps"}}
        if problems:
            text += f"; stream problems {problems}"
    return {modality: text}


def _cached_meta(out_dir: Path) -> FolderMeta | None:
    """The meta of an earlier extraction in ``out_dir``; None for a new or empty folder.

    Anything else in ``out_dir`` (a synth output, a user's files) is refused, never deleted.
    """
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return None
    try:
        meta = FolderMeta.read(out_dir)
    except MadmError:
        meta = None
    if meta is None or (meta.generator or {}).get("name") != GENERATOR_NAME:
        raise ConfigError(f"{out_dir} exists and is not a bag-derived set written by madm; "
                          "choose a new or empty folder for the cache")
    return meta


def extract_bag_frames(
    bag: Path | str,
    topic: str,
    out_dir: Path | str,
    *,
    modality: str,
    events_config: dict[str, Any] | None = None,
    every: int = 1,
    max_frames: int | None = None,
    restart_after_us: int = 1_000_000,
) -> FolderMeta:
    """Write the frames of ``topic`` into ``out_dir`` in the folder layout (reusing a matching cache).

    Args:
        bag: rosbag2 folder or file.
        topic: A ``sensor_msgs/Image`` topic (depth ``16UC1``/``32FC1``, thermal ``mono8``/``mono16``)
            or an event topic of a type the event node reads (``madm_ros.events.stream.MESSAGE_TYPES``).
        out_dir: Cache folder: new or empty, or an earlier extraction (reused when the bag and
            settings match, rewritten otherwise). Any other folder is refused, never deleted.
        modality: ``depth``, ``thermal`` or ``events``.
        events_config: ``EdgeFrameConfig`` fields except width and height (taken from the stream),
            i.e. the event node's ``edge_fields(params)``; defaults to the config's own defaults
            (50 ms windows, polarity ignored), which are the node's defaults.
        every: Keep every n-th frame (consecutive frames of a fast camera are near duplicates).
        max_frames: Stop after this many frames.
        restart_after_us: The event node's ``restart_after_ms`` in µs (time jumps restart accumulation).

    Returns:
        The folder's ``FolderMeta``.
    """
    bag, out_dir = Path(bag), Path(out_dir)
    events_config = _check_request(bag, modality, every, events_config)
    settings = {"bag": _bag_identity(bag), "topic": topic, "modality": modality, "events_config": events_config,
                "every": every, "max_frames": max_frames}
    if modality == "events" and restart_after_us != 1_000_000:
        settings["restart_after_us"] = restart_after_us
    # compared with what meta.json gives back, so in JSON form (tuples become lists)
    generator = json.loads(json.dumps({"name": GENERATOR_NAME, "config": settings}))
    cached = _cached_meta(out_dir)
    if cached is not None and cached.generator == generator:
        return cached
    report = _StreamReport()
    frames_source = _frames(bag, topic, modality, events_config, restart_after_us, report)
    first = next(frames_source, None)  # opens the bag and checks the topic before anything is deleted
    if first is None:
        raise InputError(f"topic {topic!r} of {bag} produced no frames")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    names: list[str] = []
    stamps: list[int] = []
    encoding = first[2]
    for index, (stamp, image, _) in enumerate(itertools.chain([first], frames_source)):
        if index % every:
            continue
        name = frame_name(0, len(names))
        write_image(out_dir, modality, name, image, encoding=encoding)
        names.append(name)
        stamps.append(stamp)
        if max_frames is not None and len(names) >= max_frames:
            break
    frames_source.close()
    events_meta = _edge_meta(report, events_config or {}) if modality == "events" else None
    meta = FolderMeta(frames=tuple(names), modalities={modality: encoding}, events=events_meta, stamps_us=tuple(stamps),
                      notes=_notes(modality, bag, topic, report), generator=generator)
    meta.write(out_dir)
    return FolderMeta.read(out_dir)  # as later reads see it (JSON turns tuples into lists)


# ----------------------------------------------------------------------------------------------
# Target set with a labelled evaluation split


@dataclasses.dataclass(frozen=True)
class BagTarget:
    """Where ``extract_bag_target`` put the frames of a bag, and how labels were matched.

    Attributes:
        target: Folder of the frames adapted to (unlabelled).
        test: Folder of the labelled frames (the evaluation split); ``None`` without a label topic.
        frames: Frames in ``target``.
        labelled: Frames in ``test``.
        labels: Messages on the label topic.
        unmatched_labels: Labels with no frame within the tolerance (or whose frame took a nearer label).
        tolerance_us: The label tolerance used (µs).
        transductive: Every frame is labelled, so ``target`` holds the evaluation frames too.
        message_type: The event node's ``message_type`` of an event topic, else empty.
    """

    target: Path
    test: Path | None
    frames: int
    labelled: int = 0
    labels: int = 0
    unmatched_labels: int = 0
    transductive: bool = False
    message_type: str = ""
    tolerance_us: int = 0


def default_tolerance_us(modality: str, events_config: dict[str, Any] | None) -> int:
    """The label tolerance ``madm_ros.bag_eval`` uses by default, in µs."""
    if modality != "events":
        return 1_000
    fields = events_config or {}
    return int(fields.get("window_us", 50_000)) // 2 if fields.get("mode", "time") == "time" else 25_000


def _frame_name(index: int) -> str:
    return frame_name(index // 100_000, index % 100_000)


def _target_generator(bag: Path, topic: str, modality: str, label_topic: str, label_set: str, label_tolerance_us: int,
                      events_config: dict[str, Any] | None, restart_after_us: int, every: int) -> dict[str, Any]:
    settings = {"bag": _bag_identity(bag), "topic": topic, "modality": modality, "label_topic": label_topic,
                "label_set": label_set if label_topic else None,
                "label_tolerance_us": label_tolerance_us if label_topic else None, "events_config": events_config,
                "restart_after_us": restart_after_us if modality == "events" else None, "every": every}
    return json.loads(json.dumps({"name": GENERATOR_NAME, "config": settings}))


def _read_marker(out_dir: Path) -> dict[str, Any] | None:
    """The marker of an ``extract_bag_target`` folder; None for a new or empty folder; refuses anything else."""
    if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
        return None
    try:
        marker = json.loads((out_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        marker = None
    if not isinstance(marker, dict) or (marker.get("generator") or {}).get("name") != GENERATOR_NAME:
        raise ConfigError(f"{out_dir} exists and is not a bag-derived target set written by madm; "
                          "choose a new or empty folder for the cache (data.target_bag_cache)")
    return marker


def _summary(out_dir: Path, marker: dict[str, Any]) -> BagTarget:
    s = marker["summary"]
    return BagTarget(target=out_dir / "target", test=(out_dir / "test") if s["label_topic"] else None,
                     frames=s["frames"], labelled=s["labelled"], labels=s["labels"],
                     unmatched_labels=s["unmatched_labels"], transductive=s["transductive"],
                     message_type=s["message_type"], tolerance_us=s["tolerance_us"])


def _label_stamps(bag: Path, label_topic: str) -> list[int]:
    """Header stamps (µs) of the label messages, in bag order; checks topic, type and encoding."""
    from madm_ros.bag_source import BagSource

    stamps = []
    with BagSource(bag) as reader:
        connections = _connections(reader, bag, label_topic, "labels", "label ")
        for _, msgtype, _, raw in reader.messages(c.topic for c in connections):
            msg = reader.deserialize(raw, msgtype)
            if str(msg.encoding) not in LABEL_ENCODINGS:
                raise DecodeError(f"label topic {label_topic!r} carries {msg.encoding} images; labels are mono8 "
                                  "class ids (255 = ignore)")
            stamps.append(_stamp_us(msg.header))
    return stamps


def _check_topics(bag: Path, topic: str, modality: str, label_topic: str) -> None:
    """Both topics exist with usable types (before anything is read or deleted)."""
    from madm_ros.bag_source import BagSource

    if label_topic and label_topic == topic:
        raise ConfigError(f"the label topic must differ from the frame topic {topic!r}")
    with BagSource(bag) as reader:
        _connections(reader, bag, topic, modality)
        if label_topic:
            _connections(reader, bag, label_topic, "labels", "label ")


def _match_labels(label_stamps: list[int], frame_stamps: dict[int, int], tolerance_us: int) -> dict[int, tuple[int, int]]:
    """Frame index → (label index, |Δt| µs): each label to its nearest frame within the tolerance, one label per frame."""
    order = sorted(frame_stamps, key=lambda i: (frame_stamps[i], i))
    times = [frame_stamps[i] for i in order]
    chosen: dict[int, tuple[int, int]] = {}
    for label, stamp in enumerate(label_stamps):
        k = bisect.bisect_left(times, stamp)
        near = [j for j in (k - 1, k) if 0 <= j < len(times)]
        if not near:
            continue
        j = min(near, key=lambda j: abs(times[j] - stamp))
        distance = abs(times[j] - stamp)
        frame = order[j]
        if distance <= tolerance_us and (frame not in chosen or distance < chosen[frame][1]):
            chosen[frame] = (label, distance)
    return chosen


def _write_labels(bag: Path, label_topic: str, test_dir: Path, wanted: dict[int, int], shapes: dict[int, tuple[int, ...]],
                  num_classes: int, label_set: str) -> None:
    """Write label message k (``wanted``: label index → frame index) as the label of its frame."""
    from madm_ros.bag_source import BagSource
    from madm_ros.image_conversion import image_to_array
    from madm_ros.palettes import IGNORE_INDEX

    with BagSource(bag) as reader:
        connections = _connections(reader, bag, label_topic, "labels", "label ")
        for index, (_, msgtype, _, raw) in enumerate(reader.messages(c.topic for c in connections)):
            if index not in wanted:
                continue
            msg = reader.deserialize(raw, msgtype)
            label, frame = image_to_array(msg), wanted[index]
            stamp = _stamp_us(msg.header)
            if label.shape != shapes[frame]:
                raise InputError(f"label at {stamp} µs on {label_topic!r} is {label.shape[1]}×{label.shape[0]} but its "
                                 f"frame is {shapes[frame][-1]}×{shapes[frame][0]}; labels must match the frames")
            bad = np.unique(label[(label >= num_classes) & (label != IGNORE_INDEX)])
            if bad.size:
                raise InputError(f"label at {stamp} µs on {label_topic!r} has values {bad[:5].tolist()} outside "
                                 f"{label_set} (0..{num_classes - 1}, 255 = ignore)")
            write_image(test_dir, LABELS_DIR, _frame_name(frame), label)


def extract_bag_target(
    bag: Path | str,
    topic: str,
    out_dir: Path | str,
    *,
    modality: str,
    label_topic: str = "",
    label_set: str = "dsec11",
    label_tolerance_us: int | None = None,
    events_config: dict[str, Any] | None = None,
    restart_after_us: int = 1_000_000,
    every: int = 1,
) -> BagTarget:
    """Extract ``topic`` into ``out_dir/target`` and, with ``label_topic``, its labelled frames into ``out_dir/test``.

    Each label message (``mono8`` class ids of ``label_set``, 255 = ignore) goes to the frame
    whose stamp is nearest to its header stamp, if within ``label_tolerance_us``; a frame keeps the
    nearest of several labels. Labelled frames form the evaluation split and are left out of
    ``target``, unless every frame is labelled: then ``target`` holds them all (transductive).
    ``every`` thins the unlabelled frames only. Image frames are stamped with their header stamp,
    edge frames with the stamp the event node gives them.

    Args:
        bag: rosbag2 folder or file.
        topic: Frame topic, as in :func:`extract_bag_frames`.
        out_dir: Cache folder: new or empty, or an earlier extraction (reused when the bag and
            settings match, rewritten otherwise). Any other folder is refused, never deleted.
        modality: ``depth``, ``thermal`` or ``events``.
        label_topic: ``sensor_msgs/Image`` label topic; empty: no evaluation split.
        label_set: Label set of the class ids.
        label_tolerance_us: Largest |label stamp − frame stamp| of a match; ``None``: as
            ``madm_ros.bag_eval`` (1 ms for images; half the window of time-sliced edge frames,
            whose ends follow the first event, and 25 ms for count-sliced ones).
        events_config: The event node's ``edge_fields`` (see :func:`extract_bag_frames`).
        restart_after_us: The event node's ``restart_after_ms`` in µs.
        every: Keep every n-th unlabelled frame.

    Raises:
        DecodeError: unreadable bag, missing topic (the message lists the bag's topics), wrong type.
        InputError: no frames, or a label topic none of whose labels matches a frame, or a label
            of the wrong size or with values outside the label set.
    """
    from madm_ros.palettes import get_label_set

    bag, out_dir = Path(bag), Path(out_dir)
    events_config = _check_request(bag, modality, every, events_config)
    if label_tolerance_us is None:
        label_tolerance_us = default_tolerance_us(modality, events_config)
    if label_tolerance_us < 0:
        raise ConfigError(f"label_tolerance_us must be ≥ 0, got {label_tolerance_us}")
    num_classes = get_label_set(label_set).num_classes
    generator = _target_generator(bag, topic, modality, label_topic, label_set, label_tolerance_us, events_config,
                                  restart_after_us, every)
    if _read_marker(out_dir) is not None and (marker := _current_marker(out_dir, generator)) is not None:
        return _summary(out_dir, marker)
    _check_topics(bag, topic, modality, label_topic)  # before anything is deleted
    label_stamps = _label_stamps(bag, label_topic) if label_topic else []
    if label_topic and not label_stamps:
        raise InputError(f"label topic {label_topic!r} of {bag} has no messages")
    report = _StreamReport()
    frames_source = _frames(bag, topic, modality, events_config, restart_after_us, report)
    first = next(frames_source, None)
    if first is None:
        raise InputError(f"topic {topic!r} of {bag} produced no frames")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    try:
        atomic_write_bytes(out_dir / MARKER_FILE, json.dumps({"generator": generator, "complete": False}).encode())
        return _extract_target(bag, topic, out_dir, modality, label_topic, label_set, num_classes, label_tolerance_us,
                               events_config, every, generator, label_stamps, first, frames_source, report)
    except BaseException:
        shutil.rmtree(out_dir, ignore_errors=True)  # ours and incomplete: never leave half a cache behind
        raise


def _extract_target(bag: Path, topic: str, out_dir: Path, modality: str, label_topic: str, label_set: str,
                    num_classes: int, tolerance_us: int, events_config: dict[str, Any] | None, every: int,
                    generator: dict[str, Any], label_stamps: list[int], first: tuple[int, np.ndarray, str],
                    frames_source: Iterator[tuple[int, np.ndarray, str]], report: _StreamReport) -> BagTarget:
    target_dir, test_dir = out_dir / "target", out_dir / "test"
    sorted_labels = sorted(label_stamps)

    def near_a_label(stamp: int) -> bool:
        k = bisect.bisect_left(sorted_labels, stamp - tolerance_us)
        return k < len(sorted_labels) and sorted_labels[k] <= stamp + tolerance_us

    encoding = first[2]
    stamps: dict[int, int] = {}  # written frames: index → stamp
    candidates: dict[int, int] = {}  # frames near a label: index → stamp
    shapes: dict[int, tuple[int, ...]] = {}
    total = 0
    for index, (stamp, image, _) in enumerate(itertools.chain([first], frames_source)):
        total += 1
        candidate = bool(sorted_labels) and near_a_label(stamp)
        if candidate:
            candidates[index] = stamp
            shapes[index] = image.shape
        if candidate or index % every == 0:
            write_image(target_dir, modality, _frame_name(index), image, encoding=encoding)
            stamps[index] = stamp
    matched = _match_labels(label_stamps, candidates, tolerance_us) if label_topic else {}
    if label_topic and not matched:
        frame_times = sorted(stamps.values())
        raise InputError(
            f"none of the {len(label_stamps)} labels on {label_topic!r} lies within {tolerance_us / 1000:g} ms of a frame "
            f"of {topic!r} (frame stamps {frame_times[0]}..{frame_times[-1]} µs, label stamps {min(label_stamps)}.."
            f"{max(label_stamps)} µs): stamp the labels with their frames' header stamps, or raise "
            "data.target_label_tolerance_ms")
    for index in sorted(matched):  # labelled frames move to the evaluation split
        name = _frame_name(index)
        (test_dir / modality).mkdir(parents=True, exist_ok=True)
        (target_dir / modality / f"{name}.png").replace(test_dir / modality / f"{name}.png")
    for index in candidates:  # near a label but not chosen, and not one of every n-th
        if index not in matched and index % every:
            (target_dir / modality / f"{_frame_name(index)}.png").unlink()
            del stamps[index]
    if matched:
        _write_labels(bag, label_topic, test_dir, {label: frame for frame, (label, _) in matched.items()}, shapes,
                      num_classes, label_set)
    unlabelled = sorted(i for i in stamps if i not in matched)
    transductive = not unlabelled
    if transductive:  # every frame is labelled: adapt to them all (their labels are never used for training)
        unlabelled = sorted(matched)
        for index in unlabelled:
            shutil.copyfile(test_dir / modality / f"{_frame_name(index)}.png",
                            target_dir / modality / f"{_frame_name(index)}.png")
    events_meta = _edge_meta(report, events_config or {}) if modality == "events" else None
    notes = _notes(modality, bag, topic, report)

    def meta(indices: list[int], labelled: bool) -> FolderMeta:
        return FolderMeta(frames=tuple(_frame_name(i) for i in indices), modalities={modality: encoding},
                          has_labels=labelled, label_set=label_set if labelled else None, events=events_meta,
                          stamps_us=tuple(stamps[i] for i in indices), generator=generator,
                          notes={**notes, **({LABELS_DIR: f"from topic {label_topic}, matched within "
                                              f"{tolerance_us / 1000:g} ms"} if labelled else {})})

    if matched:
        meta(sorted(matched), True).write(test_dir)
    meta(unlabelled, False).write(target_dir)
    summary = {"label_topic": label_topic, "frames": len(unlabelled), "labelled": len(matched),
               "labels": len(label_stamps), "unmatched_labels": len(label_stamps) - len(matched),
               "transductive": transductive, "message_type": report.message_type, "bag_frames": total,
               "tolerance_us": tolerance_us}
    atomic_write_bytes(out_dir / MARKER_FILE, json.dumps({"generator": generator, "complete": True, "summary": summary},
                                                         indent=1).encode())
    return _summary(out_dir, {"summary": summary})


# ----------------------------------------------------------------------------------------------
# From a training config


def event_settings(params_file: str) -> tuple[dict[str, Any], int]:
    """``(edge_fields, restart_after_us)`` of the event node's parameters, as the node computes them.

    ``params_file``: a node parameter file (``config/events.yaml`` form, or a plain mapping of
    parameters); ``""``: the node's defaults.
    """
    from madm_ros.node_params import EventParams, edge_fields, load_node_config

    values: dict[str, Any] = {}
    if params_file:
        try:
            _, values = load_node_config(params_file, allow_plain=True)
        except ConfigError as error:
            raise ConfigError(f"data.target_events_params: {error}") from None
    params = EventParams.from_dict(values)
    return edge_fields(params), round(params.restart_after_ms * 1000)


def prepare_bag_target(config: Any, *, wait: bool = False, poll_s: float = 1.0,
                       log: Callable[[str], None] | None = None) -> BagTarget | None:
    """Extract the target set of ``config.data.target_bag`` into ``config.data.target_bag_cache`` (reused when current).

    ``AdaptConfig`` already points ``data.target_root`` (and ``data.test_root``) into that cache;
    this fills it. Returns ``None`` when the config names no bag. With ``wait`` (processes other
    than the first of a multi-process run) the cache is not written but waited for.
    """
    d = config.data
    if not d.target_bag:
        return None
    bag = Path(d.target_bag)
    if not bag.exists():
        raise InputError(f"data.target_bag {bag} not found (--target-bag): give a rosbag2 folder or file")
    events_config, restart_after_us = event_settings(d.target_events_params) if d.modality == "events" else (None, 1_000_000)
    tolerance_us = default_tolerance_us(d.modality, events_config) if d.target_label_tolerance_ms is None else \
        round(d.target_label_tolerance_ms * 1000)
    kwargs = {"modality": d.modality, "label_topic": d.target_label_topic, "label_set": d.label_set,
              "label_tolerance_us": tolerance_us, "events_config": events_config,
              "restart_after_us": restart_after_us, "every": d.target_bag_every}
    cache = Path(d.target_bag_cache)
    generator = _target_generator(bag, d.target_topic, d.modality, d.target_label_topic, d.label_set,
                                  tolerance_us, events_config, restart_after_us, d.target_bag_every)
    while True:
        marker = _current_marker(cache, generator)
        if marker is not None:
            if log is not None:
                log(f"reusing the frames of {d.target_topic} extracted into {cache} (bag and settings unchanged)")
            return _summary(cache, marker)
        if not wait:
            break
        time.sleep(poll_s)  # the first process of the run is extracting
    if log is not None:
        log(f"reading {d.target_topic} of {bag} into {cache}")
    return extract_bag_target(bag, d.target_topic, cache, **kwargs)


def _current_marker(cache: Path, generator: dict[str, Any]) -> dict[str, Any] | None:
    """The marker of a complete extraction with these settings in ``cache``, else None."""
    try:
        marker = json.loads((cache / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("complete") and marker.get("generator") == generator else None
