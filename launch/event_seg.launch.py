"""Event camera segmentation: events accumulated into edge frames, segmented, masks published.

    ros2 launch madm_ros event_seg.launch.py events_topic:=/event_camera/events
    ros2 launch madm_ros event_seg.launch.py --show-args      # every argument and its default

Starts one ``event_segmentation`` node named ``event_segmentation`` with the package's ``config/events.yaml``
(or ``params_file``); arguments left empty keep that file's value, others override it. The
arguments and the node are those of ``LAUNCHES["event_seg"]`` in madm_ros/launch/table.py; where
``ros2 launch`` is not installed, ``python -m madm_ros.launch event_seg name:=value ...`` starts the
same node with the same arguments.
"""

from madm_ros.launch import ros2_launch_description


def generate_launch_description():
    """The launch arguments and the node (built once the arguments are known)."""
    return ros2_launch_description("event_seg")
