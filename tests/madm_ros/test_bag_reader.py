"""The one bag reader: recordings of other rosbag2 versions, odd definitions and cut files open in every tool.

Each variant below is a recording as some real recorder (or a later rosbag2) leaves it, made from
one pristine event bag by changing only what that recorder does differently. The table
``ROSBAGS_ALONE`` pins what rosbags 0.11.9 by itself does with each (refuses it, or reads no
messages): the reason :class:`madm_ros.bag_source.BagSource` exists. Every tool must then read
every variant through that one reader and see the pristine bag's messages: ``events info`` (its
CLI function), ``bag_eval``, ``bag_play``'s player and ``madm_train``'s bag target.
"""

from __future__ import annotations

import functools
import json
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from madm_ros.bag_formats import QosProfile, parse_definition, parse_qos_profiles, repair_metadata
from madm_ros.bag_source import BagSource
from madm_ros.errors import DecodeError
from madm_ros.events.types import Events
from tests.bag_writer import (
    edit_metadata,
    event_packet,
    qos_profile,
    rosidl_idl_definition,
    typestore,
    write_bag,
)

TOPIC = "/event_camera/events"
EVENT_PACKET = "event_camera_msgs/msg/EventPacket"
BASE_NS = 1_700_000_000 * 10**9
WIDTH, HEIGHT = 128, 64
PACKETS, PACKET_US, EVENTS_PER_PACKET = 24, 10_000, 25_000  # 240 ms, about 2.4 MB: three MCAP chunks


def packets() -> list[tuple[str, int, Any]]:
    """EventPacket records (evt3): header stamp = first event, log time = last event, as drivers do."""
    rng = np.random.default_rng(11)
    records = []
    for seq in range(PACKETS):
        t = np.sort(rng.integers(seq * PACKET_US, (seq + 1) * PACKET_US, EVENTS_PER_PACKET)).astype(np.int64)
        events = Events(rng.integers(0, WIDTH, t.size).astype(np.uint16), rng.integers(0, HEIGHT, t.size).astype(np.uint16),
                        t, rng.integers(0, 2, t.size).astype(np.uint8))
        records.append((TOPIC, BASE_NS + int(t[-1]) * 1000, event_packet(events, BASE_NS + int(t[0]) * 1000, WIDTH, HEIGHT, seq)))
    return records


def pristine(path: Path, storage: str, **options: Any) -> Path:
    """The event bag as rosbags 0.11.9 writes it (metadata version 9, one best-effort publisher)."""
    return write_bag(path, {TOPIC: EVENT_PACKET}, packets(), storage,
                     qos={TOPIC: [qos_profile("best_effort", depth=100)]}, **options)


def hash_of(msgtype: str) -> str:
    return str(typestore().hash_rihs01(msgtype))


def _sql(bag: Path, *statements: str) -> None:
    (database,) = bag.glob("*.db3")
    with sqlite3.connect(database) as db:
        for statement in statements:
            db.execute(statement)


# --------------------------------------------------------------------------------------------- the variants
def rosbag2_v3_eloquent(path: Path) -> Path:
    """Eloquent: metadata version 3 (no QoS, no per-file list, no hashes), a database without definitions or QoS."""
    bag = pristine(path, "sqlite3")
    _sql(bag, "CREATE TABLE old_topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, "
              "serialization_format TEXT NOT NULL)",
         "INSERT INTO old_topics SELECT id, name, type, serialization_format FROM topics",
         "DROP TABLE topics", "ALTER TABLE old_topics RENAME TO topics",
         "DROP TABLE message_definitions", "DROP TABLE schema", "DROP TABLE metadata")

    def eloquent(info: dict[str, Any]) -> None:
        info["version"] = 3
        for key in ("files", "custom_data", "ros_distro"):
            info.pop(key)
        for topic in info["topics_with_message_count"]:
            topic["topic_metadata"] = {k: topic["topic_metadata"][k] for k in ("name", "type", "serialization_format")}

    return edit_metadata(bag, eloquent)


