import numpy as np
import pytest

from madm_ros.errors import ConfigError, DecodeError
from madm_ros.events.bags import iter_event_messages
from madm_ros.events.codecs import PacketDecoder, decode_packet
from madm_ros.events.edge_frames import EdgeFrameAccumulator, EdgeFrameConfig
from madm_ros.image_conversion import array_to_image_fields
from madm_ros.preprocessing import InputSpec, preprocess
from madm_train.bag_target import extract_bag_frames
from madm_train.datasets import FolderDataset
from madm_train.folder_layout import FolderMeta, read_image

EVENT_BAG = "event_camera/ros2_bags/test_events_1"


def test_event_bag_frames_equal_the_accumulator_fed_with_the_same_packets(tmp_path, shared_data):
    config = {"window_us": 20_000, "polarity": "signed", "neutral": 0.5}
    meta = extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", tmp_path / "cache", modality="events",
                              events_config=config)
    decoder, accumulator = None, None
    frames = []
    for _, _, _, msg in iter_event_messages(shared_data / EVENT_BAG, "/event_camera/events"):
        decoder = decoder or PacketDecoder(msg.encoding, msg.width, msg.height)
        accumulator = accumulator or EdgeFrameAccumulator(EdgeFrameConfig(width=640, height=480, **config))
        frames += accumulator.push(decode_packet(msg, decoder))
    assert len(frames) == len(meta.frames) > 50
    for name, frame, stamp in zip(meta.frames, frames, meta.stamps_us):
        np.testing.assert_array_equal(read_image(tmp_path / "cache", "events", name), frame.image)
        assert stamp == frame.t_end_us
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
                               events_config={"window_us": 10_000})
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
    with pytest.raises(ConfigError, match="one-channel edge frames"):
        extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", tmp_path / "c", modality="events",
                           events_config={"polarity": "split"})
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
    with pytest.raises(ConfigError, match="unknown events_config keys \\['windw_us'\\]"):
        extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", tmp_path / "x", modality="events",
                           events_config={"windw_us": 1})
    with pytest.raises(ConfigError, match="must not set \\['width'\\]"):
        extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", tmp_path / "x", modality="events",
                           events_config={"width": 1})


def test_a_cache_with_tuple_settings_is_reused(tmp_path, shared_data):
    out = tmp_path / "cache"
    config = {"crop": (0, 0, 640, 440)}
    first = extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", out, modality="events",
                               events_config=config, max_frames=2)
    stamp = (out / "meta.json").stat().st_mtime_ns
    again = extract_bag_frames(shared_data / EVENT_BAG, "/event_camera/events", out, modality="events",
                               events_config=config, max_frames=2)
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
