"""ROS time stamps ↔ integer nanoseconds, and message classes by type name (ROS-free to import).

One place for what nodes, the demo, the bag tools and the benchmarks all need: header stamps as
``int`` ns (Python ints: no float rounding at 1.7e18 ns) and the class of ``pkg/msg/Name``.
"""

from __future__ import annotations

import importlib
from typing import Any

from madm_ros.errors import ConfigError

__all__ = ["message_class_of", "split_ns", "stamp_to_ns"]


def stamp_to_ns(stamp: Any) -> int:
    """A ``builtin_interfaces/Time`` (rclpy, rosbags or any object with ``sec``/``nanosec``) as integer ns."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def split_ns(nanoseconds: int) -> tuple[int, int]:
    """``(sec, nanosec)`` of integer nanoseconds, for ``builtin_interfaces/Time`` fields."""
    return nanoseconds // 1_000_000_000, nanoseconds % 1_000_000_000


def message_class_of(msgtype: str) -> Any:
    """The Python class of ``pkg/msg/Name``.

    Raises:
        ConfigError: the package is not installed, naming how to get it.
    """
    package, _, name = msgtype.split("/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise ConfigError(f"message type {msgtype} is not installed here; install the ROS package {package} "
                          f"(apt install ros-$ROS_DISTRO-{package.replace('_', '-')}) or run scripts/setup-env, "
                          "which builds the event camera types where ROS is not installed") from None