def rosbag2_v5_humble(path: Path) -> Path:
    """Humble: metadata version 5, QoS as a YAML string with rmw numbers, no custom_data/ros_distro/hashes."""
    bag = pristine(path, "mcap", version=8)

    def humble(info: dict[str, Any]) -> None:
        info["version"] = 5
        for key in ("custom_data", "ros_distro"):
            info.pop(key)
        for topic in info["topics_with_message_count"]:
            topic["topic_metadata"].pop("type_description_hash")

    return edit_metadata(bag, humble)


def rosbag2_v10(path: Path) -> Path:
    """A rosbag2 newer than rosbags knows (the latest, Rolling, writes 9): version 10 with fields not seen before."""
    bag = pristine(path, "sqlite3")

    def newer(info: dict[str, Any]) -> None:
        info["version"] = 10
        info["storage_options"] = {"max_bagfile_size": 0, "snapshot_mode": False}
        for topic in info["topics_with_message_count"]:
            topic["topic_metadata"]["type_description"] = {"encoding": "ros2msg"}

    return edit_metadata(bag, newer)


def qos_list_in_v8(path: Path) -> Path:
    """Version 8 metadata with the QoS as a list (the form of version 9)."""
    bag = pristine(path, "mcap", version=8)

    def as_list(info: dict[str, Any]) -> None:
        import yaml

        for topic in info["topics_with_message_count"]:
            topic["topic_metadata"]["offered_qos_profiles"] = yaml.safe_load(topic["topic_metadata"]["offered_qos_profiles"])

    return edit_metadata(bag, as_list)


def qos_string_in_v9(path: Path) -> Path:
    """Version 9 metadata with the QoS as a YAML string (the form of version ≤ 8)."""
    bag = pristine(path, "sqlite3")

    def as_string(info: dict[str, Any]) -> None:
        import yaml

        for topic in info["topics_with_message_count"]:
            topic["topic_metadata"]["offered_qos_profiles"] = yaml.safe_dump(topic["topic_metadata"]["offered_qos_profiles"])

    return edit_metadata(bag, as_string)


def qos_incomplete(path: Path) -> Path:
    """Third-party metadata whose QoS profile lacks keys rosbags requires (here avoid_ros_namespace_conventions)."""
    bag = pristine(path, "sqlite3")

    def incomplete(info: dict[str, Any]) -> None:
        for topic in info["topics_with_message_count"]:
            for profile in topic["topic_metadata"]["offered_qos_profiles"]:
                del profile["avoid_ros_namespace_conventions"]

    return edit_metadata(bag, incomplete)


def qos_differs_from_storage(path: Path) -> Path:
    """metadata.yaml written by another tool: its QoS (depth) differs from the storage file's copy."""
    bag = pristine(path, "mcap")

    def deeper(info: dict[str, Any]) -> None:
        for topic in info["topics_with_message_count"]:
            topic["topic_metadata"]["offered_qos_profiles"][0]["depth"] = 10

    return edit_metadata(bag, deeper)


def crlf_definition(path: Path) -> Path:
    """A recorder on Windows: the stored .msg definition has CRLF line ends."""
    text, _ = typestore().generate_msgdef(EVENT_PACKET, ros_version=2)
    return pristine(path, "sqlite3", definitions={EVENT_PACKET: (text.replace("\n", "\r\n"), hash_of(EVENT_PACKET))})


def ros2idl_definition(path: Path) -> Path:
    """rosbag2 found only .idl files: the schema is rosidl's IDL, with its #include lines."""
    return pristine(path, "mcap", definitions={EVENT_PACKET: (rosidl_idl_definition(), hash_of(EVENT_PACKET))})


def unknown_definition_encoding(path: Path) -> Path:
    """rosbag2 found no definition at all: encoding 'unknown', empty text."""
    bag = pristine(path, "sqlite3")
    _sql(bag, f"UPDATE message_definitions SET encoding = 'unknown', encoded_message_definition = '' "
              f"WHERE topic_type = '{EVENT_PACKET}'")
    return bag


def definition_differs_from_hash(path: Path) -> Path:
    """The recorder's package differs from the publisher's: the stored text (byte[] events) is not the hashed type."""
    text, _ = typestore().generate_msgdef(EVENT_PACKET, ros_version=2)
    assert "uint8[] events" in text
    return pristine(path, "sqlite3", definitions={EVENT_PACKET: (text.replace("uint8[] events", "byte[] events"),
                                                                  hash_of(EVENT_PACKET))})


