"""bag_play: a bag published into the launcher's node from another process, with the monitor's report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from madm_ros.bag_play import header_stamp_ns

pytestmark = pytest.mark.ros


def test_header_stamps_are_read_from_serialized_messages():
    pytest.importorskip("rclpy")
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import Image

    message = Image()
    message.header.stamp.sec, message.header.stamp.nanosec = 1_675_956_550, 318_678_998
    assert header_stamp_ns(serialize_message(message)) == 1_675_956_550_318_678_998
    assert header_stamp_ns(b"\x00\x05") is None


def test_a_real_bag_played_into_the_launched_event_node_is_monitored(ros_domain, tiny_onnx_models, event_bag, tmp_path):
    node = subprocess.Popen(
        [sys.executable, "-m", "madm_ros.launch", "event_seg", "events_topic:=/event_camera/events",
         f"model_file_path:={tiny_onnx_models['events']}", "--ros-args", "-p", "threads:=1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        report_file = tmp_path / "report.json"
        player = subprocess.run(
            [sys.executable, "-m", "madm_ros.bag_play", str(event_bag), "--wait-for-subscribers", "60",
             "--monitor", "/event_segmentation/raw_segmentation_mask", "--json", str(report_file)],
            capture_output=True, text=True, timeout=120, env=os.environ.copy())
    finally:
        node.send_signal(signal.SIGINT)
        _, node_err = node.communicate(timeout=30)
    assert player.returncode == 0, player.stderr
    assert node.returncode == 0, node_err[-2000:]
    report = json.loads(report_file.read_text())
    assert report == json.loads(player.stdout)
    assert report["messages_sent"] == 517 and 200 < report["mean_playback_rate_hz"] < 300  # 517 packets in 2.08 s
    assert 20 <= report["outputs_received"] <= 42  # 50 ms slices of 2.08 s; a few may be dropped under load
    assert report["latency_ms"]["count"] >= report["outputs_received"] - 2 and report["latency_ms"]["p50"] > 0
    assert "missed_frames" not in report  # event masks have no input of the same stamp


def test_bad_bags_and_topics_exit_2_with_a_message(ros_domain, tmp_path, event_bag):
    raw = tmp_path / "recording.raw"
    raw.write_bytes(b"% evt 3.0\n")
    for args, message in ((["/nowhere"], "cannot open /nowhere as a bag"),
                          ([str(raw)], f"is a Prophesee RAW event file, not a bag; madm's bag tools read rosbag2 (folder, "
                                       f".mcap, .db3) and rosbag1 (.bag): inspect it with python -m madm_ros.events info {raw}"),
                          ([str(event_bag), "--topics", "/missing"], "has no topic /missing"),
                          ([str(event_bag), "--rate", "0"], "--rate must be positive")):
        result = subprocess.run([sys.executable, "-m", "madm_ros.bag_play", *args], capture_output=True, text=True,
                                timeout=60, env=os.environ.copy())
        assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr


def test_a_monitored_topic_that_receives_nothing_fails_with_a_reason_and_strict_json(ros_domain, tmp_path, event_bag):
    report_file = tmp_path / "report.json"
    result = subprocess.run(
        [sys.executable, "-m", "madm_ros.bag_play", str(event_bag), "--monitor", "/nope/raw_segmentation_mask",
         "--json", str(report_file), "--settle", "0", "--rate", "4"],
        capture_output=True, text=True, timeout=120, env=os.environ.copy())
    assert result.returncode == 1, result.stderr
    assert "nothing arrived on /nope/raw_segmentation_mask while 517 messages were played" in result.stderr

    def refuse(word):
        raise ValueError(word)

    report = json.loads(report_file.read_text(), parse_constant=refuse)  # no bare NaN: strict parsers read it
    assert report["outputs_received"] == 0 and report["latency_ms"]["p50"] is None
