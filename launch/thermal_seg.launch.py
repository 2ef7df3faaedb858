"""Thermal camera segmentation: mono16 (raw counts) or mono8 images in, masks published.

    ros2 launch madm_ros thermal_seg.launch.py image_topic:=/thermal/image_raw
    ros2 launch madm_ros thermal_seg.launch.py --show-args      # every argument and its default

Starts one ``image_segmentation`` node named ``thermal_segmentation`` with the package's ``config/thermal.yaml``
(or ``params_file``); arguments left empty keep that file's value, others override it. Where
``ros2 launch`` is not installed, ``python -m madm_ros.launch thermal_seg name:=value ...`` starts the
same node with the same arguments (madm_ros/launch.py holds the argument table; tests check that
this file declares the same names and defaults).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

PACKAGE = "madm_ros"
EXECUTABLE = "image_segmentation"
NODE_NAME = "thermal_segmentation"
PARAMS_FILE = "thermal.yaml"
RVIZ_CONFIG = "madm.rviz"
FIXED_PARAMETERS = {"modality": "thermal"}
# (name, default, description); "params_file" defaults to the package's config/thermal.yaml
ARGUMENTS = (
    ("model_file_path", "",
     "ONNX model from python -m madm_train export; empty: the params file's value (by default the built-in model)"),
    ("engine_file_path", "", "TensorRT engine (built and cached on this machine); empty: the params file's value"),
    ("backend", "", "auto, tensorrt, onnxruntime or pytorch; empty: the params file's value (auto)"),
    ("image_topic", "image", "thermal image topic, e.g. /thermal/image_raw"),
    ("camera_info_topic", "camera_info",
     "CameraInfo of the thermal camera (optional; republished scaled to the masks on ~/camera_info)"),
    ("namespace", "", "namespace of the node; its outputs are <namespace>/<node name>/..."),
    ("use_sim_time", "false", "follow /clock (bag replay with ros2 bag play --clock)"),
    ("params_file", "", "node parameter file; empty: the package's config/thermal.yaml"),
    ("rviz", "false", "also start rviz2 with the package's config/madm.rviz"),
)
# launch arguments that override the node parameter of the same name when not empty
PARAMETER_ARGUMENTS = ("model_file_path", "engine_file_path", "backend")
# node input topic → launch argument naming the topic to read
REMAPPINGS = {"image": "image_topic", "camera_info": "camera_info_topic"}


def _true(text):
    return text.strip().lower() in ("true", "1", "yes", "on")


def _nodes(context):
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    share = get_package_share_directory(PACKAGE)
    strings = dict(FIXED_PARAMETERS, **{name: value[name] for name in PARAMETER_ARGUMENTS if value[name]})
    overrides = {name: ParameterValue(text, value_type=str) for name, text in strings.items()}  # "123" stays a str
    overrides["use_sim_time"] = _true(value["use_sim_time"])
    params_file = value["params_file"] or os.path.join(share, "config", PARAMS_FILE)
    nodes = [Node(
        package=PACKAGE, executable=EXECUTABLE, name=NODE_NAME, namespace=value["namespace"],
        parameters=[params_file, overrides],
        remappings=[(topic, value[name]) for topic, name in REMAPPINGS.items()],
        output="screen", emulate_tty=True,
    )]
    if _true(value["rviz"]):
        nodes.append(Node(package="rviz2", executable="rviz2", name="rviz2", output="screen",
                          arguments=["-d", os.path.join(share, "config", RVIZ_CONFIG)],
                          parameters=[{"use_sim_time": overrides["use_sim_time"]}]))
    return nodes


def generate_launch_description():
    """The launch arguments and the node (built once the arguments are known)."""
    defaults = {"params_file": os.path.join(get_package_share_directory(PACKAGE), "config", PARAMS_FILE)}
    return LaunchDescription([
        *(DeclareLaunchArgument(name, default_value=defaults.get(name, default), description=description)
          for name, default, description in ARGUMENTS),
        OpaqueFunction(function=_nodes),
    ])
