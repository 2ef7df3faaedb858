"""Depth camera segmentation: 16UC1 (mm) or 32FC1 (m) images in, masks published.

    ros2 launch madm_ros depth_seg.launch.py image_topic:=/camera/depth/image_rect_raw
    ros2 launch madm_ros depth_seg.launch.py --show-args      # every argument and its default

Starts one ``image_segmentation`` node named ``depth_segmentation`` with the package's ``config/depth.yaml``
(or ``params_file``); arguments left empty keep that file's value, others override it. The
arguments and the node are those of ``LAUNCHES["depth_seg"]`` in madm_ros/launch/table.py; where
``ros2 launch`` is not installed, ``python -m madm_ros.launch depth_seg name:=value ...`` starts the
same node with the same arguments.
"""

from madm_ros.launch import ros2_launch_description


def generate_launch_description():
    """The launch arguments and the node (built once the arguments are known)."""
    return ros2_launch_description("depth_seg")
