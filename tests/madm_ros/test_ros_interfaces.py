import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
PEER = Path(__file__).with_name("ros_peer.py")


def test_two_processes_exchange_packed_events_over_loopback(ros_domain):
    assert os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    pytest.importorskip("rclpy")
    from tests.madm_ros.ros_peer import digest, make_message

    listener = subprocess.Popen([sys.executable, str(PEER), "listen"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    talker = subprocess.Popen([sys.executable, str(PEER), "talk", "100000"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        out, err = listener.communicate(timeout=60)
    finally:
        talker.kill()
        talker.wait()
    assert listener.returncode == 0, err
    assert json.loads(out) == digest(make_message(100000))


def test_segmentation_info_carries_classes_palette_and_model_identity():
    pytest.importorskip("rclpy")
    from madm_ros.msg import SegmentationInfo
    from rclpy.serialization import deserialize_message, serialize_message

    from madm_ros.palettes import DSEC_11

    info = SegmentationInfo(class_names=list(DSEC_11.class_names), palette=DSEC_11.palette().reshape(-1).tolist(),
                            unlabelled_id=255, modality="events", model_name="student", model_sha256="ab" * 32)
    back = deserialize_message(serialize_message(info), SegmentationInfo)
    assert list(back.class_names) == list(DSEC_11.class_names)
    assert bytes(back.palette) == DSEC_11.palette().tobytes()
    assert (back.unlabelled_id, back.modality, back.model_sha256) == (255, "events", "ab" * 32)
