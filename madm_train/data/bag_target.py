"""Bag-derived target sets: frames of a user's depth, thermal or event topic, cached in the folder layout.

``extract_bag_frames`` reads a rosbag2 (sqlite3 or mcap; rosbag1 where ``rosbags`` can) through
the one bag reader (:class:`madm_ros.bag_source.BagSource`, which also reads recordings of other
rosbag2 versions and cut-off files) and writes what the ROS node would see before its
preprocessing: the frames of :func:`madm_ros.frame_source.frame_source`, the code the nodes and
``bag_eval`` run. Depth and thermal images stay as converted (``32FC1`` depth is stored as the
layout's ``16UC1`` millimetres); event topics become the event node's edge frames, from the
node's own parameters (:class:`~madm_ros.node_params.EventParams`, message type taken from the
topic). ``FolderDataset`` then applies the shared preprocessing, so training on a bag and running
the node on the same bag feed the network identical tensors. Frame stamps are the header stamps
the node publishes (µs): the image's own, or the edge frame's.

Bad input is counted, not fatal, as in ``bag_eval``: undecodable messages, images of an encoding
the modality does not take, frames without a valid pixel (NaN depth, an event slice without
events), and frames the folder cannot hold beside the first (another encoding, another event
sensor size) are left out and counted by kind in one :class:`~madm_ros.problems.ProblemCounter`;
the counts land in ``meta.json``'s notes and in the target set's summary. A cut-off bag gives the
frames before the cut, and the summary says where it broke off. Only a topic without a single
usable frame is an error, naming what was wrong with its frames.

``extract_bag_target`` adds a label topic (``sensor_msgs/Image``, ``mono8`` class ids, 255 =
ignore), read by ``bag_eval``'s reader (:class:`madm_ros.bag_eval.labels.Labels`) and paired with
frames by the package's one rule (:mod:`madm_ros.label_matching`: nearest frame within the
tolerance, one label per frame, on the ns stamps), so that a bag's labelled split here is the one
``bag_eval`` scores. Those frames become the labelled evaluation split (``<out>/test``), held out of
the frames adapted to (``<out>/target``) unless every frame is labelled. ``prepare_bag_target``
does this for an :class:`~madm_train.config.AdaptConfig` whose ``data.target_bag`` is set
(``python -m madm_train adapt --target-bag BAG --target-topic TOPIC [--target-label-topic TOPIC]``).

Both folders are caches: reused when the bag (path, size, modification time), topics and settings
are unchanged, and rewritten otherwise.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError, DecodeError, InputError, MadmError
from madm_ros.folder_layout import DEPTH_MM_PER_M, LABELS_DIR, FolderMeta, frame_name, write_image
from madm_ros.problems import ProblemCounter

if TYPE_CHECKING:
    from madm_ros.node_params import EventParams

__all__ = ["BagTarget", "extract_bag_frames", "extract_bag_target", "load_event_params", "prepare_bag_target"]

GENERATOR_NAME = "madm_train.data.bag_target"
GENERATOR_VERSION = 3
"""Bumped when the same settings would extract other frames (2: the shared frame source, ns label matching;
3: other names of an encoding, e.g. depth ``mono16``, and ``bgr8`` are stored instead of left out)."""
MARKER_FILE = "bag_target.json"
"""Written first into an ``extract_bag_target`` folder (marks it as ours) and rewritten last (complete)."""
_ADVICE = {
    "depth": "record the depth camera's own 16UC1 (mm) or 32FC1 (m) image topic",
    "thermal": "record the thermal camera's own mono8 or mono16 image topic",
    "events": "an edge frame closes only when a later event arrives, so the topic must span more than one "
              "accumulation window; check the event parameters (data.target_events_params)",
}


def _bag_identity(bag: Path) -> dict[str, Any]:
    files = sorted(p for p in (bag.iterdir() if bag.is_dir() else [bag]) if p.is_file())
    return {"path": str(bag.resolve()), "files": [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]}


def _check_request(bag: Path, modality: str, every: int, event_params: EventParams | None) -> Any:
    """The node parameters frames are made with: ``event_params`` (default: the event node's) or an image node's."""
    from madm_ros.node_params import EventParams, ImageParams
    from madm_ros.preprocessing import NODE_MODALITIES

    if modality not in NODE_MODALITIES:
        raise ConfigError(f"bag-derived sets are {', '.join(NODE_MODALITIES[:-1])} or {NODE_MODALITIES[-1]}, got {modality!r}")
    if every < 1:
        raise ConfigError(f"every must be ≥ 1, got {every}")
    if not bag.exists():
        raise InputError(f"bag {bag} not found")
    if modality != "events":
        if event_params is not None:
            raise ConfigError(f"event parameters make edge frames of event topics; modality is {modality}")
        return ImageParams(modality=modality)
    return event_params if event_params is not None else EventParams()


def _frame_settings(modality: str, params: Any) -> dict[str, Any]:
    """What of the node parameters decides the frames (for the cache key)."""
    from madm_ros.node_params import edge_fields

    if modality != "events":
        return {}
    return {"events_config": edge_fields(params), "restart_after_us": round(params.restart_after_ms * 1000),
            "input_limits": [params.max_input_width, params.max_input_height]}


def _generator(settings: dict[str, Any]) -> dict[str, Any]:
    # compared with what meta.json / the marker give back, so in JSON form (tuples become lists)
    return json.loads(json.dumps({"name": GENERATOR_NAME, "version": GENERATOR_VERSION, "config": settings}))


def _check_topic(source: Any, topic: str, modality: str, params: Any) -> Any:
    """``params`` for ``topic`` (an event topic's message type set from its type); ``DecodeError`` naming what is wrong."""
    from madm_ros.bag_eval.labels import describe_topics
    from madm_ros.bag_source import IMAGE_TYPE
    from madm_ros.events.stream import MESSAGE_TYPES

    msgtype = source.topics.get(topic)
    if msgtype is None:
        raise DecodeError(f"bag {source.path} has no topic {topic!r}; it has: {describe_topics(source.topics)}")
    if modality == "events":
        names = {t: name for name, t in MESSAGE_TYPES.items()}
        if msgtype not in names:
            raise DecodeError(f"topic {topic!r} is {msgtype}, not an event type; the event node reads {', '.join(names)}")
        return dataclasses.replace(params, message_type=names[msgtype])
    if msgtype != IMAGE_TYPE:
        raise DecodeError(f"topic {topic!r} is {msgtype}, not {IMAGE_TYPE} ({modality} frames are images; event topics "
                          "are modality events)")
    return params


# ----------------------------------------------------------------------------------------------
# Frames


@dataclasses.dataclass
class _Reading:
    """One pass over the frame topic: what it met, and what the folder's first frame fixed."""

    problems: ProblemCounter = dataclasses.field(default_factory=ProblemCounter)
    messages: int = 0
    frames: int = 0  # frames the node would segment (usable or not)
    encoding: str = ""  # of the folder, from the first usable frame
    shape: tuple[int, ...] | None = None  # of the first usable frame (edge frames all have it)
    sensor_size: tuple[int, int] | None = None  # (height, width) of the event stream at the first usable frame
    first_stamp_ns: int | None = None
    last_stamp_ns: int | None = None
    counters: Callable[[], dict[str, int]] = dict

    def storable(self, modality: str, frame: Any, frames: Any) -> str:
        """Why the folder cannot hold ``frame`` (of the frame source ``frames``) beside earlier ones (counted), or ``""``."""
        if not self.encoding:
            self.encoding, self.shape = frame.encoding, frame.array.shape
            self.sensor_size = frames.sensor_size if modality == "events" else None
            return ""
        if frame.encoding != self.encoding:
            self.problems.report("encoding_change", f"the topic changes encoding from {self.encoding} to {frame.encoding}; "
                                 f"a folder holds one, so {frame.encoding} frames are left out")
            return "encoding_change"
        if modality == "events" and frame.array.shape != self.shape:
            (height, width), (new_height, new_width) = self.shape or (0, 0), frame.array.shape
            self.problems.report("sensor_size_change", (
                f"edge frames change size from {width}x{height} to {new_width}x{new_height}; a folder holds one "
                "sensor size, so later ones are left out: extract each part of the bag on its own"))
            return "sensor_size_change"
        return ""


def _frames(source: Any, topic: str, modality: str, params: Any, reading: _Reading) -> Iterator[tuple[Any, str]]:
    """``(frame, why it is not stored)`` for every frame the node would segment; ``""`` for a frame to store.

    Frames come from :func:`madm_ros.frame_source.frame_source` as in the node and ``bag_eval``;
    ``32FC1`` depth comes in the layout's ``16UC1`` millimetres (invalid pixels 0), other names of
    an encoding under their :data:`~madm_ros.preprocessing.ENCODINGS` name, ``bgr8`` as ``rgb8``. Messages that
    cannot be deserialized and images of an encoding the modality does not take are counted and
    not yielded (the node does not segment them either); frames without a valid pixel are
    yielded as ``invalid_frame`` (the node answers them with an empty mask), so label matching
    sees the frames ``bag_eval`` sees.
    """
    from madm_ros.frame_source import frame_source
    from madm_ros.preprocessing import InputSpec, invalid_frame_reason, sensor_encoding

    frames = frame_source("events" if modality == "events" else "image", params, reading.problems)
    reading.counters = frames.counters
    spec, msgtype = InputSpec(modality), source.topics[topic]  # type: ignore[arg-type]
    for _, _, log_ns, raw in source.messages({topic}):
        reading.messages += 1
        try:
            message = source.deserialize(raw, msgtype)
        except Exception as error:  # a malformed record: skipped and counted, as bag_eval does
            reading.problems.report("undecodable_message", f"message at {log_ns} ns on {topic} could not be "
                                    f"deserialized: {error}")
            continue
        for frame in frames.push(message):
            try:
                encoding = sensor_encoding(frame.encoding, modality)
            except InputError as error:
                reading.problems.report(f"wrong_encoding:{frame.encoding}", (
                    f"{frame.encoding} image at {frame.stamp_ns} ns skipped: {error}"))
                continue
            if encoding == "bgr8":  # the folder layout keeps colour as rgb8
                frame = dataclasses.replace(frame, array=np.ascontiguousarray(frame.array[:, :, ::-1]), encoding="rgb8")
            elif encoding != frame.encoding:  # another name of the same layout (thermal 16UC1 is mono16)
                frame = dataclasses.replace(frame, encoding=encoding)
            reading.frames += 1
            if reading.first_stamp_ns is None:
                reading.first_stamp_ns = frame.stamp_ns
            reading.last_stamp_ns = frame.stamp_ns
            invalid = invalid_frame_reason(frame.array, frame.encoding, spec)
            if invalid is not None:
                reading.problems.report("invalid_frame", f"frame at {frame.stamp_ns} ns left out: {invalid}")
                yield frame, "invalid_frame"
                continue
            if frame.encoding == "32FC1":  # stored as the 16UC1 millimetres of the layout; invalid stays 0
                valid = np.isfinite(frame.array) & (frame.array > 0)
                millimetres = np.where(valid, np.clip(np.rint(frame.array * DEPTH_MM_PER_M), 1, 65535), 0).astype(np.uint16)
                frame = dataclasses.replace(frame, array=millimetres, encoding="16UC1")
            yield frame, reading.storable(modality, frame, frames)


def _no_frame_error(bag: Path, topic: str, modality: str, reading: _Reading, source: Any) -> InputError:
    """The error for a topic that gave no frame to store: what its messages had, and what to do."""
    read = f"{reading.messages} messages read" + (f"; {source.problem}" if source.problem else "")
    why = "; ".join(text for kind, text in reading.problems.first_text.items() if kind != "restarts")
    return InputError(f"topic {topic!r} of {bag} gave no usable {modality} frame ({read})" + (f": {why}" if why else "")
                      + f". {_ADVICE[modality][0].upper()}{_ADVICE[modality][1:]}")


def _warnings(problems: ProblemCounter) -> list[dict[str, Any]]:
    """``{kind, count, message}`` per problem kind, as ``bag_eval``'s report lists them."""
    return [{"kind": kind, "count": int(count), "message": problems.first_text.get(kind, "")}
            for kind, count in sorted(problems.counts.items())]


def _edge_meta(reading: _Reading, params: Any) -> dict[str, Any]:
    """``FolderMeta.events`` of the stream: its EdgeFrameConfig, less the rectify map."""
    from madm_ros.events.edge_frames import EdgeFrameConfig
    from madm_ros.node_params import edge_fields

    assert reading.sensor_size is not None  # a frame was stored
    height, width = reading.sensor_size
    config = EdgeFrameConfig(width=width, height=height, **edge_fields(params))
    return {k: v for k, v in dataclasses.asdict(config).items() if k != "rectify_map"}


def _notes(modality: str, bag: Path, topic: str, params: Any, reading: _Reading, source: Any) -> dict[str, str]:
    text = f"extracted from {bag} topic {topic}"
    if modality == "events":
        text += f" ({params.message_type}) by madm_ros.events.stream.EventFrameStream, as the event node"
    if source.note:
        text += f"; the bag was read unusually: {source.note}"
    if source.problem:
        text += f"; {source.problem} ({reading.messages} messages read before the cut)"
    problems = {**reading.problems.as_dict(), **{k: v for k, v in reading.counters().items() if v and k == "accumulate_gaps"}}
    if problems:
        text += f"; problems {problems}"
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


def _fresh(out_dir: Path) -> None:
    """Replace an earlier extraction in ``out_dir`` (checked to be ours) by an empty folder."""
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)


def extract_bag_frames(
    bag: Path | str,
    topic: str,
    out_dir: Path | str,
    *,
    modality: str,
    event_params: EventParams | None = None,
    every: int = 1,
    max_frames: int | None = None,
) -> FolderMeta:
    """Write the frames of ``topic`` into ``out_dir`` in the folder layout (reusing a matching cache).

    Args:
        bag: rosbag2 folder or file.
        topic: A ``sensor_msgs/Image`` topic (depth ``16UC1``/``32FC1``, thermal ``mono8``/``mono16``)
            or an event topic of a type the event node reads (``madm_ros.events.stream.MESSAGE_TYPES``).
        out_dir: Cache folder: new or empty, or an earlier extraction (reused when the bag and
            settings match, rewritten otherwise). Any other folder is refused, never deleted.
        modality: ``depth``, ``thermal`` or ``events``.
        event_params: The event node's :class:`~madm_ros.node_params.EventParams` (accumulation,
            restarts, gaps, size limits; the message type is taken from the topic); ``None``: the
            node's defaults. Only for ``events``.
        every: Keep every n-th usable frame (consecutive frames of a fast camera are near duplicates).
        max_frames: Stop after this many frames.

    Returns:
        The folder's ``FolderMeta``; its notes say how the bag was read (cut off, repaired) and
        count the frames and messages left out by kind.

    Raises:
        DecodeError: unreadable bag, missing topic (the message lists the bag's topics), wrong type.
        InputError: the topic gave no usable frame (the message names what its frames had).
    """
    from madm_ros.bag_source import BagSource

    bag, out_dir = Path(bag), Path(out_dir)
    params = _check_request(bag, modality, every, event_params)
    generator = _generator({"bag": _bag_identity(bag), "topic": topic, "modality": modality,
                            **_frame_settings(modality, params), "every": every, "max_frames": max_frames})
    cached = _cached_meta(out_dir)
    if cached is not None and cached.generator == generator:
        return cached
    names: list[str] = []
    stamps: list[int] = []
    reading = _Reading()
    with BagSource(bag) as source:
        params = _check_topic(source, topic, modality, params)
        frames = _frames(source, topic, modality, params, reading)
        usable = 0
        try:
            for frame, reason in frames:
                if reason:
                    continue
                if not usable:  # the first usable frame: only now is an older cache replaced
                    _fresh(out_dir)
                usable += 1
                if (usable - 1) % every:
                    continue
                name = frame_name(0, len(names))
                write_image(out_dir, modality, name, frame.array, encoding=reading.encoding)
                names.append(name)
                stamps.append(frame.stamp_ns // 1000)
                if max_frames is not None and len(names) >= max_frames:
                    break
        except BaseException:
            if usable:
                shutil.rmtree(out_dir, ignore_errors=True)  # ours and incomplete
            raise
        finally:
            frames.close()
        if not names:
            raise _no_frame_error(bag, topic, modality, reading, source)
        meta = FolderMeta(frames=tuple(names), modalities={modality: reading.encoding},
                          events=_edge_meta(reading, params) if modality == "events" else None, stamps_us=tuple(stamps),
                          notes=_notes(modality, bag, topic, params, reading, source), generator=generator)
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
        labels: Usable messages on the label topic (one per stamp).
        unmatched_labels: Labels not in ``test``: no frame within the tolerance, a frame that a
            nearer label kept, a frame left out as unusable, or a label of the wrong size or values.
        transductive: Every frame is labelled, so ``target`` holds the evaluation frames too.
        message_type: The event node's ``message_type`` of an event topic, else empty.
        tolerance_us: The label tolerance used (µs; matching itself compares ns stamps).
        bag_frames: Frames the topic gave (as many as the node would segment), stored or not.
        warnings: ``{kind, count, message}`` of every problem met (messages, frames and labels
            left out), as ``bag_eval`` reports them.
        stopped_early: Why the bag could be read only in part (a cut-off file), else empty: the
            frames are those before the cut.
        read_note: How the bag was read when not normally (a repaired metadata.yaml, storage files
            read directly), else empty.
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
    bag_frames: int = 0
    warnings: tuple[dict[str, Any], ...] = ()
    stopped_early: str = ""
    read_note: str = ""


def _tolerance_ns(modality: str, params: Any, label_tolerance_us: int | None) -> int:
    """``label_tolerance_us`` in ns, or ``bag_eval``'s default for frames made with ``params``."""
    from madm_ros.label_matching import default_tolerance_ns

    if label_tolerance_us is not None:
        if label_tolerance_us < 0:
            raise ConfigError(f"label_tolerance_us must be ≥ 0, got {label_tolerance_us}")
        return int(label_tolerance_us) * 1000
    time_sliced = modality == "events" and params.slice_method == "time"
    return default_tolerance_ns(modality, round(params.accumulation_time_ms * 1e6) if time_sliced else None)


def _frame_name(index: int) -> str:
    return frame_name(index // 100_000, index % 100_000)


def _target_generator(bag: Path, topic: str, modality: str, label_topic: str, label_set: str, tolerance_ns: int,
                      params: Any, every: int) -> dict[str, Any]:
    return _generator({"bag": _bag_identity(bag), "topic": topic, "modality": modality, "label_topic": label_topic,
                       "label_set": label_set if label_topic else None,
                       "label_tolerance_ns": tolerance_ns if label_topic else None, **_frame_settings(modality, params),
                       "every": every})


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
                     message_type=s["message_type"], tolerance_us=s["tolerance_ns"] // 1000, bag_frames=s["bag_frames"],
                     warnings=tuple(s["warnings"]), stopped_early=s["stopped_early"] or "", read_note=s["read_note"] or "")


def _label_problem(label: np.ndarray, frame_shape: tuple[int, ...], num_classes: int, label_set: str,
                   where: str) -> tuple[str, str] | None:
    """``(kind, text)`` of why a matched label cannot be used for its frame, or ``None``."""
    from madm_ros.palettes import IGNORE_INDEX

    if label.shape != frame_shape[:2]:
        return "label_size", (f"label {where} is {label.shape[1]}×{label.shape[0]} but its frame is {frame_shape[1]}×"
                              f"{frame_shape[0]}; labels must match the frames, such labels are left out")
    bad = np.unique(label[(label >= num_classes) & (label != IGNORE_INDEX)])
    if bad.size:
        return "bad_label", (f"label {where} has values {bad[:5].tolist()} outside {label_set} (0..{num_classes - 1}, "
                             "255 = ignore); such labels are left out")
    return None


@dataclasses.dataclass
class _Split:
    """The frames written so far into ``<out>/target``: every n-th usable one, and those nearest to a label."""

    out_dir: Path
    modality: str
    every: int
    generator: dict[str, Any]
    stamps_us: dict[int, int] = dataclasses.field(default_factory=dict)  # written frames: index → stamp
    shapes: dict[int, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    kept: set[int] = dataclasses.field(default_factory=set)  # every n-th usable frame
    usable: int = 0

    def add(self, index: int, frame: Any, encoding: str, near_a_label: bool) -> None:
        """Write a usable frame when it is every n-th or (for now) the nearest frame of a label."""
        if not self.usable:  # the first usable frame: only now is an older cache replaced
            _fresh(self.out_dir)
            atomic_write_bytes(self.out_dir / MARKER_FILE, json.dumps({"generator": self.generator,
                                                                       "complete": False}).encode())
        if self.usable % self.every == 0:
            self.kept.add(index)
        self.usable += 1
        if index in self.kept or near_a_label:
            write_image(self.out_dir / "target", self.modality, _frame_name(index), frame.array, encoding=encoding)
            self.stamps_us[index] = frame.stamp_ns // 1000
            self.shapes[index] = frame.array.shape


def extract_bag_target(
    bag: Path | str,
    topic: str,
    out_dir: Path | str,
    *,
    modality: str,
    label_topic: str = "",
    label_set: str = "dsec11",
    label_tolerance_us: int | None = None,
    event_params: EventParams | None = None,
    every: int = 1,
) -> BagTarget:
    """Extract ``topic`` into ``out_dir/target`` and, with ``label_topic``, its labelled frames into ``out_dir/test``.

    Each label message (``mono8`` class ids of ``label_set``, 255 = ignore) goes to the frame
    whose stamp is nearest to its header stamp, if within the tolerance; a frame keeps the nearest
    of several labels (:mod:`madm_ros.label_matching`, the rule ``bag_eval`` scores with).
    Labelled frames form the evaluation split and are left out of ``target``, unless every frame
    is labelled: then ``target`` holds them all (transductive). ``every`` thins the unlabelled
    frames only. Image frames are stamped with their header stamp, edge frames with the stamp the
    event node gives them. Bad messages, frames and labels are left out and counted
    (:attr:`BagTarget.warnings`); a cut-off bag gives the frames before the cut
    (:attr:`BagTarget.stopped_early`).

    Args:
        bag: rosbag2 folder or file.
        topic: Frame topic, as in :func:`extract_bag_frames`.
        out_dir: Cache folder: new or empty, or an earlier extraction (reused when the bag and
            settings match, rewritten otherwise). Any other folder is refused, never deleted.
        modality: ``depth``, ``thermal`` or ``events``.
        label_topic: ``sensor_msgs/Image`` label topic; empty: no evaluation split.
        label_set: Label set of the class ids.
        label_tolerance_us: Largest |label stamp − frame stamp| of a match; ``None``: as
            ``madm_ros.bag_eval`` (:func:`madm_ros.label_matching.default_tolerance_ns`: 1 ms for
            images, half the window of time-sliced edge frames, 25 ms for count-sliced ones).
        event_params: The event node's parameters (see :func:`extract_bag_frames`).
        every: Keep every n-th unlabelled frame.

    Raises:
        DecodeError: unreadable bag, missing topic (the message lists the bag's topics), wrong type.
        InputError: no usable frame; a label topic without a usable label, none of whose labels
            matches a frame, or whose matched labels are all unusable (wrong size or values).
    """
    from madm_ros.bag_eval.labels import Labels
    from madm_ros.bag_source import BagSource
    from madm_ros.label_matching import NearestFrames
    from madm_ros.palettes import get_label_set

    bag, out_dir = Path(bag), Path(out_dir)
    params = _check_request(bag, modality, every, event_params)
    if label_topic and label_topic == topic:
        raise ConfigError(f"the label topic must differ from the frame topic {topic!r}")
    tolerance_ns = _tolerance_ns(modality, params, label_tolerance_us)
    num_classes = get_label_set(label_set).num_classes
    generator = _target_generator(bag, topic, modality, label_topic, label_set, tolerance_ns, params, every)
    if _read_marker(out_dir) is not None and (marker := _current_marker(out_dir, generator)) is not None:
        return _summary(out_dir, marker)
    reading = _Reading()
    split = _Split(out_dir, modality, every, generator)
    try:
        with BagSource(bag) as source:
            params = _check_topic(source, topic, modality, params)
            labels = Labels.from_topic(source, label_topic, reading.problems) if label_topic else None
            if labels is not None and not labels.stamps:
                notes = "; ".join(reading.problems.first_text.values())
                raise InputError(f"label topic {label_topic!r} of {bag} has no usable label" + (f" ({notes})" if notes else "")
                                 + ": labels are mono8 sensor_msgs/Image class ids (255 = ignore)")
            matcher = NearestFrames(labels.stamps, tolerance_ns) if labels is not None else None
            frames = _frames(source, topic, modality, params, reading)
            for index, (frame, reason) in enumerate(frames):
                taken = matcher.offer(index, frame.stamp_ns) if matcher is not None else []
                if not reason:
                    split.add(index, frame, reading.encoding, bool(taken))
            if not split.usable:
                raise _no_frame_error(bag, topic, modality, reading, source)
            facts = {"message_type": params.message_type if modality == "events" else "", "read_note": source.note or None,
                     "stopped_early": source.problem or None}
            notes = _notes(modality, bag, topic, params, reading, source)
        chosen = _chosen_labels(labels, matcher, split, reading, label_topic, topic, num_classes, label_set)
        return _finish(out_dir, split, reading, params, labels, chosen, label_topic, label_set, tolerance_ns, notes, facts)
    except BaseException:
        if split.usable:
            shutil.rmtree(out_dir, ignore_errors=True)  # ours and incomplete: never leave half a cache behind
        raise


def _chosen_labels(labels: Any, matcher: Any, split: _Split, reading: _Reading, label_topic: str, topic: str,
                   num_classes: int, label_set: str) -> dict[int, np.ndarray]:
    """Frame index → its label, for the matched labels that can be used (the others are counted)."""
    if labels is None:
        return {}
    matches = matcher.matches()
    if not matches:
        raise InputError(
            f"none of the {len(labels.stamps)} labels on {label_topic!r} lies within {matcher.tolerance / 1e6:g} ms of a "
            f"frame of {topic!r} (frame stamps {reading.first_stamp_ns // 1000}..{reading.last_stamp_ns // 1000} µs, "
            f"label stamps {labels.stamps[0] // 1000}..{labels.stamps[-1] // 1000} µs): stamp the labels with their "
            "frames' header stamps, or raise data.target_label_tolerance_ms")
    chosen: dict[int, np.ndarray] = {}
    for index, match in matches.items():
        stamp = labels.stamps[index]
        where = f"at {stamp // 1000} µs on {label_topic!r}"
        if match.frame not in split.shapes:  # the matched frame was left out (no valid pixel, another size ...)
            reading.problems.report("label_on_unusable_frame", f"label {where} matches a frame that was left out as "
                                    "unusable (see the other warnings); the label is left out too")
            continue
        label = labels.load(stamp)
        problem = _label_problem(label, split.shapes[match.frame], num_classes, label_set, where)
        if problem is not None:
            reading.problems.report(*problem)
            continue
        chosen[match.frame] = label
    if not chosen:
        why = "; ".join(reading.problems.first_text[k] for k in ("label_on_unusable_frame", "label_size", "bad_label")
                        if k in reading.problems.counts)
        raise InputError(f"none of the {len(matches)} labels on {label_topic!r} that match a frame can be used: {why}")
    return chosen


def _finish(out_dir: Path, split: _Split, reading: _Reading, params: Any, labels: Any, chosen: dict[int, np.ndarray],
            label_topic: str, label_set: str, tolerance_ns: int, notes: dict[str, str], facts: dict[str, Any]) -> BagTarget:
    """Move the labelled frames into the evaluation split, drop unneeded candidates, write metas and the marker."""
    modality, target_dir, test_dir = split.modality, out_dir / "target", out_dir / "test"
    for index in sorted(chosen):  # labelled frames move to the evaluation split
        name = _frame_name(index)
        (test_dir / modality).mkdir(parents=True, exist_ok=True)
        (target_dir / modality / f"{name}.png").replace(test_dir / modality / f"{name}.png")
        write_image(test_dir, LABELS_DIR, name, chosen[index])
    for index in list(split.stamps_us):  # nearest to a label at some point, but neither labelled nor every n-th
        if index not in chosen and index not in split.kept:
            (target_dir / modality / f"{_frame_name(index)}.png").unlink()
            del split.stamps_us[index]
    unlabelled = sorted(i for i in split.stamps_us if i not in chosen)
    transductive = not unlabelled
    if transductive:  # every frame is labelled: adapt to them all (their labels are never used for training)
        unlabelled = sorted(chosen)
        for index in unlabelled:
            shutil.copyfile(test_dir / modality / f"{_frame_name(index)}.png",
                            target_dir / modality / f"{_frame_name(index)}.png")
    events_meta = _edge_meta(reading, params) if modality == "events" else None

    def meta(indices: list[int], labelled: bool) -> FolderMeta:
        return FolderMeta(frames=tuple(_frame_name(i) for i in indices), modalities={modality: reading.encoding},
                          has_labels=labelled, label_set=label_set if labelled else None, events=events_meta,
                          stamps_us=tuple(split.stamps_us[i] for i in indices), generator=split.generator,
                          notes={**notes, **({LABELS_DIR: f"from topic {label_topic}, matched within "
                                              f"{tolerance_ns / 1e6:g} ms"} if labelled else {})})

    if chosen:
        meta(sorted(chosen), True).write(test_dir)
    meta(unlabelled, False).write(target_dir)
    label_count = len(labels.stamps) if labels is not None else 0
    summary = {"label_topic": label_topic, "frames": len(unlabelled), "labelled": len(chosen), "labels": label_count,
               "unmatched_labels": label_count - len(chosen), "transductive": transductive, "bag_frames": reading.frames,
               "messages": reading.messages, "tolerance_ns": tolerance_ns, "warnings": _warnings(reading.problems), **facts}
    atomic_write_bytes(out_dir / MARKER_FILE, json.dumps({"generator": split.generator, "complete": True,
                                                          "summary": summary}, indent=1).encode())
    return _summary(out_dir, {"summary": summary})


# ----------------------------------------------------------------------------------------------
# From a training config


def load_event_params(params_file: str) -> EventParams:
    """The event node's :class:`~madm_ros.node_params.EventParams` from its parameter file, as the node reads it.

    ``params_file``: a node parameter file (``config/events.yaml`` form, or a plain mapping of
    parameters); ``""``: the node's defaults.
    """
    from madm_ros.node_params import EventParams, load_node_config

    values: dict[str, Any] = {}
    if params_file:
        try:
            _, values = load_node_config(params_file, allow_plain=True)
        except ConfigError as error:
            raise ConfigError(f"data.target_events_params: {error}") from None
    return EventParams.from_dict(values)


def _tell(target: BagTarget, log: Callable[[str], None]) -> None:
    """Say how the bag was read and what was left out (the summary's warnings)."""
    if target.read_note:
        log(f"note: {target.read_note}")
    if target.stopped_early:
        log(f"warning: {target.stopped_early}; the {target.bag_frames} frames before it were extracted")
    for warning in target.warnings:
        if warning["kind"] != "restarts":
            log(f"warning: {warning['message']} ({warning['kind']}: {warning['count']}x)")


def prepare_bag_target(config: Any, *, wait: bool = False, poll_s: float = 1.0,
                       log: Callable[[str], None] | None = None) -> BagTarget | None:
    """Extract the target set of ``config.data.target_bag`` into ``config.data.target_bag_cache`` (reused when current).

    ``AdaptConfig`` already points ``data.target_root`` (and ``data.test_root``) into that cache;
    this fills it. Returns ``None`` when the config names no bag. With ``wait`` (processes other
    than the first of a multi-process run) the cache is not written but waited for. ``log`` is
    told how the bag was read and what was left out of it.
    """
    d = config.data
    if not d.target_bag:
        return None
    bag = Path(d.target_bag)
    if not bag.exists():
        raise InputError(f"data.target_bag {bag} not found (--target-bag): give a rosbag2 folder or file")
    event_params = load_event_params(d.target_events_params) if d.modality == "events" else None
    tolerance_us = None if d.target_label_tolerance_ms is None else round(d.target_label_tolerance_ms * 1000)
    kwargs = {"modality": d.modality, "label_topic": d.target_label_topic, "label_set": d.label_set,
              "label_tolerance_us": tolerance_us, "event_params": event_params, "every": d.target_bag_every}
    cache = Path(d.target_bag_cache)
    params = _check_request(bag, d.modality, d.target_bag_every, event_params)
    generator = _target_generator(bag, d.target_topic, d.modality, d.target_label_topic, d.label_set,
                                  _tolerance_ns(d.modality, params, tolerance_us), params, d.target_bag_every)
    while True:
        marker = _current_marker(cache, generator)
        if marker is not None:
            target = _summary(cache, marker)
            if log is not None:
                log(f"reusing the frames of {d.target_topic} extracted into {cache} (bag and settings unchanged)")
                _tell(target, log)
            return target
        if not wait:
            break
        time.sleep(poll_s)  # the first process of the run is extracting
    if log is not None:
        log(f"reading {d.target_topic} of {bag} into {cache}")
    target = extract_bag_target(bag, d.target_topic, cache, **kwargs)
    if log is not None:
        _tell(target, log)
    return target


def _current_marker(cache: Path, generator: dict[str, Any]) -> dict[str, Any] | None:
    """The marker of a complete extraction with these settings in ``cache``, else None."""
    try:
        marker = json.loads((cache / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and marker.get("complete") and marker.get("generator") == generator else None
