"""``python -m madm_ros.bag_play BAG``: publish a rosbag2 (or rosbag1) into running nodes, without ``ros2 bag``.

PyPI has no ``rosbag2_py``; this player reads the bag with ``rosbags`` and publishes each record's
serialized bytes unchanged through rclpy, so nothing is decoded or re-encoded on the way (the
same bytes ``ros2 bag play`` would send). Like ``ros2 bag play`` it offers each topic with its
recorded reliability and durability, keeps the recorded timing scaled by ``--rate``, and with
``--clock HZ`` publishes ``/clock`` from the bag's time for nodes running with ``use_sim_time``.

Message types must be importable (``event_camera_msgs`` etc.: on machines without ROS,
``scripts/setup-env`` builds them); a topic whose type is not is skipped with a message naming
the package.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madm_ros.errors import DecodeError, MadmError

__all__ = ["BagPlayer", "main", "message_class_of", "recorded_qos"]


def message_class_of(msgtype: str) -> Any:
    """The rclpy class of ``pkg/msg/Name`` (``DecodeError`` naming the package when it is not installed)."""
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise DecodeError(f"message type {msgtype} is not installed here; install the ROS package {package} "
                          "(on machines without ROS, scripts/setup-env builds the event camera types)") from None


def recorded_qos(connection: Any, depth: int = 1000) -> Any:
    """A QoS profile offering what the bag's recorded publishers offered (reliable unless all were best effort)."""
    import yaml
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    text = getattr(getattr(connection, "ext", None), "offered_qos_profiles", "") or ""
    profiles = yaml.safe_load(text) if isinstance(text, str) and text.strip() else text or []
    if not isinstance(profiles, list):
        profiles = []

    def value(profile: Any, key: str) -> str:
        raw = profile.get(key) if isinstance(profile, dict) else getattr(profile, key, None)
        raw = getattr(raw, "name", raw)
        return str(raw).lower()

    best_effort = bool(profiles) and all(value(p, "reliability") in ("2", "best_effort") for p in profiles)
    latched = bool(profiles) and all(value(p, "durability") in ("1", "transient_local") for p in profiles)
    return QoSProfile(depth=depth,
                      reliability=ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)


@dataclass
class PlayStats:
    """What one run of the player sent."""

    messages: int = 0
    loops: int = 0
    skipped_topics: tuple[str, ...] = ()
    seconds: float = 0.0


