"""Offline bag evaluation: generated bags score like the in-memory pipeline, output bags hold every frame, bad bags survive."""

from __future__ import annotations

import dataclasses
import json
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from madm_ros.bag_eval import EvalOptions, evaluate_bag, main, simulate_realtime_drops
from madm_ros.errors import ConfigError, DecodeError
from madm_ros.events.types import Events
from madm_ros.metrics import ConfusionMatrix
from madm_ros.node_params import EventParams, ImageParams, edge_fields, load_node_config, params_from_values
from madm_ros.palettes import DSEC_11, FMB_9, FMB_15_NAMES
from madm_ros.segmenter import Segmenter
from tests.bag_writer import event_packet, image_message, write_bag, write_ros1_image_bag

REPO = Path(__file__).resolve().parents[2]
BASE_NS = 1_700_000_000 * 10**9  # bag clock: the scene clock (µs from 0) shifted to a plausible epoch
LABELS = "/labels"
INPUTS = {"depth": ("/camera/depth/image_raw", "16UC1"), "thermal": ("/thermal/image_raw", "mono16"),
          "events": ("/event_camera/events", None)}
OUTPUTS = ("raw_segmentation_mask", "colored_segmentation_mask", "segmentation_overlay")


@pytest.fixture(scope="module")
def scenes():
    """Eight synthetic frames, 64×128, with back-to-back 50 ms event windows (a continuous event stream)."""
    from madm_ros.synthetic.generate import SynthConfig, render_sequence

    config = SynthConfig(frames=8, height=64, width=128, seed=3, frames_per_sequence=8, frame_interval_us=50_000,
                         event_window_us=50_000, modalities=("depth", "thermal", "events"))
    return list(render_sequence(config, 0))


def names_lut(target: tuple[str, ...], unknown: int = 255) -> np.ndarray:
    """DSEC-11 ids → ``target`` ids by class name (classes ``target`` lacks → ``unknown``)."""
    lut = np.full(256, 255, np.uint8)
    for index, name in enumerate(DSEC_11.class_names):
        lut[index] = target.index(name) if name in target else unknown
    return lut


def scene_label(frame, modality: str) -> np.ndarray:
    """The scene's label in the tiny model's label set (DSEC-11, or FMB-9 for thermal)."""
    return names_lut(FMB_9.class_names)[frame.label] if modality == "thermal" else frame.label


def event_records(scenes, packets_per_frame: int = 5):
    """EventPacket records (evt3, 128×64): header stamp = first event, log time = last event, as drivers do."""
    records, seq = [], 0
    for frame in scenes:
        for part in np.array_split(np.arange(len(frame.events)), packets_per_frame):
            chunk = frame.events[part]
            message = event_packet(chunk, BASE_NS + int(chunk.t[0]) * 1000, 128, 64, seq)
            records.append((INPUTS["events"][0], BASE_NS + int(chunk.t[-1]) * 1000, message))
            seq += 1
    return records


def scene_bag(path: Path, scenes, modality: str, storage: str, labels: bool = True) -> Path:
    """A bag with one input topic, a label topic and a topic of a type madm does not know."""
    topic, encoding = INPUTS[modality]
    msgtype = "event_camera_msgs/msg/EventPacket" if modality == "events" else "sensor_msgs/msg/Image"
    records = event_records(scenes) if modality == "events" else [
        (topic, BASE_NS + f.stamp_us * 1000, image_message(f.images[modality], encoding, BASE_NS + f.stamp_us * 1000))
        for f in scenes]
    if labels:
        records += [(LABELS, BASE_NS + f.stamp_us * 1000 + 1,
                     image_message(scene_label(f, modality), "mono8", BASE_NS + f.stamp_us * 1000)) for f in scenes]
    records.append(("/vendor/status", BASE_NS, b"\x00\x01\x00\x00\x00\x00\x00\x00"))
    records.sort(key=lambda r: r[1])
    topics = {topic: msgtype, **({LABELS: "sensor_msgs/msg/Image"} if labels else {}), "/vendor/status": "acme_msgs/msg/Status"}
    return write_bag(path, topics, records, storage)


def in_memory_miou(scenes, modality: str, model: Path) -> tuple[float, int]:
    """mIoU and frame count of the same pipeline run on the in-memory frames (no bag involved)."""
    from madm_ros.events.stream import EventFrameStream

    segmenter = Segmenter.load(model, threads=1)
    matrix = ConfusionMatrix(segmenter.label_set.num_classes)
    if modality != "events":
        for frame in scenes:
            matrix.update(segmenter.segment(frame.images[modality], INPUTS[modality][1]).labels, scene_label(frame, modality))
        return matrix.miou(), len(scenes)
    stream = EventFrameStream("event_packet", edge_fields(EventParams()))
    frames = [f for _, _, message in event_records(scenes) for f in stream.push(message)]
    for scene in scenes:
        label_ns = BASE_NS + scene.stamp_us * 1000
        near = [f for f in frames if abs(f.stamp_ns - label_ns) <= 25_000_000]
        if near:
            best = min(near, key=lambda f: abs(f.stamp_ns - label_ns))
            matrix.update(segmenter.segment(best.array, "mono8").labels, scene_label(scene, modality))
    return matrix.miou(), len(frames)


def read_output_bag(path: Path) -> dict[str, list[tuple[int, int, np.ndarray]]]:
    """Topic → ``(log time, header stamp, pixels)`` of every message, read back with rosbags."""
    from rosbags.highlevel import AnyReader

    from madm_ros.image_conversion import image_to_array

    out: dict[str, list[tuple[int, int, np.ndarray]]] = {}
    with AnyReader([path]) as reader:
        for connection, log_ns, raw in reader.messages():
            message = reader.deserialize(raw, connection.msgtype)
            stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
            out.setdefault(connection.topic, []).append((log_ns, stamp, image_to_array(message)))
    return out


@pytest.mark.parametrize(("modality", "storage"), [("depth", "sqlite3"), ("depth", "mcap"), ("thermal", "sqlite3"),
                                                   ("thermal", "mcap"), ("events", "sqlite3"), ("events", "mcap")])
