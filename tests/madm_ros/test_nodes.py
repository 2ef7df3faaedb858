"""The segmentation nodes over real rclpy on the loopback: masks equal the offline pipeline's, bad input survives."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros
rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from madm_ros.events.edge_frames import EdgeFrameAccumulator, EdgeFrameConfig  # noqa: E402
from madm_ros.events.types import Events  # noqa: E402
from madm_ros.image_conversion import array_to_image_fields, image_to_array  # noqa: E402
from madm_ros.segmenter import Segmenter  # noqa: E402
from tests.madm_ros.ros_harness import (  # noqa: E402
    Collector,
    play_bag_into,
    publish_until_matched,
    publisher_in_another_participant,
    spinning,
    wait_until,
)

HEIGHT, WIDTH = 100, 150


def image_msg(array: np.ndarray, encoding: str, sec: int = 7, frame_id: str = "camera_optical") -> Image:
    message = Image(**array_to_image_fields(array, encoding))
    message.header.stamp.sec, message.header.stamp.nanosec = sec, 250
    message.header.frame_id = frame_id
    return message


def image_node(model, **params):
    from madm_ros.nodes.image_segmentation import ImageSegmentationNode

    overrides = [Parameter("model_file_path", value=str(model)), Parameter("threads", value=1),
                 *(Parameter(k, value=v) for k, v in params.items())]
    return ImageSegmentationNode("seg", parameter_overrides=overrides)


def sensor_arrays():
    rng = np.random.default_rng(0)
    depth_mm = rng.integers(300, 60_000, (HEIGHT, WIDTH)).astype(np.uint16)
    depth_m = rng.uniform(0.2, 90.0, (HEIGHT, WIDTH)).astype(np.float32)
    depth_m[:5] = np.nan
    depth_m[5:10] = np.inf
    depth_m[10:12] = 0
    thermal = rng.integers(7000, 9000, (HEIGHT, WIDTH)).astype(np.uint16)
    return {"16UC1": ("depth", depth_mm), "32FC1": ("depth", depth_m), "mono16": ("thermal", thermal)}


@pytest.mark.parametrize("encoding", ["16UC1", "32FC1", "mono16"])
def test_images_give_the_offline_masks_exactly_with_the_input_header(ros, tiny_onnx_models, encoding):
    modality, array = sensor_arrays()[encoding]
    node = image_node(tiny_onnx_models[modality], modality=modality)
    masks = Collector(ros, Image, "/seg/raw_segmentation_mask")
    colored = Collector(ros, Image, "/seg/colored_segmentation_mask")
    overlays = Collector(ros, Image, "/seg/segmentation_overlay")
    infos = Collector(ros, CameraInfo, "/seg/camera_info")
    images = ros.create_publisher(Image, "image", 10)
    camera = ros.create_publisher(CameraInfo, "camera_info", 10)
    with spinning(node, ros):
        publish_until_matched(images)
        info = CameraInfo(width=WIDTH, height=HEIGHT, k=[100.0, 0, 75, 0, 100, 50, 0, 0, 1],
                          p=[100.0, 0, 75, 0, 0, 100, 50, 0, 0, 0, 1, 0])
        camera.publish(info)
        wait_until(lambda: node._last_camera_info is not None, 5)
        message = image_msg(array, encoding)
        assert wait_until(lambda: (images.publish(message), len(masks.messages) > 0 and len(overlays.messages) > 0)[1], 20)
    offline = Segmenter.load(tiny_onnx_models[modality], threads=1).segment(array, encoding)
    mask = masks.messages[0]
    assert (mask.encoding, mask.height, mask.width) == ("mono8", HEIGHT, WIDTH)
    assert (mask.header.stamp.sec, mask.header.stamp.nanosec, mask.header.frame_id) == (7, 250, "camera_optical")
    assert np.array_equal(image_to_array(mask), offline.labels)
    assert np.array_equal(image_to_array(colored.messages[0]), offline.colored("rgb8"))
    assert np.array_equal(image_to_array(overlays.messages[0]), offline.overlay(0.5))
    scaled = infos.messages[0]
    assert (scaled.width, scaled.height, list(scaled.k)) == (WIDTH, HEIGHT, list(info.k))
    node.destroy_node()


def test_masks_and_camera_info_follow_mask_size(ros, tiny_onnx_models):
    _, array = sensor_arrays()["16UC1"]
    node = image_node(tiny_onnx_models["depth"], mask_width=75, mask_height=25)
    masks = Collector(ros, Image, "/seg/raw_segmentation_mask")
    infos = Collector(ros, CameraInfo, "/seg/camera_info")
    images = ros.create_publisher(Image, "image", 10)
    camera = ros.create_publisher(CameraInfo, "camera_info", 10)
    with spinning(node, ros):
        publish_until_matched(images)
        camera.publish(CameraInfo(width=WIDTH, height=HEIGHT, k=[100.0, 0, 75, 0, 100, 50, 0, 0, 1]))
        wait_until(lambda: node._last_camera_info is not None, 5)
        assert wait_until(lambda: (images.publish(image_msg(array, "16UC1")), bool(infos.messages))[1], 20)
    mask = masks.wait_for(1)[0]
    assert (mask.height, mask.width) == (25, 75)
    assert list(infos.messages[0].k) == [50.0, 0, 37.5, 0, 25.0, 12.5, 0, 0, 1]
    node.destroy_node()


def test_a_frame_is_published_with_the_camera_info_current_when_it_arrived(ros, tiny_onnx_models):
    """A calibration that arrives while a frame waits for inference belongs to later frames, not to that one."""
    _, array = sensor_arrays()["16UC1"]
    node = image_node(tiny_onnx_models["depth"])
    infos = Collector(ros, CameraInfo, "/seg/camera_info")
    with spinning(ros):
        assert wait_until(lambda: node.wanted("camera_info"))
    jobs = []
    node._slot.put = jobs.append  # the inference thread stays idle: the frames are processed below, in order
    before = CameraInfo(width=WIDTH, height=HEIGHT, k=[100.0, 0, 75, 0, 100, 50, 0, 0, 1])
    after = CameraInfo(width=WIDTH, height=HEIGHT, k=[200.0, 0, 70, 0, 200, 40, 0, 0, 1])
    node._on_camera_info(before)
    node._on_input(image_msg(array, "16UC1", sec=1))
    node._on_camera_info(after)  # while the first frame waits
    node._on_input(image_msg(array, "16UC1", sec=2))
    for job in jobs:
        node._process(job)
    with spinning(node, ros):
        published = infos.wait_for(2)
    assert [(m.header.stamp.sec, list(m.k)) for m in published[:2]] == [(1, list(before.k)), (2, list(after.k))]
    node.destroy_node()


def test_bad_images_are_logged_counted_and_survived(ros, tiny_onnx_models):
    _, depth = sensor_arrays()["16UC1"]
    node = image_node(tiny_onnx_models["depth"])
    masks = Collector(ros, Image, "/seg/raw_segmentation_mask")
    diagnostics = Collector(ros, DiagnosticArray, "/diagnostics")
    images = ros.create_publisher(Image, "image", 10)
    truncated = image_msg(depth, "16UC1")
    truncated.data = bytes(truncated.data)[:-100]
    unknown = image_msg(depth.view(np.uint8).reshape(HEIGHT, WIDTH * 2), "mono8")
    unknown.encoding = "yuv422_yuy2"
    # each with the counter it must move (one at a time: a frame waiting for inference may be replaced by the next)
    colour = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
    bad = [(image_msg(colour, "8UC3"), "problem_bad_input:InputError"), (truncated, "problem_bad_image:16UC1"),
           (unknown, "problem_bad_image:yuv422_yuy2"), (image_msg(depth[:50, :60], "16UC1"), "problem_size_change")]
    with spinning(node, ros):
        publish_until_matched(images)
        for message, counter in bad:
            images.publish(message)
            assert wait_until(lambda counter=counter: counter in node.counters(), 20), counter
        good = image_msg(depth, "16UC1", sec=99)
        assert wait_until(lambda: (images.publish(good), any(m.header.stamp.sec == 99 for m in masks.messages))[1], 20)
        assert wait_until(lambda: any(s.level == DiagnosticStatus.WARN for d in diagnostics.messages for s in d.status), 5)
    counters = node.counters()
    assert counters["problem_bad_image:16UC1"] == 1 and counters["problem_bad_image:yuv422_yuy2"] == 1
    assert counters["problem_bad_input:InputError"] == 1  # 8UC3 into a depth model
    assert counters["problem_size_change"] >= 1
    keys = {kv.key for s in diagnostics.messages[-1].status for kv in s.values}
    assert {"frame_rate_node", "total_dropped_frames", "processing_time_ms", "current_delay_from_realtime_ms"} <= keys
    node.destroy_node()


def test_a_missing_model_fails_configure_and_the_node_reports_it(ros, tmp_path):
    from madm_ros.nodes.image_segmentation import ImageSegmentationNode

    missing = tmp_path / "nowhere.onnx"
    node = ImageSegmentationNode("seg", parameter_overrides=[Parameter("model_file_path", value=str(missing))])
    diagnostics = Collector(ros, DiagnosticArray, "/diagnostics")
    with spinning(node, ros):
        errors = lambda: [s for d in diagnostics.messages for s in d.status if s.level == DiagnosticStatus.ERROR]  # noqa: E731
        assert wait_until(lambda: bool(errors()), 10)
    assert node.segmenter is None and str(missing) in errors()[0].message
    assert node.counters()["problem_configure_failed"] == 1
    node.destroy_node()


def test_lifecycle_loads_on_configure_subscribes_on_activate_and_releases_on_cleanup(ros, tiny_onnx_models):
    _, depth = sensor_arrays()["16UC1"]
    node = image_node(tiny_onnx_models["depth"], autostart=False)
    masks = Collector(ros, Image, "/seg/raw_segmentation_mask")
    images = ros.create_publisher(Image, "image", 10)
    with spinning(node, ros):
        assert node.segmenter is None and images.get_subscription_count() == 0
        node.trigger_configure()
        assert node.segmenter is not None and images.get_subscription_count() == 0
        node.trigger_activate()
        publish_until_matched(images)
        assert wait_until(lambda: (images.publish(image_msg(depth, "16UC1")), bool(masks.messages))[1], 20)
        node.trigger_deactivate()
        assert wait_until(lambda: images.get_subscription_count() == 0, 5)
        node.trigger_cleanup()
        assert node.segmenter is None
    node.destroy_node()


def test_the_image_node_takes_images_only_while_someone_listens(ros, tiny_onnx_models):
    _, depth = sensor_arrays()["16UC1"]
    node = image_node(tiny_onnx_models["depth"])
    images = ros.create_publisher(Image, "image", 10)
    with spinning(node, ros):
        time.sleep(0.5)
        assert images.get_subscription_count() == 0 and node.counters()["input_subscribed"] == 0  # nothing converted
        overlay = Collector(ros, Image, "/seg/segmentation_overlay", 10)
        publish_until_matched(images)
        # DDS may match the publisher a moment before the executor thread has stored the new subscription
        assert wait_until(lambda: node.counters()["input_subscribed"] == 1, 5)
        assert wait_until(lambda: (images.publish(image_msg(depth, "16UC1")), bool(overlay.messages))[1], 20)
        ros.destroy_subscription(overlay.subscription)
        assert wait_until(lambda: images.get_subscription_count() == 0, 5)  # the last listener left
    assert node.counters()["frames_out"] >= 1 and node.counters()["input_subscribed"] == 0
    node.destroy_node()


def test_event_node_turns_packed_events_into_the_offline_edge_frames_and_masks(ros, tiny_onnx_models):
    from madm_ros.msg import PackedEvents

    from madm_ros.nodes.event_segmentation import EventSegmentationNode

    rng = np.random.default_rng(1)
    n, width, height = 60_000, 128, 96
    events = Events(rng.integers(0, width, n).astype(np.uint16), rng.integers(0, height, n).astype(np.uint16),
                    np.sort(rng.integers(0, 300_000, n)).astype(np.int64), rng.integers(0, 2, n).astype(np.uint8))
    node = EventSegmentationNode("events_seg", parameter_overrides=[
        Parameter("model_file_path", value=str(tiny_onnx_models["events"])), Parameter("threads", value=1),
        Parameter("message_type", value="packed"), Parameter("accumulation_time_ms", value=20),
        Parameter("input_qos", value="DEFAULT")])
    edges = Collector(ros, Image, "/events_seg/edge_frame", 1000)
    masks = Collector(ros, Image, "/events_seg/raw_segmentation_mask", 1000)
    publisher = ros.create_publisher(PackedEvents, "events", 1000)
    config = EdgeFrameConfig(width=width, height=height, window_us=20_000)
    offline = EdgeFrameAccumulator(config).push(events)
    base_ns = 1_000 * 10**9
    with spinning(node, ros):
        publish_until_matched(publisher)
        for i, part in enumerate(np.array_split(np.arange(n), 40)):
            chunk = events[part]
            message = PackedEvents(width=width, height=height, seq=i, x=chunk.x, y=chunk.y, t=chunk.t, polarity=chunk.p)
            stamp = base_ns + int(chunk.t[-1]) * 1000
            message.header.stamp.sec, message.header.stamp.nanosec = stamp // 10**9, stamp % 10**9
            message.header.frame_id = "dvs"
            publisher.publish(message)
        got = edges.wait_for(len(offline))
        mask_list = masks.wait_for(1)
        assert wait_until(lambda: node.counters()["frames_out"] + node.counters()["total_dropped_frames"] >= len(offline))
        wait_until(lambda: node.source.messages == 40)  # the last messages complete no frame: let them arrive too
    assert len(got) == len(offline) == 14
    segmenter = Segmenter.load(tiny_onnx_models["events"], threads=1)
    by_stamp = {}
    for message, frame in zip(got, offline, strict=True):
        stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
        assert stamp == base_ns + frame.t_end_us * 1000 and message.header.frame_id == "dvs"
        assert np.array_equal(image_to_array(message), frame.image)
        by_stamp[stamp] = frame.image
    for mask in mask_list:
        stamp = mask.header.stamp.sec * 10**9 + mask.header.stamp.nanosec
        assert (mask.height, mask.width, mask.header.frame_id) == (height, width, "dvs")
        assert np.array_equal(image_to_array(mask), segmenter.segment(by_stamp[stamp], "mono8").labels)
    counters = node.counters()
    assert counters["events_decode_events"] == n and not math.isnan(counters["processing_time_ms"])
    node.destroy_node()


def test_the_real_evt3_bag_played_from_another_process_gives_the_offline_frames(ros, tiny_onnx_models, event_bag):
    from madm_ros.events.bags import iter_event_messages, read_bag_events
    from madm_ros.nodes.event_segmentation import EventSegmentationNode

    events, _, _ = read_bag_events(event_bag)
    offline = EdgeFrameAccumulator(EdgeFrameConfig(width=640, height=480, window_us=50_000)).push(events)
    _, _, _, first = next(iter_event_messages(event_bag))
    first_ns = first.header.stamp.sec * 10**9 + first.header.stamp.nanosec
    node = EventSegmentationNode("events_seg", parameter_overrides=[
        Parameter("model_file_path", value=str(tiny_onnx_models["events"])), Parameter("threads", value=1),
        Parameter("input_qos", value="DEFAULT")], cli_args=["--ros-args", "-r", "events:=/event_camera/events"])
    edges = Collector(ros, Image, "/events_seg/edge_frame", 1000)
    masks = Collector(ros, Image, "/events_seg/raw_segmentation_mask", 1000)
    got = play_bag_into(node, ros, event_bag, edges, len(offline))
    assert len(got) == len(offline) >= 30
    offset_ns = first_ns - int(events.t[0]) * 1000
    for message, frame in zip(got, offline, strict=True):
        assert np.array_equal(image_to_array(message), frame.image)
        assert message.header.stamp.sec * 10**9 + message.header.stamp.nanosec == offset_ns + frame.t_end_us * 1000
        assert message.header.frame_id == first.header.frame_id
    mask_list = masks.messages
    assert len(mask_list) >= len(offline) // 2  # frames may be dropped under load, never most of them
    assert all((m.height, m.width, m.encoding) == (480, 640, "mono8") for m in mask_list)
    stamps = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in got}
    assert all(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec in stamps for m in mask_list)
    node.destroy_node()


def event_node(model, **params):
    from madm_ros.nodes.event_segmentation import EventSegmentationNode

    overrides = [Parameter("model_file_path", value=str(model)), Parameter("threads", value=1),
                 *(Parameter(k, value=v) for k, v in params.items())]
    return EventSegmentationNode("events_seg", parameter_overrides=overrides)


def evt3_packet(chunk: Events, seq: int, stamp_ns: int, width: int = 128, height: int = 96, **changes):
    from event_camera_msgs.msg import EventPacket

    from madm_ros.events.codecs import encode_evt3

    message = EventPacket(width=width, height=height, seq=seq, time_base=0, encoding="evt3", events=encode_evt3(chunk))
    message.header.stamp.sec, message.header.stamp.nanosec = stamp_ns // 10**9, stamp_ns % 10**9
    message.header.frame_id = "evk4"
    for name, value in changes.items():
        setattr(message, name, value)
    return message


def random_events(n: int, t0: int, t1: int, seed: int, width: int = 128, height: int = 96) -> Events:
    rng = np.random.default_rng(seed)
    return Events(rng.integers(0, width, n).astype(np.uint16), rng.integers(0, height, n).astype(np.uint16),
                  np.sort(rng.integers(t0, t1, n)).astype(np.int64), rng.integers(0, 2, n).astype(np.uint8))


def test_an_event_packet_takes_one_straight_path_from_the_callback_to_the_published_mask(ros, tiny_onnx_models):
    """The files with logic one evt3 packet passes, traced, in order: stream, decoder and accumulator entered once each.

    Per packet: the node's callback, the stream, the decoder and the accumulator (with their numba
    kernel files), and the header of a completed frame; per completed frame also the hand-over
    slot, the segmenter, preprocessing, the backend and the output messages. Small leaf helpers
    (stamps, event slicing, size limits, the label set, batch checks, message fields, frame
    counters) are listed apart.
    """
    import sys
    from pathlib import Path

    import madm_ros

    pytest.importorskip("event_camera_msgs")
    root = Path(madm_ros.__file__).parent
    node = event_node(tiny_onnx_models["events"], input_qos="DEFAULT")
    masks = Collector(ros, Image, "/events_seg/raw_segmentation_mask", 10)
    with spinning(ros):
        assert wait_until(lambda: node.wanted("raw_segmentation_mask"))
    jobs = []
    node._slot.put = jobs.append  # the inference thread stays idle: the frame is processed below, traced
    calls: list[tuple[str, str]] = []

    def trace(frame, event, arg):
        path = Path(frame.f_code.co_filename)
        if event == "call" and path.is_relative_to(root):
            calls.append((path.relative_to(root).as_posix(), frame.f_code.co_name))

    packets = [evt3_packet(random_events(500, k * 10_000, (k + 1) * 10_000, seed=k), k, 10**9 + k * 10**7) for k in range(6)]
    for packet in packets[:5]:  # slices of 50 ms: the sixth packet completes the first frame
        node._on_input(packet)
    sys.setprofile(trace)
    try:
        node._on_input(packets[5])
        packet_calls = list(calls)
        node._process(jobs[-1])
    finally:
        sys.setprofile(None)
    assert len(jobs) == 1
    helpers = {"ros_messages.py", "events/types.py", "limits.py", "palettes.py", "backends/__init__.py",
               "image_conversion.py", "nodes/diagnostics.py"}
    packet_files = list(dict.fromkeys(f for f, _ in packet_calls if f not in helpers))
    assert packet_files == ["nodes/base.py", "events/stream.py", "events/codecs.py", "events/_kernels_decode.py",
                            "events/edge_frames.py", "events/_kernels_accumulate.py", "nodes/messages.py"]
    for stage in (("events/stream.py", "push"), ("events/codecs.py", "decode_packet"), ("events/edge_frames.py", "push")):
        assert packet_calls.count(stage) == 1, stage  # decoded once, accumulated once, through the stream once
    frame_files = list(dict.fromkeys(f for f, _ in calls[len(packet_calls):] if f not in helpers))
    assert frame_files == ["nodes/base.py", "segmenter.py", "preprocessing.py", "backends/ort.py",
                           "nodes/messages.py"]
    with spinning(node, ros):
        assert masks.wait_for(1)
    node.destroy_node()


def test_a_publisher_of_another_event_type_is_reported_until_a_message_arrives(ros, tiny_onnx_models):
    from madm_ros.msg import PackedEvents

    with publisher_in_another_participant(PackedEvents, "events"):  # the node expects event_packet
        node = event_node(tiny_onnx_models["events"], diagnostics_period_s=0.2)
        Collector(ros, Image, "/events_seg/raw_segmentation_mask", 10)  # someone listens: the node subscribes to events
        with spinning(node, ros):
            assert wait_until(lambda: node.problems.counts.get("events_type_mismatch", 0) > 0)
        node.destroy_node()
    assert "madm_ros/msg/PackedEvents" in node.problems.first_text["events_type_mismatch"]
    assert "set message_type" in node.problems.first_text["events_type_mismatch"]


def test_a_compressed_topic_remapped_to_image_is_reported(ros, tiny_onnx_models):
    from sensor_msgs.msg import CompressedImage

    with publisher_in_another_participant(CompressedImage, "image"):
        node = image_node(tiny_onnx_models["depth"], modality="depth", diagnostics_period_s=0.2)
        Collector(ros, Image, "/seg/raw_segmentation_mask", 10)
        with spinning(node, ros):
            assert wait_until(lambda: node.problems.counts.get("image_type_mismatch", 0) > 0)
        node.destroy_node()
    text = node.problems.first_text["image_type_mismatch"]
    assert "sensor_msgs/msg/CompressedImage" in text and "republish" in text


def test_a_best_effort_camera_and_a_reliable_input_qos_are_reported_as_incompatible(ros, tiny_onnx_models):
    from rclpy.qos import qos_profile_sensor_data

    with publisher_in_another_participant(Image, "image", qos_profile_sensor_data):  # best effort, as most cameras
        node = image_node(tiny_onnx_models["depth"], modality="depth", input_qos="DEFAULT")  # reliable
        Collector(ros, Image, "/seg/raw_segmentation_mask", 10)
        with spinning(node, ros):
            assert wait_until(lambda: node.problems.counts.get("input_qos_incompatible", 0) > 0)
            assert node.counters()["problem_input_qos_incompatible"] >= 1  # in /diagnostics
        node.destroy_node()
    text = node.problems.first_text["input_qos_incompatible"]
    assert "RELIABILITY" in text and "SENSOR_DATA" in text


def test_a_reliable_display_on_best_effort_outputs_is_reported_as_incompatible(ros, tiny_onnx_models):
    node = image_node(tiny_onnx_models["depth"], modality="depth", output_qos="SENSOR_DATA")  # best effort
    Collector(ros, Image, "/seg/colored_segmentation_mask", 10)  # reliable, as RViz's default
    with spinning(node, ros):
        assert wait_until(lambda: node.problems.counts.get("output_qos_incompatible", 0) > 0)
    text = node.problems.first_text["output_qos_incompatible"]
    assert "~/colored_segmentation_mask" in text and "RELIABILITY" in text and "DEFAULT" in text
    node.destroy_node()


def test_an_input_that_cannot_be_subscribed_is_counted_and_the_node_keeps_running(ros, tiny_onnx_models):
    from madm_ros.msg import PackedEvents

    ros.create_publisher(PackedEvents, "events", 10)  # same process: DDS refuses a second type on the topic
    node = event_node(tiny_onnx_models["events"])
    Collector(ros, Image, "/events_seg/raw_segmentation_mask", 10)
    with spinning(node, ros):
        assert wait_until(lambda: node.problems.counts.get("input_subscription_failed", 0) >= 2)  # retried
        assert node.failure == "" and node._main_input is None
    assert "message type" in node.problems.first_text["input_subscription_failed"]
    node.destroy_node()


def test_bad_event_packets_are_counted_and_the_node_keeps_segmenting(ros, tiny_onnx_models):
    pytest.importorskip("event_camera_msgs")
    from event_camera_msgs.msg import EventPacket

    node = event_node(tiny_onnx_models["events"], input_qos="DEFAULT", restart_after_ms=100.0)
    masks = Collector(ros, Image, "/events_seg/raw_segmentation_mask", 1000)
    diagnostics = Collector(ros, DiagnosticArray, "/diagnostics")
    publisher = ros.create_publisher(EventPacket, "events", 1000)
    good = random_events(20_000, 0, 400_000, seed=2)
    parts = [good[i:i + 1000] for i in range(0, len(good), 1000)]
    base = 50 * 10**9
    bad = [
        evt3_packet(Events.empty(), 100, base),  # empty
        evt3_packet(parts[0], 101, base, encoding="evt9"),  # unknown encoding
        evt3_packet(parts[0], 102, base, width=0),  # impossible size
        evt3_packet(parts[0], 103, base, events=bytes(evt3_packet(parts[0], 0, base).events)[:-1]),  # truncated word
        evt3_packet(random_events(500, 0, 1000, seed=3, width=300), 104, base, width=300),  # size change
    ]
    with spinning(node, ros):
        publish_until_matched(publisher)
        for message in bad:
            publisher.publish(message)
        for seq, part in enumerate(parts[:10]):  # a loop: the stream starts again at t = 0
            publisher.publish(evt3_packet(part, seq, base + int(part.t[0]) * 1000))
        for seq, part in enumerate(parts):
            publisher.publish(evt3_packet(part, 1000 + seq, base + int(part.t[0]) * 1000))
        assert wait_until(lambda: len(masks.messages) >= 1, 30)
        assert wait_until(lambda: any(s.level == DiagnosticStatus.WARN for d in diagnostics.messages for s in d.status), 5)
        # The burst outruns inference: the node keeps the latest frame and drops the ones it could not reach
        # (how many depends on the machine's load), so every frame is either segmented or counted as dropped.
        assert wait_until(lambda: (lambda c: c["frames_out"] + c["total_dropped_frames"] == c["frames_in"])(
            node.counters()), 10)
    counters = node.counters()
    assert counters["problem_decode_error"] == 2  # evt9 and width 0
    assert counters["problem_size_change"] >= 2 and counters["problem_time_jump"] == 1
    assert counters["events_decode_empty_packets"] >= 1
    assert all((m.width, m.height) == (128, 96) for m in masks.messages)
    # the latest frame is never dropped: a slice beyond the first loop's 200 ms, so segmenting went on after the jump
    latest = max(m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in masks.messages)
    assert latest >= base + 250 * 10**6
    keys = {kv.key for s in diagnostics.messages[-1].status for kv in s.values}
    assert {"problem_decode_error", "problem_time_jump", "total_dropped_frames"} <= keys
    node.destroy_node()


def test_an_event_flood_drops_frames_not_memory(ros, tiny_onnx_models):
    from madm_ros.msg import PackedEvents

    node = event_node(tiny_onnx_models["events"], message_type="packed", accumulation_time_ms=1.0)
    masks = Collector(ros, Image, "/events_seg/raw_segmentation_mask", 10)
    publisher = ros.create_publisher(PackedEvents, "events", 1000)
    with spinning(node, ros):
        publish_until_matched(publisher)
        t = 0
        for seq in range(150):  # 150 × 40 000 events covering 10 ms each: 1500 frames of 1 ms, far beyond inference
            chunk = random_events(40_000, t, t + 10_000, seed=seq)
            message = PackedEvents(width=128, height=96, seq=seq, x=chunk.x, y=chunk.y, t=chunk.t, polarity=chunk.p)
            message.header.stamp.sec = 100
            publisher.publish(message)
            t += 10_000
        assert wait_until(lambda: node.counters()["frames_in"] > 500, 60)
        time.sleep(1.0)
        counters = node.counters()
        accumulator = node.source._accumulator
        pending = sum(len(chunk) for _, chunk in accumulator._chunks)
    assert counters["total_dropped_frames"] > counters["frames_out"] > 0
    handled = counters["frames_out"] + counters["total_dropped_frames"] + counters["skipped_no_subscribers"]
    in_flight = counters["frames_in"] - handled
    assert 0 <= in_flight <= 1  # one slot: every frame not segmented is counted as dropped
    assert pending <= 2 * 40_000  # the accumulator keeps only the events of the unfinished slice
    assert masks.messages
    node.destroy_node()


def test_use_sim_time_measures_delay_on_the_simulated_clock(ros, tiny_onnx_models):
    from rosgraph_msgs.msg import Clock

    _, depth = sensor_arrays()["16UC1"]
    node = image_node(tiny_onnx_models["depth"], use_sim_time=True)
    masks = Collector(ros, Image, "/seg/raw_segmentation_mask")
    clock = ros.create_publisher(Clock, "/clock", 10)
    images = ros.create_publisher(Image, "image", 10)
    with spinning(node, ros):
        publish_until_matched(images)
        tick = Clock()
        tick.clock.sec = 1000
        assert wait_until(lambda: (clock.publish(tick), node.get_clock().now().nanoseconds == 1000 * 10**9)[1], 10)
        message = image_msg(depth, "16UC1", sec=999)
        assert wait_until(lambda: (images.publish(message), bool(masks.messages))[1], 20)
    delay = node.counters()["current_delay_from_realtime_ms"]
    assert delay == pytest.approx(999.99975, abs=1e-4)  # sim now 1000 s minus stamp 999 s + 250 ns, not wall time
    node.destroy_node()


def test_parameters_are_declared_with_descriptions_ranges_choices_and_read_only(ros, tiny_onnx_models):
    from madm_ros.node_params import PARAMETER_RULES, EventParams, ImageParams, parameter_table

    for cls in (ImageParams, EventParams):
        for info in parameter_table(cls):
            assert info.description and info.name in PARAMETER_RULES, info.name
            rule = info.rule
            if rule.low is not None and not isinstance(info.default, tuple):
                assert rule.low <= info.default <= rule.high, info.name
            assert not rule.choices or info.default in rule.choices, info.name
    node = image_node(tiny_onnx_models["depth"])
    alpha = node.describe_parameter("overlay_alpha")
    assert "colour mask" in alpha.description and "applies at once" in alpha.description
    assert "refuses the change if that fails" in node.describe_parameter("model_file_path").description
    assert (alpha.floating_point_range[0].from_value, alpha.floating_point_range[0].to_value) == (0.0, 1.0)
    assert "SENSOR_DATA" in node.describe_parameter("input_qos").additional_constraints
    assert node.describe_parameter("autostart").read_only
    node.destroy_node()


def test_a_parameter_the_node_does_not_have_is_reported_not_silently_dropped(ros, tiny_onnx_models, tmp_path):
    """ROS drops what a node does not declare: a misspelt name in a params file or -p is counted and told, once each."""
    from madm_ros.nodes.image_segmentation import ImageSegmentationNode

    params = tmp_path / "typo.yaml"
    params.write_text("/**/seg:\n  ros__parameters:\n    overlay_alphaa: 0.3\n")
    node = ImageSegmentationNode("seg", cli_args=["--ros-args", "--params-file", str(params), "-p", "zz_unknown:=1",
                                                  "-p", f"model_file_path:={tiny_onnx_models['depth']}"])
    assert node.problems.counts["unknown_parameters"] == 2  # one warning naming both
    assert "overlay_alphaa (did you mean overlay_alpha?), zz_unknown;" in node.problems.first_text["unknown_parameters"]
    assert node.failure == ""  # a warning, not a refusal: shared /** files hold other nodes' parameters too
    assert node.counters()["problem_unknown_parameters"] == 2
    node.destroy_node()


def test_set_parameters_applies_live_changes_and_refuses_invalid_values_with_the_reason(ros, tiny_onnx_models):
    pytest.importorskip("event_camera_msgs")
    node = event_node(tiny_onnx_models["events"])
    with spinning(node, ros):
        assert node.segmenter is not None
        (ok,) = node.set_parameters([Parameter("overlay_alpha", value=0.2)])
        assert ok.successful and node.params.overlay_alpha == 0.2  # live: the next frame uses it
        source = node.source
        (ok,) = node.set_parameters([Parameter("accumulation_time_ms", value=20.0)])
        assert ok.successful and node.source is not source  # input: a new frame source with the new window
        assert node.source.edge_fields["window_us"] == 20_000
        (refused,) = node.set_parameters([Parameter("overlay_alpha", value=2.0)])
        assert not refused.successful and node.params.overlay_alpha == 0.2
        (refused,) = node.set_parameters([Parameter("max_gap_ms", value=5.0)])  # below the 20 ms window
        assert not refused.successful and "max_gap_ms must be 0 (off) or ≥ accumulation_time_ms" in refused.reason
        (ok,) = node.set_parameters([Parameter("diagnostics_period_s", value=0.5)])
        assert ok.successful and node._diagnostics_timer.timer_period_ns == 500_000_000  # live: the timer restarted
        from madm_ros.msg import PackedEvents

        from madm_ros.ros_messages import message_class_of

        running = node.segmenter
        (ok,) = node.set_parameters([Parameter("message_type", value="packed")])  # reload: a new input type
        subscribed_type = message_class_of(node._input_type()[0])  # what the main subscription is created with
        assert ok.successful and subscribed_type is PackedEvents and node.segmenter is not running
        assert node._worker is not None and node.params.accumulation_time_ms == 20.0  # still active, settings kept
        node.trigger_deactivate()
        node.trigger_cleanup()
        (ok,) = node.set_parameters([Parameter("model_file_path", value=str(tiny_onnx_models["events"]))])
        assert ok.successful and node.segmenter is None  # unconfigured: applied at the next configure
        assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS and node.segmenter is not None
    node.destroy_node()


def test_a_new_model_is_checked_before_it_replaces_the_running_one(ros, tiny_onnx_models, tmp_path):
    """``ros2 param set model_file_path``: a model that fails leaves the node as it was; a good one is swapped in."""
    import shutil

    from madm_ros.msg import SegmentationInfo

    rng = np.random.default_rng(3)
    depth = rng.integers(300, 60_000, (HEIGHT, WIDTH)).astype(np.uint16)
    node = image_node(tiny_onnx_models["depth"], modality="depth")
    masks = Collector(ros, Image, "/seg/raw_segmentation_mask")
    infos = Collector(ros, SegmentationInfo, "/seg/label_info",
                      QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                 durability=DurabilityPolicy.TRANSIENT_LOCAL))
    images = ros.create_publisher(Image, "image", 10)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not a model" * 100)
    refusals = {str(tmp_path / "missing.onnx"): "does not exist", str(corrupt): "corrupt.onnx",
                str(tiny_onnx_models["thermal"]): "trained for thermal input"}

    def mask_after_publishing(count: int) -> Image:
        assert wait_until(lambda: (images.publish(image_msg(depth, "16UC1", sec=count)), len(masks.messages) >= count)[1])
        return masks.messages[-1]

    with spinning(node, ros):
        publish_until_matched(images)
        assert (mask_after_publishing(1).height, mask_after_publishing(1).width) == (HEIGHT, WIDTH)
        running = node.segmenter
        for path, reason in refusals.items():
            (refused,) = node.set_parameters([Parameter("model_file_path", value=path)])
            assert not refused.successful and reason in refused.reason, refused.reason
            assert "keeps running its current model" in refused.reason
        assert node.segmenter is running and node.get_parameter("model_file_path").value == str(tiny_onnx_models["depth"])
        copy = tmp_path / "swapped.onnx"
        shutil.copy(tiny_onnx_models["depth"], copy)
        publisher, subscription = node._outputs["raw_segmentation_mask"], node._main_input
        ok = node.set_parameters_atomically([Parameter("model_file_path", value=str(copy)),  # one reload for all three
                                             Parameter("mask_width", value=40), Parameter("mask_height", value=30)])
        assert ok.successful and node.segmenter is not running
        assert node.segmenter.backend.describe()["path"] == str(copy) and node.failure == ""
        assert node._outputs["raw_segmentation_mask"] is publisher and node._main_input is subscription  # kept
        count = len(masks.messages)
        assert wait_until(lambda: (images.publish(image_msg(depth, "16UC1", sec=9)),
                                   any(m.width == 40 for m in masks.messages[count:]))[1])  # active, new size
        for name in ("mask_height", "mask_width"):  # one at a time, as `ros2 param set` does: each state is valid
            (ok,) = node.set_parameters([Parameter(name, value=0)])
            assert ok.successful
        (ok,) = node.set_parameters([Parameter("mask_width", value=75)])  # the height follows the camera's aspect
        count = len(masks.messages)
        assert ok.successful and wait_until(lambda: (images.publish(image_msg(depth, "16UC1", sec=10)), any(
            (m.width, m.height) == (75, 50) for m in masks.messages[count:]))[1])
        thermal = [Parameter("modality", value="thermal"), Parameter("model_file_path", value=str(tiny_onnx_models["thermal"]))]
        assert not any(result.successful for result in node.set_parameters(thermal))  # each alone: a mismatch
        assert node.set_parameters_atomically(thermal).successful and node.segmenter.modality == "thermal"
        assert wait_until(lambda: any(info.model_name == "swapped.onnx" for info in infos.messages))  # republished
    assert node.counters()["frames_out"] >= 2
    node.destroy_node()


def test_ros2_param_set_through_the_parameter_service_swaps_a_model_or_prints_why_not(ros, tiny_onnx_models, tmp_path):
    """What ``ros2 param set /seg model_file_path X`` does: a SetParameters request over DDS, one result per parameter."""
    from rclpy.parameter_client import AsyncParameterClient

    node = image_node(tiny_onnx_models["depth"], modality="depth")
    client = AsyncParameterClient(ros, "/seg")
    with spinning(node, ros):
        assert client.wait_for_services(10)

        def set_remotely(name: str, value: object):
            future = client.set_parameters([Parameter(name, value=value)])
            assert wait_until(future.done, 30)
            return future.result().results[0]

        refused = set_remotely("model_file_path", str(tmp_path / "typo.onnx"))
        assert not refused.successful and "typo.onnx does not exist" in refused.reason
        running = node.segmenter
        assert set_remotely("model_file_path", str(tiny_onnx_models["depth"])).successful  # the same file, reloaded
        assert node.segmenter is not running and node.failure == ""
        assert set_remotely("overlay_alpha", 0.7).successful and node.params.overlay_alpha == 0.7
    node.destroy_node()


def test_repeated_reloads_under_a_multi_threaded_executor_while_frames_flow_raise_nothing(ros, tiny_onnx_models, tmp_path):
    """Input callbacks, the follow-outputs timer, diagnostics and parameter services on four threads, models swapped meanwhile."""
    import shutil
    import threading

    from rclpy.executors import MultiThreadedExecutor

    pytest.importorskip("event_camera_msgs")
    from event_camera_msgs.msg import EventPacket

    copies = [tmp_path / f"model_{index}.onnx" for index in range(2)]
    for copy in copies:
        shutil.copy(tiny_onnx_models["events"], copy)
    node = event_node(copies[0], input_qos="DEFAULT", diagnostics_period_s=0.05)
    masks = Collector(ros, Image, "/events_seg/raw_segmentation_mask", 100)
    publisher = ros.create_publisher(EventPacket, "events", 100)
    executor = MultiThreadedExecutor(num_threads=4)
    executor.add_node(node)
    executor.add_node(ros)
    errors: list[BaseException] = []

    def spin():
        try:
            executor.spin()
        except BaseException as error:  # an exception out of any callback ends spin: the test must see it
            errors.append(error)

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    try:
        publish_until_matched(publisher)
        stop = threading.Event()

        def publish():
            k = 0
            while not stop.is_set():
                publisher.publish(evt3_packet(random_events(300, k * 10_000, (k + 1) * 10_000, seed=k), k, 10**9 + k * 10**7))
                k += 1
                time.sleep(0.002)

        feeder = threading.Thread(target=publish, daemon=True)
        feeder.start()
        for swap in range(12):
            (ok,) = node.set_parameters([Parameter("model_file_path", value=str(copies[swap % 2]))])
            assert ok.successful, ok.reason
            time.sleep(0.05)
        count = len(masks.messages)
        assert wait_until(lambda: len(masks.messages) > count, 20)  # still segmenting after the last swap
        stop.set()
        feeder.join()
    finally:
        executor.shutdown(timeout_sec=5)
        thread.join(timeout=5)
    assert errors == [] and node.failure == ""
    assert not any(kind.startswith("internal") for kind in node.problems.counts), node.problems.counts
    assert node._main_input in node._inputs and node.segmenter.backend.describe()["path"] == str(copies[1])
    node.destroy_node()


def test_a_reload_waits_for_an_input_callback_in_flight_and_keeps_the_drop_count(ros, tiny_onnx_models, monkeypatch):
    """Under a multi-threaded executor the input callback runs beside the parameter service: the reload must wait."""
    import threading

    import madm_ros.nodes.base as base

    pytest.importorskip("event_camera_msgs")
    node = event_node(tiny_onnx_models["events"], input_qos="DEFAULT")
    Collector(ros, Image, "/events_seg/edge_frame", 10)
    assert wait_until(lambda: node.wanted("edge_frame"))
    inside, convert = threading.Event(), base.array_to_image_msg

    def slow_convert(*args):  # the callback holds its publisher for a while, as a large frame would
        inside.set()
        time.sleep(0.5)
        return convert(*args)

    packets = [evt3_packet(random_events(500, k * 10_000, (k + 1) * 10_000, seed=k), k, 10**9 + k * 10**7) for k in range(6)]
    for packet in packets[:5]:
        node._on_input(packet)
    node._slot.dropped = 3  # as if inference had fallen behind three times
    monkeypatch.setattr(base, "array_to_image_msg", slow_convert)
    errors: list[str] = []

    def callback():
        try:
            node._on_input(packets[5])  # completes a frame: publishes it on edge_frame
        except Exception as error:  # any error here would end an executor's spin
            errors.append(repr(error))

    thread = threading.Thread(target=callback)
    thread.start()
    assert inside.wait(10)
    (ok,) = node.set_parameters([Parameter("output_qos_depth", value=7)])  # a reload while the callback publishes
    thread.join()
    assert ok.successful and errors == [] and node.params.output_qos_depth == 7
    assert node.counters()["total_dropped_frames"] >= 3  # not reset by the new inference thread
    node.destroy_node()


def test_a_reload_racing_the_follow_outputs_timer_leaves_no_orphan_subscription(ros, tiny_onnx_models):
    import threading

    node = image_node(tiny_onnx_models["depth"], modality="depth")
    masks = Collector(ros, Image, "/seg/raw_segmentation_mask")
    assert wait_until(lambda: node.wanted("raw_segmentation_mask")) and node._main_input is None  # timer not run yet
    subscribing, proceed = threading.Event(), threading.Event()
    subscribe = node._main_subscription

    def slow_subscription():
        subscribing.set()
        proceed.wait(10)
        return subscribe()

    node._main_subscription = slow_subscription
    follow = threading.Thread(target=node._follow_outputs)  # the timer, on another executor thread
    follow.start()
    assert subscribing.wait(10)
    results = []
    reload = threading.Thread(target=lambda: results.extend(node.set_parameters([Parameter("input_qos_depth", value=9)])))
    reload.start()
    time.sleep(0.3)
    proceed.set()
    follow.join()
    reload.join()
    assert results[0].successful and node._main_input in node._inputs  # the new input, owned by the node
    node._main_subscription = subscribe
    ros.destroy_subscription(masks.subscription)
    assert wait_until(lambda: not node.wanted("raw_segmentation_mask"))
    node._follow_outputs()  # nobody listens: unsubscribes (raised ValueError on an orphan before)
    assert node._main_input is None
    assert not [s for s in node.subscriptions if s.topic_name.endswith("/image")]
    node.destroy_node()


def test_the_event_node_decodes_only_while_someone_listens(ros, tiny_onnx_models):
    pytest.importorskip("event_camera_msgs")
    from event_camera_msgs.msg import EventPacket

    node = event_node(tiny_onnx_models["events"], input_qos="DEFAULT")
    publisher = ros.create_publisher(EventPacket, "events", 100)
    with spinning(node, ros):
        time.sleep(0.5)
        assert publisher.get_subscription_count() == 0 and node.counters()["input_subscribed"] == 0
        masks = Collector(ros, Image, "/events_seg/raw_segmentation_mask", 100)
        assert wait_until(lambda: publisher.get_subscription_count() == 1, 5)
        chunk = random_events(4000, 0, 200_000, seed=7)
        for seq in range(4):
            publisher.publish(evt3_packet(chunk[seq * 1000:(seq + 1) * 1000], seq, 10**9))
        assert wait_until(lambda: bool(masks.messages), 20)
        ros.destroy_subscription(masks.subscription)
        assert wait_until(lambda: publisher.get_subscription_count() == 0, 5)  # nobody listens: no decoding
    node.destroy_node()


def test_frames_without_a_valid_pixel_give_unlabelled_masks_and_are_counted(ros, tiny_onnx_models):
    node = image_node(tiny_onnx_models["depth"])
    masks = Collector(ros, Image, "/seg/raw_segmentation_mask")
    images = ros.create_publisher(Image, "image", 10)
    blank = np.full((HEIGHT, WIDTH), np.nan, np.float32)
    blank[:10] = np.inf
    with spinning(node, ros):
        publish_until_matched(images)
        assert wait_until(lambda: (images.publish(image_msg(blank, "32FC1", sec=5)), bool(masks.messages))[1], 20)
    assert np.all(image_to_array(masks.messages[0]) == 255)
    assert node.counters()["problem_invalid_frame"] >= 1
    node.destroy_node()


def test_oversize_inputs_are_refused_before_allocation_and_counted(ros, tiny_onnx_models):
    pytest.importorskip("event_camera_msgs")
    from event_camera_msgs.msg import EventPacket

    node = event_node(tiny_onnx_models["events"], input_qos="DEFAULT")
    masks = Collector(ros, Image, "/events_seg/raw_segmentation_mask", 100)
    publisher = ros.create_publisher(EventPacket, "events", 100)
    with spinning(node, ros):
        publish_until_matched(publisher)
        publisher.publish(evt3_packet(random_events(100, 0, 1000, seed=1), 0, 10**9, width=65535, height=65535))
        assert wait_until(lambda: node.counters().get("problem_decode_error", 0) == 1, 10)
        chunk = random_events(4000, 0, 200_000, seed=8)
        for seq in range(4):
            publisher.publish(evt3_packet(chunk[seq * 1000:(seq + 1) * 1000], seq + 1, 10**9))
        assert wait_until(lambda: bool(masks.messages), 20)  # the stream went on
    node.destroy_node()
