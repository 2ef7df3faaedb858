"""Event cameras: decoders, edge-frame accumulation and simulation (ROS-free)."""

from madm_ros.events.types import Events

__all__ = ["Events"]