def test_generated_bags_score_like_the_in_memory_pipeline(tmp_path, scenes, tiny_onnx_models, modality, storage):
    model = tiny_onnx_models[modality]
    bag = scene_bag(tmp_path / "in", scenes, modality, storage)
    output_format = "mcap" if storage == "sqlite3" else "sqlite3"
    report = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "out", model=str(model), threads=1, label_topic=LABELS,
                                      output_bag_format=output_format))
    expected_miou, expected_frames = in_memory_miou(scenes, modality, model)
    assert report["exit_code"] == 0 and report["error"] is None
    assert report["miou"] == pytest.approx(expected_miou, abs=1e-12)
    assert report["frames"] == expected_frames and report["dropped"] == 0
    assert report["topic"] == INPUTS[modality][0] and report["modality"] == modality
    on_disk = json.loads((tmp_path / "out" / "report.json").read_text())
    for key in ("miou", "per_class_iou", "frames", "dropped", "latency_ms_p50", "latency_ms_p99"):
        assert key in on_disk
    assert on_disk["latency_ms_p50"] > 0 and set(on_disk["per_class_iou"]) == set(on_disk["class_names"])
    assert on_disk["processing_covers"] == "class ids, colour mask and overlay of every frame (for the output bag)"
    for name in ("report.md", "iou.png", "confusion.png", "latency.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    if modality == "events":  # the last window is never closed (no later event), as in the node: its label has no frame
        assert (report["labels"], report["labels_scored"], report["labels_unmatched"]) == (8, 7, 1)
        assert any(w["kind"] == "labels_without_frame" for w in report["warnings"])
    else:
        assert report["labels_scored"] == report["frames_scored"] == 8 and report["labels_unmatched"] == 0

    written = read_output_bag(tmp_path / "out" / "output_bag")
    prefix = "/event_segmentation" if modality == "events" else f"/{modality}_segmentation"
    topics = [f"{prefix}/{t}" for t in OUTPUTS + (("edge_frame",) if modality == "events" else ())]
    assert sorted(written) == sorted(topics)
    stamps = [s for _, s, _ in written[f"{prefix}/raw_segmentation_mask"]]
    assert len(stamps) == expected_frames and stamps == sorted(stamps)
    for topic in topics:
        assert [s for _, s, _ in written[topic]] == stamps and all(log == s for log, s, _ in written[topic])
    if modality != "events":
        assert stamps == [BASE_NS + f.stamp_us * 1000 for f in scenes]
        segmenter = Segmenter.load(model, threads=1)
        masks = [m for _, _, m in written[f"{prefix}/raw_segmentation_mask"]]
        assert np.array_equal(masks[2], segmenter.segment(scenes[2].images[modality], INPUTS[modality][1]).labels)


def test_label_folder_matches_the_label_topic_and_the_command_line_works(tmp_path, scenes, tiny_onnx_models, capsys):
    import cv2

    bag = scene_bag(tmp_path / "in", scenes, "thermal", "sqlite3")
    labels = tmp_path / "labels"
    labels.mkdir()
    for i, frame in enumerate(scenes):
        stamp = BASE_NS + frame.stamp_us * 1000
        name = f"{stamp}.png" if i % 2 else f"{stamp // 10**9}_{stamp % 10**9}.png"  # both documented namings
        cv2.imwrite(str(labels / name), names_lut(FMB_15_NAMES, unknown=0)[frame.label])  # FMB's own 15 ids
    (labels / "notes.txt").write_text("not a label")
    model = str(tiny_onnx_models["thermal"])
    code = main([str(bag), "--out", str(tmp_path / "dir"), "--topic", INPUTS["thermal"][0], "--model", model, "--threads", "1",
                 "--label-dir", str(labels), "--label-set", "fmb15", "--config", str(REPO / "config" / "thermal.yaml"),
                 "--output-bag-format", "none", "--no-progress"])
    assert code == 0
    printed = capsys.readouterr()
    assert "mIoU" in printed.out and "notes.txt" in printed.err
    from_dir = json.loads((tmp_path / "dir" / "report.json").read_text())
    from_topic = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "topic", model=model, threads=1, label_topic=LABELS,
                                          output_bag_format="none"))
    assert from_dir["miou"] == from_topic["miou"] and from_dir["labels_scored"] == 8
    assert not (tmp_path / "dir" / "output_bag").exists()


def test_the_node_parameter_files_are_the_configuration(tmp_path):
    for name, cls in (("events.yaml", EventParams), ("depth.yaml", ImageParams), ("thermal.yaml", ImageParams)):
        kind, values = load_node_config(REPO / "config" / name)
        assert kind == ("events" if cls is EventParams else "image")
        expected = EventParams() if cls is EventParams else ImageParams(modality=name.removesuffix(".yaml"))
        assert params_from_values(cls, values, name) == expected  # the files list every parameter with its default
    bad = tmp_path / "bad.yaml"
    bad.write_text("/**/event_segmentation:\n  ros__parameters:\n    accumulation_time_ms: 20\n    acumulation_number: 5\n")
    with pytest.raises(ConfigError, match="acumulation_number"):
        params_from_values(EventParams, load_node_config(bad)[1], str(bad))
    assert params_from_values(EventParams, {"accumulation_time_ms": 20, "crop": [0, 0, 64, 32]}, "x").crop == (0, 0, 64, 32)
    merged = tmp_path / "merged.yaml"  # a wildcard entry and the node's own apply together, in file order
    merged.write_text("/**:\n  ros__parameters:\n    threads: 2\n    use_sim_time: true\n"
                      "/robot/event_segmentation:\n  ros__parameters:\n    accumulation_time_ms: 20\n")
    assert load_node_config(merged) == ("events", {"threads": 2, "accumulation_time_ms": 20})
    merged.write_text("/**:\n  ros__parameters:\n    modality: thermal\n")
    assert load_node_config(merged) == ("image", {"modality": "thermal"})
    merged.write_text("a/event_segmentation:\n  ros__parameters: {}\nb/depth_segmentation:\n  ros__parameters: {}\n")
    with pytest.raises(ConfigError, match="several nodes"):
        load_node_config(merged)


