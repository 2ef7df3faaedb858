"""Bags in and out: the one bag reader of every madm tool, and an all-or-nothing writer, both pure Python.

Every tool that reads a bag reads it through :class:`BagSource`: offline evaluation
(:mod:`madm_ros.bag_eval`), ``python -m madm_ros.events info`` and the event iterators
(:mod:`madm_ros.events.bags`), the player (:mod:`madm_ros.bag_play`) and the training target
(:mod:`madm_train.data.bag_target`). A recording that opens in one of them opens in all, with the
same messages.

Real recordings are rarely what ``rosbags`` expects (:mod:`madm_ros.bag_formats` lists what it
refuses), so a bag is opened by the first of these that works:

1. ``rosbags`` on the bag as given (rosbag2 folder, ``.db3`` or ``.mcap`` file, ROS 1 ``.bag``).
   Messages are read through the storage files' own connections, chosen by topic name: rosbags
   would otherwise drop, without a word, every message whose metadata.yaml QoS or hash differs
   from the storage file's.
2. For a folder whose ``metadata.yaml`` rosbags refuses (a newer rosbag2 version, missing keys,
   QoS it cannot parse): ``rosbags`` on a repaired copy of it in a temporary folder beside links
   to the storage files (:func:`madm_ros.bag_formats.repair_metadata`). The user's bag is never
   changed.
3. The folder's storage files through ``rosbags`` without ``metadata.yaml`` (a killed recorder
   leaves none).
4. The storage files scanned directly: MCAP records up to a cut (:mod:`madm_ros.mcap_recovery`),
   SQLite tables (:mod:`madm_ros.sqlite_recovery`).

:attr:`BagSource.note` says which step read the bag when it was not the first, and
:attr:`BagSource.problem` why only part of it could be read (a truncated file). Types come from
the bag's own definitions where they parse and match their recorded hash, otherwise from madm's
typestore (ROS 2 Humble plus the event types); a topic of a type neither defines is listed in
:attr:`BagSource.unknown_types` and :meth:`BagSource.deserialize` refuses it by name.

:class:`OutputBag` writes ``sensor_msgs/Image`` topics into a temporary folder beside the
destination and renames it into place on :meth:`OutputBag.commit`, so nobody ever plays a
half-written bag; :meth:`OutputBag.abort` removes it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Protocol

import numpy as np

from madm_ros.bag_formats import QosProfile, missing_types, one_line, parse_qos_profiles, repair_metadata, resolve_types
from madm_ros.errors import ConfigError, DecodeError
from madm_ros.sqlite_recovery import SQLITE_MAGIC

__all__ = ["BAG_MAGIC", "IMAGE_TYPE", "BagSource", "OutputBag", "QosProfile", "TopicInfo"]

IMAGE_TYPE = "sensor_msgs/msg/Image"
"""The message type of depth, thermal and label images, read and written."""

_SUFFIXES = ((".db3", "sqlite3"), (".mcap", "mcap"), (".bag", "rosbag1"), (".db3.zstd", "sqlite3"),
             (".mcap.zstd", "mcap"))
EVENT_FILE_KINDS = {".raw": "a Prophesee RAW event file", ".aedat4": "an AEDAT4 event file (iniVation DV)",
                    ".h5": "an HDF5 event file (DSEC events.h5)", ".hdf5": "an HDF5 event file (DSEC events.h5)"}
"""Event recordings people give bag tools by mistake: refused with the tool that reads them."""
BAG_MAGIC = ((SQLITE_MAGIC, "sqlite3"), (b"\x89MCAP0\r\n", "mcap"), (b"#ROSBAG V2.0", "rosbag1"))
"""The first bytes of each storage file kind → its storage (how a bag file without its usual name is told)."""
_HELP = ("check that it is a complete rosbag2 folder, a .db3 or .mcap file or a ROS 1 .bag file (a cut-off .db3 or "
         ".mcap is read up to the cut where enough of it is left; the reasons above say what was not)")


@dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag, as recorded.

    Attributes:
        topic: Topic name.
        msgtype: Message type (``pkg/msg/Name``).
        count: Number of messages (as the storage's index says; ``0`` where unknown).
        qos: The QoS profiles its publishers offered (empty where the bag has none).
        definition: ``(encoding, text)`` of the type's definition stored in the bag (``("", "")``: none).
        digest: The recorded type hash (``RIHS01_…``; ROS 1: md5), empty where none.
    """

    topic: str
    msgtype: str
    count: int = 0
    qos: tuple[QosProfile, ...] = ()
    definition: tuple[str, str] = ("", "")
    digest: str = ""


