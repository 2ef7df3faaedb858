"""Bag-derived target sets: frames of a user's depth, thermal or event topic, cached in the folder layout.

``extract_bag_frames`` reads a rosbag2 (sqlite3 or mcap; rosbag1 where ``rosbags`` can) with
``rosbags`` and writes what the ROS node would see before its preprocessing: depth and thermal
images unchanged (``image_to_array``), event topics decoded and accumulated into edge frames by the
node's own decoder and accumulator. ``FolderDataset`` then applies the shared preprocessing, so
training on a bag and running the node on the same bag feed the network identical tensors.

The folder is a cache: it is reused when the bag (path, size, modification time), topic and
settings are unchanged, and rewritten otherwise.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.errors import ConfigError, DecodeError, InputError, MadmError
from madm_train.folder_layout import FolderMeta, frame_name, write_image

__all__ = ["extract_bag_frames"]

IMAGE_TYPES = ("sensor_msgs/msg/Image",)
GENERATOR_NAME = "madm_train.bag_target"


def _bag_identity(bag: Path) -> dict[str, Any]:
    files = sorted(p for p in (bag.iterdir() if bag.is_dir() else [bag]) if p.is_file())
    return {"path": str(bag.resolve()), "files": [[p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in files]}


def _image_frames(bag: Path, topic: str) -> Iterator[tuple[int, np.ndarray, str]]:
    """``(stamp µs, array, encoding)`` of every image on ``topic`` (header stamps)."""
    from madm_ros.events.bags import describe_topics, open_bag
    from madm_ros.image_conversion import image_to_array

    with open_bag(bag) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        if not connections:
            raise DecodeError(f"bag {bag} has no topic {topic!r}; it has: {describe_topics(list(reader.connections))}")
        if connections[0].msgtype not in IMAGE_TYPES:
            raise DecodeError(f"topic {topic!r} is {connections[0].msgtype}, not sensor_msgs/msg/Image")
        for connection, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            stamp_us = int(msg.header.stamp.sec) * 1_000_000 + int(msg.header.stamp.nanosec) // 1000
            yield stamp_us, image_to_array(msg), str(msg.encoding)


def _frames(bag: Path, topic: str, modality: str, events_config: dict[str, Any]) -> Iterator[tuple[int, np.ndarray, str, Any]]:
    """``(stamp µs, array, encoding, EdgeFrameConfig or None)`` of every frame of ``topic``."""
    if modality == "events":
        yield from _event_frames(bag, topic, events_config)
    else:
        for stamp, array, encoding in _image_frames(bag, topic):
            yield stamp, array, encoding, None


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


def _event_frames(bag: Path, topic: str, events_config: dict[str, Any]) -> Iterator[tuple[int, np.ndarray, str, Any]]:
    """``(slice end µs, edge frame, "mono8", config)`` from the node's decoder and accumulator."""
    from madm_ros.events.bags import iter_bag_events
    from madm_ros.events.edge_frames import EdgeFrameAccumulator, EdgeFrameConfig

    info: dict[str, Any] = {}
    messages = iter_bag_events(bag, topic, info=info)
    accumulator: EdgeFrameAccumulator | None = None
    for _, events in messages:
        if accumulator is None:
            config = EdgeFrameConfig(width=int(info["width"]), height=int(info["height"]), **events_config)
            if config.polarity == "split":
                raise ConfigError("the folder layout stores one-channel edge frames; use polarity 'ignore' or 'signed'")
            accumulator = EdgeFrameAccumulator(config)
        for frame in accumulator.push(events):
            yield frame.t_end_us, frame.image, "mono8", accumulator.config


def extract_bag_frames(
    bag: Path | str,
    topic: str,
    out_dir: Path | str,
    *,
    modality: str,
    events_config: dict[str, Any] | None = None,
    every: int = 1,
    max_frames: int | None = None,
) -> FolderMeta:
    """Write the frames of ``topic`` into ``out_dir`` in the folder layout (reusing a matching cache).

    Args:
        bag: rosbag2 folder or file.
        topic: A ``sensor_msgs/Image`` topic (depth ``16UC1``/``32FC1``, thermal ``mono8``/``mono16``)
            or an event topic (any type ``madm_ros.events.bags`` reads).
        out_dir: Cache folder: new or empty, or an earlier extraction (reused when the bag and
            settings match, rewritten otherwise). Any other folder is refused, never deleted.
        modality: ``depth``, ``thermal`` or ``events``.
        events_config: ``EdgeFrameConfig`` fields except width and height (taken from the stream);
            defaults to the config's own defaults (50 ms windows, polarity ignored).
        every: Keep every n-th frame (consecutive frames of a fast camera are near duplicates).
        max_frames: Stop after this many frames.

    Returns:
        The folder's ``FolderMeta``.
    """
    bag, out_dir = Path(bag), Path(out_dir)
    if modality not in ("depth", "thermal", "events"):
        raise ConfigError(f"bag-derived sets are depth, thermal or events, got {modality!r}")
    if every < 1:
        raise ConfigError(f"every must be ≥ 1, got {every}")
    if not bag.exists():
        raise InputError(f"bag {bag} not found")
    events_config = dict(events_config or {}) if modality == "events" else None
    if events_config is not None:
        from madm_ros.events.edge_frames import check_edge_frame_fields

        check_edge_frame_fields(events_config, "events_config")
    settings = {"bag": _bag_identity(bag), "topic": topic, "modality": modality, "events_config": events_config,
                "every": every, "max_frames": max_frames}
    # compared with what meta.json gives back, so in JSON form (tuples become lists)
    generator = json.loads(json.dumps({"name": GENERATOR_NAME, "config": settings}))
    cached = _cached_meta(out_dir)
    if cached is not None and cached.generator == generator:
        return cached
    frames_source = _frames(bag, topic, modality, events_config or {})
    first = next(frames_source, None)  # opens the bag and checks the topic before anything is deleted
    if first is None:
        raise InputError(f"topic {topic!r} of {bag} produced no frames")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)

    names: list[str] = []
    stamps: list[int] = []
    source_encoding = None
    edge_config = first[3]  # the same for every frame of the stream
    for index, (stamp, image, frame_encoding, _) in enumerate(itertools.chain([first], frames_source)):
        if index % every:
            continue
        if source_encoding is None:
            source_encoding = frame_encoding
        elif frame_encoding != source_encoding:
            raise DecodeError(f"topic {topic!r} changes encoding from {source_encoding} to {frame_encoding} mid-bag")
        encoding = frame_encoding
        if frame_encoding == "32FC1":  # stored as the 16UC1 millimetres of the layout; invalid stays 0
            valid = np.isfinite(image) & (image > 0)
            image = np.where(valid, np.clip(np.rint(image * 1000), 1, 65535), 0).astype(np.uint16)
            encoding = "16UC1"
        name = frame_name(0, len(names))
        write_image(out_dir, modality, name, image, encoding=encoding)
        names.append(name)
        stamps.append(stamp)
        if max_frames is not None and len(names) >= max_frames:
            break
    events_meta = None
    if modality == "events":
        events_meta = {k: v for k, v in dataclasses.asdict(edge_config).items() if k != "rectify_map"}
    meta = FolderMeta(frames=tuple(names), modalities={modality: encoding}, events=events_meta, stamps_us=tuple(stamps),
                      notes={modality: f"extracted from {bag} topic {topic}"}, generator=generator)
    meta.write(out_dir)
    return FolderMeta.read(out_dir)  # as later reads see it (JSON turns tuples into lists)
