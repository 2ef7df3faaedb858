"""Depth and thermal segmentation node: ``image`` (+ optional ``camera_info``) in, masks out.

Accepted encodings follow the model's modality (:data:`madm_ros.preprocessing.ENCODINGS`):
depth ``16UC1`` (mm), ``32FC1`` (m) or rendered ``mono8``/``rgb8``/``bgr8``; thermal ``mono16``,
``mono8``, ``rgb8`` or ``bgr8``; other names of the same layouts (depth ``mono16``, thermal
``16UC1``, ``8UC1``) through ``ENCODING_ALIASES``. NaN, inf and zero depth become "no
measurement" in preprocessing; images of any size are accepted frame by frame (masks follow the
input size).

Run alone: ``ros2 run madm_ros image_segmentation --ros-args -p modality:=depth -r image:=/camera/depth/image_raw``.
"""

from __future__ import annotations

import sys
from typing import Any

from madm_ros.bag_source import IMAGE_TYPE
from madm_ros.node_params import ImageParams
from madm_ros.nodes.base import SegmentationNode

__all__ = ["ImageSegmentationNode", "main"]


class ImageSegmentationNode(SegmentationNode):
    """Segments every ``image`` message (newest first when inference falls behind)."""

    PARAMS = ImageParams

    def __init__(self, node_name: str = "image_segmentation", **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)

    @classmethod
    def _modality(cls, params: Any) -> str:
        return str(params.modality)

    def _input_type(self) -> tuple[str, str]:
        return IMAGE_TYPE, ("remap image to a sensor_msgs/Image topic (a compressed one needs "
                                         "`ros2 run image_transport republish` first)")


def main(args: list[str] | None = None) -> int:
    """``ros2 run madm_ros image_segmentation``: one node, spun until Ctrl-C."""
    from madm_ros.nodes.spin import spin_nodes

    return spin_nodes([ImageSegmentationNode], sys.argv if args is None else args)


if __name__ == "__main__":
    sys.exit(main())
