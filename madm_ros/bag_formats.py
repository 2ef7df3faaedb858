"""What rosbag2 versions write, read tolerantly: metadata.yaml, QoS profiles and message definitions.

rosbag2 has changed its files many times, and ``rosbags`` (pinned 0.11.9) accepts only part of what
real recorders wrote. Measured with rosbags 0.11.9 (tests/madm_ros/test_bag_reader.py keeps one bag
of each kind):

- ``metadata.yaml``: ``version`` above 9 is refused outright; a missing key (``relative_file_paths``,
  a QoS profile without ``avoid_ros_namespace_conventions`` …) refuses the bag. The history of the
  format (rosbag2_storage ``yaml.hpp``): 1 initial; 3 ``compression_format``/``compression_mode``;
  4 ``offered_qos_profiles`` (a YAML *string*, policies as rmw numbers); 5 ``files``; 6
  ``custom_data``; 7 ``type_description_hash``; 8 ``ros_distro``; 9 ``offered_qos_profiles`` as a
  YAML *list* with policy names. rosbag2 itself reads the QoS in either form, whatever the version.
- QoS and hashes in ``metadata.yaml`` that differ from the storage file's own copy make rosbags
  yield *no messages* for the topic, without an error (it matches connections by equality).
- Message definitions: rosbags refuses the whole bag when one definition does not parse: IDL made
  by rosidl (rosbag2 stores ``ros2idl`` when no ``.msg`` exists) starts with ``#include`` lines that
  its IDL parser rejects; ``.msg`` text with Windows line ends is rejected; rosbag2's encoding
  ``unknown`` (no definition found while recording) is a ``KeyError``; a definition whose
  ``type_description_hash`` disagrees (the recorder's package differed from the publisher's) refuses
  the bag.

:func:`parse_qos_profiles` reads QoS in every form, :func:`repair_metadata` turns a metadata.yaml
rosbags refuses into one it accepts (for a copy; the user's file is never changed), and
:func:`resolve_types` builds the typestore a bag is decoded with: the bag's own definitions where
they parse and match their recorded hash, madm's (ROS 2 Humble plus the event types) otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

__all__ = ["QosProfile", "missing_types", "one_line", "parse_definition", "parse_qos_profiles", "repair_metadata",
           "resolve_types"]

# rmw's numbering of the policies (rmw/types.h), as metadata ≤ 8 and the SQLite topics table write them
_POLICY_NAMES = {
    "history": ("system_default", "keep_last", "keep_all", "unknown"),
    "reliability": ("system_default", "reliable", "best_effort", "unknown", "best_available"),
    "durability": ("system_default", "transient_local", "volatile", "unknown", "best_available"),
    "liveliness": ("system_default", "automatic", "manual_by_node", "manual_by_topic", "unknown", "best_available"),
}
_DURATIONS = ("deadline", "lifespan", "liveliness_lease_duration")
_IDL_SEPARATOR = "=" * 80 + "\n"


def one_line(error: BaseException) -> str:
    """An exception's text on one line (rosbags and YAML put line breaks and whole file excerpts in theirs)."""
    return " ".join(str(error).split()) or type(error).__name__


@dataclass(frozen=True)
class QosProfile:
    """The policies of one recorded publisher that playback needs (names as rosbag2 9 writes them)."""

    reliability: str = "unknown"
    durability: str = "unknown"
    history: str = "unknown"
    depth: int = 0


def _policy(value: Any, key: str) -> str:
    """A policy value given as an rmw number, a name, or a rosbags enum → its lower-case name."""
    value = getattr(value, "name", value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        names = _POLICY_NAMES[key]
        return names[value] if 0 <= value < len(names) else "unknown"
    if isinstance(value, str) and value.strip():
        return value.strip().lower()
    return "unknown"


def parse_qos_profiles(value: Any) -> tuple[QosProfile, ...]:
    """The offered QoS profiles of a topic, in any form rosbag2 or rosbags hands them over.

    Accepts a YAML string (metadata ≤ 8, the SQLite ``topics`` table, MCAP channel metadata), a list
    of mappings (metadata 9), or rosbags' parsed ``Qos`` objects; policies as rmw numbers or names.
    Anything unreadable gives no profiles (playback then offers ROS defaults).
    """
    import yaml

    if isinstance(value, str):
        try:
            value = yaml.safe_load(value) if value.strip() else []
        except yaml.YAMLError:
            return ()
    if not isinstance(value, (list, tuple)):
        return ()
    profiles = []
    for item in value:
        def get(key: str, item: Any = item) -> Any:
            return item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)

        depth = get("depth")
        profiles.append(QosProfile(reliability=_policy(get("reliability"), "reliability"),
                                   durability=_policy(get("durability"), "durability"),
                                   history=_policy(get("history"), "history"),
                                   depth=int(depth) if isinstance(depth, int) and not isinstance(depth, bool) else 0))
    return tuple(profiles)


