from types import SimpleNamespace

import numpy as np
import pytest

from madm_ros.errors import InputError
from madm_ros.image_conversion import IMAGE_ENCODINGS, array_to_image_fields, image_to_array


def random_image(encoding, rng, shape=(5, 7)):
    dtype, channels = IMAGE_ENCODINGS[encoding]
    full = shape if channels == 1 else (*shape, channels)
    if dtype == np.float32:
        return rng.normal(size=full).astype(np.float32)
    return rng.integers(0, np.iinfo(dtype).max, size=full, dtype=dtype)


@pytest.mark.parametrize("encoding", sorted(IMAGE_ENCODINGS))
def test_round_trip_for_every_encoding(encoding):
    array = random_image(encoding, np.random.default_rng(0))
    message = SimpleNamespace(**array_to_image_fields(array, encoding))
    back = image_to_array(message)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_padded_big_endian_rows_are_read_correctly():
    array = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    padded = np.zeros((3, 12), dtype=np.uint8)  # 8 bytes of pixels + 4 bytes padding per row
    padded[:, :8] = array.astype(">u2").view(np.uint8).reshape(3, 8)
    message = SimpleNamespace(height=3, width=4, encoding="16UC1", is_bigendian=1, step=12, data=padded.tobytes())
    np.testing.assert_array_equal(image_to_array(message), array)


def test_rosbags_style_uint8_array_data_is_accepted():
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    fields = array_to_image_fields(array, "mono8")
    fields["data"] = np.frombuffer(fields["data"], dtype=np.uint8)
    np.testing.assert_array_equal(image_to_array(SimpleNamespace(**fields)), array)


def test_truncated_and_unknown_images_are_refused_with_reasons():
    fields = array_to_image_fields(np.zeros((4, 4), np.uint16), "16UC1")
    fields["data"] = fields["data"][:-3]
    with pytest.raises(InputError, match="needs step ≥ 8 and 32 bytes, got step 8 and 29 bytes"):
        image_to_array(SimpleNamespace(**fields))
    with pytest.raises(InputError, match="image encoding 'yuv422' is not supported"):
        image_to_array(SimpleNamespace(height=1, width=1, encoding="yuv422", is_bigendian=0, step=2, data=b"ab"))
    with pytest.raises(InputError, match="32FC1 needs a float32 array"):
        array_to_image_fields(np.zeros((2, 2), np.float64), "32FC1")
