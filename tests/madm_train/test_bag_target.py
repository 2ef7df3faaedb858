import json
from pathlib import Path

import numpy as np
import pytest

from madm_ros.errors import ConfigError, DecodeError, InputError
from madm_ros.events.bags import iter_event_messages
from madm_ros.events.codecs import PacketDecoder, decode_packet
from madm_ros.events.edge_frames import EdgeFrameAccumulator, EdgeFrameConfig
from madm_ros.folder_layout import FolderMeta, read_image
from madm_ros.image_conversion import array_to_image_fields
from madm_ros.node_params import EventParams, edge_fields
from madm_ros.preprocessing import InputSpec, preprocess
from madm_train.data.bag_target import extract_bag_frames, extract_bag_target, load_event_params
from madm_train.data.datasets import FolderDataset

EVENT_BAG = "event_camera/ros2_bags/test_events_1"
REPO = Path(__file__).resolve().parents[2]


def test_event_bag_frames_equal_the_accumulator_fed_with_the_same_packets(tmp_path, shared_data):
    params = EventParams(accumulation_time_ms=20.0, polarity="signed", neutral_level=0.5)
    config = edge_fields(params)
    meta = extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", tmp_path / "cache", modality="events",
                              event_params=params)
    decoder, accumulator = None, None
    frames = []
    for _, _, _, msg in iter_event_messages(shared_data / EVENT_BAG, "/event_camera/events"):
        decoder = decoder or PacketDecoder(msg.encoding, msg.width, msg.height)
        accumulator = accumulator or EdgeFrameAccumulator(EdgeFrameConfig(width=640, height=480, **config))
        frames += accumulator.push(decode_packet(msg, decoder))
    assert len(frames) == len(meta.frames) > 50
    for name, frame in zip(meta.frames, frames):
        np.testing.assert_array_equal(read_image(tmp_path / "cache", "events", name), frame.image)
    # stamps are the node's ROS stamps: sensor time plus one offset (first header stamp − first event time)
    assert len({stamp - frame.t_end_us for stamp, frame in zip(meta.stamps_us, frames)}) == 1
    assert meta.edge_frame_config() == EdgeFrameConfig(width=640, height=480, **config)
    # and the data set hands the network exactly what preprocess() makes of the node's frame
    spec = InputSpec("events", height=480, width=640)
    sample = FolderDataset(tmp_path / "cache", spec)[3]
    np.testing.assert_array_equal(sample.image, preprocess(frames[3].image, "mono8", spec))


def test_event_cache_is_reused_and_rebuilt_when_settings_change(tmp_path, shared_data):
    out = tmp_path / "cache"
    first = extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", out, modality="events", max_frames=3)
    marker = out / "events" / f"{first.frames[0]}.png"
    before = marker.stat().st_mtime_ns
    again = extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", out, modality="events", max_frames=3)
    assert again == first and marker.stat().st_mtime_ns == before
    other = extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", out, modality="events", max_frames=2,
                               event_params=EventParams(accumulation_time_ms=10.0))
    assert len(other.frames) == 2 and other.events["window_us"] == 10_000


