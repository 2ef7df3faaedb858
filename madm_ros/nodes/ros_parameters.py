"""A node's parameters on the ROS side: declared from the one table with descriptions, ranges and choices; read back.

``ros2 param describe`` shows what :func:`madm_ros.node_params.parameter_table` says: the
description, when a change applies (its rule), the range or the choices. An override out of range
must not stop the node from starting (it would die before it can report anything), so
:func:`declare_parameters` declares it without its range and returns the error, which configure
then reports as a failure the node survives.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterValueException, ParameterUninitializedException
from rclpy.parameter import Parameter

from madm_ros.errors import close_name
from madm_ros.node_params import ParameterInfo, SegmentationParams, parameter_table

__all__ = ["declare_parameters", "parameter_values", "unknown_overrides"]

_WHEN = {"live": "applies at once", "input": "applies at once: the input restarts",
         "reload": "applies at once: the node loads and checks the model first and refuses the change if that fails",
         "start": "read-only after start"}


def _descriptor(info: ParameterInfo) -> ParameterDescriptor:
    """The ROS descriptor of a parameter: description, when a change applies, range or choices."""
    rule = info.rule
    described = ParameterDescriptor(
        description=f"{info.description} ({_WHEN[rule.apply]})", read_only=rule.apply == "start",
        # Dynamic typing: YAML files write 50 for 50.0; read_params converts to the field's type.
        dynamic_typing=not isinstance(info.default, tuple),
        additional_constraints=f"one of: {', '.join(rule.choices)}" if rule.choices else "")
    if rule.low is not None and rule.high is not None:
        if isinstance(info.default, float):
            described.floating_point_range = [FloatingPointRange(from_value=float(rule.low), to_value=float(rule.high))]
        elif isinstance(info.default, int) and not isinstance(info.default, bool):
            described.integer_range = [IntegerRange(from_value=int(rule.low), to_value=int(rule.high), step=1)]
    return described


def declare_parameters(node: Any, params_class: type[SegmentationParams]) -> list[str]:
    """Declare every field of ``params_class`` on ``node``; returns the overrides that were out of range, as messages."""
    errors = []
    for info in parameter_table(params_class):
        described = _descriptor(info)
        value: Any = Parameter.Type.INTEGER_ARRAY if isinstance(info.default, tuple) else info.default
        try:
            node.declare_parameter(info.name, value, described)
        except InvalidParameterValueException as error:
            errors.append(f"{info.name}: {error}")
            described.floating_point_range, described.integer_range = [], []
            node.declare_parameter(info.name, value, described)
    return errors


def unknown_overrides(node: Any) -> list[str]:
    """The parameters given to ``node`` (params files, ``-p``) that it does not declare, each with a close known name if any.

    Why: ROS drops them without a word, so a misspelt ``overlay_alphaa: 0.3`` would leave the
    default in force unnoticed. Read from rclpy's record of the overrides, which has no public
    accessor; without it (another rclpy) nothing is reported.
    """
    given = sorted(name for name in getattr(node, "_parameter_overrides", {}) if not node.has_parameter(name))
    declared = list(node.get_parameters_by_prefix("")) if given else []
    return [f"{name} (did you mean {close}?)" if (close := close_name(name, declared)) else name for name in given]


def parameter_values(node: Any, params_class: type[SegmentationParams]) -> dict[str, Any]:
    """The node's current values of the fields of ``params_class`` (an array nobody set keeps its default)."""
    values: dict[str, Any] = {}
    for field in dataclasses.fields(params_class):
        try:
            values[field.name] = node.get_parameter(field.name).value
        except ParameterUninitializedException:
            continue
    return values