def without_metadata(path: Path) -> Path:
    """A recorder killed before it wrote metadata.yaml."""
    bag = pristine(path, "mcap")
    (bag / "metadata.yaml").unlink()
    return bag


def truncated_mcap(path: Path) -> Path:
    """A recorder killed mid-write, or a copy cut short: the MCAP file ends after its second chunk."""
    bag = pristine(path, "mcap")
    (file,) = bag.glob("*.mcap")
    data = file.read_bytes()
    file.write_bytes(data[: int(len(data) * 0.8)])
    return bag


VARIANTS: dict[str, Callable[[Path], Path]] = {f.__name__: f for f in (
    rosbag2_v3_eloquent, rosbag2_v5_humble, rosbag2_v10, qos_list_in_v8, qos_string_in_v9, qos_incomplete,
    qos_differs_from_storage, crlf_definition, ros2idl_definition, unknown_definition_encoding,
    definition_differs_from_hash, without_metadata, truncated_mcap)}

# what rosbags' AnyReader alone does with each variant: "reads", "no messages" (silently), or an error it raises
ROSBAGS_ALONE = {
    "rosbag2_v3_eloquent": "reads",
    "rosbag2_v5_humble": "reads",
    "rosbag2_v10": "Rosbag2 version 10 not supported",
    "qos_list_in_v8": "reads",
    "qos_string_in_v9": "reads",
    "qos_incomplete": "A metadata key is missing KeyError('avoid_ros_namespace_conventions')",
    "qos_differs_from_storage": "no messages",
    "crlf_definition": "Could not parse",
    "ros2idl_definition": "Could not parse",
    "unknown_definition_encoding": "KeyError: 'unknown'",
    "definition_differs_from_hash": "hash mismatch",
    "without_metadata": "does not exist",
    "truncated_mcap": "File end magic is invalid",
}

# how BagSource read each one (its note): the documented order of ways, first that works
READ_BY = {
    "rosbag2_v3_eloquent": "",
    "rosbag2_v5_humble": "",
    "rosbag2_v10": "its metadata.yaml was read through a repaired copy (version 10 read as 9)",
    "qos_list_in_v8": "",
    "qos_string_in_v9": "",
    "qos_incomplete": "its metadata.yaml was read through a repaired copy (offered_qos_profiles of "
                      "/event_camera/events completed)",
    "qos_differs_from_storage": "",
    "crlf_definition": "",
    "ros2idl_definition": "",
    "unknown_definition_encoding": "its storage files were read directly",
    "definition_differs_from_hash": "the bag's definition of event_camera_msgs/msg/EventPacket does not match its "
                                    "recorded hash; madm's, which does, was used",
    "without_metadata": "it was read from its storage files, without metadata.yaml",
    "truncated_mcap": "its storage files were read directly",
}
# the QoS a player offers from what each variant recorded (Eloquent recorded none: ROS defaults)
PLAYED_RELIABILITY = {name: "BEST_EFFORT" for name in VARIANTS} | {"rosbag2_v3_eloquent": "RELIABLE"}


@pytest.fixture(scope="module")
def bags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Name → bag folder: the pristine bag and every variant, built once (the tests only read them)."""
    root = tmp_path_factory.mktemp("variants")
    out = {"pristine": pristine(root / "pristine", "sqlite3")}
    for name, make in VARIANTS.items():
        out[name] = make(root / name)
    return out


def raw_messages(bag: Path) -> list[tuple[int, bytes]]:
    with BagSource(bag) as source:
        return [(stamp, bytes(raw)) for _, _, stamp, raw in source.messages({TOPIC})]


@pytest.fixture(scope="module")
def expected(bags: dict[str, Path]) -> list[tuple[int, bytes]]:
    return raw_messages(bags["pristine"])


def assert_same_or_cut(got: list[Any], want: list[Any], variant: str) -> None:
    """The pristine bag's items, or for the cut file a non-empty proper beginning of them."""
    if variant == "truncated_mcap":
        assert 0 < len(got) < len(want) and got == want[: len(got)]
    else:
        assert got == want


