"""Start the segmentation nodes where ``ros2 launch`` is not installed: ``python -m madm_ros.launch NAME [name:=value ...]``.

The launch names and arguments are those of ``launch/<NAME>.launch.py``; this package holds the
one table of them (:data:`LAUNCHES`), and the launch files build their ``ros2 launch`` description
from it with :func:`ros2_launch_description`::

    python -m madm_ros.launch event_seg events_topic:=/event_camera/events
    python -m madm_ros.launch depth_seg image_topic:=/camera/depth/image_rect_raw model_file_path:=student.onnx
    python -m madm_ros.launch thermal_seg --params-file my_thermal.yaml use_sim_time:=true
    python -m madm_ros.launch depth_seg --dry-run        # rehearse the configure, print the nodes and ROS arguments as JSON
    python -m madm_ros.launch --help                     # every launch, its arguments and their defaults

Like the launch files, every node reads ``config/<modality>.yaml`` (or ``params_file``); launch
arguments left empty keep the file's value, others override it. Before anything starts, the
node's configure is rehearsed (:func:`launch_problems`: the files exist, the parameters are its own
and valid, the model loads and suits the launch); any problem ends the runner with exit code 2
and one line per problem. The nodes run in this one process until
Ctrl-C (exit code 0). ROS arguments after ``--ros-args`` are passed to every node as well
(``--ros-args -p overlay_alpha:=0.3``).

Programs (the demo) use :func:`node_specs` and :meth:`NodeSpec.create` inside their own rclpy
context. Importing this package needs neither rclpy nor ROS (:func:`ros2_launch_description` imports
``launch``, ``launch_ros`` and ``ament_index_python`` when called).

The pieces: :mod:`~madm_ros.launch.table` (the launches and their arguments),
:mod:`~madm_ros.launch.specs` (arguments → parameter file and :class:`NodeSpec`),
:mod:`~madm_ros.launch.preflight` (the file checks), :mod:`~madm_ros.launch.ros2` (the
``ros2 launch`` description) and :mod:`~madm_ros.launch.cli` (the runner's command line).
"""

from __future__ import annotations

from madm_ros.launch.cli import main, parse_launch_arguments
from madm_ros.launch.preflight import launch_problems
from madm_ros.launch.ros2 import ros2_launch_description
from madm_ros.launch.specs import (
    NodeFactory,
    NodeSpec,
    config_dirs,
    find_config,
    launch_values,
    node_specs,
    params_file_path,
    rviz_command,
)
from madm_ros.launch.table import FALSE_WORDS, LAUNCHES, PACKAGE, RVIZ_CONFIG, TRUE_WORDS, LaunchArgument, LaunchSpec

__all__ = ["FALSE_WORDS", "LAUNCHES", "PACKAGE", "RVIZ_CONFIG", "TRUE_WORDS", "LaunchArgument", "LaunchSpec", "NodeFactory",
           "NodeSpec", "config_dirs", "find_config", "launch_problems", "launch_values", "main", "node_specs",
           "params_file_path", "parse_launch_arguments", "ros2_launch_description", "rviz_command"]
