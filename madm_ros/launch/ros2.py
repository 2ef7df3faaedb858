"""The ``ros2 launch`` description of a launch in :data:`~madm_ros.launch.LAUNCHES` (what ``launch/*.launch.py`` return).

Kept apart from the in-process runner because it is the only piece that needs ``launch``,
``launch_ros`` and ``ament_index_python``; they are imported when the description is built, so
importing :mod:`madm_ros.launch` does not need them.
"""

from __future__ import annotations

from typing import Any

from madm_ros.launch.table import LAUNCHES, PACKAGE, RVIZ_CONFIG, TRUE_WORDS

__all__ = ["ros2_launch_description"]


def ros2_launch_description(name: str) -> Any:
    """The ``LaunchDescription`` of ``launch/<name>.launch.py``: what ``ros2 launch madm_ros <name>.launch.py`` runs.

    Declares every argument of ``LAUNCHES[name]`` (``params_file`` defaults to the installed package's
    ``config/<config>``); once their values are known it starts the node with the params file, then the
    fixed parameters and the non-empty parameter arguments as string overrides and ``use_sim_time``,
    its input topics remapped, and with ``rviz:=true`` rviz2 with ``config/madm.rviz`` as well. The
    same node and ROS arguments as :func:`madm_ros.launch.node_specs` (a test checks).
    """
    import os

    from ament_index_python.packages import get_package_share_directory
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterValue

    # a group of its own only because ruff takes `launch` for this checkout's launch/ folder
    from launch import LaunchDescription

    spec = LAUNCHES[name]
    config = os.path.join(get_package_share_directory(PACKAGE), "config")

    def nodes(context: Any) -> list[Any]:
        value = {a.name: LaunchConfiguration(a.name).perform(context) for a in spec.arguments}
        overrides: dict[str, Any] = {key: ParameterValue(text, value_type=str)  # "123" stays a str
                                     for key, text in spec.parameters(value).items()}
        overrides["use_sim_time"] = value["use_sim_time"].strip().lower() in TRUE_WORDS
        started = [Node(
            package=PACKAGE, executable=spec.executable, name=spec.node_name, namespace=value["namespace"],
            parameters=[value["params_file"] or os.path.join(config, spec.config), overrides],
            remappings=[(a.remap, value[a.name]) for a in spec.arguments if a.remap],
            output="screen", emulate_tty=True,
        )]
        if value["rviz"].strip().lower() in TRUE_WORDS:
            started.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                                arguments=["-d", os.path.join(config, RVIZ_CONFIG)],
                                parameters=[{"use_sim_time": overrides["use_sim_time"]}]))
        return started

    defaults = {"params_file": os.path.join(config, spec.config)}
    return LaunchDescription([
        *(DeclareLaunchArgument(a.name, default_value=defaults.get(a.name, a.default), description=a.description)
          for a in spec.arguments),
        OpaqueFunction(function=nodes),
    ])