def write_image_bag(path, topic, images, encoding, storage="sqlite3"):
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image = store.types["sensor_msgs/msg/Image"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        connection = writer.add_connection(topic, Image.__msgtype__, typestore=store)
        for index, array in enumerate(images):
            fields = array_to_image_fields(array, encoding)
            fields["data"] = np.frombuffer(fields["data"], np.uint8)
            message = Image(header=Header(stamp=Time(sec=100 + index, nanosec=5000), frame_id="depth"), **fields)
            writer.write(connection, (100 + index) * 10**9, store.serialize_cdr(message, Image.__msgtype__))


@pytest.mark.parametrize(("encoding", "storage"), [("16UC1", "sqlite3"), ("32FC1", "sqlite3"), ("16UC1", "mcap")])
def test_depth_bag_frames_keep_millimetres_and_holes(tmp_path, encoding, storage):
    rng = np.random.default_rng(0)
    mm = rng.integers(0, 20000, (4, 12, 16)).astype(np.uint16)
    images = [m if encoding == "16UC1" else np.where(m == 0, np.nan, m / 1000).astype(np.float32) for m in mm]
    write_image_bag(tmp_path / "bag", "/camera/depth", images, encoding, storage)
    assert any(p.suffix == (".mcap" if storage == "mcap" else ".db3") for p in (tmp_path / "bag").iterdir())
    meta = extract_bag_frames(tmp_path / "bag", "/camera/depth", tmp_path / "out", modality="depth", every=2)
    assert meta.modalities == {"depth": "16UC1"} and len(meta.frames) == 2
    assert meta.stamps_us == (100_000_005, 102_000_005)
    np.testing.assert_array_equal(read_image(tmp_path / "out", "depth", meta.frames[1]), mm[2])
    spec = InputSpec("depth", height=12, width=16)
    np.testing.assert_array_equal(FolderDataset(tmp_path / "out", spec)[0].image, preprocess(images[0], encoding, spec))


def test_bad_bag_requests_are_named(tmp_path, shared_data):
    with pytest.raises(DecodeError, match="has no topic '/nope'; it has: /event_camera/events"):
        extract_bag_frames(shared_data / EVENT_BAG, "/nope", tmp_path / "a", modality="events")
    with pytest.raises(DecodeError, match="not sensor_msgs/msg/Image"):
        extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", tmp_path / "b", modality="depth")
    with pytest.raises(ConfigError, match="event parameters make edge frames of event topics; modality is depth"):
        extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", tmp_path / "c", modality="depth",
                           event_params=EventParams())
    with pytest.raises(ConfigError, match="depth, thermal or events, got 'rgb'"):
        extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", tmp_path / "d", modality="rgb")
    assert not (tmp_path / "c" / "meta.json").exists()
    with pytest.raises(Exception, match="meta.json not found"):
        FolderMeta.read(tmp_path / "c")


def test_a_foreign_folder_is_refused_and_left_untouched(tmp_path, shared_data):
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="is not a bag-derived set written by madm"):
        extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", precious, modality="events")
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_a_cache_with_tuple_settings_is_reused(tmp_path, shared_data):
    out = tmp_path / "cache"
    params = EventParams(crop=(0, 0, 640, 440))
    first = extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", out, modality="events",
                               event_params=params, max_frames=2)
    stamp = (out / "meta.json").stat().st_mtime_ns
    again = extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", out, modality="events",
                               event_params=params, max_frames=2)
    assert again == first and (out / "meta.json").stat().st_mtime_ns == stamp
    assert read_image(out, "events", first.frames[0]).shape == (440, 640)


def test_a_broken_bag_fails_before_an_old_cache_is_deleted(tmp_path, shared_data):
    out = tmp_path / "cache"
    extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", out, modality="events", max_frames=1)
    broken = tmp_path / "broken.db3"
    broken.write_bytes(b"not a bag")
    with pytest.raises(DecodeError, match="cannot open .*broken.db3 as a bag"):
        extract_bag_frames(broken, "/event_camera/events", out, modality="events")
    assert len(FolderMeta.read(out).frames) == 1


def test_mono8_thermal_bag_keeps_its_encoding(tmp_path):
    thermal = [np.random.default_rng(i).integers(0, 256, (6, 8), dtype=np.uint8) for i in range(2)]
    write_image_bag(tmp_path / "bag", "/thermal/image", thermal, "mono8", "mcap")
    meta = extract_bag_frames(tmp_path / "bag", "/thermal/image", tmp_path / "out", modality="thermal")
    assert meta.modalities == {"thermal": "mono8"}
    spec = InputSpec("thermal", height=6, width=8)
    np.testing.assert_array_equal(FolderDataset(tmp_path / "out", spec)[1].image, preprocess(thermal[1], "mono8", spec))


@pytest.mark.parametrize(("modality", "encoding", "stored"), [("thermal", "16UC1", "mono16"), ("depth", "mono16", "16UC1"),
                                                           ("depth", "bgr8", "rgb8"), ("thermal", "8UC1", "mono8")])
def test_other_names_of_an_encoding_are_stored_under_the_layouts_name(tmp_path, modality, encoding, stored):
    rng = np.random.default_rng(1)
    shape = (6, 8, 3) if encoding == "bgr8" else (6, 8)
    dtype = np.uint16 if "16" in encoding else np.uint8
    images = [rng.integers(1, np.iinfo(dtype).max, shape, dtype=dtype) for _ in range(2)]
    write_image_bag(tmp_path / "bag", "/camera/image", images, encoding)
    meta = extract_bag_frames(tmp_path / "bag", "/camera/image", tmp_path / "out", modality=modality)
    assert meta.modalities == {modality: stored} and len(meta.frames) == 2
    spec = InputSpec(modality, height=6, width=8)
    np.testing.assert_array_equal(FolderDataset(tmp_path / "out", spec)[1].image, preprocess(images[1], encoding, spec))
    stored_pixels = read_image(tmp_path / "out", modality, meta.frames[1])  # RGB order, whatever the bag's
    np.testing.assert_array_equal(stored_pixels, images[1][:, :, ::-1] if encoding == "bgr8" else images[1])


