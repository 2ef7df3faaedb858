"""Read a rosbag2 SQLite file (``.db3``) from its tables, for files that ``rosbags`` refuses.

``rosbags`` reads every row of ``message_definitions`` while opening and gives up on one it does not
expect: rosbag2 writes the encoding ``unknown`` (with an empty definition) for a type whose
definition the recorder could not find, and ``rosbags`` 0.11.9 then refuses the whole file. The
messages themselves are fine. :class:`SqliteTables` reads the three tables every rosbag2 schema
has had (``topics``, ``messages`` and, from schema 4 on, ``message_definitions``) with Python's own
``sqlite3``, taking only the columns that exist, so files of every rosbag2 version read.

The file is opened read-only and ``immutable`` (no lock, no journal, nothing written beside it).
Used by :class:`madm_ros.bag_source.BagSource` after ``rosbags`` refused a ``.db3`` file.

A file cut off part way (a copy interrupted, a disk filled) is shorter than its header says, and
SQLite then refuses every query, even of tables whose pages are all there. Such a file is read
through a temporary copy of its whole pages whose header gives the size it has: the tables open,
and messages read in the order they were written (row id; the order rosbag2 writes them in)
up to the first page that is missing (:attr:`SqliteTables.stopped` says so).
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SQLITE_MAGIC", "SqliteTables", "SqliteTopic"]

SQLITE_MAGIC = b"SQLite format 3\x00"
"""The first 16 bytes of every SQLite database file."""


@dataclass(frozen=True)
class SqliteTopic:
    """One row of ``topics`` with its message count (``qos`` and ``digest`` are empty where the schema lacks them)."""

    id: int
    topic: str
    msgtype: str
    serialization_format: str
    qos: str
    digest: str
    count: int


class SqliteTables:
    """The topics, definitions and messages of one rosbag2 ``.db3`` file.

    Attributes:
        topics: Rows of the ``topics`` table, in id order (counts 0 where a cut-off file cannot tell).
        definitions: Message type → ``(encoding, definition text)`` from ``message_definitions``
            (empty for files older than rosbag2 schema 4).
        stopped: Empty for a whole file; for a cut-off one, where it ends (read up to there).

    Raises:
        sqlite3.Error: The file is no SQLite database, or a damaged one.
        ValueError: It is a database without rosbag2's ``topics`` and ``messages`` tables.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.stopped = ""
        self._copy: tempfile.TemporaryDirectory[str] | None = None
        self._db = _connect(self.path)
        try:
            self._read_index()
        except sqlite3.DatabaseError:
            self.close()
            sizes = _cut_off_sizes(self.path)
            if sizes is None:
                raise
            self._read_whole_pages(*sizes)
        except BaseException:
            self.close()
            raise

    def _read_whole_pages(self, pages: int, page_size: int, expected: int) -> None:
        """Open a temporary copy of the ``pages`` whole pages of the cut-off file, its header saying so."""
        size = self.path.stat().st_size
        cut = f"{self.path.name} is cut off at {size} of its {expected} bytes"
        free = shutil.disk_usage(tempfile.gettempdir()).free
        if free < pages * page_size:
            raise sqlite3.DatabaseError(f"{cut}; reading it up to the cut needs a temporary copy of {pages * page_size} "
                                        f"bytes, but {tempfile.gettempdir()} has {free} free (set TMPDIR to a larger disk)")
        self._copy = tempfile.TemporaryDirectory(prefix="madm-db3-")
        copy = Path(self._copy.name) / self.path.name
        try:
            with self.path.open("rb") as source, copy.open("wb") as target:
                shutil.copyfileobj(source, target)
                target.truncate(pages * page_size)
                target.seek(28)  # the in-header database size, in pages
                target.write(pages.to_bytes(4, "big"))
            self._db = _connect(copy)
            self.stopped = f"{cut}; read up to the cut"
            try:
                self._read_index()
            except sqlite3.DatabaseError as error:
                raise sqlite3.DatabaseError(f"{cut}, before the end of its table index ({error}): "
                                            "nothing can be read") from None
        except BaseException:
            self.close()
            raise

    def _read_index(self) -> None:
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"topics", "messages"} <= tables:
            raise ValueError(f"{self.path.name} has no rosbag2 topics and messages tables")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(topics)")}
        qos = "offered_qos_profiles" if "offered_qos_profiles" in columns else "''"
        digest = "type_description_hash" if "type_description_hash" in columns else "''"
        try:
            counts = dict(self._db.execute("SELECT topic_id, COUNT(*) FROM messages GROUP BY topic_id"))
        except sqlite3.DatabaseError:
            if not self.stopped:
                raise
            counts = {}  # a count runs past the cut
        rows = self._db.execute(f"SELECT id, name, type, serialization_format, {qos}, {digest} FROM topics ORDER BY id")
        self.topics = [SqliteTopic(int(key), str(name), str(msgtype), str(fmt or "cdr"), str(profiles or ""),
                                   str(rihs or ""), int(counts.get(key, 0)))
                       for key, name, msgtype, fmt, profiles, rihs in rows]
        self.definitions: dict[str, tuple[str, str]] = {}
        if "message_definitions" in tables:
            for msgtype, encoding, text in self._db.execute(
                    "SELECT topic_type, encoding, encoded_message_definition FROM message_definitions ORDER BY id"):
                self.definitions.setdefault(str(msgtype), (str(encoding or ""), str(text or "")))

    def messages(self, topics: set[str]) -> Iterator[tuple[SqliteTopic, int, bytes]]:
        """``(topic row, log time ns, CDR bytes)`` of ``topics`` in log-time order (cut off: written order, to the cut)."""
        chosen = {row.id: row for row in self.topics if row.topic in topics}
        if not chosen:
            return
        marks = ",".join("?" * len(chosen))
        order = "id" if self.stopped else "timestamp, id"  # sorting by time would read past the cut first
        query = f"SELECT topic_id, timestamp, data FROM messages WHERE topic_id IN ({marks}) ORDER BY {order}"
        try:
            for key, stamp, data in self._db.execute(query, list(chosen)):
                yield chosen[key], int(stamp), bytes(data)
        except sqlite3.DatabaseError:
            if not self.stopped:
                raise  # else: the first missing page, the cut

    def close(self) -> None:
        """Release the file (and the temporary copy of a cut-off one)."""
        self._db.close()
        if self._copy is not None:
            self._copy.cleanup()
            self._copy = None


def _connect(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"{path.resolve().as_uri()}?immutable=1&mode=ro", uri=True)


def _cut_off_sizes(path: Path) -> tuple[int, int, int] | None:
    """``(whole pages present, page size, bytes the header expects)`` when ``path`` is shorter than its SQLite header says."""
    with path.open("rb") as file:
        header = file.read(100)
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        return None
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    header_size_valid = header[24:28] == header[92:96]  # otherwise SQLite takes the file's size anyway
    size = path.stat().st_size
    if not (header_size_valid and page_size >= 512 and size < pages * page_size and size >= 2 * page_size):
        return None
    return size // page_size, page_size, pages * page_size