# --------------------------------------------------------------------------------------------- the reader
@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_defeats_rosbags_alone(bags, variant):
    from rosbags.highlevel import AnyReader

    from madm_ros.events.bags import event_typestore

    try:
        with AnyReader([bags[variant]], default_typestore=event_typestore()) as reader:
            outcome = "reads" if any(True for _ in reader.messages(connections=reader.connections)) else "no messages"
    except Exception as error:
        outcome = f"{type(error).__name__}: {error}"
    assert ROSBAGS_ALONE[variant] in outcome


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_reader_gives_the_pristine_messages_and_says_how_it_read_them(bags, expected, variant):
    with BagSource(bags[variant]) as source:
        got = [(stamp, bytes(raw)) for _, _, stamp, raw in source.messages({TOPIC})]
        first = source.deserialize(got[0][1], EVENT_PACKET)
        note, problem, topics = source.note, source.problem, source.topics
        reliability = [p.reliability for p in source.connections[0].qos]
    assert_same_or_cut(got, expected, variant)
    assert topics == {TOPIC: EVENT_PACKET}
    assert (first.width, first.height, first.encoding, first.seq) == (WIDTH, HEIGHT, "evt3", 0)
    assert READ_BY[variant] in note and bool(note) == bool(READ_BY[variant])
    assert ("cut off" in problem) == (variant == "truncated_mcap") and bool(problem) == (variant == "truncated_mcap")
    assert reliability == ([] if variant == "rosbag2_v3_eloquent" else ["best_effort"])


def test_a_repaired_metadata_copy_never_touches_the_users_bag(bags):
    bag = bags["rosbag2_v10"]
    before = {p.name: p.read_bytes() for p in bag.iterdir()}
    source = BagSource(bag)
    temporary = Path(source._temporary.name)  # the repaired copy lives outside the bag
    assert temporary.is_dir() and not temporary.is_relative_to(bag)
    assert len(list(source.messages([TOPIC]))) == PACKETS
    source.close()
    assert not temporary.exists()
    assert {p.name: p.read_bytes() for p in bag.iterdir()} == before


def test_a_topic_of_a_type_nobody_defines_is_reported_by_name(tmp_path):
    status = b"\x00\x01\x00\x00\x02\x00\x00\x00\x07\x09"
    bag = write_bag(tmp_path / "bag", {TOPIC: EVENT_PACKET, "/vendor/status": "acme_msgs/msg/Status"},
                    [*packets()[:2], ("/vendor/status", BASE_NS, status)], "sqlite3")
    _sql(bag, "DELETE FROM message_definitions WHERE topic_type = 'acme_msgs/msg/Status'")  # recorded without it
    with BagSource(bag) as source:
        assert source.unknown_types == {"/vendor/status": "acme_msgs/msg/Status"}
        (record,) = source.messages({"/vendor/status"})
        assert record[3] == status  # its bytes still read (and play)
        with pytest.raises(DecodeError, match=r"cannot decode acme_msgs/msg/Status from .*bag: neither the bag nor "
                                              r"madm defines acme_msgs/msg/Status; record with rosbag2 Iron"):
            source.deserialize(record[3], "acme_msgs/msg/Status")
        assert len([source.deserialize(raw, t) for _, t, _, raw in source.messages({TOPIC})]) == 2


def test_a_definition_that_needs_an_unknown_type_is_reported_with_that_type(tmp_path):
    definition = "acme_msgs/Inner inner\n" + "=" * 80 + "\nMSG: acme_msgs/Other\nuint8 x\n"
    bag = write_bag(tmp_path / "bag", {"/outer": "acme_msgs/msg/Outer"}, [("/outer", BASE_NS, b"\x00\x01\x00\x00")],
                    "mcap", definitions={"acme_msgs/msg/Outer": (definition, "RIHS01_" + "0" * 64)})
    with BagSource(bag) as source:
        assert source.unknown_types == {"/outer": "acme_msgs/msg/Outer"}
        with pytest.raises(DecodeError, match="neither the bag nor madm defines acme_msgs/msg/Inner"):
            source.deserialize(b"\x00\x01\x00\x00", "acme_msgs/msg/Outer")