def _merge(entries: Iterable[TopicInfo]) -> list[TopicInfo]:
    """One entry per topic (split files and several publishers give several): counts summed, QoS joined."""
    merged: dict[str, TopicInfo] = {}
    for entry in entries:
        have = merged.get(entry.topic)
        if have is None:
            merged[entry.topic] = entry
            continue
        merged[entry.topic] = TopicInfo(
            have.topic, have.msgtype, have.count + entry.count, tuple(dict.fromkeys(have.qos + entry.qos)),
            have.definition if have.definition[1].strip() else entry.definition, have.digest or entry.digest)
    return list(merged.values())


def _natural(path: Path) -> list[Any]:
    """Sort key: ``bag_2.mcap`` before ``bag_10.mcap`` (rosbag2 numbers its split files)."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _kind(path: Path) -> str:
    """``sqlite3``, ``mcap`` or ``rosbag1`` from the name, else from the first bytes; empty when neither tells."""
    for suffix, kind in _SUFFIXES:
        if path.name.endswith(suffix):
            return kind
    with contextlib.suppress(OSError), open(path, "rb") as file:
        head = file.read(16)
        return next((kind for magic, kind in BAG_MAGIC if head.startswith(magic)), "")
    return ""


def _storage_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted((p for p in path.iterdir() if p.is_file() and any(p.name.endswith(s) for s, _ in _SUFFIXES)),
                  key=_natural)


# ---------------------------------------------------------------------------------------------- storage readers
class _Storage(Protocol):
    """What :class:`BagSource` needs from a way of reading the storage."""

    ros1: bool
    stopped: str

    def topics(self) -> list[TopicInfo]: ...

    def messages(self, topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]: ...

    def close(self) -> None: ...


class _Rosbags:
    """``rosbags``' readers on one bag (folder or file), on several split files, or on one ROS 1 bag."""

    def __init__(self, paths: list[Path]) -> None:
        from rosbags.rosbag1 import Reader as Reader1
        from rosbags.rosbag2 import Reader as Reader2

        self.ros1 = paths[0].suffix == ".bag"
        self.stopped = ""
        self._readers: list[Any] = []
        try:
            for path in paths:
                reader = (Reader1 if self.ros1 else Reader2)(path)
                reader.open()
                self._readers.append(reader)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _stored(reader: Any) -> list[Any]:
        """The storage files' connections (a folder reader's own come from metadata.yaml and may disagree with them)."""
        files = getattr(getattr(reader, "storage", None), "storages", None)
        return [c for f in files for c in f.connections] if files is not None else list(reader.connections)

    def _definition(self, connection: Any) -> tuple[str, str]:
        form = getattr(connection.msgdef.format, "name", "NONE")
        encoding = {"MSG": "ros1msg" if self.ros1 else "ros2msg", "IDL": "ros2idl"}.get(form, "")
        return (encoding, connection.msgdef.data) if encoding else ("", "")

    def _qos(self, connection: Any) -> tuple[QosProfile, ...]:
        if self.ros1:  # ROS 1 knows latching only; its messages were always sent reliably
            latched = bool(getattr(connection.ext, "latching", 0))
            return (QosProfile("reliable", "transient_local" if latched else "volatile", "keep_last", 0),)
        return parse_qos_profiles(getattr(connection.ext, "offered_qos_profiles", ()))

    def topics(self) -> list[TopicInfo]:
        entries = []
        for reader in self._readers:
            declared = {c.topic: c for c in reversed(reader.connections)}  # metadata.yaml's for a folder
            for connection in self._stored(reader):
                meta = declared.get(connection.topic, connection)
                definition = self._definition(connection)
                entries.append(TopicInfo(connection.topic, connection.msgtype, int(connection.msgcount),
                                         self._qos(meta) or self._qos(connection),
                                         definition if definition[1].strip() else self._definition(meta),
                                         connection.digest or meta.digest))
        return _merge(entries)

    def messages(self, topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        for reader in self._readers:  # split files follow each other in time
            chosen = [c for c in self._stored(reader) if c.topic in topics]
            if chosen:
                for connection, stamp, data in reader.messages(connections=chosen):
                    yield connection.topic, connection.msgtype, stamp, data

    def close(self) -> None:
        for reader in self._readers:
            with contextlib.suppress(Exception):  # a half-opened reader may fail to close; the files go anyway
                reader.close()
        self._readers = []


class _McapScan:
    """MCAP files read record by record (:mod:`madm_ros.mcap_recovery`), up to a cut."""

    ros1 = False

    def __init__(self, files: list[Path]) -> None:
        from madm_ros.mcap_recovery import McapScanner

        self.stopped = ""
        self._scanners = []
        entries = []
        for path in files:
            scanner = McapScanner(path)
            self._scanners.append(scanner)
            for channel in scanner.scan_channels().values():
                entries.append(TopicInfo(channel.topic, channel.msgtype, scanner.counts[channel.id],
                                         parse_qos_profiles(channel.qos), (channel.encoding, channel.definition)))
            if scanner.stopped:
                self.stopped = scanner.stopped
                break  # later split files cannot follow a cut one in time order
        if not entries and self.stopped:
            raise ValueError(f"no complete channel record before the cut ({self.stopped})")
        self._topics = _merge(entries)

    def topics(self) -> list[TopicInfo]:
        return self._topics

    def messages(self, topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        for scanner in self._scanners:
            for channel, stamp, data in scanner.messages(topics):
                yield channel.topic, channel.msgtype, stamp, data
            if scanner.stopped:
                self.stopped = scanner.stopped
                return

    def close(self) -> None:
        self._scanners = []


class _SqliteScan:
    """SQLite files read from their tables (:mod:`madm_ros.sqlite_recovery`)."""

    ros1 = False

    def __init__(self, files: list[Path]) -> None:
        from madm_ros.sqlite_recovery import SqliteTables

        self.stopped = ""
        self._tables: list[Any] = []
        try:
            for path in files:
                self._tables.append(SqliteTables(path))
                if self._tables[-1].stopped:
                    self.stopped = self._tables[-1].stopped
                    break  # later split files cannot follow a cut one in time order
        except BaseException:
            self.close()
            raise

    def topics(self) -> list[TopicInfo]:
        return _merge(TopicInfo(row.topic, row.msgtype, row.count, parse_qos_profiles(row.qos),
                                tables.definitions.get(row.msgtype, ("", "")), row.digest)
                      for tables in self._tables for row in tables.topics)

    def messages(self, topics: set[str]) -> Iterator[tuple[str, str, int, bytes]]:
        for tables in self._tables:
            for row, stamp, data in tables.messages(topics):
                yield row.topic, row.msgtype, stamp, data

    def close(self) -> None:
        for tables in self._tables:
            tables.close()
        self._tables = []


# ---------------------------------------------------------------------------------------------- the reader
@dataclass
class _Opening:
    """What the attempts to open a bag found out: why each failed, and how the one that worked differed."""

    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def attempt(self, what: str, open_: Callable[[], _Storage]) -> _Storage | None:
        try:
            return open_()
        except Exception as error:  # rosbags, sqlite3 and the scanners raise many unrelated types for unreadable files
            text = f"{what}: {one_line(error)}"
            if text not in self.failures:
                self.failures.append(text)
            return None


class BagSource:
    """One bag, opened for reading (use as a context manager).

    Args:
        path: A rosbag2 folder, one of its ``.db3`` / ``.mcap`` files, or a ROS 1 ``.bag`` file.

    Attributes:
        path: The bag folder or file.
        storage: ``sqlite3``, ``mcap`` or ``rosbag1``.
        connections: One :class:`TopicInfo` per topic, in the bag's order (QoS, definition, hash).
        topics: Topic → message type.
        counts: Topic → number of messages (as the bag's index says; ``0`` where unknown).
        unknown_types: Topic → message type, for topics whose type (or a type it nests) neither the
            bag nor madm defines: :meth:`deserialize` refuses them.
        typestore: The rosbags typestore messages are decoded with.
        problem: Why only part of the bag could be read (empty when it reads whole); set on open
            for a truncated MCAP file, and by :meth:`messages` when reading breaks off.
        note: How the bag was read when not normally (a repaired metadata.yaml, storage files read
            directly, definitions not taken from the bag), for reports.

    Raises:
        DecodeError: The path does not exist or no way of reading it works; the message names the
            path, what each way found and what to check.
    """

    def __init__(self, path: str | Path) -> None:
        from madm_ros.events.bags import event_typestore

        self.path = Path(path)
        if not self.path.exists():
            raise DecodeError(f"cannot open {self.path} as a bag: it does not exist (check the path)")
        recording = EVENT_FILE_KINDS.get(self.path.suffix.lower()) if self.path.is_file() else None
        if recording is not None:
            raise DecodeError(f"{self.path} is {recording}, not a bag; madm's bag tools read rosbag2 (folder, .mcap, "
                              f".db3) and rosbag1 (.bag): inspect it with python -m madm_ros.events info {self.path}")
        self.problem = ""
        self._temporary: tempfile.TemporaryDirectory[str] | None = None
        self._ros1 = False
        files = _storage_files(self.path)
        self.storage = next((k for k in map(_kind, files) if k), "")
        opening = _Opening()
        self._storage = self._open(files, opening)
        if self._storage is None:
            reasons = opening.failures + ([] if files else ["the folder holds no .db3, .mcap or .bag file"])
            raise DecodeError(f"cannot open {self.path} as a bag ({'; '.join(reasons)}); {_HELP}")
        try:
            self._index(event_typestore(), opening.notes)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ opening
    def _open(self, files: list[Path], opening: _Opening) -> _Storage | None:
        """The first way of reading that works (module docstring), or ``None``; ``opening`` collects why others failed."""
        metadata = self.path / "metadata.yaml"
        has_metadata = self.path.is_dir() and metadata.is_file()
        if self.path.is_file() or has_metadata:
            storage = opening.attempt("rosbags cannot read it", lambda: _Rosbags([self.path]))
            if storage is not None:
                return storage
        if has_metadata:
            storage = self._open_repaired(metadata, files, opening)
            if storage is not None:
                return storage
        plain = [f for f in files if not f.name.endswith(".zstd")]
        if self.path.is_dir() and plain:
            storage = opening.attempt("rosbags cannot read its storage files", lambda: _Rosbags(plain))
            if storage is not None:
                opening.notes.append("it was read from its storage files, "
                                     + ("ignoring its metadata.yaml" if has_metadata else "without metadata.yaml"))
                return storage
        scanners: dict[str, Callable[[list[Path]], _Storage]] = {"mcap": _McapScan, "sqlite3": _SqliteScan}
        for kind, scanner in scanners.items():
            chosen = [f for f in plain if _kind(f) == kind]
            if chosen:
                storage = opening.attempt(f"cannot read {', '.join(f.name for f in chosen)} directly",
                                          lambda scanner=scanner, chosen=chosen: scanner(chosen))
                if storage is not None:
                    why = "; ".join(opening.failures) or "no metadata.yaml"
                    opening.notes.append(f"it could not be opened normally ({why}); its storage files were read directly")
                    return storage
        return None

    def _open_repaired(self, metadata: Path, files: list[Path], opening: _Opening) -> _Storage | None:
        """Open with rosbags through a repaired ``metadata.yaml`` beside links to the storage files (a temporary folder)."""
        import yaml

        try:
            document, changes = repair_metadata(metadata.read_text(errors="replace"), self.path, files)
        except (OSError, ValueError) as error:
            opening.failures.append(one_line(error))
            return None
        if not changes:
            return None  # rosbags refused the bag for another reason than its metadata
        temporary = tempfile.TemporaryDirectory(prefix="madm-bag-")
        folder = Path(temporary.name)
        try:
            for name in document["rosbag2_bagfile_information"]["relative_file_paths"]:
                (folder / PurePath(name).name).symlink_to((self.path / PurePath(name).name).resolve())
            (folder / "metadata.yaml").write_text(yaml.safe_dump(document, sort_keys=False))
        except OSError as error:
            temporary.cleanup()
            opening.failures.append(f"a repaired copy of metadata.yaml could not be made: {one_line(error)}")
            return None
        storage = opening.attempt("rosbags cannot read it with a repaired metadata.yaml", lambda: _Rosbags([folder]))
        if storage is None:
            temporary.cleanup()
            return None
        self._temporary = temporary
        opening.notes.append(f"its metadata.yaml was read through a repaired copy ({'; '.join(changes)})")
        return storage

    def _index(self, defaults: Any, notes: list[str]) -> None:
        assert self._storage is not None
        self._ros1 = self._storage.ros1
        self.connections = self._storage.topics()
        self.topics = {c.topic: c.msgtype for c in self.connections}
        self.counts = {c.topic: c.count for c in self.connections}
        definitions: dict[str, tuple[str, str]] = {}
        digests: dict[str, str] = {}
        for c in self.connections:
            if c.definition[1].strip():
                definitions.setdefault(c.msgtype, c.definition)
            if c.digest:
                digests.setdefault(c.msgtype, c.digest)
        self.typestore, type_notes = resolve_types(definitions, digests, defaults, check_hashes=not self._storage.ros1)
        self._missing = {msgtype: missing_types(self.typestore, msgtype) for msgtype in set(self.topics.values())}
        self.unknown_types = {topic: msgtype for topic, msgtype in self.topics.items() if self._missing[msgtype]}
        self._notes = notes + type_notes
        if self._storage.stopped:
            self.problem = f"the bag is truncated: {self._storage.stopped}"

    @property
    def note(self) -> str:
        """How the bag was read when not normally (empty when it was)."""
        return "; ".join(self._notes)

    # ------------------------------------------------------------------ reading
    def messages(self, topics: Iterable[str]) -> Iterator[tuple[str, str, int, bytes]]:
        """``(topic, msgtype, log time ns, raw bytes)`` of ``topics`` in log-time order.

        A storage error part way (corrupt or cut-off file) ends the iteration and sets
        :attr:`problem` instead of raising, so that callers keep what they read.
        """
        storage = self._storage
        if storage is None:
            raise DecodeError(f"{self.path} is closed; read its messages inside `with BagSource(...)`")
        wanted = {topics} if isinstance(topics, str) else set(topics)
        iterator = iter(storage.messages(wanted))
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                break
            except Exception as error:  # sqlite3.DatabaseError, rosbags ReaderError, struct.error ...
                self.problem = f"reading {self.path} broke off: {type(error).__name__}: {one_line(error)}"
                return
            yield item
        if storage.stopped and not self.problem:
            self.problem = f"the bag is truncated: {storage.stopped}"

    def deserialize(self, data: bytes, msgtype: str) -> Any:
        """The message object of ``data``.

        Raises:
            DecodeError: ``msgtype`` (or a type it nests) is defined neither by the bag nor by madm.
            Exception: rosbags' own error for malformed bytes.
        """
        missing = self._missing.get(msgtype)
        if missing is None:
            missing = self._missing[msgtype] = missing_types(self.typestore, msgtype)
        if missing:
            raise DecodeError(f"cannot decode {msgtype} from {self.path}: neither the bag nor madm defines "
                              f"{', '.join(missing)}; record with rosbag2 Iron or newer (it stores definitions) "
                              "or skip this topic")
        if self._ros1:
            return self.typestore.deserialize_ros1(data, msgtype)
        return self.typestore.deserialize_cdr(data, msgtype)

    def close(self) -> None:
        """Release the files (and remove the temporary folder of a repaired metadata.yaml)."""
        if self._storage is not None:
            self._storage.close()
            self._storage = None
        if self._temporary is not None:
            self._temporary.cleanup()
            self._temporary = None

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
            self._connections[topic] = self._writer.add_connection(topic, IMAGE_TYPE, typestore=self._store)
            self.counts[topic] = 0
        fields = array_to_image_fields(array, encoding)
        fields["data"] = np.frombuffer(fields["data"], np.uint8)
        stamp = types["builtin_interfaces/msg/Time"](sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)
        message = types[IMAGE_TYPE](header=types["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id), **fields)
        self._writer.write(self._connections[topic], stamp_ns, self._store.serialize_cdr(message, IMAGE_TYPE))
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