def test_event_bag_frames_are_exactly_the_event_nodes_frames(tmp_path, shared_data):
    """bag_target runs the event node's pipeline (EventFrameStream with the node's edge_fields), stamps included."""
    from madm_ros.events.stream import EventFrameStream

    params = EventParams(accumulation_time_ms=20.0, polarity="signed", neutral_level=0.5, restart_after_ms=500.0)
    fields, restart_us = edge_fields(params), round(params.restart_after_ms * 1000)
    stream = EventFrameStream(params.message_type, fields, restart_after_us=restart_us)
    node = [f for *_, msg in iter_event_messages(shared_data / EVENT_BAG, "/event_camera/events") for f in stream.push(msg)]
    meta = extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", tmp_path / "frames", modality="events",
                              event_params=params)
    target = extract_bag_target(shared_data / EVENT_BAG, "/event_camera/events", tmp_path / "target", modality="events",
                                event_params=params)
    target_meta = FolderMeta.read(target.target)
    assert len(node) == len(meta.frames) == len(target_meta.frames) == target.frames > 50
    assert target.message_type == "event_packet" and target.test is None
    for folder, folder_meta in ((tmp_path / "frames", meta), (target.target, target_meta)):
        assert folder_meta.stamps_us == tuple(f.stamp_ns // 1000 for f in node)
        for name, frame in zip(folder_meta.frames, node):
            np.testing.assert_array_equal(read_image(folder, "events", name), frame.array)
        assert folder_meta.edge_frame_config() == EdgeFrameConfig(width=640, height=480, **fields)


def test_default_label_tolerances_are_bag_evals():
    """The default tolerance is label_matching's for the node's frames, in ns as bag_eval computes it."""
    from madm_ros.node_params import ImageParams
    from madm_train.data.bag_target import _tolerance_ns

    assert _tolerance_ns("depth", ImageParams(), None) == _tolerance_ns("thermal", ImageParams(), None) == 1_000_000
    assert _tolerance_ns("events", EventParams(), None) == 25_000_000  # half of the 50 ms window
    assert _tolerance_ns("events", EventParams(accumulation_time_ms=20.0), None) == 10_000_000
    assert _tolerance_ns("events", EventParams(accumulation_time_ms=33.3333), None) == 16_666_650  # not rounded to µs
    assert _tolerance_ns("events", EventParams(slice_method="count", accumulation_time_ms=10.0), None) == 25_000_000
    assert _tolerance_ns("events", EventParams(), 300) == 300_000  # a given tolerance (µs) wins
    with pytest.raises(ConfigError, match="must be ≥ 0"):
        _tolerance_ns("depth", ImageParams(), -1)


def test_event_params_are_the_node_parameter_files(tmp_path):
    assert load_event_params("") == EventParams()
    shipped = load_event_params(str(REPO / "config" / "events.yaml"))
    assert edge_fields(shipped) == edge_fields(EventParams()) and shipped.restart_after_ms == 1000.0
    mine = tmp_path / "events.yaml"
    mine.write_text("event_segmentation:\n  ros__parameters:\n    accumulation_time_ms: 20.0\n    crop: [0, 0, 640, 440]\n"
                    "    restart_after_ms: 250.0\n    use_sim_time: true\n")
    params = load_event_params(str(mine))
    assert edge_fields(params)["window_us"] == 20_000 and params.crop == (0, 0, 640, 440) and params.restart_after_ms == 250
    mine.write_text("accumulation_tim_ms: 20.0\n")
    with pytest.raises(ConfigError, match="accumulation_tim_ms"):
        load_event_params(str(mine))
    with pytest.raises(ConfigError, match="cannot read"):
        load_event_params(str(tmp_path / "nope.yaml"))


# ------------------------------------------------------------------------- labelled target sets

FRAME_STAMPS_US = [100_000_000 + 100_000 * k for k in range(6)]


def write_bag(path, topics, storage="sqlite3"):
    """``topics``: topic → list of (header stamp µs, array, encoding) images, or "std_msgs/msg/String".

    Encoding ``corrupt``: a 16UC1 image message cut in half (it cannot be deserialized).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    Image, String = store.types["sensor_msgs/msg/Image"], store.types["std_msgs/msg/String"]
    Header, Time = store.types["std_msgs/msg/Header"], store.types["builtin_interfaces/msg/Time"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    messages = []
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        for topic, items in topics.items():
            if items == "std_msgs/msg/String":
                connection = writer.add_connection(topic, String.__msgtype__, typestore=store)
                messages.append((0, connection, store.serialize_cdr(String(data="hi"), String.__msgtype__)))
                continue
            connection = writer.add_connection(topic, Image.__msgtype__, typestore=store)
            for stamp, array, encoding in items:
                fields = array_to_image_fields(array, "16UC1" if encoding == "corrupt" else encoding)
                fields["data"] = np.frombuffer(fields["data"], np.uint8)
                header = Header(stamp=Time(sec=stamp // 1_000_000, nanosec=stamp % 1_000_000 * 1000), frame_id="cam")
                data = store.serialize_cdr(Image(header=header, **fields), Image.__msgtype__)
                messages.append((stamp * 1000, connection, data[: len(data) // 2] if encoding == "corrupt" else data))
        for time_ns, connection, data in sorted(messages, key=lambda m: m[0]):
            writer.write(connection, time_ns, data)


def depth_frames(n=6, shape=(8, 12)):
    rng = np.random.default_rng(1)
    return [rng.integers(1, 20000, shape).astype(np.uint16) for _ in range(n)]


def labels_for(indices, shape=(8, 12), offset_us=500):
    rng = np.random.default_rng(2)
    labels = {}
    for i in indices:
        label = rng.integers(0, 11, shape).astype(np.uint8)
        label[0, 0] = 255
        labels[i] = (FRAME_STAMPS_US[i] + offset_us, label, "mono8")
    return labels


def test_labelled_frames_become_the_evaluation_split_and_are_held_out(tmp_path):
    depth = depth_frames()
    labels = labels_for([1, 4])
    far = (FRAME_STAMPS_US[2] + 40_000, labels[1][1], "mono8")  # 40 ms from any frame: unmatched
    write_bag(tmp_path / "bag", {"/depth": [(s, d, "16UC1") for s, d in zip(FRAME_STAMPS_US, depth)],
                                 "/labels": [labels[1], far, labels[4]]})
    result = extract_bag_target(tmp_path / "bag", "/depth", tmp_path / "out", modality="depth", label_topic="/labels",
                                label_tolerance_us=10_000)
    assert (result.frames, result.labelled, result.labels, result.unmatched_labels) == (4, 2, 3, 1)
    assert not result.transductive and result.test == tmp_path / "out" / "test"
    target, test = FolderMeta.read(result.target), FolderMeta.read(result.test)
    assert not target.has_labels and test.has_labels and test.label_set == "dsec11"
    assert target.stamps_us == tuple(FRAME_STAMPS_US[i] for i in (0, 2, 3, 5))
    assert test.stamps_us == (FRAME_STAMPS_US[1], FRAME_STAMPS_US[4])
    spec = InputSpec("depth", height=8, width=12)
    evaluation = FolderDataset(result.test, spec)
    for k, i in enumerate((1, 4)):
        np.testing.assert_array_equal(read_image(result.test, "depth", test.frames[k]), depth[i])
        np.testing.assert_array_equal(evaluation[k].label, labels[i][1])
    assert sorted(p.stem for p in (result.target / "depth").iterdir()) == list(target.frames)  # nothing left behind
    # every=2 thins the unlabelled frames only; the labelled ones stay in the evaluation split
    thinned = extract_bag_target(tmp_path / "bag", "/depth", tmp_path / "out", modality="depth", label_topic="/labels",
                                 every=2)
    assert FolderMeta.read(thinned.target).stamps_us == (FRAME_STAMPS_US[0], FRAME_STAMPS_US[2])
    assert thinned.labelled == 2 and sorted(p.stem for p in (thinned.target / "depth").iterdir()) == \
        list(FolderMeta.read(thinned.target).frames)


def test_the_target_cache_is_reused_and_rebuilt_when_settings_change(tmp_path):
    write_bag(tmp_path / "bag", {"/depth": [(s, d, "16UC1") for s, d in zip(FRAME_STAMPS_US, depth_frames())],
                                 "/labels": list(labels_for([2]).values())})
    first = extract_bag_target(tmp_path / "bag", "/depth", tmp_path / "out", modality="depth", label_topic="/labels")
    marker = tmp_path / "out" / "bag_target.json"
    before = marker.stat().st_mtime_ns
    assert extract_bag_target(tmp_path / "bag", "/depth", tmp_path / "out", modality="depth",
                              label_topic="/labels") == first
    assert marker.stat().st_mtime_ns == before
    assert first.tolerance_us == 1_000 and first.labelled == 1  # bag_eval's default for images
    with pytest.raises(InputError, match="none of the 1 labels on '/labels' lies within 0.1 ms"):
        extract_bag_target(tmp_path / "bag", "/depth", tmp_path / "out", modality="depth", label_topic="/labels",
                           label_tolerance_us=100)
    assert not (tmp_path / "out").exists()  # the stale cache was replaced, the failed one not left half-written
    unlabelled = extract_bag_target(tmp_path / "bag", "/depth", tmp_path / "out", modality="depth")
    assert unlabelled.test is None and unlabelled.frames == 6 and not (tmp_path / "out" / "test").exists()


def test_a_fully_labelled_bag_is_adapted_to_transductively(tmp_path):
    write_bag(tmp_path / "bag", {"/depth": [(s, d, "16UC1") for s, d in zip(FRAME_STAMPS_US, depth_frames())],
                                 "/labels": list(labels_for(range(6), offset_us=0).values())})
    result = extract_bag_target(tmp_path / "bag", "/depth", tmp_path / "out", modality="depth", label_topic="/labels",
                                label_tolerance_us=0)
    assert result.transductive and result.frames == result.labelled == 6
    assert FolderMeta.read(result.target).frames == FolderMeta.read(result.test).frames
    assert not FolderMeta.read(result.target).has_labels


def test_bad_label_topics_are_named(tmp_path):
    depth = [(s, d, "16UC1") for s, d in zip(FRAME_STAMPS_US, depth_frames())]
    wide = list(labels_for([1], shape=(8, 13)).values())
    bad_values = [(FRAME_STAMPS_US[1], np.full((8, 12), 11, np.uint8), "mono8")]
    mono16 = [(FRAME_STAMPS_US[1], np.zeros((8, 12), np.uint16), "mono16")]
    write_bag(tmp_path / "bag", {"/depth": depth, "/wide": wide, "/bad": bad_values, "/mono16": mono16,
                                 "/chatter": "std_msgs/msg/String"})

    def extract(label_topic, topic="/depth"):
        return extract_bag_target(tmp_path / "bag", topic, tmp_path / "out", modality="depth", label_topic=label_topic)

    with pytest.raises(DecodeError, match=r"has no label topic '/nope'; it has: /bad \(sensor_msgs/msg/Image\), "
                                          r"/chatter \(std_msgs/msg/String\)"):
        extract("/nope")
    with pytest.raises(DecodeError, match="label topic /chatter is std_msgs/msg/String; labels must be sensor_msgs/msg/Image"):
        extract("/chatter")
    with pytest.raises(DecodeError, match="topic '/chatter' is std_msgs/msg/String, not sensor_msgs/msg/Image"):
        extract("", topic="/chatter")
    # unusable labels are counted and left out (bag_eval's label reader); with none left the error names why
    with pytest.raises(InputError, match="'/mono16' of .* has no usable label .*label images must be mono8 class ids, "
                                         "got mono16"):
        extract("/mono16")
    with pytest.raises(InputError, match="none of the 1 labels on '/wide' that match a frame can be used: label at "
                                         "100100500 µs on '/wide' is 13×8 but its frame is 12×8"):
        extract("/wide")
    with pytest.raises(InputError, match=r"values \[11\] outside dsec11"):
        extract("/bad")
    with pytest.raises(ConfigError, match="must differ from the frame topic"):
        extract("/depth")
    assert not (tmp_path / "out").exists()
    precious = tmp_path / "thesis"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    with pytest.raises(ConfigError, match="is not a bag-derived target set written by madm"):
        extract_bag_target(tmp_path / "bag", "/depth", precious, modality="depth")
    assert (precious / "thesis.tex").read_text() == "years of work"


def test_bad_messages_and_frames_are_counted_and_left_out_as_bag_eval_counts_them(tmp_path):
    depth = depth_frames()
    nan = np.full((8, 12), np.nan, np.float32)  # no valid pixel
    metres = np.where(depth[2] % 7 == 0, np.nan, depth[2] / 1000).astype(np.float32)  # partly invalid: stays
    frames = [(FRAME_STAMPS_US[0], depth[0], "16UC1"), (FRAME_STAMPS_US[1], nan, "32FC1"),
              (FRAME_STAMPS_US[2], metres, "32FC1"), (FRAME_STAMPS_US[3], depth[3], "corrupt"),
              (FRAME_STAMPS_US[4], np.zeros((8, 12, 3), np.uint8), "8UC3"), (FRAME_STAMPS_US[5], depth[5], "16UC1")]
    labels = labels_for([1, 5])
    write_bag(tmp_path / "bag", {"/depth": frames, "/labels": [labels[1], labels[5]]})
    result = extract_bag_target(tmp_path / "bag", "/depth", tmp_path / "out", modality="depth", label_topic="/labels")
    assert (result.frames, result.labelled, result.labels, result.unmatched_labels, result.bag_frames) == (2, 1, 2, 1, 4)
    counts = {w["kind"]: w["count"] for w in result.warnings}
    assert counts == {"invalid_frame": 1, "undecodable_message": 1, "wrong_encoding:8UC3": 1, "label_on_unusable_frame": 1}
    texts = {w["kind"]: w["message"] for w in result.warnings}
    assert "depth frame has no valid pixel" in texts["invalid_frame"]
    assert "depth input must have encoding 16UC1 or 32FC1 or mono8" in texts["wrong_encoding:8UC3"]
    target, test = FolderMeta.read(result.target), FolderMeta.read(result.test)
    assert target.stamps_us == (FRAME_STAMPS_US[0], FRAME_STAMPS_US[2]) and test.stamps_us == (FRAME_STAMPS_US[5],)
    millimetres = read_image(result.target, "depth", target.frames[1])  # 32FC1 stored as 16UC1 mm, NaN as 0
    np.testing.assert_array_equal(millimetres, np.where(depth[2] % 7 == 0, 0, depth[2]))
    np.testing.assert_array_equal(FolderDataset(result.test, InputSpec("depth", height=8, width=12))[0].label, labels[5][1])
    summary = json.loads((tmp_path / "out" / "bag_target.json").read_text())["summary"]
    assert summary["messages"] == 6 and {w["kind"] for w in summary["warnings"]} == set(counts)
    assert "'invalid_frame': 1" in target.notes["depth"] and "'undecodable_message': 1" in target.notes["depth"]
    frames_only = extract_bag_frames(tmp_path / "bag", "/depth", tmp_path / "frames", modality="depth")
    assert frames_only.stamps_us == tuple(FRAME_STAMPS_US[i] for i in (0, 2, 5))
    assert "'wrong_encoding:8UC3': 1" in frames_only.notes["depth"]


def test_a_topic_without_a_usable_frame_is_an_error_naming_why_and_an_old_cache_stays(tmp_path):
    write_bag(tmp_path / "good", {"/depth": [(s, d, "16UC1") for s, d in zip(FRAME_STAMPS_US, depth_frames())]})
    write_bag(tmp_path / "bad", {"/depth": [(FRAME_STAMPS_US[0], np.full((8, 12), np.nan, np.float32), "32FC1"),
                                            (FRAME_STAMPS_US[1], np.zeros((8, 12, 3), np.uint8), "8UC3")]})
    for extract in (extract_bag_frames, extract_bag_target):
        out = tmp_path / extract.__name__
        extract(tmp_path / "good", "/depth", out, modality="depth")
        before = sorted(p.relative_to(out) for p in out.rglob("*"))
        with pytest.raises(InputError, match=r"topic '/depth' of .*bad gave no usable depth frame \(2 messages read\): "
                                             r"frame at 100000000000 ns left out: depth frame has no valid pixel .*; "
                                             r"8UC3 image at 100100000000 ns skipped: depth input must have .*\. Record the "
                                             r"depth camera's own 16UC1"):
            extract(tmp_path / "bad", "/depth", out, modality="depth")
        assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing was deleted