@pytest.mark.parametrize(("make", "message"), [
    (lambda tmp: tmp / "nothing", r"cannot open .*nothing as a bag: it does not exist \(check the path\)"),
    (lambda tmp: tmp, r"cannot open .* as a bag \(the folder holds no .db3, .mcap or .bag file\); check that it is a "
                      r"complete rosbag2 folder"),
    (lambda tmp: (tmp / "x.mcap").write_bytes(b"\x89MCAP0\r\n\x01") and tmp / "x.mcap",
     r"cannot open .*x\.mcap as a bag \(rosbags cannot read it: .*; cannot read x\.mcap directly: .*\); .*read up to the cut"),
    (lambda tmp: (tmp / "x.db3").write_bytes(b"not a database at all, really") and tmp / "x.db3",
     r"cannot open .*x\.db3 as a bag \(.*cannot read x\.db3 directly: file is not a database\); .*read up to the cut"),
])
def test_unreadable_bags_are_refused_naming_the_bag_and_what_to_check(tmp_path, make, message):
    with pytest.raises(DecodeError, match=message):
        BagSource(make(tmp_path))


def test_qos_profiles_read_in_every_form_rosbag2_wrote():
    v8 = ("- history: 1\n  depth: 5\n  reliability: 2\n  durability: 1\n  deadline: {sec: 0, nsec: 0}\n"
          "  lifespan: {sec: 0, nsec: 0}\n  liveliness: 1\n  liveliness_lease_duration: {sec: 0, nsec: 0}\n"
          "  avoid_ros_namespace_conventions: false")
    latched = QosProfile("best_effort", "transient_local", "keep_last", 5)
    assert parse_qos_profiles(v8) == (latched,)
    assert parse_qos_profiles([{"history": "keep_last", "depth": 5, "reliability": "best_effort",
                                "durability": "transient_local"}]) == (latched,)
    assert parse_qos_profiles([qos_profile("best_effort", "transient_local", 5)]) == (latched,)
    assert parse_qos_profiles("- reliability: '1'") == (QosProfile("reliable", "unknown", "unknown", 0),)
    assert parse_qos_profiles("") == parse_qos_profiles("[unclosed") == parse_qos_profiles(7) == ()


def test_definitions_read_in_the_forms_recorders_store():
    idl = parse_definition("ros2idl", rosidl_idl_definition(), EVENT_PACKET)
    msg = parse_definition("ros2msg", typestore().generate_msgdef(EVENT_PACKET, ros_version=2)[0].replace("\n", "\r\n"),
                           EVENT_PACKET)
    assert idl[EVENT_PACKET] == msg[EVENT_PACKET] == typestore().fielddefs[EVENT_PACKET]
    assert idl["std_msgs/msg/Header"] == typestore().fielddefs["std_msgs/msg/Header"]
    with pytest.raises(ValueError, match="definition encoding 'unknown' is not ros2msg or ros2idl"):
        parse_definition("unknown", "", EVENT_PACKET)


def test_metadata_repair_changes_only_what_rosbags_refuses(bags):
    text = (bags["pristine"] / "metadata.yaml").read_text()
    files = sorted(bags["pristine"].glob("*.db3"))
    assert repair_metadata(text, bags["pristine"], files)[1] == []
    newer = (bags["rosbag2_v10"] / "metadata.yaml").read_text()
    document, changes = repair_metadata(newer, bags["rosbag2_v10"], sorted(bags["rosbag2_v10"].glob("*.db3")))
    assert changes == ["version 10 read as 9"]
    assert document["rosbag2_bagfile_information"]["storage_options"] == {"max_bagfile_size": 0, "snapshot_mode": False}
    with pytest.raises(ValueError, match="metadata.yaml is not valid YAML"):
        repair_metadata("rosbag2_bagfile_information: [\n", bags["pristine"], files)


# --------------------------------------------------------------------------------------------- every tool
@pytest.fixture(scope="module")
def info_of(bags: dict[str, Path]) -> Callable[[str], dict[str, Any]]:
    """Variant → the JSON report of ``python -m madm_ros.events info`` (its CLI function)."""
    import contextlib
    import io

    from madm_ros.events.__main__ import main

    def run(name: str) -> dict[str, Any]:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["info", str(bags[name])])
        assert code == 0, err.getvalue()
        assert ("read only in part" in err.getvalue()) == (name == "truncated_mcap")
        return json.loads(out.getvalue())

    return functools.cache(run)


