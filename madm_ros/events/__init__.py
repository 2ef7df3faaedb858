"""Event cameras: decoders, edge-frame accumulation and simulation (ROS-free)."""

from madm_ros.events.types import DecodeStats, Events

__all__ = ["DecodeStats", "Events"]