class BagPlayer:
    """Publishes a bag through an rclpy node.

    Args:
        node: The node that owns the publishers.
        bag: Bag folder or file.
        topics: Topics to play (``None``: every topic whose type is installed).
        rate: Playback speed factor (> 0).
        clock_hz: Publish ``/clock`` at this rate from bag time (0: no clock).
        loop: Start again at the end until :meth:`stop`.
    """

    def __init__(self, node: Any, bag: str | Path, *, topics: Sequence[str] | None = None, rate: float = 1.0,
                 clock_hz: float = 0.0, loop: bool = False) -> None:
        from madm_ros.events.bags import open_bag

        if rate <= 0:
            raise MadmError(f"--rate must be positive, got {rate}")
        if clock_hz < 0:
            raise MadmError(f"--clock must be ≥ 0 Hz, got {clock_hz}")
        self.node, self.bag, self.rate, self.clock_hz, self.loop = node, Path(bag), rate, clock_hz, loop
        self.stats = PlayStats()
        self._stop = threading.Event()
        with open_bag(self.bag) as reader:
            available = {c.topic for c in reader.connections}
            missing = sorted(set(topics or ()) - available)
            if missing:
                raise DecodeError(f"{self.bag} has no topic {', '.join(missing)}; it has "
                                  f"{', '.join(sorted(available)) or 'no topics'}")
            self._publishers: dict[str, Any] = {}
            skipped = []
            for connection in reader.connections:
                if (topics and connection.topic not in topics) or connection.topic in self._publishers:
                    continue
                try:
                    cls = message_class_of(connection.msgtype)
                except DecodeError as error:
                    skipped.append(connection.topic)
                    node.get_logger().warning(f"{connection.topic} skipped: {error}")
                    continue
                self._publishers[connection.topic] = node.create_publisher(cls, connection.topic, recorded_qos(connection))
            self.stats.skipped_topics = tuple(skipped)
        if not self._publishers:
            raise DecodeError(f"nothing to play in {self.bag}: no selected topic has an installed message type")
        self._clock = None
        if clock_hz:
            from rosgraph_msgs.msg import Clock

            self._clock = node.create_publisher(Clock, "/clock", 10)

    @property
    def topics(self) -> list[str]:
        """The topics being played."""
        return sorted(self._publishers)

    def wait_for_subscribers(self, timeout: float) -> bool:
        """Wait until every played topic has a subscriber (at most ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            if all(p.get_subscription_count() > 0 for p in self._publishers.values()):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        """End playback (from another thread or a signal handler)."""
        self._stop.set()

    def play(self) -> PlayStats:
        """Publish the bag once (or until :meth:`stop` with ``loop``); returns what was sent."""
        from madm_ros.events.bags import open_bag

        start = time.monotonic()
        while not self._stop.is_set():
            with open_bag(self.bag) as reader:
                connections = [c for c in reader.connections if c.topic in self._publishers]
                wall0, bag0, last_clock = time.monotonic(), None, 0.0
                for connection, timestamp, raw in reader.messages(connections=connections):
                    if self._stop.is_set():
                        break
                    bag0 = timestamp if bag0 is None else bag0
                    due = wall0 + (timestamp - bag0) / 1e9 / self.rate
                    while (wait := due - time.monotonic()) > 0 and not self._stop.is_set():
                        if self._clock is not None and time.monotonic() - last_clock >= 1 / self.clock_hz:
                            self._publish_clock(bag0 + int((time.monotonic() - wall0) * self.rate * 1e9))
                            last_clock = time.monotonic()
                        time.sleep(min(wait, 0.005))
                    if self._clock is not None and time.monotonic() - last_clock >= 1 / self.clock_hz:
                        self._publish_clock(timestamp)
                        last_clock = time.monotonic()
                    self._publishers[connection.topic].publish(bytes(raw))
                    self.stats.messages += 1
            self.stats.loops += 1
            if not self.loop:
                break
        self.stats.seconds = time.monotonic() - start
        return self.stats

    def _publish_clock(self, nanoseconds: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        assert self._clock is not None
        self._clock.publish(Clock(clock=Time(sec=nanoseconds // 1_000_000_000, nanosec=nanoseconds % 1_000_000_000)))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (exit code 2 on a bad bag or arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m madm_ros.bag_play",
        description="Publish a rosbag2/rosbag1 into running ROS 2 nodes (like `ros2 bag play`, no ROS install needed). "
                    "Each topic is offered with its recorded reliability; timing follows the bag's log times.")
    parser.add_argument("bag", type=Path, help="bag folder or file (sqlite3 .db3, .mcap, rosbag1 .bag)")
    parser.add_argument("--topics", nargs="+", help="topics to play (default: all whose types are installed)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--clock", type=float, default=0.0, metavar="HZ",
                        help="publish /clock at HZ from bag time, for nodes with use_sim_time:=true (default: off)")
    parser.add_argument("--loop", action="store_true", help="play again and again until Ctrl-C")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SEC",
                        help="wait up to SEC seconds for a subscriber on every topic before playing (default 0)")
    args = parser.parse_args(argv)

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    rclpy.init()
    node = rclpy.create_node("bag_play")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        player = BagPlayer(node, args.bag, topics=args.topics, rate=args.rate, clock_hz=args.clock, loop=args.loop)
        if args.wait_for_subscribers and not player.wait_for_subscribers(args.wait_for_subscribers):
            print(f"bag_play: no subscriber on every topic after {args.wait_for_subscribers} s; playing anyway", file=sys.stderr)
        print(f"bag_play: playing {', '.join(player.topics)} from {args.bag} at rate {args.rate}", file=sys.stderr)
        stats = player.play()
        print(f"bag_play: sent {stats.messages} messages in {stats.seconds:.2f} s", file=sys.stderr)
        return 0
    except MadmError as error:
        print(f"bag_play: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    finally:
        executor.shutdown(timeout_sec=5)  # stop spinning before the node goes, or rclcpp aborts at exit
        spinner.join(timeout=5)
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
