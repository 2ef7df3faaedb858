"""``python -m madm_ros.bag_play BAG``: publish a rosbag2 (or rosbag1) into running nodes, without ``ros2 bag``.

PyPI has no ``rosbag2_py``; this player reads the bag with madm's one bag reader
(:class:`madm_ros.bag_source.BagSource`, so every recording the other madm tools read plays too)
and publishes each record's serialized bytes unchanged through rclpy, so nothing is decoded or
re-encoded on the way (the same bytes ``ros2 bag play`` would send). Like ``ros2 bag play`` it
offers each topic with its recorded reliability and durability, keeps the recorded timing scaled
by ``--rate``, and with ``--clock HZ`` publishes ``/clock`` from the bag's time for nodes running
with ``use_sim_time``. A bag readable only in part plays up to where it breaks off, with a warning.

With ``--monitor TOPIC`` (a node output such as ``/event_segmentation/raw_segmentation_mask``) it
also reports ros2_benchmark-style figures when playback ends: playback and output frame rates,
missed frames (image inputs without a mask), latency from sending the input to receiving its mask
and output jitter. An image mask is matched to its input by header stamp. An event mask, stamped
with the end of its slice, is timed from the message that completed the slice: the first one whose
newest event lies at or past that end, found by decoding the bag's event messages with the node's
own stream after playback (header stamps of event packets drift by milliseconds against their
events' time, so matching by header stamp would understate the latency). When nothing arrives on
the monitored topic (a misspelt name, a node that is not running) it says so and exits with 1, so
a script using it as a check fails; figures without data are ``null`` in the JSON, never ``NaN``.

Message types must be importable (``event_camera_msgs`` etc.: on machines without ROS,
``scripts/setup-env`` builds them); a topic whose type is not is skipped with a message naming
the package.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.bag_source import BagSource, QosProfile
from madm_ros.errors import ConfigError, DecodeError, MadmError
from madm_ros.metrics import json_ready
from madm_ros.ros_messages import message_class_of, split_ns, stamp_to_ns

__all__ = ["BagPlayer", "Monitor", "event_ends", "header_stamp_ns", "main", "recorded_qos"]


def recorded_qos(profiles: Sequence[QosProfile], depth: int = 1000) -> Any:
    """A QoS profile offering what the bag's recorded publishers offered (reliable unless all were best effort).

    ``profiles``: a topic's :attr:`madm_ros.bag_source.TopicInfo.qos` (whatever form the bag stored them in).
    """
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

    best_effort = bool(profiles) and all(p.reliability == "best_effort" for p in profiles)
    latched = bool(profiles) and all(p.durability == "transient_local" for p in profiles)
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
    problem: str = ""  # why the bag was played only in part (empty when whole)


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
        if rate <= 0:
            raise MadmError(f"--rate must be positive, got {rate}")
        if clock_hz < 0:
            raise MadmError(f"--clock must be ≥ 0 Hz, got {clock_hz}")
        self.node, self.bag, self.rate, self.clock_hz, self.loop = node, Path(bag), rate, clock_hz, loop
        self.stats = PlayStats()
        self.sent: list[tuple[float, str, int | None]] | None = None  # (wall, topic, header stamp) when monitored
        self._stop = threading.Event()
        with BagSource(self.bag) as source:
            self.read_note = source.note  # how the bag was read when not normally, for the user
            missing = sorted(set(topics or ()) - set(source.topics))
            if missing:
                raise DecodeError(f"{self.bag} has no topic {', '.join(missing)}; it has "
                                  f"{', '.join(sorted(source.topics)) or 'no topics'}")
            self._publishers: dict[str, Any] = {}
            self.types = dict(source.topics)
            skipped = []
            for connection in source.connections:
                if topics and connection.topic not in topics:
                    continue
                try:
                    cls = message_class_of(connection.msgtype)
                except ConfigError as error:
                    skipped.append(connection.topic)
                    node.get_logger().warning(f"{connection.topic} skipped: {error}")
                    continue
                self._publishers[connection.topic] = node.create_publisher(cls, connection.topic,
                                                                           recorded_qos(connection.qos))
            self.stats.skipped_topics = tuple(skipped)
        if not self._publishers:
            raise DecodeError(f"nothing to play in {self.bag}: no selected topic has an installed message type")
        self._clock = None
        if clock_hz:
            from rosgraph_msgs.msg import Clock

            self._clock = node.create_publisher(Clock, "/clock", 10)

    @property
    def plays_images(self) -> bool:
        """Whether every played topic carries ``sensor_msgs/Image`` (inputs and masks then share stamps)."""
        return all(p.msg_type.__name__ == "Image" for p in self._publishers.values())

    @property
    def event_topics(self) -> list[str]:
        """The played topics that carry events (whose masks are stamped with slice ends, not input stamps)."""
        from madm_ros.events.stream import MESSAGE_TYPES

        return [t for t in self.topics if self.types[t] in MESSAGE_TYPES.values()]

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
        start = time.monotonic()
        while not self._stop.is_set():
            with BagSource(self.bag) as source:
                wall0, bag0, last_clock = time.monotonic(), None, 0.0
                for topic, _, timestamp, raw in source.messages(self._publishers):
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
                    data = bytes(raw)
                    self._publishers[topic].publish(data)
                    self.stats.messages += 1
                    if self.sent is not None:
                        self.sent.append((time.monotonic(), topic, header_stamp_ns(data)))
                self.stats.problem = source.problem
            self.stats.loops += 1
            if not self.loop:
                break
        self.stats.seconds = time.monotonic() - start
        return self.stats

    def _publish_clock(self, nanoseconds: int) -> None:
        from builtin_interfaces.msg import Time
        from rosgraph_msgs.msg import Clock

        assert self._clock is not None
        sec, nanosec = split_ns(nanoseconds)
        self._clock.publish(Clock(clock=Time(sec=sec, nanosec=nanosec)))


def event_ends(bag: str | Path, topic: str) -> list[int | None]:
    """Per message of the event ``topic`` in bag order: the ROS stamp of the newest event so far (``None`` if none yet).

    Decoded by :class:`~madm_ros.events.stream.EventFrameStream`, whose sensor-to-ROS offset is the
    node's; its accumulation settings do not matter here (only event times are read).
    """
    from madm_ros.events.stream import MESSAGE_TYPES, EventFrameStream

    ends: list[int | None] = []
    with BagSource(bag) as source:
        message_type = next((k for k, v in MESSAGE_TYPES.items() if v == source.topics.get(topic)), None)
        if message_type is None:
            return ends
        stream = EventFrameStream(message_type, {})
        for _, msgtype, _, raw in source.messages({topic}):
            with contextlib.suppress(Exception):  # an undeserializable record: the stream keeps its last value
                stream.push(source.deserialize(raw, msgtype))
            ends.append(stream.newest_event_stamp_ns)
    return ends


def header_stamp_ns(cdr: bytes) -> int | None:
    """The header stamp of a serialized message whose first field is ``std_msgs/Header`` (``None`` if unreadable).

    CDR starts with a 4-byte encapsulation (byte 1: 1 = little endian), then ``stamp.sec`` (int32) and
    ``stamp.nanosec`` (uint32): reading them directly saves deserializing every message.
    """
    if len(cdr) < 12 or cdr[1] not in (0, 1):
        return None
    order = "little" if cdr[1] == 1 else "big"
    sec = int.from_bytes(cdr[4:8], order, signed=True)
    nanosec = int.from_bytes(cdr[8:12], order)
    return sec * 1_000_000_000 + nanosec


class Monitor:
    """Receives a node's output while a bag plays, and turns send and arrival times into benchmark figures."""

    def __init__(self, node: Any, topic: str) -> None:
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import Image

        self.topic = topic
        self.arrivals: list[tuple[float, int]] = []  # (wall, header stamp ns)
        self._lock = threading.Lock()
        node.create_subscription(Image, topic, self._on_message, QoSProfile(depth=1000))

    def _on_message(self, message: Any) -> None:
        stamp = stamp_to_ns(message.header.stamp)
        with self._lock:
            self.arrivals.append((time.monotonic(), stamp))

    def report(self, sent: list[tuple[float, str, int | None]], input_is_image: bool,
               event_ends: Sequence[int | None] = ()) -> dict[str, Any]:
        """Rates, missed frames, latency and jitter; ``sent`` as recorded by :class:`BagPlayer`.

        ``event_ends`` (event inputs): the ROS stamp of the newest event after each of the first
        sent messages, in order (:func:`event_ends`); a mask is timed from the first message whose
        value reaches its stamp.
        """
        import numpy as np

        from madm_ros.metrics import latency_summary

        with self._lock:
            arrivals = sorted(self.arrivals)
        send_walls = [wall for wall, _, _ in sent]
        span = (send_walls[-1] - send_walls[0]) if len(send_walls) > 1 else 0.0
        latencies: list[float] = []
        if input_is_image:
            exact = {stamp: wall for wall, _, stamp in sent if stamp is not None}
            latencies = [(wall - exact[stamp]) * 1e3 for wall, stamp in arrivals if stamp in exact]
        else:
            known = [(end, wall) for (wall, _, _), end in zip(sent, event_ends) if end is not None]
            reached = np.maximum.accumulate(np.array([end for end, _ in known], dtype=np.int64)) if known else None
            for wall, stamp in arrivals:
                k = int(np.searchsorted(reached, stamp, side="left")) if reached is not None else 0
                if reached is not None and k < len(known):  # the first message whose events reach the slice end
                    latencies.append((wall - known[k][1]) * 1e3)
        intervals = np.diff([wall for wall, _ in arrivals]) if len(arrivals) > 2 else np.empty(0)
        out_span = (arrivals[-1][0] - arrivals[0][0]) if len(arrivals) > 1 else 0.0
        report: dict[str, Any] = {
            "monitored_topic": self.topic,
            "messages_sent": len(sent),
            "outputs_received": len(arrivals),
            "mean_playback_rate_hz": (len(sent) - 1) / span if span > 0 else 0.0,
            "mean_output_rate_hz": (len(arrivals) - 1) / out_span if out_span > 0 else 0.0,
            "latency_ms": latency_summary(latencies),
            "jitter_ms": float(np.std(intervals) * 1e3) if intervals.size else 0.0,
        }
        if input_is_image:
            report["missed_frames"] = len({s for _, _, s in sent if s is not None} - {s for _, s in arrivals})
        return report


