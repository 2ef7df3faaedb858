"""Bags in and out for offline evaluation: a forgiving reader and an all-or-nothing writer, both pure Python.

:class:`BagSource` reads rosbag2 (sqlite3, mcap) and rosbag1 with ``rosbags``' ``AnyReader``, with
the event message types registered. Real recordings are rarely perfect, so it also copes with:

- a bag folder whose ``metadata.yaml`` is missing (a recorder that was killed): its storage files
  are read directly;
- a truncated MCAP file (no footer): its complete records are read (:mod:`madm_ros.mcap_recovery`)
  and :attr:`BagSource.problem` says that the results are partial;
- bags that embed definitions for some types only: types the bag does not define are taken from
  madm's typestore (ROS 2 Humble plus the event types), so ``EventPacket`` still decodes.

:class:`OutputBag` writes ``sensor_msgs/Image`` topics into a temporary folder beside the
destination and renames it into place on :meth:`OutputBag.commit`, so nobody ever plays a
half-written bag; :meth:`OutputBag.abort` removes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.errors import ConfigError, DecodeError

__all__ = ["BagSource", "OutputBag"]

_STORAGE_SUFFIXES = {".mcap": "mcap", ".db3": "sqlite3", ".bag": "rosbag1"}


def _natural(path: Path) -> list[Any]:
    """Sort key: ``bag_2.mcap`` before ``bag_10.mcap`` (rosbag2 numbers its split files)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _storage_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted((p for p in path.iterdir() if p.suffix in _STORAGE_SUFFIXES), key=_natural)


def _add_missing_types(store: Any, defaults: Any) -> None:
    """Register every type of ``defaults`` that ``store`` lacks (types ``store`` already has are left alone)."""
    missing = {name: fields for name, fields in defaults.fielddefs.items() if name not in store.fielddefs}
    if missing:
        store.register(missing)


