"""Node messages: real rclpy images through the numpy path (cv_bridge parity where installed), camera matrices."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from madm_ros.errors import InputError
from madm_ros.image_conversion import IMAGE_ENCODINGS, image_to_array
from madm_ros.limits import InputLimits
from madm_ros.nodes import messages
from madm_ros.nodes.messages import array_to_image_msg, image_msg_to_array, scale_camera_matrix


def hand_built(array: np.ndarray, encoding: str, *, pad: int = 0, big_endian: bool = False) -> Image:
    """An rclpy Image filled field by field (rows padded by ``pad`` bytes, optionally big-endian)."""
    dtype, channels = IMAGE_ENCODINGS[encoding]
    height, width = array.shape[:2]
    row = width * channels * np.dtype(dtype).itemsize
    pixels = np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder(">" if big_endian else "<"))
    rows = np.zeros((height, row + pad), np.uint8)
    rows[:, :row] = pixels.view(np.uint8).reshape(height, row)
    return Image(height=height, width=width, encoding=encoding, is_bigendian=int(big_endian), step=row + pad,
                 data=rows.tobytes())


def sample(encoding: str) -> np.ndarray:
    dtype, channels = IMAGE_ENCODINGS[encoding]
    rng = np.random.default_rng(len(encoding))
    shape = (6, 9) if channels == 1 else (6, 9, channels)
    if dtype == np.float32:
        values = rng.uniform(0.1, 80, shape).astype(np.float32)
        values.flat[:3] = (np.nan, np.inf, 0)
        return values
    return rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)


@pytest.fixture
def numpy_path(monkeypatch):
    monkeypatch.setattr(messages, "cv_bridge_or_none", lambda: None)


@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
@pytest.mark.parametrize(("pad", "big_endian"), [(0, False), (5, False), (3, True)])
def test_numpy_path_reads_hand_built_rclpy_messages(numpy_path, encoding, pad, big_endian):
    array = sample(encoding)
    got = image_msg_to_array(hand_built(array, encoding, pad=pad, big_endian=big_endian))
    assert got.dtype == array.dtype and got.shape == array.shape
    np.testing.assert_array_equal(got, array)


@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
def test_numpy_path_writes_messages_with_the_header_copied(numpy_path, encoding):
    array = sample(encoding)
    header = Header(frame_id="cam")
    header.stamp.sec, header.stamp.nanosec = 3, 4
    message = array_to_image_msg(array, encoding, header)
    assert (message.header.frame_id, message.header.stamp.sec, message.header.stamp.nanosec) == ("cam", 3, 4)
    np.testing.assert_array_equal(image_to_array(message), array)


def test_unsupported_and_truncated_messages_are_input_errors(numpy_path):
    with pytest.raises(InputError, match="yuv422"):
        image_msg_to_array(Image(height=1, width=1, encoding="yuv422", step=2, data=b"ab"))
    truncated = hand_built(sample("16UC1"), "16UC1")
    truncated.data = bytes(truncated.data)[:-1]
    with pytest.raises(InputError, match="truncated"):
        image_msg_to_array(truncated)


@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
@pytest.mark.parametrize(("pad", "big_endian"), [(0, False), (5, False), (3, True)])
def test_cv_bridge_and_the_numpy_path_give_the_same_arrays(monkeypatch, encoding, pad, big_endian):
    pytest.importorskip("cv_bridge", reason="cv_bridge comes with real ROS installs only")
    message = hand_built(sample(encoding), encoding, pad=pad, big_endian=big_endian)
    with_bridge = image_msg_to_array(message)
    monkeypatch.setattr(messages, "cv_bridge_or_none", lambda: None)
    np.testing.assert_array_equal(with_bridge, image_msg_to_array(message))


class UntouchableData:
    """An image message whose ``data`` must never be read (reading it fails the test)."""

    def __init__(self, width: int, height: int, encoding: str = "32FC1") -> None:
        self.width, self.height, self.encoding, self.is_bigendian = width, height, encoding, 0
        self.step = width * IMAGE_ENCODINGS[encoding][1] * np.dtype(IMAGE_ENCODINGS[encoding][0]).itemsize

    @property
    def data(self) -> bytes:
        raise AssertionError("image_to_array read the pixels of an oversize message")


def test_oversize_images_are_refused_from_their_header_before_the_data_is_read(numpy_path):
    with pytest.raises(InputError, match=r"32FC1 image of 10000×10000 pixels exceeds the input limit of 4096×4096"):
        image_to_array(UntouchableData(10_000, 10_000))
    with pytest.raises(InputError, match=r"mono16 image of 65535×2 pixels exceeds the input limit of 4096×4096"):
        image_msg_to_array(Image(height=2, width=65535, encoding="mono16", step=131070, data=b"\0" * 4))
    with pytest.raises(InputError, match=r"rgb8 image of 641×480 pixels exceeds the input limit of 640×480"):
        image_to_array(UntouchableData(641, 480, "rgb8"), InputLimits(max_width=640, max_height=480))
    with pytest.raises(InputError, match=r"has no pixels \(0×480\)"):
        image_to_array(UntouchableData(0, 480))
    at_limit = hand_built(sample("16UC1"), "16UC1")
    np.testing.assert_array_equal(image_to_array(at_limit, InputLimits(max_width=9, max_height=6)), sample("16UC1"))


def test_camera_matrices_scale_rows_zero_and_one_only():
    k = [500.0, 0, 320, 0, 500, 240, 0, 0, 1]
    assert scale_camera_matrix(k, 0.5, 0.25, 3) == [250.0, 0, 160, 0, 125, 60, 0, 0, 1]
    p = [500.0, 0, 320, -50, 0, 500, 240, 0, 0, 0, 1, 0]
    assert scale_camera_matrix(p, 0.5, 0.5, 4) == [250.0, 0, 160, -25, 0, 250, 120, 0, 0, 0, 1, 0]