@pytest.mark.parametrize("variant", VARIANTS)
def test_events_info_reads_every_variant(info_of, variant):
    report, reference = info_of(variant), info_of("pristine")
    keys = ("format", "encoding", "width", "height", "topic", "msgtype")
    assert {k: report[k] for k in keys} == {k: reference[k] for k in keys}
    if variant == "truncated_mcap":
        assert 0 < report["messages"] < PACKETS and 0 < report["events"] < reference["events"]
        assert report["t_first_us"] == reference["t_first_us"] and "cut off" in report["problem"]
    else:
        same = ("events", "on_events", "t_first_us", "t_last_us", "messages", "dropped")
        assert {k: report[k] for k in same} == {k: reference[k] for k in same} and report["problem"] == ""
        assert report["messages"] == PACKETS and report["events"] == PACKETS * EVENTS_PER_PACKET
    assert READ_BY[variant] in report["read_note"]


@pytest.fixture(scope="module")
def target_frames(bags: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], list[int]]:
    """Variant → stamps (µs) of the edge frames ``madm_train``'s bag target extracts."""
    from madm_ros.node_params import EventParams
    from madm_train.data.bag_target import extract_bag_frames

    root = tmp_path_factory.mktemp("targets")
    return functools.cache(lambda name: list(extract_bag_frames(bags[name], TOPIC, root / name, modality="events",
                                                event_params=EventParams(accumulation_time_ms=20.0)).stamps_us))


@pytest.mark.parametrize("variant", VARIANTS)
def test_the_bag_target_reads_every_variant(target_frames, variant):
    reference = target_frames("pristine")
    assert len(reference) >= 10
    assert_same_or_cut(target_frames(variant), reference, variant)


def test_the_target_set_of_a_cut_bag_holds_the_frames_before_the_cut_and_says_so(bags, target_frames, tmp_path):
    """``adapt --target-bag`` on a cut file: the frames before the cut, the cut in the summary, the marker and the log."""
    from types import SimpleNamespace

    from madm_ros.folder_layout import FolderMeta
    from madm_train.data.bag_target import MARKER_FILE, prepare_bag_target

    params = tmp_path / "events.yaml"
    params.write_text("accumulation_time_ms: 20.0\n")
    data = SimpleNamespace(target_bag=str(bags["truncated_mcap"]), target_topic=TOPIC, target_label_topic="",
                           modality="events", label_set="dsec11", target_events_params=str(params),
                           target_label_tolerance_ms=None, target_bag_every=1, target_bag_cache=str(tmp_path / "cache"))
    said: list[str] = []
    target = prepare_bag_target(SimpleNamespace(data=data), log=said.append)
    kept = target_frames("truncated_mcap")
    assert 0 < target.frames == target.bag_frames == len(kept) < len(target_frames("pristine"))
    assert FolderMeta.read(target.target).stamps_us == tuple(kept)
    assert target.stopped_early.startswith("the bag is truncated") and READ_BY["truncated_mcap"] in target.read_note
    assert f"{target.stopped_early}; the {len(kept)} frames before it were extracted" in "\n".join(said)
    summary = json.loads((tmp_path / "cache" / MARKER_FILE).read_text())["summary"]
    assert summary["stopped_early"] == target.stopped_early and 0 < summary["messages"] < PACKETS
    assert "the bag is truncated" in FolderMeta.read(target.target).notes["events"]
    said.clear()  # reused from the cache, and said again
    assert prepare_bag_target(SimpleNamespace(data=data), log=said.append) == target
    assert said[0].startswith("reusing") and any(target.stopped_early in line for line in said)


@pytest.fixture(scope="module")
def evaluation(bags: dict[str, Path], tiny_onnx_models, tmp_path_factory) -> Callable[[str], dict[str, Any]]:
    """Variant → ``bag_eval``'s report (events model, no labels, no output bag), with its ``--out`` as ``test_out``."""
    from madm_ros.bag_eval import EvalOptions, evaluate_bag

    root = tmp_path_factory.mktemp("evaluations")
    return functools.cache(lambda name: {**evaluate_bag(EvalOptions(
        bag=bags[name], out=root / name, model=str(tiny_onnx_models["events"]), threads=1, output_bag_format="none")),
        "test_out": root / name})


