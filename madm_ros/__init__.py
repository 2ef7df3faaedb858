"""madm_ros: segmentation of depth, thermal and event cameras for ROS 2.

Importing the package loads nothing heavy (no rclpy, torch or diffusers); each module imports
what it needs when it is called.
"""

from pkgutil import extend_path

# The generated interfaces (madm_ros.msg) are installed by rosidl into another tree than these
# sources when the package is used from a source checkout; extending __path__ lets one import
# name reach both. In a colcon install both land in one directory and this is a no-op.
__path__ = extend_path(__path__, __name__)

__version__ = "0.1.0"