def test_a_truncated_mcap_is_evaluated_up_to_the_cut_and_exits_2(tmp_path, tiny_onnx_models, capsys):
    rng = np.random.default_rng(0)
    records = []
    for i in range(40):  # about 3 MB: three 1 MiB MCAP chunks
        stamp = BASE_NS + i * 50_000_000
        records.append(("/depth", stamp, image_message(rng.integers(500, 9000, (160, 240)).astype(np.uint16), "16UC1", stamp)))
        records.append((LABELS, stamp + 1, image_message(rng.integers(0, 11, (160, 240)).astype(np.uint8), "mono8", stamp)))
    bag = write_bag(tmp_path / "in", {"/depth": "sensor_msgs/msg/Image", LABELS: "sensor_msgs/msg/Image"}, records, "mcap")
    out = tmp_path / "out"
    args = ["--out", str(out), "--model", str(tiny_onnx_models["depth"]), "--topic", "/depth", "--label-topic", LABELS,
            "--overlays", "2", "--no-progress"]
    assert main([str(bag), *args]) == 0  # the whole bag first: a good report
    before = snapshot(out)
    data = (bag / "in.mcap").read_bytes()
    (bag / "in.mcap").write_bytes(data[: int(len(data) * 0.8)])
    capsys.readouterr()
    code = main([str(bag), *args, "--overwrite"])
    assert code == 2
    kept = out / "failed"  # partial results stand beside the good report, never over it
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("bag_eval: partial results: ")
    after = snapshot(out)
    assert {k: v for k, v in after.items() if not k.startswith("failed/") and k != ".bag_eval.json"} == \
        {k: v for k, v in before.items() if k != ".bag_eval.json"}
    report = json.loads((kept / "report.json").read_text())
    assert report["partial"] and "cut off" in report["stopped_early"] and report["kept_in"] == str(kept)
    assert 10 <= report["frames"] < 40 and report["miou"] is not None
    assert report["frames"] - 1 <= report["labels_scored"] <= report["frames"]  # a label logged after the cut is lost
    assert report["labels_unmatched"] == 0  # labels after the cut are not reached, not unmatched
    assert report["output_bag"]["path"] == str(kept / "output_bag") and (kept / "iou.png").is_file()
    written = read_output_bag(kept / "output_bag")
    assert len(written["/depth_segmentation/raw_segmentation_mask"]) == report["frames"]
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [".bag_eval.json"]  # no staging folder left


def test_a_recording_without_metadata_yaml_still_reads(tmp_path, scenes, tiny_onnx_models):
    bag = scene_bag(tmp_path / "in", scenes, "depth", "mcap")
    (bag / "metadata.yaml").unlink()
    report = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "out", model=str(tiny_onnx_models["depth"]), threads=1,
                                      label_topic=LABELS, output_bag_format="none"))
    assert report["exit_code"] == 0 and report["frames"] == 8 and report["labels_scored"] == 8
    short = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "short", model=str(tiny_onnx_models["depth"]), threads=1,
                                     label_topic=LABELS, output_bag_format="none", max_frames=3))
    assert (short["exit_code"], short["frames"], short["labels_scored"], short["labels_unmatched"]) == (0, 3, 3, 0)
    assert short["labels_not_reached"] == 5


def test_a_ros1_bag_reads_too(tmp_path, scenes, tiny_onnx_models):
    bag = write_ros1_image_bag(tmp_path / "in.bag", "/depth", [(BASE_NS + f.stamp_us * 1000, f.images["depth"]) for f in scenes],
                               "16UC1")
    labels = tmp_path / "labels"
    labels.mkdir()
    for frame in scenes:
        assert cv2_write(labels / f"{BASE_NS + frame.stamp_us * 1000}.png", frame.label)
    report = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "out", model=str(tiny_onnx_models["depth"]), threads=1,
                                      label_dir=labels, output_bag_format="none"))
    assert report["storage"] == "rosbag1" and report["exit_code"] == 0 and report["labels_scored"] == 8
    assert report["miou"] == pytest.approx(in_memory_miou(scenes, "depth", tiny_onnx_models["depth"])[0], abs=1e-12)


def cv2_write(path: Path, image: np.ndarray) -> bool:
    import cv2

    return bool(cv2.imwrite(str(path), image))


def test_bad_bags_give_one_line_messages_and_exit_2(tmp_path, scenes, tiny_onnx_models, capsys):
    model = str(tiny_onnx_models["depth"])
    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3")

    def run(*args: str) -> tuple[int, str]:
        code = main([str(bag), "--out", str(tmp_path / "out"), "--model", model, "--no-progress", *args])
        return code, capsys.readouterr().err.strip()

    code, err = run("--topic", "/nope")
    assert code == 2 and "no topic '/nope'" in err and "/camera/depth/image_raw" in err and len(err.splitlines()) == 1
    code, err = run("--topic", "/vendor/status")
    assert code == 2 and "acme_msgs/msg/Status" in err and "not a camera input" in err
    code, err = run()  # two Image topics (input and labels): which one is the input?
    assert code == 2 and "--topic" in err
    code, err = run("--topic", INPUTS["depth"][0], "--label-topic", "/missing_labels")
    assert code == 2 and "no label topic '/missing_labels'" in err
    unlabelled = tmp_path / "no_labels"
    unlabelled.mkdir()
    (unlabelled / "README.txt").write_text("labels to come")
    code, err = run("--topic", INPUTS["depth"][0], "--label-dir", str(unlabelled))
    assert code == 2 and "holds no label image named <stamp_ns>.png" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # errors before evaluation starts write nothing

    far = tmp_path / "far_labels"
    far.mkdir()
    import cv2

    cv2.imwrite(str(far / f"{BASE_NS + 10**12}.png"), scenes[0].label)  # 1000 s after the bag
    code, err = run("--topic", INPUTS["depth"][0], "--label-dir", str(far))
    assert code == 2 and "no frame within ±1 ms" in err and "nearest frame" in err
    kept = tmp_path / "out" / "failed"  # a result without a score never stands as the report of --out
    assert f"kept in {kept}" in err.splitlines()[-1]
    report = json.loads((kept / "report.json").read_text())
    assert report["frames"] == 8 and report["miou"] is None and (kept / "output_bag").is_dir()
    assert report["kept_in"] == str(kept) and not (tmp_path / "out" / "report.json").exists()

    db3 = tmp_path / "cut"  # a copy interrupted half way; this small file's table pages all lie past the cut
    shutil.copytree(bag, db3)
    data = (db3 / "in.db3").read_bytes()
    (db3 / "in.db3").write_bytes(data[: len(data) // 2])
    code = main([str(db3), "--out", str(tmp_path / "cut_out"), "--model", model, "--no-progress",
                 "--topic", INPUTS["depth"][0]])
    err = capsys.readouterr().err
    assert code == 2 and "in.db3 is cut off at" in err and "read up to the cut" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "cut_out").exists()

    with pytest.raises(DecodeError, match="does not exist"):
        evaluate_bag(EvalOptions(bag=tmp_path / "nothing", out=tmp_path / "o"))


def test_unknown_types_without_definitions_are_left_alone(tmp_path, scenes, tiny_onnx_models):
    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3", labels=False)
    with sqlite3.connect(bag / "in.db3") as db:  # as if recorded where the vendor's package was not installed
        db.execute("DELETE FROM message_definitions WHERE topic_type = 'acme_msgs/msg/Status'")
    report = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "out", model=str(tiny_onnx_models["depth"]), threads=1,
                                      output_bag_format="none"))
    assert report["exit_code"] == 0 and report["frames"] == 8 and report["labels"] == 0


