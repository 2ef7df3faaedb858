"""rclpy nodes: thin shells over the ROS-free core (segmenter, event stream, preprocessing).

- :mod:`madm_ros.nodes.image_segmentation`: depth and thermal ``image`` (+ ``camera_info``) in.
- :mod:`madm_ros.nodes.event_segmentation`: ``events`` in, edge frames accumulated in real time.

Both are lifecycle nodes that configure and activate themselves unless ``autostart`` is false, so
they work alone (``ros2 run``), under a lifecycle manager, or side by side in one process
(``python -m madm_ros.launch``). Importing this package needs rclpy.
"""
