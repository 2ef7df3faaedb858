"""The bench process's ROS side: one publisher into the node, the recorder of its masks, and waiting for it to finish.

Only ``~/raw_segmentation_mask`` is subscribed: the node skips the colour mask and the overlay
when nobody reads them, as a deployment that only needs labels would.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from bench.node_bench.node_process import NodeProcess
from madm_ros.ros_messages import split_ns, stamp_to_ns

PUBLISHER_GROUPS = {r"^MainThread$": "publisher loop (stamp + publish: serialize + DDS write)",
                    r"^recorder$": "mask recorder", r"^native:": "native threads (DDS)"}


def set_stamp(header: Any, ns: int) -> None:
    """Stamp ``header`` with ``ns`` nanoseconds (realtime clock, like the node's)."""
    header.stamp.sec, header.stamp.nanosec = split_ns(ns)


class BenchRos:
    """The bench's rclpy node: one publisher and the mask recorder, spun in a background thread."""

    def __init__(self, name: str, msg_type: Any, topic: str, mask_topic: str, publisher_qos: Any) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import Image

        self.node = rclpy.create_node(name)
        self.publisher = self.node.create_publisher(msg_type, topic, publisher_qos)
        self.masks: list[tuple[int, int]] = []  # (received time_ns, stamp_ns)
        self.arrived = threading.Condition()
        self.subscription = self.node.create_subscription(Image, mask_topic, self._on_mask, 1000)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, name="recorder", daemon=True)
        self.thread.start()

    def _on_mask(self, message: Any) -> None:
        now = time.time_ns()
        with self.arrived:
            self.masks.append((now, stamp_to_ns(message.header.stamp)))
            self.arrived.notify_all()

    def wait_matched(self, timeout: float = 30.0) -> None:
        """Wait until the node subscribes to the input and publishes to the recorder."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.publisher.get_subscription_count() > 0 and self.subscription.get_publisher_count() > 0:
                time.sleep(0.3)  # let both directions finish matching
                return
            time.sleep(0.05)
        raise RuntimeError(f"node and bench did not discover each other in {timeout} s")

    def wait_for_mask(self, stamp: int, timeout: float) -> bool:
        """Whether the mask of the frame stamped ``stamp`` arrived within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not any(s == stamp for _, s in self.masks[-5:]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.arrived.wait(left)
        return True

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5)
        self.node.destroy_node()


def drain(node: NodeProcess, timeout: float) -> float:
    """Wait until the node has stopped taking messages and finished every frame; return the seconds waited."""
    start = time.monotonic()
    previous = None
    while time.monotonic() - start < timeout:
        counters = node.ask("counters", "counters")
        state = (counters.get("events_messages", counters.get("frames_in")), counters["frames_out"])
        done = counters["frames_out"] + counters["total_dropped_frames"] + counters["skipped_no_subscribers"]
        if state == previous and done >= counters["frames_in"]:
            break
        previous = state
        time.sleep(0.4)
    time.sleep(0.3)  # the last masks on their way to the recorder
    return time.monotonic() - start
