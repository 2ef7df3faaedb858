"""Camera-size images between processes with the sensor-data QoS: the Fast DDS profile scripts/in-env sets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros


def test_best_effort_640x480_depth_frames_reach_a_node_in_another_process(ros, tiny_onnx_models):
    from sensor_msgs.msg import Image

    from madm_ros.image_conversion import array_to_image_fields
    from tests.madm_ros.ros_harness import Collector, publish_until_matched, spinning, wait_until

    assert os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "").endswith("config/fastdds_loopback.xml")
    node = subprocess.Popen([sys.executable, "-m", "madm_ros.launch", "depth_seg", "image_topic:=/cam/depth",
                             f"model_file_path:={tiny_onnx_models['depth']}"],  # input_qos: SENSOR_DATA (best effort)
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=os.environ.copy())
    try:
        masks = Collector(ros, Image, "/depth_segmentation/raw_segmentation_mask")
        images = ros.create_publisher(Image, "/cam/depth", 10)
        depth = np.random.default_rng(0).integers(300, 20_000, (480, 640)).astype(np.uint16)  # 614 KB > 512 KiB
        message = Image(**array_to_image_fields(depth, "16UC1"))
        with spinning(ros):
            publish_until_matched(images, 60)
            time.sleep(0.5)
            for i in range(10):
                message.header.stamp.sec = i
                images.publish(message)
                time.sleep(0.1)
            wait_until(lambda: len(masks.messages) >= 10, 10)
    finally:
        node.send_signal(signal.SIGINT)
        _, err = node.communicate(timeout=30)
    assert len(masks.messages) >= 8, f"only {len(masks.messages)} of 10 frames segmented\n{err[-2000:]}"
    assert (masks.messages[0].height, masks.messages[0].width) == (480, 640)