# ---------------------------------------------------------------------------------------------- metadata.yaml
def _complete_profile(profile: Any) -> dict[str, Any] | None:
    """One QoS profile with every key rosbags reads (durations as ``{sec, nsec}``), or ``None`` if it is no mapping."""
    if not isinstance(profile, Mapping):
        return None
    out = dict(profile)
    for key in _POLICY_NAMES:
        out[key] = _policy(out.get(key), key)
    depth = out.get("depth")
    out["depth"] = depth if isinstance(depth, int) and not isinstance(depth, bool) else 0
    for key in _DURATIONS:
        value = out.get(key)
        if isinstance(value, Mapping) and isinstance(value.get("sec"), int) and isinstance(value.get("nsec"), int):
            continue
        nanoseconds = value if isinstance(value, int) else 0
        out[key] = {"sec": nanoseconds // 1_000_000_000, "nsec": nanoseconds % 1_000_000_000}
    out["avoid_ros_namespace_conventions"] = bool(out.get("avoid_ros_namespace_conventions", False))
    return out


def _rosbags_accepts_qos(value: Any) -> bool:
    from rosbags.rosbag2.metadata import parse_qos

    try:
        parse_qos(value)
    except Exception:  # rosbags raises ReaderError, KeyError or TypeError for profiles it cannot read
        return False
    return True


def repair_metadata(text: str, folder: Path, files: Sequence[Path]) -> tuple[dict[str, Any], list[str]]:
    """A version of a rosbag2 ``metadata.yaml`` that rosbags 0.11.9 reads, and what was changed (empty: nothing).

    Keeps everything rosbags can use and only fixes what it refuses: a version above 9 (read as
    9: rosbags reads every field the same way in every version), missing or odd keys (filled with
    neutral values or derived from the folder's storage ``files``), listed files that are absent,
    and QoS profiles it cannot parse (completed with rosbag2's defaults). Nothing is written.

    Raises:
        ValueError: The text is no YAML, or holds no ``rosbag2_bagfile_information`` mapping.
    """
    import yaml

    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ValueError(f"metadata.yaml is not valid YAML ({one_line(error)})") from None
    info = document.get("rosbag2_bagfile_information") if isinstance(document, Mapping) else None
    if not isinstance(info, Mapping):
        raise ValueError("metadata.yaml holds no rosbag2_bagfile_information mapping")
    info = dict(info)
    changes: list[str] = []

    version = info.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= 9:
        info["version"] = 9
        changes.append(f"version {version!r} read as 9")

    names = [path.name for path in files]
    storage = "mcap" if any(".mcap" in n for n in names) else "sqlite3" if any(".db3" in n for n in names) else None
    if info.get("storage_identifier") not in ("sqlite3", "mcap") and storage:
        changes.append(f"storage_identifier {info.get('storage_identifier')!r} read as {storage}")
        info["storage_identifier"] = storage

    listed = info.get("relative_file_paths")
    if not isinstance(listed, list) or not all(isinstance(name, str) for name in listed):
        listed = [entry.get("path") for entry in info.get("files") or [] if isinstance(entry, Mapping)]
        listed = [name for name in listed if isinstance(name, str)]
    present = [name for name in listed if (folder / PurePath(name).name).is_file()]
    if not present:
        present = [path.name for path in files]
    if present != info.get("relative_file_paths"):
        changes.append("relative_file_paths taken from the files present")
        info["relative_file_paths"] = present

    for key, inner in (("duration", "nanoseconds"), ("starting_time", "nanoseconds_since_epoch")):
        value = info.get(key)
        if not (isinstance(value, Mapping) and isinstance(value.get(inner), int)):
            info[key] = {inner: 0}
            changes.append(f"{key} set to 0")
    if not isinstance(info.get("message_count"), int):
        info["message_count"] = 0
        changes.append("message_count set to 0")

    topics = []
    for entry in info.get("topics_with_message_count") or []:
        meta = entry.get("topic_metadata") if isinstance(entry, Mapping) else None
        if not (isinstance(meta, Mapping) and isinstance(meta.get("name"), str) and isinstance(meta.get("type"), str)):
            changes.append("an unreadable topic entry dropped (the storage file lists its topics itself)")
            continue
        meta = dict(meta)
        name = meta["name"]
        if not isinstance(meta.get("serialization_format"), str):
            meta["serialization_format"] = "cdr"
            changes.append(f"serialization_format of {name} set to cdr")
        profiles = meta.get("offered_qos_profiles", "")
        if not _rosbags_accepts_qos(profiles):
            try:
                loaded = yaml.safe_load(profiles) if isinstance(profiles, str) else profiles
            except yaml.YAMLError:
                loaded = []
            completed = [p for p in map(_complete_profile, loaded if isinstance(loaded, list) else []) if p]
            meta["offered_qos_profiles"] = completed
            changes.append(f"offered_qos_profiles of {name} completed")
        if not isinstance(meta.get("type_description_hash", ""), str):
            meta["type_description_hash"] = ""
            changes.append(f"type_description_hash of {name} dropped")
        count = entry.get("message_count")
        if not isinstance(count, int):
            count = 0
            changes.append(f"message_count of {name} set to 0")
        topics.append({**entry, "topic_metadata": meta, "message_count": count})
    if topics != info.get("topics_with_message_count"):
        info["topics_with_message_count"] = topics
    return {"rosbag2_bagfile_information": info}, changes


# ---------------------------------------------------------------------------------------------- definitions
def _without_directives(idl: str) -> str:
    """IDL without preprocessor lines (``#include``, ``#pragma``): rosidl writes them, rosbags' parser rejects them."""
    return "\n".join(line for line in idl.split("\n") if not line.lstrip().startswith("#"))


def parse_definition(encoding: str, text: str, msgtype: str) -> dict[str, Any]:
    """The rosbags type dictionary of one stored definition (with its dependencies, as rosbag2 concatenates them).

    ``encoding``: ``ros2msg``/``ros1msg`` (``.msg`` text, ``MSG:`` sections) or ``ros2idl``/``omgidl``
    (rosbag2's ``IDL:`` sections). Windows line ends are normalised first.

    Raises:
        ValueError: For another encoding (e.g. rosbag2's ``unknown``).
        Exception: rosbags' own error for text it cannot parse.
    """
    from rosbags.typesys import get_types_from_idl, get_types_from_msg

    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if encoding in ("ros2msg", "ros1msg"):
        return dict(get_types_from_msg(text, msgtype))
    if encoding in ("ros2idl", "omgidl"):
        types: dict[str, Any] = {}
        for piece in text.split(_IDL_SEPARATOR):
            body = piece.partition("\n")[2] if piece.startswith("IDL: ") else piece
            if body.strip():
                types.update(get_types_from_idl(_without_directives(body)))
        return types
    raise ValueError(f"definition encoding {encoding!r} is not ros2msg or ros2idl")


def missing_types(store: Any, msgtype: str) -> list[str]:
    """``msgtype`` and the types it nests that ``store`` does not define (empty: it decodes)."""
    from rosbags.interfaces import Nodetype

    seen: set[str] = set()
    todo, missing = [msgtype], []
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name not in store.fielddefs:
            missing.append(name)
            continue
        for _, (node, detail) in store.fielddefs[name][1]:
            while node in (Nodetype.ARRAY, Nodetype.SEQUENCE):
                (node, detail), _ = detail
            if node == Nodetype.NAME:
                todo.append(detail)
    return missing


def _assemble(parsed: Mapping[str, dict[str, Any]], defaults: Any, failed: dict[str, str]) -> Any:
    """A typestore of the parsed definitions (one type at a time: a conflicting one fails alone) plus madm's for the rest."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.EMPTY)
    for msgtype, types in parsed.items():
        try:
            store.register(types)
        except Exception as error:  # rosbags' TypesysError, or its code generator's error on odd names
            failed[msgtype] = one_line(error)[:200]
    missing = {name: fields for name, fields in defaults.fielddefs.items() if name not in store.fielddefs}
    if missing:
        store.register(missing)
    return store


def _rihs01(store: Any, msgtype: str) -> str:
    try:
        return str(store.hash_rihs01(msgtype))
    except Exception:  # a type with missing dependencies has no hash
        return ""


def resolve_types(definitions: Mapping[str, tuple[str, str]], digests: Mapping[str, str], defaults: Any,
                  check_hashes: bool = True) -> tuple[Any, list[str]]:
    """The typestore to decode a bag with, and notes on every definition not taken from the bag.

    Args:
        definitions: Message type → ``(encoding, text)`` as stored in the bag (empty text: none).
        digests: Message type → recorded ``RIHS01_…`` hash (rosbag2 ≥ Iron; empty or absent: none).
        defaults: madm's typestore, for the types the bag does not define usably.
        check_hashes: Compare the bag's definitions with the recorded hashes (ROS 2 only).

    A definition that does not parse is skipped (madm's is used when it has one). A definition
    whose hash differs from the recorded one describes another version of the type than the
    publisher sent: madm's is used when *its* hash matches, the bag's otherwise.
    """
    parsed: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    for msgtype, (encoding, text) in definitions.items():
        if not text.strip():
            continue
        try:
            parsed[msgtype] = parse_definition(encoding, text, msgtype)
        except Exception as error:  # rosbags raises TypesysError and others for text it cannot parse
            failed[msgtype] = one_line(error)[:200]
    store = _assemble(parsed, defaults, failed)
    notes: list[str] = []
    replaced, kept = [], []
    for msgtype, digest in digests.items() if check_hashes else ():
        if msgtype in parsed and msgtype not in failed and digest and _rihs01(store, msgtype) != digest:
            (replaced if _rihs01(defaults, msgtype) == digest else kept).append(msgtype)
    if replaced:
        store = _assemble({k: v for k, v in parsed.items() if k not in replaced}, defaults, failed)
        notes.append(f"the bag's definition of {', '.join(replaced)} does not match its recorded hash; madm's, "
                     "which does, was used")
    if kept:
        notes.append(f"the bag's definition of {', '.join(kept)} does not match its recorded hash; it was used anyway")
    for msgtype, why in failed.items():
        fallback = "madm's was used" if not missing_types(store, msgtype) else "its messages cannot be decoded"
        notes.append(f"the bag's definition of {msgtype} could not be read ({why}); {fallback}")
    return store, notes
