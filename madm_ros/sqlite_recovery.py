"""Read a rosbag2 SQLite file (``.db3``) from its tables, for files that ``rosbags`` refuses.

``rosbags`` reads every row of ``message_definitions`` while opening and gives up on one it does not
expect: rosbag2 writes the encoding ``unknown`` (with an empty definition) for a type whose
definition the recorder could not find, and ``rosbags`` 0.11.9 then refuses the whole file. The
messages themselves are fine. :class:`SqliteTables` reads the three tables every rosbag2 schema
has had (``topics``, ``messages`` and, from schema 4 on, ``message_definitions``) with Python's own
``sqlite3``, taking only the columns that exist, so files of every rosbag2 version read.

The file is opened read-only and ``immutable`` (no lock, no journal, nothing written beside it).
Used by :class:`madm_ros.bag_source.BagSource` after ``rosbags`` refused a ``.db3`` file.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SqliteTables", "SqliteTopic"]


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
        topics: Rows of the ``topics`` table, in id order.
        definitions: Message type → ``(encoding, definition text)`` from ``message_definitions``
            (empty for files older than rosbag2 schema 4).

    Raises:
        sqlite3.Error: The file is no SQLite database, or a damaged one.
        ValueError: It is a database without rosbag2's ``topics`` and ``messages`` tables.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(f"{self.path.resolve().as_uri()}?immutable=1&mode=ro", uri=True)
        try:
            self._read_index()
        except BaseException:
            self._db.close()
            raise

    def _read_index(self) -> None:
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"topics", "messages"} <= tables:
            raise ValueError(f"{self.path.name} has no rosbag2 topics and messages tables")
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(topics)")}
        qos = "offered_qos_profiles" if "offered_qos_profiles" in columns else "''"
        digest = "type_description_hash" if "type_description_hash" in columns else "''"
        counts = dict(self._db.execute("SELECT topic_id, COUNT(*) FROM messages GROUP BY topic_id"))
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
        """``(topic row, log time ns, CDR bytes)`` of ``topics`` in log-time order."""
        chosen = {row.id: row for row in self.topics if row.topic in topics}
        if not chosen:
            return
        marks = ",".join("?" * len(chosen))
        query = f"SELECT topic_id, timestamp, data FROM messages WHERE topic_id IN ({marks}) ORDER BY timestamp, id"
        for key, stamp, data in self._db.execute(query, list(chosen)):
            yield chosen[key], int(stamp), bytes(data)

    def close(self) -> None:
        """Release the file."""
        self._db.close()