@pytest.mark.parametrize("variant", VARIANTS)
def test_bag_eval_reads_every_variant(evaluation, variant):
    report, reference = evaluation(variant), evaluation("pristine")
    assert reference["exit_code"] == 0 and reference["messages"] == PACKETS and reference["frames"] >= 4
    assert report["msgtype"] == EVENT_PACKET and report["topic"] == TOPIC
    assert READ_BY[variant] in (report["read_note"] or "")
    if report["read_note"] and report["exit_code"] == 0:  # the note is in the report people read, not only the JSON
        assert report["read_note"] in (report["test_out"] / "report.md").read_text()
    if variant == "truncated_mcap":
        assert report["exit_code"] == 2 and "cut off" in report["stopped_early"]
        assert 0 < report["messages"] < PACKETS and report["frames"] <= reference["frames"]
    else:
        assert (report["exit_code"], report["messages"], report["frames"]) == (0, PACKETS, reference["frames"])


class _Publisher:
    def __init__(self, sink: list[tuple[str, bytes]], topic: str, qos: Any) -> None:
        self.sink, self.topic, self.qos = sink, topic, qos

    def publish(self, data: bytes) -> None:
        self.sink.append((self.topic, data))


class _Node:
    """What BagPlayer needs from an rclpy node: publishers (recording what they send) and a logger."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.publishers: dict[str, _Publisher] = {}

    def create_publisher(self, cls: Any, topic: str, qos: Any) -> _Publisher:
        self.publishers[topic] = _Publisher(self.sent, topic, qos)
        return self.publishers[topic]

    def get_logger(self) -> Any:
        return self

    def warning(self, text: str) -> None:
        raise AssertionError(text)


@pytest.mark.parametrize("variant", VARIANTS)
def test_bag_play_sends_every_variant_with_its_recorded_qos(bags, expected, variant):
    pytest.importorskip("rclpy")
    pytest.importorskip("event_camera_msgs.msg")
    from madm_ros.bag_play import BagPlayer

    node = _Node()
    player = BagPlayer(node, bags[variant], rate=1e9)
    stats = player.play()
    assert player.topics == [TOPIC] and READ_BY[variant] in player.read_note
    assert node.publishers[TOPIC].qos.reliability.name == PLAYED_RELIABILITY[variant]
    assert_same_or_cut([data for _, data in node.sent], [raw for _, raw in expected], variant)
    assert stats.messages == len(node.sent) and ("cut off" in stats.problem) == (variant == "truncated_mcap")


def test_a_cut_off_db3_of_the_real_recording_is_read_up_to_the_cut(shared_data: Path, tmp_path: Path):
    """A .db3 copy interrupted half way: SQLite refuses the whole file; madm reads its messages up to the cut."""
    real = shared_data / "event_camera/ros2_bags/test_events_1"
    bag = tmp_path / "cut"
    bag.mkdir()
    shutil.copy(real / "metadata.yaml", bag)
    data = (real / "test_events_1.db3").read_bytes()
    (bag / "test_events_1.db3").write_bytes(data[: len(data) // 2])
    with BagSource(real) as whole:
        stamps = [stamp for _, _, stamp, _ in whole.messages(set(whole.topics))]
    copies_before = set(Path(tempfile.gettempdir()).glob("madm-db3-*"))
    with BagSource(bag) as source:
        assert source.topics == whole.topics
        read = [(stamp, raw) for _, _, stamp, raw in source.messages(set(source.topics))]
        problem = source.problem
    assert 250 < len(read) < len(stamps) == 517  # 298 rows lie before the cut
    assert [stamp for stamp, _ in read] == stamps[: len(read)]  # the first ones, in order
    assert problem == f"the bag is truncated: test_events_1.db3 is cut off at {len(data) // 2} of its {len(data)} bytes; " \
                      "read up to the cut"
    assert set(Path(tempfile.gettempdir()).glob("madm-db3-*")) == copies_before  # its whole-page copy is gone
    (bag / "test_events_1.db3").write_bytes(data[:12_000])  # cut inside the schema pages: nothing to read, and why
    with pytest.raises(DecodeError, match=r"test_events_1\.db3 is cut off at 12000 of its \d+ bytes, before the end of "
                                          r"its table index .*: nothing can be read"):
        BagSource(bag)
    assert set(Path(tempfile.gettempdir()).glob("madm-db3-*")) == copies_before