def main(argv: list[str] | None = None) -> int:
    """Command line entry point (exit code 2 on a bad bag or arguments, 1 when a monitored topic received nothing)."""
    parser = argparse.ArgumentParser(
        prog="python -m madm_ros.bag_play",
        description="Publish a rosbag2/rosbag1 into running ROS 2 nodes (like `ros2 bag play`, no ROS install needed). "
                    "Each topic is offered with its recorded reliability; timing follows the bag's log times.",
        epilog="Exit codes: 0 played (and with --monitor, outputs arrived); 1 --monitor received nothing; "
               "2 a bad bag or arguments.")
    parser.add_argument("bag", type=Path, help="bag folder or file (sqlite3 .db3, .mcap, rosbag1 .bag)")
    parser.add_argument("--topics", nargs="+", help="topics to play (default: all whose types are installed)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--clock", type=float, default=0.0, metavar="HZ",
                        help="publish /clock at HZ from bag time, for nodes with use_sim_time:=true (default: off)")
    parser.add_argument("--loop", action="store_true", help="play again and again until Ctrl-C")
    parser.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SEC",
                        help="wait up to SEC seconds for a subscriber on every topic before playing (default 0)")
    parser.add_argument("--monitor", metavar="TOPIC",
                        help="an output topic of the nodes (sensor_msgs/Image, e.g. /event_segmentation/raw_segmentation_mask): "
                             "report rates, missed frames, latency and jitter when playback ends")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the monitor's report to PATH")
    parser.add_argument("--settle", type=float, default=2.0, metavar="SEC",
                        help="with --monitor, wait SEC seconds after the last message for the last outputs (default 2)")
    args = parser.parse_args(argv)
    if args.json and not args.monitor:
        parser.error("--json needs --monitor TOPIC")

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
        monitor = Monitor(node, args.monitor) if args.monitor else None
        if monitor is not None:
            player.sent = []
        if args.wait_for_subscribers and not player.wait_for_subscribers(args.wait_for_subscribers):
            print(f"bag_play: no subscriber on every topic after {args.wait_for_subscribers} s; playing anyway", file=sys.stderr)
        print(f"bag_play: playing {', '.join(player.topics)} from {args.bag} at rate {args.rate}", file=sys.stderr)
        if player.read_note:
            print(f"bag_play: note: {player.read_note}", file=sys.stderr)
        stats = player.play()
        print(f"bag_play: sent {stats.messages} messages in {stats.seconds:.2f} s", file=sys.stderr)
        if stats.problem:
            print(f"bag_play: warning: {args.bag} was played only in part: {stats.problem}", file=sys.stderr)
        if monitor is not None and player.sent is not None:
            time.sleep(args.settle)
            sent, ends = player.sent, []
            if player.event_topics:  # masks of the (first) event topic are timed from its own messages
                topic = player.event_topics[0]
                sent, ends = [s for s in player.sent if s[1] == topic], event_ends(args.bag, topic)
            report = json_ready(monitor.report(sent, input_is_image=player.plays_images, event_ends=ends))
            text = json.dumps(report, indent=2)
            print(text)
            if args.json:
                atomic_write_bytes(args.json, (text + "\n").encode())
            if sent and not report["outputs_received"]:
                print(f"bag_play: nothing arrived on {args.monitor} while {len(sent)} messages were played: check the "
                      "topic name (ros2 topic list), that the node runs and subscribes to the played topic, and its "
                      "diagnostics", file=sys.stderr)
                return 1
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
