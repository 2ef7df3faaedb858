"""A stand-alone ROS 2 process for the cross-process tests: ``talk`` or ``listen`` PackedEvents.

``talk N``: publishes a deterministic PackedEvents message (N events) until a listener has it.
``listen``: prints the first message it receives as one JSON line and exits.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import rclpy
from madm_ros.msg import PackedEvents

TOPIC = "/madm_test/events"


def make_message(n: int) -> PackedEvents:
    rng = np.random.default_rng(7)
    message = PackedEvents(width=640, height=480, seq=3)
    message.header.frame_id = "event_camera"
    message.header.stamp.sec = 12
    message.header.stamp.nanosec = 345
    message.x = rng.integers(0, 640, n, dtype=np.uint16)
    message.y = rng.integers(0, 480, n, dtype=np.uint16)
    message.t = np.sort(rng.integers(0, 10**12, n, dtype=np.int64))
    message.polarity = rng.integers(0, 2, n, dtype=np.uint8)
    return message


def digest(message: PackedEvents) -> dict[str, object]:
    return {
        "frame_id": message.header.frame_id,
        "stamp": [message.header.stamp.sec, message.header.stamp.nanosec],
        "size": [message.width, message.height],
        "seq": message.seq,
        "n": len(message.x),
        "sums": [int(np.asarray(message.x, np.int64).sum()), int(np.asarray(message.y, np.int64).sum()),
                 int(np.asarray(message.t, np.int64).sum() % 2**61), int(np.asarray(message.polarity, np.int64).sum())],
    }


def main() -> int:
    role = sys.argv[1]
    rclpy.init()
    node = rclpy.create_node(f"madm_test_{role}")
    deadline = time.monotonic() + 30
    if role == "talk":
        publisher = node.create_publisher(PackedEvents, TOPIC, 10)
        message = make_message(int(sys.argv[2]))
        while time.monotonic() < deadline:
            if publisher.get_subscription_count() > 0:
                publisher.publish(message)
            rclpy.spin_once(node, timeout_sec=0.1)
        return 0
    received: list[PackedEvents] = []
    node.create_subscription(PackedEvents, TOPIC, received.append, 10)
    while not received and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if not received:
        print("timeout", file=sys.stderr)
        return 1
    print(json.dumps(digest(received[0])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
