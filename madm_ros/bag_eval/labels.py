"""Label images by stamp, from a label topic of the bag or a folder of PNGs named by stamp.

A label topic is read once, before the frames, and kept zlib-compressed in memory (class-id
images compress about 20×), so the message loop never has to seek back in the bag. Files of a
label folder are only listed here and read when scored. Unusable labels are counted in the run's
:class:`~madm_ros.problems.ProblemCounter`, never fatal.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.bag_source import IMAGE_TYPE
from madm_ros.errors import ConfigError, DecodeError, InputError
from madm_ros.problems import ProblemCounter
from madm_ros.ros_messages import stamp_to_ns

__all__ = ["LABEL_FILE", "Labels", "describe_topics"]

LABEL_FILE = re.compile(r"^(?:(?P<ns>\d+)|(?P<sec>\d+)_(?P<nsec>\d+))\.png$")


def describe_topics(topics: dict[str, str]) -> str:
    """``topic (type), …`` for error messages that list what a bag has."""
    return ", ".join(f"{t} ({m})" for t, m in sorted(topics.items())) or "no topics"


class Labels:
    """Label images by stamp (ns); :attr:`stamps` sorted, one label per stamp (the first of duplicates).

    Args:
        problems: Where unusable labels are counted (``label_file_name``, ``bad_label_message``,
            ``duplicate_label``).
    """

    def __init__(self, problems: ProblemCounter) -> None:
        self.problems = problems
        self._items: dict[int, Any] = {}  # stamp -> (compressed bytes, shape) or Path
        self.stamps: list[int] = []

    @classmethod
    def from_dir(cls, folder: Path, problems: ProblemCounter) -> Labels:
        """PNG files named ``<stamp_ns>.png`` or ``<sec>_<nanosec>.png``; other files are counted and ignored.

        Raises:
            ConfigError: the folder does not exist or holds no file named so (refused before the run,
                which could otherwise evaluate the whole bag only to score nothing).
        """
        labels = cls(problems)
        if not folder.is_dir():
            raise ConfigError(f"label folder {folder} does not exist; give --label-dir an existing folder of <stamp_ns>.png")
        if not any(LABEL_FILE.match(file.name) for file in folder.iterdir()):
            raise ConfigError(f"label folder {folder} holds no label image named <stamp_ns>.png or <sec>_<nanosec>.png; "
                              "give --label-dir the folder of the labels (or leave it out to run without scores)")
        for file in sorted(folder.iterdir()):
            match = LABEL_FILE.match(file.name)
            if not match:
                problems.report("label_file_name", f"{file.name} in {folder} is not named <stamp_ns>.png or "
                                "<sec>_<nanosec>.png; such files are ignored")
                continue
            stamp = int(match["ns"]) if match["ns"] else int(match["sec"]) * 1_000_000_000 + int(match["nsec"])
            labels._add(stamp, file)
        labels.stamps = sorted(labels._items)
        return labels

    @classmethod
    def from_topic(cls, source: Any, topic: str, problems: ProblemCounter) -> Labels:
        """Every message of ``topic`` (mono8 / 8UC1 images), keyed by header stamp.

        Raises:
            DecodeError: the bag has no such topic, or it is not an image topic.
        """
        from madm_ros.image_conversion import image_to_array

        labels = cls(problems)
        msgtype = source.topics.get(topic)
        if msgtype is None:
            raise DecodeError(f"bag {source.path} has no label topic {topic!r}; it has: {describe_topics(source.topics)}")
        if msgtype != IMAGE_TYPE:
            raise DecodeError(f"label topic {topic} is {msgtype}; labels must be {IMAGE_TYPE} (mono8 class ids)")
        for _, _, _, raw in source.messages({topic}):
            try:
                message = source.deserialize(raw, msgtype)
                if message.encoding not in ("mono8", "8UC1"):
                    raise InputError(f"label images must be mono8 class ids, got {message.encoding}")
                array = image_to_array(message)
            except Exception as error:  # a malformed label message is skipped, not fatal
                problems.report("bad_label_message", f"label message on {topic} skipped: {error}")
                continue
            labels._add(stamp_to_ns(message.header.stamp), (zlib.compress(array.tobytes(), 1), array.shape))
        labels.stamps = sorted(labels._items)
        return labels

    def _add(self, stamp: int, item: Any) -> None:
        if stamp in self._items:
            self.problems.report("duplicate_label", f"two labels stamped {stamp} ns; the first is used")
            return
        self._items[stamp] = item

    def load(self, stamp: int) -> np.ndarray:
        """The label image (uint8 class ids).

        Raises:
            InputError: an unreadable or multi-channel file.
        """
        item = self._items[stamp]
        if isinstance(item, Path):
            import cv2

            array = cv2.imread(str(item), cv2.IMREAD_UNCHANGED)
            if array is None:
                raise InputError(f"cannot read label {item}")
            if array.dtype != np.uint8 or array.ndim != 2:
                raise InputError(f"label {item} must be a single-channel 8-bit PNG of class ids, "
                                 f"got {array.dtype} with shape {array.shape}")
            return array
        data, shape = item
        return np.frombuffer(zlib.decompress(data), np.uint8).reshape(shape)