def test_help_and_errors_from_a_real_process(tmp_path):
    done = subprocess.run([sys.executable, "-m", "madm_ros.bag_eval", "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "--label-topic" in done.stdout and "--tolerance-ms" in done.stdout
    done = subprocess.run([sys.executable, "-m", "madm_ros.bag_eval", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr and "does not exist" in done.stderr


def test_realtime_drop_estimate_follows_the_latest_slot():
    assert simulate_realtime_drops([(0.0, 0.01), (0.05, 0.01), (0.1, 0.01)]) == 0
    assert simulate_realtime_drops([(0.0, 0.1), (0.01, 0.1), (0.02, 0.1), (0.03, 0.1)]) == 2  # 2nd and 3rd replaced
    assert simulate_realtime_drops([(0.0, 0.1), (0.05, 0.01), (0.2, 0.01)]) == 0


# ---------------------------------------------------------------------------------------------- offline == live
def test_the_real_evt3_bag_gives_the_live_nodes_masks(ros, tiny_onnx_models, event_bag, tmp_path):
    pytest.importorskip("event_camera_msgs")
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    from madm_ros.image_conversion import image_to_array
    from madm_ros.nodes.event_segmentation import EventSegmentationNode
    from tests.madm_ros.ros_harness import Collector, play_bag_into

    model = str(tiny_onnx_models["events"])
    config = tmp_path / "events.yaml"
    config.write_text(f"/**/event_segmentation:\n  ros__parameters:\n    model_file_path: {model}\n    threads: 1\n"
                      "    input_qos: DEFAULT\n")
    report = evaluate_bag(EvalOptions(bag=event_bag, out=tmp_path / "out", config=config))
    assert report["exit_code"] == 0 and report["frames"] >= 30
    offline = read_output_bag(tmp_path / "out" / "output_bag")
    masks = {s: m for _, s, m in offline["/event_segmentation/raw_segmentation_mask"]}
    edges = {s: m for _, s, m in offline["/event_segmentation/edge_frame"]}
    assert len(masks) == len(edges) == report["frames"]

    node = EventSegmentationNode("event_segmentation", parameter_overrides=[
        Parameter("model_file_path", value=model), Parameter("threads", value=1), Parameter("input_qos", value="DEFAULT")],
        cli_args=["--ros-args", "-r", "events:=/event_camera/events"])
    live_edges = Collector(ros, Image, "/event_segmentation/edge_frame", 1000)
    live_masks = Collector(ros, Image, "/event_segmentation/raw_segmentation_mask", 1000)
    try:
        play_bag_into(node, ros, event_bag, live_edges, len(edges))
    finally:
        node.destroy_node()

    def stamp(message) -> int:
        return message.header.stamp.sec * 10**9 + message.header.stamp.nanosec

    assert sorted(stamp(m) for m in live_edges.messages) == sorted(edges)
    assert all(np.array_equal(image_to_array(m), edges[stamp(m)]) for m in live_edges.messages)
    arrived = live_masks.messages
    assert len(arrived) >= len(masks) // 2  # the live node may drop frames under load, never most of them
    assert all(np.array_equal(image_to_array(m), masks[stamp(m)]) for m in arrived)


def test_event_packets_round_trip_through_the_bag_writer(tmp_path):
    from madm_ros.events.bags import read_bag_events

    events = Events(np.array([1, 5, 7], np.uint16), np.array([2, 3, 4], np.uint16), np.array([10, 20, 30], np.int64),
                    np.array([1, 0, 1], np.uint8))
    bag = write_bag(tmp_path / "b", {"/ev": "event_camera_msgs/msg/EventPacket"},
                    [("/ev", BASE_NS, event_packet(events, BASE_NS, 16, 8, 0))], "mcap")
    decoded, _, info = read_bag_events(bag)
    assert np.array_equal(decoded.x, events.x) and np.array_equal(decoded.t, events.t) and info["encoding"] == "evt3"


# ---------------------------------------------------------------------------------------------- bounds
def random_event_bag(path: Path, bogus_encoding_at: int | None = None) -> Path:
    """40 EventPackets of 4 kB random bytes as evt3 (640×480): time words jump anywhere, most words are nonsense."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(40):
        stamp = BASE_NS + i * 1_000_000
        message = event_packet(Events.empty(), stamp, 640, 480, i, encoding="bogus" if i == bogus_encoding_at else "evt3")
        records.append(("/ev", stamp, dataclasses.replace(message, events=np.frombuffer(rng.bytes(4096), np.uint8))))
    return write_bag(path, {"/ev": "event_camera_msgs/msg/EventPacket"}, records, "mcap")


def test_random_event_packets_end_with_bounded_output(tmp_path, tiny_onnx_models):
    bag = random_event_bag(tmp_path / "in", bogus_encoding_at=7)
    model = str(tiny_onnx_models["events"])
    report = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "out", model=model, threads=1, output_bag_format="none",
                                      max_frames=2000))  # a safety net far above the bound asserted below
    assert report["exit_code"] == 0 and report["messages"] == 40 and not report["max_frames_reached"]
    # each forward jump of a random time word beyond max_gap_ms closes a segment (about 11 per packet here);
    # without the gap rule the same bag gives about 200 000 empty frames
    assert 40 <= report["frames"] <= 20 * 40
    assert report["stream"]["accumulate_gaps"] > 0 and report["stream"]["accumulate_skipped_windows"] > 100 * report["frames"]
    kinds = {w["kind"]: w for w in report["warnings"]}
    assert kinds["decode_error"]["count"] == 1 and "bogus" in kinds["decode_error"]["message"]  # the stream's own problem
    assert len(list((tmp_path / "out" / "overlays").iterdir())) == 24

    short = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "short", model=model, threads=1, max_frames=3))
    assert (short["frames"], short["messages"], short["max_frames_reached"]) == (3, 1, True)  # the first packet made 8
    written = read_output_bag(tmp_path / "short" / "output_bag")
    assert [len(v) for v in written.values()] == [3, 3, 3, 3]


def test_frames_without_a_valid_pixel_are_counted_and_masked_unlabelled(tmp_path, scenes, tiny_onnx_models):
    topic, encoding = INPUTS["depth"]
    records = []
    for i, frame in enumerate(scenes):
        stamp = BASE_NS + frame.stamp_us * 1000
        depth = np.zeros_like(frame.images["depth"]) if i in (2, 5) else frame.images["depth"]
        records.append((topic, stamp, image_message(depth, encoding, stamp)))
    bag = write_bag(tmp_path / "in", {topic: "sensor_msgs/msg/Image"}, records, "sqlite3")
    report = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "out", model=str(tiny_onnx_models["depth"]), threads=1))
    assert (report["frames"], report["invalid_frames"], report["exit_code"]) == (8, 2, 0)
    assert {w["kind"]: w["count"] for w in report["warnings"]}["invalid_frame"] == 2
    masks = [m for _, _, m in read_output_bag(tmp_path / "out" / "output_bag")["/depth_segmentation/raw_segmentation_mask"]]
    assert [bool((m == 255).all()) for m in masks] == [i in (2, 5) for i in range(8)]
    assert "frames without any valid pixel (mask all unlabelled) | 2 |" in (tmp_path / "out" / "report.md").read_text()



def test_unusable_images_are_dropped_and_every_problem_lands_in_one_warning_list(tmp_path, scenes, tiny_onnx_models):
    topic, encoding = INPUTS["depth"]
    records = []
    for i, frame in enumerate(scenes):
        stamp = BASE_NS + frame.stamp_us * 1000
        message = image_message(frame.images["depth"], encoding, stamp)
        if i == 3:  # a header that promises more rows than the data holds
            message = dataclasses.replace(message, height=message.height * 2)
        records.append((topic, stamp, message))
        records.append((LABELS, stamp + 1, image_message(frame.label, "mono8", stamp)))
    records.append((LABELS, BASE_NS + 1, image_message(scenes[0].label.astype(np.uint16), "mono16", BASE_NS)))
    records.sort(key=lambda r: r[1])
    bag = write_bag(tmp_path / "in", {topic: "sensor_msgs/msg/Image", LABELS: "sensor_msgs/msg/Image"}, records, "sqlite3")
    report = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "out", model=str(tiny_onnx_models["depth"]), threads=1,
                                      topic=topic, label_topic=LABELS, output_bag_format="none"))
    assert (report["frames"], report["dropped"], report["messages"]) == (7, 1, 8)
    kinds = {w["kind"]: w for w in report["warnings"]}
    assert kinds["bad_image:16UC1"]["count"] == 1 and "needs step" in kinds["bad_image:16UC1"]["message"]  # frame source
    assert kinds["bad_label_message"]["count"] == 1 and "mono8" in kinds["bad_label_message"]["message"]  # label reader
    assert kinds["labels_without_frame"]["count"] == 1  # the run's own check (frame 3's label), in the same list


# ---------------------------------------------------------------------------------------------- label matching
def test_a_frame_is_scored_against_its_nearest_label_only(tmp_path, scenes, tiny_onnx_models):
    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3", labels=False)
    labels = tmp_path / "labels"
    labels.mkdir()
    for frame in scenes:
        assert cv2_write(labels / f"{BASE_NS + frame.stamp_us * 1000}.png", frame.label)
    wrong = np.full_like(scenes[3].label, 7)  # would lower the score if it were scored
    assert cv2_write(labels / f"{BASE_NS + scenes[3].stamp_us * 1000 + 400_000}.png", wrong)  # 0.4 ms after frame 3
    report = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "out", model=str(tiny_onnx_models["depth"]), threads=1,
                                      label_dir=labels, output_bag_format="none"))
    assert (report["labels"], report["labels_scored"], report["labels_sharing_frame"], report["labels_unmatched"]) == (9, 8, 1, 0)
    assert report["miou"] == pytest.approx(in_memory_miou(scenes, "depth", tiny_onnx_models["depth"])[0], abs=1e-12)
    assert any(w["kind"] == "labels_sharing_frame" for w in report["warnings"])


# ---------------------------------------------------------------------------------------------- output folder
def small_run(bag: Path, out: Path, model: Path, *args: str) -> tuple[int, str]:
    """``main`` on the depth scene bag; returns the exit code and stderr."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(bag), "--out", str(out), "--model", str(model), "--topic", INPUTS["depth"][0], "--threads", "1",
                     "--overlays", "2", "--no-progress", *args])
    return code, err.getvalue().strip()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_non_empty_out_is_refused_and_overwrite_replaces_only_what_bag_eval_wrote(tmp_path, scenes, tiny_onnx_models):
    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3")
    model, out = tiny_onnx_models["depth"], tmp_path / "out"
    code, err = small_run(bag, out, model, "--label-topic", LABELS)
    assert code == 0 and (out / "iou.png").is_file() and (out / "confusion.png").is_file()
    (out / "notes.txt").write_text("mine")
    before = snapshot(out)

    code, err = small_run(bag, out, model)
    assert code == 2 and len(err.splitlines()) == 1 and str(out) in err and "--overwrite" in err
    assert snapshot(out) == before

    code, err = small_run(bag, out, model, "--overwrite", "--output-bag-format", "none")  # unlabelled now
    assert code == 0
    manifest = json.loads((out / ".bag_eval.json").read_text())["paths"]
    assert sorted(p.name for p in out.iterdir()) == sorted([*manifest, ".bag_eval.json", "notes.txt"])
    assert not (out / "iou.png").exists() and not (out / "confusion.png").exists()  # no stale plots of the labelled run
    assert not (out / "output_bag").exists() and (out / "notes.txt").read_text() == "mine"
    assert json.loads((out / "report.json").read_text())["labels"] == 0

    shutil.copytree(bag, out / "output_bag")  # someone's own bag where bag_eval writes its own
    code, err = small_run(bag, out, model, "--overwrite")
    assert code == 2 and "output_bag was not written by bag_eval" in err and len(err.splitlines()) == 1
    assert (out / "output_bag" / "in.db3").is_file()


def test_errors_before_evaluation_write_nothing(tmp_path, scenes, tiny_onnx_models):
    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3")
    model, out = tiny_onnx_models["depth"], tmp_path / "out"
    code, err = small_run(tmp_path / "mistyped", out, model)
    assert code == 2 and "does not exist" in err and not out.exists()

    assert small_run(bag, out, model)[0] == 0
    before = snapshot(out)
    bad_model = tmp_path / "model.onnx"
    bad_model.write_bytes(b"not a model")
    for args in (("--topic", "/nope"), ("--label-topic", "/missing"), ("--model", str(bad_model))):
        code, err = small_run(bag, out, model, "--overwrite", *args)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert snapshot(out) == before  # the earlier good report stays


def test_a_failed_write_removes_the_runs_output_and_keeps_the_earlier_report(tmp_path, scenes, tiny_onnx_models,
                                                                           monkeypatch):
    import errno

    from madm_ros import atomic_io

    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3")
    model, out = tiny_onnx_models["depth"], tmp_path / "out"
    assert small_run(bag, out, model)[0] == 0
    before = snapshot(out)

    def disk_full(path, data, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic_io, "atomic_write_bytes", disk_full)
    code, err = small_run(bag, out, model, "--overwrite", "--label-topic", LABELS)
    assert code == 2 and len(err.splitlines()) == 1 and "No space left on device" in err and str(out) in err
    assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == sorted(
        [*json.loads((out / ".bag_eval.json").read_text())["paths"], ".bag_eval.json"])  # no staging folder left

    code, err = small_run(bag, tmp_path / "new", model)
    assert code == 2 and "No space left on device" in err and not (tmp_path / "new").exists()

    monkeypatch.undo()  # now the output bag fills the disk, part way through the frames
    import madm_ros.bag_source

    def bag_full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(madm_ros.bag_source.OutputBag, "write_image", bag_full)
    code, err = small_run(bag, out, model, "--overwrite")
    assert code == 2 and len(err.splitlines()) == 1 and "output bag" in err and "No space left on device" in err
    assert snapshot(out) == before


def test_an_unwritable_out_ends_with_one_line_and_leaves_it_empty(tmp_path, scenes, tiny_onnx_models, monkeypatch):
    import errno
    import os

    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3")
    out = tmp_path / "out"
    out.mkdir()
    real_mkdir = Path.mkdir

    def refused(self, *args, **kwargs):  # what a read-only folder does, also for root (whom chmod does not stop)
        if self.parent == out:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(Path, "mkdir", refused)
        code, err = small_run(bag, out, tiny_onnx_models["depth"])
    assert code == 2 and len(err.splitlines()) == 1 and "Permission denied" in err and "writable" in err
    assert not list(out.iterdir())
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod does not stop root's writes")
    out.chmod(0o555)
    try:
        code, err = small_run(bag, out, tiny_onnx_models["depth"])
    finally:
        out.chmod(0o755)
    assert code == 2 and len(err.splitlines()) == 1 and "Permission denied" in err and not list(out.iterdir())


def unusable_bag(path: Path, scenes) -> Path:
    """An mcap whose three input topics give no usable frame: width-0 event packets, "bogus" images, all-NaN depth."""
    records = []
    for i, frame in enumerate(scenes[:3]):
        stamp = BASE_NS + frame.stamp_us * 1000
        records.append(("/events", stamp, event_packet(frame.events[:100], stamp, 0, 64, i)))
        bogus = image_message(frame.images["depth"], "16UC1", stamp)
        records.append(("/bogus", stamp + 1, dataclasses.replace(bogus, encoding="bogus")))
        records.append(("/nan", stamp + 2, image_message(np.full((64, 128), np.nan, np.float32), "32FC1", stamp)))
    return write_bag(path, {"/events": "event_camera_msgs/msg/EventPacket", "/bogus": "sensor_msgs/msg/Image",
                            "/nan": "sensor_msgs/msg/Image"}, records, "mcap")


def test_a_topic_without_a_usable_frame_is_one_line_naming_its_problems_and_keeps_the_earlier_report(
        tmp_path, scenes, tiny_onnx_models):
    out = tmp_path / "out"
    assert small_run(scene_bag(tmp_path / "good", scenes, "depth", "sqlite3"), out, tiny_onnx_models["depth"])[0] == 0
    before, names = snapshot(out), sorted(p.name for p in out.iterdir())
    bag = unusable_bag(tmp_path / "bad", scenes)
    for topic, modality, problems in (
            ("/events", "events", ("0 frames): 3× decode_error:", "event sensor size 0×64 has no pixels")),
            ("/bogus", "depth", ("0 frames): 3× bad_image:bogus:", "image encoding 'bogus' is not supported")),
            ("/nan", "depth", ("3 frames of which 3 without a valid pixel): 3× invalid_frame:", "no valid pixel"))):
        code, err = small_run(bag, out, tiny_onnx_models[modality], "--overwrite", "--topic", topic)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert err.startswith(f"bag_eval: no usable frame in {bag} on {topic} (3 messages read, "), err
        assert all(problem in err for problem in problems) and f"--out {out} is as it was" in err, err
        assert snapshot(out) == before and sorted(p.name for p in out.iterdir()) == names  # no staging folder either
    code, err = small_run(bag, tmp_path / "new", tiny_onnx_models["depth"], "--topic", "/nan")
    assert code == 2 and "no usable frame" in err and not (tmp_path / "new").exists()


def test_ctrl_c_keeps_the_earlier_report_and_the_evaluated_frames_in_out_interrupted(tmp_path, scenes, tiny_onnx_models,
                                                                                   monkeypatch):
    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3")
    model, out = tiny_onnx_models["depth"], tmp_path / "out"
    assert small_run(bag, out, model, "--label-topic", LABELS)[0] == 0
    before = snapshot(out)
    segment, calls = Segmenter.segment, []

    def ctrl_c_at(frame: int):
        def patched(self, *args, **kwargs):
            calls.append(None)
            if len(calls) == frame:
                raise KeyboardInterrupt
            return segment(self, *args, **kwargs)
        calls.clear()
        monkeypatch.setattr(Segmenter, "segment", patched)

    def interrupted_run(out: Path, *args: str) -> tuple[int, str]:
        try:
            return small_run(bag, out, model, *args)
        except KeyboardInterrupt:  # escaping, it would stop pytest itself
            pytest.fail("the Ctrl-C escaped bag_eval")

    ctrl_c_at(4)
    code, err = interrupted_run(out, "--overwrite")
    kept = out / "interrupted"
    assert code == 130 and err.splitlines()[-1] == (f"bag_eval: interrupted (Ctrl-C) after 3 frames; their report and output "
                                                    f"are kept in {kept}, the rest of --out {out} is as it was")
    after = snapshot(out)
    assert {k: v for k, v in after.items() if not k.startswith("interrupted/") and k != ".bag_eval.json"} == \
        {k: v for k, v in before.items() if k != ".bag_eval.json"}  # the earlier report, byte for byte
    earlier = json.loads(before[".bag_eval.json"])["paths"]
    assert json.loads(after[".bag_eval.json"])["paths"] == sorted([*earlier, "interrupted"])
    assert sorted(p.name for p in out.iterdir()) == sorted([*earlier, "interrupted", ".bag_eval.json"])  # no staging folder
    report = json.loads((kept / "report.json").read_text())
    assert (report["frames"], report["exit_code"], report["stopped_early"], report["kept_in"]) == \
        (3, 130, "interrupted (Ctrl-C)", str(kept))
    assert report["output_bag"]["path"] == str(kept / "output_bag") and (kept / "report.md").is_file()
    assert [len(v) for v in read_output_bag(kept / "output_bag").values()] == [3, 3, 3]

    ctrl_c_at(1)  # before the first frame: nothing worth keeping, and a new --out is not even created
    code, err = interrupted_run(tmp_path / "new")
    assert code == 130 and "before the first frame; nothing was kept" in err.splitlines()[-1]
    assert not (tmp_path / "new").exists() and snapshot(out) == after

    monkeypatch.undo()  # a finished run replaces the interrupted one's output, like any output of bag_eval
    assert small_run(bag, out, model, "--overwrite")[0] == 0 and not kept.exists()


def test_a_run_that_fails_part_way_keeps_the_earlier_report_and_sets_its_frames_aside_in_out_failed(
        tmp_path, scenes, tiny_onnx_models, monkeypatch):
    import madm_ros.bag_eval.run
    from madm_ros.errors import DecodeError

    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3")
    model, out = tiny_onnx_models["depth"], tmp_path / "out"
    assert small_run(bag, out, model, "--label-topic", LABELS)[0] == 0
    before = snapshot(out)
    earlier = json.loads(before[".bag_eval.json"])["paths"]
    push = madm_ros.bag_eval.run._Pipeline.push

    def fail_at(message: int, error: Exception) -> None:
        calls = []

        def patched(self, *args, **kwargs):
            calls.append(None)
            if len(calls) == message:
                raise error
            return push(self, *args, **kwargs)
        monkeypatch.setattr(madm_ros.bag_eval.run._Pipeline, "push", patched)

    def unchanged_but(entry: str) -> None:
        after = snapshot(out)
        assert {k: v for k, v in after.items() if not k.startswith(f"{entry}/") and k != ".bag_eval.json"} == \
            {k: v for k, v in before.items() if k != ".bag_eval.json"}  # the earlier report and outputs, byte for byte
        assert json.loads(after[".bag_eval.json"])["paths"] == sorted([*earlier, entry])
        assert sorted(p.name for p in out.iterdir()) == sorted([*earlier, entry, ".bag_eval.json"])  # no staging folder

    kept = out / "failed"
    fail_at(4, DecodeError("the packet at 12 ns breaks the stream"))  # an error that ends the run after 3 frames
    code, err = small_run(bag, out, model, "--overwrite", "--label-topic", LABELS)
    assert code == 2 and len(err.splitlines()) == 1 and err == (
        f"bag_eval: stopped by an error after 3 frames: the packet at 12 ns breaks the stream; their report and output are "
        f"kept in {kept}, the rest of --out {out} is as it was")
    unchanged_but("failed")
    report = json.loads((kept / "report.json").read_text())
    assert (report["frames"], report["exit_code"], report["kept_in"]) == (3, 2, str(kept)) and report["partial"]
    assert report["output_bag"]["path"] == str(kept / "output_bag") and "Stopped:" in (kept / "report.md").read_text()
    assert [len(v) for v in read_output_bag(kept / "output_bag").values()] == [3, 3, 3]

    fail_at(6, RuntimeError("boom"))  # a bug: exit code 1, one line, the traceback kept with the frames
    code, err = small_run(bag, out, model, "--overwrite")
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith(
        "bag_eval: stopped by an unexpected error after 5 frames: RuntimeError: boom (a bug; please report it with "
        f"{kept / 'traceback.txt'}); their report and output are kept in {kept}"), err
    unchanged_but("failed")  # the earlier failed run's folder is replaced, the good report is not
    assert json.loads((kept / "report.json").read_text())["frames"] == 5
    assert "RuntimeError: boom" in (kept / "traceback.txt").read_text()

    fail_at(1, RuntimeError("boom"))  # before the first frame: nothing is kept, a new --out is not even created
    code, err = small_run(bag, tmp_path / "new", model)
    assert code == 1 and len(err.splitlines()) == 1 and "before the first frame" in err and "nothing was kept" in err
    assert not (tmp_path / "new").exists()

    monkeypatch.undo()  # a finished run replaces the failed one's output, like any output of bag_eval
    assert small_run(bag, out, model, "--overwrite")[0] == 0 and not kept.exists()
    assert "failed" not in json.loads((out / ".bag_eval.json").read_text())["paths"]


# ---------------------------------------------------------------------------------------------- what users see
def test_overlays_of_evenly_spaced_frames_and_a_contact_sheet(tmp_path, scenes, tiny_onnx_models):
    import cv2

    from madm_ros.eval_plots import legend_height

    model = tiny_onnx_models["depth"]
    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3")
    report = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "out", model=str(model), threads=1, label_topic=LABELS,
                                      topic=INPUTS["depth"][0], overlays=3, output_bag_format="none"))
    stamps = [BASE_NS + f.stamp_us * 1000 for f in scenes]
    # every frame is held until 2 × 3 are, then every other one (0, 2, 4, 6); three are spread over those
    assert report["overlays"] == [f"overlays/{stamps[i]}.png" for i in (0, 4, 6)]
    segmenter = Segmenter.load(model, threads=1)
    expected = segmenter.segment(scenes[4].images["depth"], "16UC1").overlay(ImageParams().overlay_alpha)
    written = cv2.imread(str(tmp_path / "out" / report["overlays"][1]))[:, :, ::-1]
    assert np.array_equal(written, expected)
    sheet = cv2.imread(str(tmp_path / "out" / "overlays.png"))
    strip = sheet[-legend_height(segmenter.label_set.class_names, sheet.shape[1]):, :, ::-1].reshape(-1, 3)
    swatches = {tuple(int(v) for v in color) for color in np.unique(strip, axis=0)}
    assert {tuple(int(v) for v in color) for color in segmenter.label_set.colors} <= swatches  # every class named
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert "![Overlays](overlays.png)" in markdown and all(f"]({name})" in markdown for name in report["overlays"])
    assert report["processing_covers"].startswith("class ids only") and report["processing_covers"] in markdown

    unlabelled = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "plain", model=str(model), threads=1,
                                          topic=INPUTS["depth"][0], overlays=3, output_bag_format="none"))
    plain = cv2.imread(str(tmp_path / "plain" / "overlays.png"))
    assert unlabelled["overlays"] == report["overlays"]
    assert sheet.shape[1] > 1.5 * plain.shape[1]  # each scored frame's label beside its overlay

    none = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "none", model=str(model), threads=1,
                                    topic=INPUTS["depth"][0], overlays=0, output_bag_format="none"))
    assert none["overlays"] == [] and not (tmp_path / "none" / "overlays").exists()
    assert not (tmp_path / "none" / "overlays.png").exists()


