"""In-process rclpy helpers for node tests: an executor thread and topic collectors."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class Collector:
    """Keeps every message of one topic (reliable, depth 100 unless told otherwise)."""

    def __init__(self, node: Any, msg_type: Any, topic: str, qos: Any = 100) -> None:
        self.messages: list[Any] = []
        self._lock = threading.Lock()
        self.subscription = node.create_subscription(msg_type, topic, self._add, qos)

    def _add(self, message: Any) -> None:
        with self._lock:
            self.messages.append(message)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Any]:
        """The messages once at least ``count`` arrived (or all there are after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.messages) >= count:
                    break
            time.sleep(0.02)
        with self._lock:
            return list(self.messages)


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll ``condition`` every 20 ms until it holds or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@contextmanager
def publisher_in_another_participant(msg_type: Any, topic: str, qos: Any = 10) -> Iterator[Any]:
    """A publisher in a DDS participant of its own (its own rclpy context), as a driver in another process has.

    Needed where the node must see a type or QoS it cannot match: within one participant DDS refuses
    a second type on a topic outright.
    """
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    driver = rclpy.create_node("driver", context=context)
    try:
        yield driver.create_publisher(msg_type, topic, qos)
    finally:
        driver.destroy_node()
        rclpy.shutdown(context=context)


@contextmanager
def spinning(*nodes: Any) -> Iterator[Any]:
    """Spin ``nodes`` on one executor thread, as ``spin_nodes`` does, for the ``with`` block."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor()
    for node in nodes:
        executor.add_node(node)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        yield executor
    finally:
        executor.shutdown(timeout_sec=5)
        thread.join(timeout=5)


def publish_until_matched(publisher: Any, timeout: float = 10.0) -> None:
    """Wait until ``publisher`` sees a subscriber (DDS discovery takes a moment)."""
    if not wait_until(lambda: publisher.get_subscription_count() > 0, timeout):
        raise TimeoutError(f"no subscriber on {publisher.topic_name} after {timeout} s")


def play_bag_into(node: Any, ros: Any, bag: Path, edges: Collector, frames: int) -> list[Any]:
    """Play ``bag`` from another process (``madm_ros.bag_play``) into the spinning event ``node``.

    Waits until ``frames`` edge frames reached ``edges`` and the node accounted for as many slices
    (masked, dropped or skipped), then returns the edge frame messages.
    """
    player = subprocess.Popen([sys.executable, "-m", "madm_ros.bag_play", str(bag), "--wait-for-subscribers", "30"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with spinning(node, ros):
            _, err = player.communicate(timeout=90)
            got = edges.wait_for(frames)
            assert wait_until(lambda: node.counters()["frames_out"] + node.counters()["total_dropped_frames"]
                              + node.counters()["skipped_no_subscribers"] >= frames)
    finally:
        player.kill()
    assert player.returncode == 0, err
    return got
