"""The nodes' QoS presets, and the reports that tell a user when a peer's QoS cannot match them.

A QoS mismatch is silent in ROS 2: a reliable subscription never hears a best-effort camera
driver, a best-effort output never reaches a reliable RViz display, and a node that sees no
subscriber does not even take its input. So the main input and every output but the latched
``~/label_info`` carry event callbacks that count the mismatch (``input_qos_incompatible``, ``output_qos_incompatible``) and
say which parameter to change.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data, qos_profile_system_default

__all__ = ["LATCHED", "input_qos_events", "output_qos_events", "qos_profile"]

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
"""Reliable and transient-local: a late subscriber still gets the last message (``~/label_info``)."""

Report = Callable[[str, str], None]
"""Counts a problem: ``(kind, text)``, as :meth:`madm_ros.problems.ProblemCounter.report`."""


def qos_profile(preset: str, depth: int) -> QoSProfile:
    """``SENSOR_DATA`` (best effort), ``DEFAULT`` (reliable, volatile) or ``SYSTEM_DEFAULT``, with ``depth``."""
    if preset == "SENSOR_DATA":
        return QoSProfile(depth=depth, reliability=qos_profile_sensor_data.reliability,
                          durability=qos_profile_sensor_data.durability)
    if preset == "SYSTEM_DEFAULT":
        return QoSProfile(depth=depth, reliability=qos_profile_system_default.reliability,
                          durability=qos_profile_system_default.durability)
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def input_qos_events(report: Report, preset: Callable[[], str], topic: Callable[[], str]) -> Any:
    """Event callbacks of an input subscription: a publisher it cannot hear is reported as ``input_qos_incompatible``.

    ``preset`` and ``topic`` are read when a mismatch happens (the node's ``input_qos`` may have changed since).
    """
    from rclpy.event_handler import SubscriptionEventCallbacks

    def on_incompatible(info: Any) -> None:
        report("input_qos_incompatible",
               f"a publisher on {topic()} offers QoS that input_qos {preset()} cannot receive ({_policy(info)}), so its "
               "messages never arrive: set input_qos to SENSOR_DATA (best effort, receives from any publisher) or match "
               "the publisher")

    return SubscriptionEventCallbacks(incompatible_qos=on_incompatible)


def output_qos_events(report: Report, preset: Callable[[], str], topic: str) -> Any:
    """Event callbacks of the output ``~/<topic>``: a subscriber it cannot serve is reported as ``output_qos_incompatible``."""
    from rclpy.event_handler import PublisherEventCallbacks

    def on_incompatible(info: Any) -> None:
        report("output_qos_incompatible",
               f"a subscriber of ~/{topic} requests QoS that output_qos {preset()} cannot offer ({_policy(info)}), so it "
               "receives nothing: set output_qos to DEFAULT (reliable, serves any subscriber) or match the subscriber")

    return PublisherEventCallbacks(incompatible_qos=on_incompatible)


def _policy(info: Any) -> str:
    """The name of the policy that failed to match (``RELIABILITY``, ``DURABILITY``, …)."""
    return str(getattr(info.last_policy_kind, "name", info.last_policy_kind))