def test_the_overlay_sample_stays_small_and_evenly_spaced():
    from madm_ros.bag_eval.state import OverlaySample

    sample, held = OverlaySample(24), 0
    for index in range(1000):
        if sample.wants(index):
            sample.add(index, index, np.full((2, 2, 3), index % 256, np.uint8))
        held = max(held, len(sample._kept))
    chosen = [index for index, _, _ in sample.chosen()]
    assert held <= 48 and len(chosen) == 24 and chosen[0] == 0 and chosen[-1] >= 900
    steps = np.diff(chosen)
    assert steps.max() <= 2 * steps.min()


def test_a_built_in_model_carries_the_synthetic_only_caveat(tmp_path, scenes, tiny_onnx_models):
    bag = scene_bag(tmp_path / "in", scenes, "depth", "sqlite3", labels=False)
    report = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "default", threads=1, output_bag_format="none"))
    assert "synthetic scenes only" in report["model_caveat"] and "python -m madm_train adapt" in report["model_caveat"]
    assert json.loads((tmp_path / "default" / "report.json").read_text())["model_caveat"] == report["model_caveat"]
    assert "synthetic-only model" in (tmp_path / "default" / "report.md").read_text()
    # no --config or --model: the modality comes from the 16UC1 encoding, and the report says it was a guess
    assert "taken for depth from its 16UC1 encoding" in report["modality_note"] and "config/thermal.yaml" in report[
        "modality_note"] and "Modality guessed" in (tmp_path / "default" / "report.md").read_text()
    own = evaluate_bag(EvalOptions(bag=bag, out=tmp_path / "own", model=str(tiny_onnx_models["depth"]), threads=1,
                                   output_bag_format="none"))
    assert own["model_caveat"] is None and "synthetic-only" not in (tmp_path / "own" / "report.md").read_text()
    assert own["modality_note"] is None  # the model said which


@pytest.mark.parametrize(("name", "kind"), [("x.raw", "Prophesee RAW"), ("x.aedat4", "AEDAT4"), ("events.h5", "HDF5")])
def test_an_event_file_is_named_with_the_tool_that_reads_it(tmp_path, capsys, name, kind):
    path = tmp_path / name
    path.write_bytes(b"% evt 3.0\n")
    code = main([str(path), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and kind in err and f"python -m madm_ros.events info {path}" in err
    assert not (tmp_path / "out").exists()
    other = tmp_path / "notes.txt"  # any other file: the bag reader's one line
    other.write_text("x")
    code = main([str(other), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "notes.txt" in err and not (tmp_path / "out").exists()


def test_the_real_evt3_bag_stops_at_max_frames(event_bag, tiny_onnx_models, tmp_path):
    report = evaluate_bag(EvalOptions(bag=event_bag, out=tmp_path / "out", model=str(tiny_onnx_models["events"]), threads=1,
                                      max_frames=5, output_bag_format="none", overlays=2))
    assert (report["frames"], report["exit_code"], report["max_frames_reached"]) == (5, 0, True)
    assert len(report["overlays"]) == 2
