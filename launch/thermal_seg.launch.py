"""Thermal camera segmentation: mono16 (raw counts) or mono8 images in, masks published.

    ros2 launch madm_ros thermal_seg.launch.py image_topic:=/thermal/image_raw
    ros2 launch madm_ros thermal_seg.launch.py --show-args      # every argument and its default

Starts one ``image_segmentation`` node named ``thermal_segmentation`` with the package's ``config/thermal.yaml``
(or ``params_file``); arguments left empty keep that file's value, others override it. The
arguments and the node are those of ``LAUNCHES["thermal_seg"]`` in madm_ros/launch/table.py; where
``ros2 launch`` is not installed, ``python -m madm_ros.launch thermal_seg name:=value ...`` starts the
same node with the same arguments.
"""

from madm_ros.launch import ros2_launch_description


def generate_launch_description():
    """The launch arguments and the node (built once the arguments are known)."""
    return ros2_launch_description("thermal_seg")