class BagSource:
    """One bag, opened for reading (use as a context manager).

    Attributes:
        path: The bag folder or file.
        storage: ``sqlite3``, ``mcap`` or ``rosbag1``.
        topics: Topic → message type.
        counts: Topic → number of messages (as the bag's index says; ``0`` where unknown).
        problem: Why only part of the bag could be read (empty when it reads whole); set on open
            for a truncated MCAP file, and by :meth:`messages` when reading breaks off.
        note: How the bag was read when not normally (its records scanned), for the report.
    """

    def __init__(self, path: str | Path) -> None:
        from madm_ros.events.bags import event_typestore

        self.path = Path(path)
        if not self.path.exists():
            raise DecodeError(f"bag {self.path} does not exist")
        self.problem = ""
        self.note = ""
        self._defaults = event_typestore()
        self._reader: Any = None
        self._scanner: Any = None
        files = _storage_files(self.path)
        if not files:
            raise DecodeError(f"{self.path} holds no bag files (.mcap, .db3 or .bag)")
        self.storage = _STORAGE_SUFFIXES[files[0].suffix]
        errors = []
        for target in ([self.path] if self.path.is_file() or (self.path / "metadata.yaml").exists() else []) + (
                files if self.path.is_dir() and len(files) == 1 else []):
            try:
                self._open_any(target)
                break
            except Exception as error:  # rosbags raises many unrelated types for unreadable files
                if str(error) not in errors:
                    errors.append(str(error))
        else:
            if self.storage != "mcap":
                raise DecodeError(f"cannot read {self.path} as a bag: {'; '.join(errors) or 'no metadata.yaml'}")
            self._open_scanned(files, errors)

    # ------------------------------------------------------------------ opening
    def _open_any(self, target: Path) -> None:
        from rosbags.highlevel import AnyReader

        reader = AnyReader([target], default_typestore=self._defaults)
        reader.open()
        self._reader = reader
        _add_missing_types(reader.typestore, self._defaults)
        self.topics = {c.topic: c.msgtype for c in reader.connections}
        self.counts: dict[str, int] = {}
        for connection in reader.connections:
            self.counts[connection.topic] = self.counts.get(connection.topic, 0) + int(connection.msgcount)

    def _open_scanned(self, files: list[Path], errors: list[str]) -> None:
        from rosbags.typesys import Stores, get_types_from_idl, get_types_from_msg, get_typestore

        from madm_ros.mcap_recovery import McapScanner

        try:
            self._scanner = [McapScanner(f) for f in files]
        except (OSError, ValueError) as error:
            raise DecodeError(f"cannot read {self.path} as a bag: {'; '.join(errors)}; {error}") from None
        store = get_typestore(Stores.EMPTY)
        self.topics, self.counts = {}, {}
        for scanner in self._scanner:
            for channel in scanner.scan_channels().values():
                self.topics.setdefault(channel.topic, channel.msgtype)
                self.counts[channel.topic] = self.counts.get(channel.topic, 0) + scanner.counts[channel.id]
                if channel.definition and channel.msgtype not in store.fielddefs:
                    try:
                        if channel.encoding == "ros2msg":
                            types = get_types_from_msg(channel.definition, channel.msgtype)
                        else:
                            types = get_types_from_idl(channel.definition)
                        store.register({k: v for k, v in types.items() if k not in store.fielddefs})
                    except Exception:  # a definition rosbags cannot parse: madm's own may still serve
                        pass
            if scanner.stopped:
                self.problem = f"the bag is truncated: {scanner.stopped}"
                break  # later split files cannot follow a cut one in time order
        _add_missing_types(store, self._defaults)
        self._store = store
        self.note = f"the bag could not be opened normally ({'; '.join(errors) or 'no metadata.yaml'}); its records were scanned"

    # ------------------------------------------------------------------ reading
    def messages(self, topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """``(topic, msgtype, log time ns, raw bytes)`` of ``topics`` in log-time order.

        A storage error part way (corrupt or cut-off file) ends the iteration and sets
        :attr:`problem` instead of raising, so that callers keep what they read.
        """
        if self._scanner is not None:
            for scanner in self._scanner:
                for channel, stamp, data in scanner.messages(topics):
                    yield channel.topic, channel.msgtype, stamp, data
                if scanner.stopped:
                    return
            return
        connections = [c for c in self._reader.connections if c.topic in topics]
        iterator = iter(self._reader.messages(connections=connections))
        while True:
            try:
                connection, stamp, data = next(iterator)
            except StopIteration:
                return
            except Exception as error:  # sqlite3.DatabaseError, rosbags ReaderError, struct.error ...
                self.problem = f"reading {self.path} broke off: {type(error).__name__}: {error}"
                return
            yield connection.topic, connection.msgtype, stamp, data

    def deserialize(self, data: bytes, msgtype: str) -> Any:
        """The message object of ``data`` (raises on malformed bytes)."""
        if self._scanner is not None:
            return self._store.deserialize_cdr(data, msgtype)
        return self._reader.deserialize(data, msgtype)

    def close(self) -> None:
        """Release the files."""
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def __enter__(self) -> BagSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class OutputBag:
    """A rosbag2 of ``sensor_msgs/Image`` topics, written to a temporary folder and renamed into place at the end.

    Args:
        path: The final bag folder; an existing bag there is replaced on :meth:`commit`.
        storage: ``sqlite3`` or ``mcap``.
    """

    def __init__(self, path: str | Path, storage: str = "sqlite3") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
        if storage not in plugins:
            raise ConfigError(f"output bag format must be sqlite3 or mcap, got {storage!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._staging = self.path.parent / f".{self.path.name}.partial-{os.getpid()}"
        shutil.rmtree(self._staging, ignore_errors=True)
        self._staging.mkdir()
        self._store = get_typestore(Stores.ROS2_HUMBLE)
        self._writer = Writer(self._staging / self.path.name, version=9, storage_plugin=plugins[storage])
        self._writer.open()
        self._connections: dict[str, Any] = {}
        self.counts: dict[str, int] = {}

    def write_image(self, topic: str, array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> None:
        """Add one image message stamped ``stamp_ns`` (also its log time)."""
        from madm_ros.image_conversion import array_to_image_fields

        types = self._store.types
        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(topic, "sensor_msgs/msg/Image", typestore=self._store)
            self.counts[topic] = 0
        fields = array_to_image_fields(array, encoding)
        fields["data"] = np.frombuffer(fields["data"], np.uint8)
        stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        message = types["sensor_msgs/msg/Image"](header=types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id),
                                                 **fields)
        self._writer.write(self._connections[topic], stamp_ns, self._store.serialize_cdr(message, "sensor_msgs/msg/Image"))
        self.counts[topic] += 1

    def commit(self) -> Path:
        """Finish the bag and move it to its final place (replacing an older one)."""
        self._writer.close()
        old = self.path.parent / f".{self.path.name}.old-{os.getpid()}"
        if self.path.exists():
            os.replace(self.path, old)
        os.replace(self._staging / self.path.name, self.path)
        shutil.rmtree(old, ignore_errors=True)
        shutil.rmtree(self._staging, ignore_errors=True)
        return self.path

    def abort(self) -> None:
        """Drop everything written so far."""
        with contextlib.suppress(Exception):  # closing a writer that failed part way may fail again; the folder goes anyway
            self._writer.close()
        shutil.rmtree(self._staging, ignore_errors=True)
