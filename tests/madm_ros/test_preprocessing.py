import re

import cv2
import numpy as np
import pytest

from madm_ros.errors import ConfigError, InputError
from madm_ros.limits import DEFAULT_LIMITS, InputLimits, check_image_size, check_sensor_size
from madm_ros.preprocessing import (
    InputSpec,
    depth_to_image,
    invalid_frame_reason,
    modality_image,
    percentiles_u16,
    preprocess,
    sensor_encoding,
    thermal_to_image,
    to_network_input,
)


def inverse_image_to_metres(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """The exact inverse of the ``inverse`` depth mapping, for round-trip checks."""
    closeness = (image.astype(np.float64) - 1) / 254
    inv = 1 / spec.depth_max_m + closeness * (1 / spec.depth_min_m - 1 / spec.depth_max_m)
    return np.where(image > 0, 1 / inv, np.nan)


def test_invalid_depth_becomes_zero_and_valid_depth_never_does():
    spec = InputSpec("depth")
    depth = np.array([[np.nan, np.inf, -np.inf, -1.0, 0.0, 0.01, 0.5, 80.0, 500.0]], dtype=np.float32)
    image = depth_to_image(depth, "32FC1", spec)
    assert image[0, :5].tolist() == [0, 0, 0, 0, 0]
    assert image[0, 5:].tolist() == [255, 255, 1, 1]  # clipped to the range, still valid


def test_millimetre_and_metre_encodings_agree():
    spec = InputSpec("depth", depth_mapping="log")
    rng = np.random.default_rng(0)
    mm = rng.integers(0, 60000, size=(40, 50), dtype=np.uint16)
    metres = mm.astype(np.float32) / 1000
    np.testing.assert_array_equal(depth_to_image(mm, "16UC1", spec), depth_to_image(metres, "32FC1", spec))


@pytest.mark.parametrize(("mapping", "sha256"), [
    ("inverse", "5150e2405b58a69db9c6b2f2f637b87a4b54418d84d8c58c36d01938e8a56933"),
    ("linear", "7ef01778586328bcde38c71e82704cd669383068de2ac4e24a93afd5d62a9ab2"),
])
def test_every_millimetre_value_maps_to_the_bytes_the_shipped_models_were_trained_with(mapping, sha256):
    # digests of the element-wise float32 arithmetic before the table existed (commit 0450933), default window
    # (log is left out: np.log may round differently across numpy builds and CPUs)
    import hashlib

    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    image = depth_to_image(every, "16UC1", InputSpec("depth", depth_mapping=mapping))
    assert hashlib.sha256(image.tobytes()).hexdigest() == sha256


def test_histogram_percentiles_refuse_what_np_percentile_refuses():
    with pytest.raises(ValueError, match="0…100"):
        percentiles_u16(np.zeros((2, 2), np.uint16), (-1, 50))
    with pytest.raises(ValueError, match="non-empty uint8 or uint16"):
        percentiles_u16(np.zeros((0, 4), np.uint16), (1, 99))
    with pytest.raises(ValueError, match="non-empty uint8 or uint16"):
        percentiles_u16(np.zeros((2, 2), np.int32), (1, 99))
    assert all(type(v) is float for v in percentiles_u16(np.arange(10, dtype=np.uint8).reshape(2, 5), (1, 99)))


def test_histogram_percentiles_are_numpys_to_the_last_bit():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 65536, (480, 640), dtype=np.uint16), np.zeros((1, 1), np.uint16),
              np.array([[0, 65535]], np.uint16), np.full((3, 7), 1234, np.uint16)]
    for trial in range(400):  # sizes that put the virtual index on, below and above .5 between neighbours
        h, w = rng.integers(1, 50, 2)
        spread = (1, 4, 3000, 65535)[trial % 4]
        frames.append(np.clip(rng.normal(30000, spread, (h, w)), 0, 65535).astype(np.uint16))
    for raw in frames:
        assert percentiles_u16(raw, (1, 99)) == [float(v) for v in np.percentile(raw, (1, 99))], raw.shape
    assert percentiles_u16(frames[0], (0, 50, 100)) == [float(v) for v in np.percentile(frames[0], (0, 50, 100))]


@pytest.mark.parametrize("mapping", ["inverse", "linear", "log"])
@pytest.mark.parametrize("window_m", [(0.5, 80.0), (0.2, 10.0)])
def test_millimetre_table_gives_the_bytes_of_the_float_arithmetic_for_every_value(mapping, window_m):
    # 16UC1 goes through a lookup table; 32FC1 through the float32 arithmetic it was built from
    spec = InputSpec("depth", depth_min_m=window_m[0], depth_max_m=window_m[1], depth_mapping=mapping)
    every = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    image = depth_to_image(every, "16UC1", spec)
    np.testing.assert_array_equal(image, depth_to_image(every.astype(np.float32) * np.float32(0.001), "32FC1", spec))
    image[0, 0] = 7  # the caller's own array, not the cached table
    assert depth_to_image(every, "16UC1", spec)[0, 0] == 0


@pytest.mark.parametrize("mapping", ["inverse", "linear", "log"])
def test_nearer_is_brighter_for_every_mapping(mapping):
    spec = InputSpec("depth", depth_mapping=mapping)
    depth = np.linspace(0.5, 80, 300, dtype=np.float32)[None]
    image = depth_to_image(depth, "32FC1", spec).astype(int)[0]
    assert image[0] == 255 and image[-1] == 1
    assert (np.diff(image) <= 0).all()


def test_real_depth_round_trips_within_quantisation(shared_data):
    raw = cv2.imread(str(shared_data / "depth_samples/nyu_mmseg/bookstore_0001d_00001_depth.png"), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    spec = InputSpec("depth", depth_min_m=0.5, depth_max_m=10.0)
    image = depth_to_image(raw, "16UC1", spec)
    valid = raw > 0
    assert ((image > 0) == valid).all()  # holes stay holes, measurements stay measurements
    metres = raw / 1000.0
    inside = valid & (metres >= 0.5) & (metres <= 10.0)
    recovered = inverse_image_to_metres(image, spec)
    # Half an 8-bit step of inverse depth is (1/0.5 − 1/10)/254/2 ≈ 0.0037 m⁻¹, so the relative
    # error of a depth d is at most h·d / (1 − h·d) with h that half step (≈ 3.9 % at 10 m).
    half_step = (1 / 0.5 - 1 / 10.0) / 254 / 2
    rel = np.abs(recovered[inside] - metres[inside]) / metres[inside]
    bound = half_step * metres[inside] / (1 - half_step * metres[inside])
    assert (rel <= bound + 1e-9).all()


def test_thermal_mono16_fixed_window_and_percentile_stretch():
    raw = np.array([[1000, 2000, 3000, 4000]], dtype=np.uint16)
    fixed = thermal_to_image(raw, "mono16", InputSpec("thermal", thermal_min=2000, thermal_max=3000))
    assert fixed.tolist() == [[0, 0, 255, 255]]
    ramp = np.arange(0, 10000, dtype=np.uint16).reshape(100, 100)
    stretched = thermal_to_image(ramp, "mono16", InputSpec("thermal"))
    assert stretched.min() == 0 and stretched.max() == 255
    assert (np.diff(stretched.reshape(-1).astype(int)) >= 0).all()


def test_flat_thermal_frame_is_mid_grey_not_a_division_by_zero():
    flat = np.full((8, 8), 1234, dtype=np.uint16)
    assert (thermal_to_image(flat, "mono16", InputSpec("thermal")) == 128).all()


def test_mono8_thermal_passes_unchanged_on_the_real_mfnet_frame(shared_data):
    rgbt = cv2.imread(str(shared_data / "mfnet_rgbt/images/01477D.png"), cv2.IMREAD_UNCHANGED)
    thermal = np.ascontiguousarray(rgbt[:, :, 3])
    assert thermal_to_image(thermal, "mono8", InputSpec("thermal")) is thermal


def test_network_input_is_three_channel_unit_range_at_spec_size():
    spec = InputSpec("thermal", height=64, width=96)
    image = np.tile(np.arange(0, 256, 2, dtype=np.uint8), (48, 1))
    tensor = to_network_input(image, spec)
    assert tensor.shape == (3, 64, 96) and tensor.dtype == np.float32
    assert tensor.min() >= 0 and tensor.max() <= 1
    np.testing.assert_array_equal(tensor[0], tensor[2])


def test_network_input_without_resize_is_exact():
    spec = InputSpec("rgb", height=4, width=5)
    rgb = np.random.default_rng(1).integers(0, 256, size=(4, 5, 3), dtype=np.uint8)
    tensor = to_network_input(rgb, spec)
    np.testing.assert_array_equal(np.rint(tensor * 255).astype(np.uint8).transpose(1, 2, 0), rgb)


def test_bgr8_and_rgb8_give_the_same_tensor():
    spec = InputSpec("rgb", height=8, width=8)
    rgb = np.random.default_rng(2).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess(rgb, "rgb8", spec), preprocess(rgb[:, :, ::-1].copy(), "bgr8", spec))


@pytest.mark.parametrize(("modality", "alias", "same", "dtype"), [
    ("depth", "mono16", "16UC1", np.uint16), ("depth", "8UC1", "mono8", np.uint8),
    ("thermal", "16UC1", "mono16", np.uint16), ("thermal", "8UC1", "mono8", np.uint8), ("events", "8UC1", "mono8", np.uint8),
])
def test_another_name_of_the_same_layout_gives_the_same_image_and_validity(modality, alias, same, dtype):
    spec = InputSpec(modality)
    array = np.random.default_rng(4).integers(0, np.iinfo(dtype).max, size=(24, 32), dtype=dtype)
    array[:4] = 0
    assert sensor_encoding(alias, modality) == same
    np.testing.assert_array_equal(modality_image(array, alias, spec), modality_image(array, same, spec))
    blank = np.zeros_like(array)
    assert invalid_frame_reason(blank, alias, spec) == invalid_frame_reason(blank, same, spec) is not None


@pytest.mark.parametrize("modality", ["depth", "thermal"])
def test_rendered_bgr8_depth_and_thermal_are_read_as_their_rgb8_twins(modality):
    spec = InputSpec(modality)
    rgb = np.random.default_rng(5).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    np.testing.assert_array_equal(preprocess(rgb, "rgb8", spec), preprocess(rgb[:, :, ::-1].copy(), "bgr8", spec))


def test_wrong_encoding_dtype_and_shape_are_clear_errors():
    depth = InputSpec("depth")
    with pytest.raises(InputError, match="depth input must have encoding 16UC1 or 32FC1 or mono8 or rgb8 or bgr8 or "
                                         "mono16 or 8UC1, got 'rgba8'"):
        modality_image(np.zeros((2, 2, 4), np.uint8), "rgba8", depth)
    with pytest.raises(InputError, match="thermal input must have encoding .* or 16UC1 or 8UC1, got '32FC1'"):
        modality_image(np.zeros((2, 2), np.float32), "32FC1", InputSpec("thermal"))
    with pytest.raises(InputError, match="16UC1 image must be a non-empty H×W uint16 array, got float32"):
        modality_image(np.zeros((2, 2), np.float32), "16UC1", depth)
    with pytest.raises(InputError, match="rgb8 image must be a non-empty H×W×3 uint8 array, got uint8 with shape \\(2, 2\\)"):
        modality_image(np.zeros((2, 2), np.uint8), "rgb8", InputSpec("rgb"))
    with pytest.raises(InputError, match="non-empty"):
        modality_image(np.zeros((0, 4), np.uint16), "16UC1", depth)


def test_bad_specs_are_refused_with_the_offending_values():
    with pytest.raises(ConfigError, match="modality must be one of rgb, depth, thermal, events, got 'lidar'"):
        InputSpec("lidar")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="depth_min_m=5.0, depth_max_m=1.0"):
        InputSpec("depth", depth_min_m=5.0, depth_max_m=1.0)
    with pytest.raises(ConfigError, match="set both thermal_min and thermal_max"):
        InputSpec("thermal", thermal_min=1.0)
    with pytest.raises(ConfigError, match="unknown InputSpec keys \\['colour'\\]"):
        InputSpec.from_dict({"modality": "rgb", "colour": 1})
    spec = InputSpec("events", height=440, width=640)
    assert InputSpec.from_dict(spec.to_dict()) == spec


def test_pre_rendered_8bit_depth_and_thermal_are_used_as_they_are():
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert modality_image(grey, "mono8", InputSpec("depth")) is grey
    rgb = np.random.default_rng(3).integers(0, 256, size=(3, 4, 3), dtype=np.uint8)
    assert modality_image(rgb, "rgb8", InputSpec("depth")) is rgb
    assert modality_image(rgb, "rgb8", InputSpec("thermal")) is rgb


@pytest.mark.parametrize(("modality", "array", "encoding", "reason"), [
    ("depth", np.array([[np.nan, np.inf], [-np.inf, 0.0]], np.float32), "32FC1", r"no valid pixel .*0, NaN, ±inf"),
    ("depth", np.array([[-2.0, -np.inf]], np.float32), "32FC1", "no valid pixel"),
    ("depth", np.zeros((2, 3), np.uint16), "16UC1", "no valid pixel"),
    ("depth", np.zeros((2, 3), np.uint8), "mono8", "every byte is 0"),
    ("depth", np.zeros((2, 3, 3), np.uint8), "rgb8", "every byte is 0"),
    ("thermal", np.zeros((2, 3), np.uint16), "mono16", r"every pixel is 0\b"),
    ("thermal", np.full((2, 3), 4000, np.uint16), "mono16", "every pixel is 4000"),
    ("thermal", np.full((2, 3), 7, np.uint8), "mono8", "every pixel is 7"),
    ("thermal", np.broadcast_to(np.array([10, 20, 30], np.uint8), (2, 3, 3)), "rgb8", r"every pixel is \[10, 20, 30\]"),
    ("events", np.zeros((2, 3), np.uint8), "mono8", "no event .*every pixel is 0"),
    ("events", np.full((2, 3), 127, np.uint8), "mono8", "every pixel is 127"),
])
def test_frames_without_a_valid_pixel_have_a_reason(modality, array, encoding, reason):
    spec = InputSpec(modality)
    modality_image(array, encoding, spec)  # the frame itself is well-formed
    assert re.search(reason, invalid_frame_reason(array, encoding, spec))


@pytest.mark.parametrize(("modality", "array", "encoding"), [
    ("depth", np.array([[np.nan, np.inf], [-np.inf, 0.001]], np.float32), "32FC1"),  # one valid (clipped) pixel
    ("depth", np.array([[0, 0, 65535]], np.uint16), "16UC1"),
    ("depth", np.array([[0, 0, 1]], np.uint8), "mono8"),
    ("thermal", np.array([[3000, 3000, 3001]], np.uint16), "mono16"),
    ("thermal", np.array([[[10, 20, 30], [10, 20, 31]]], np.uint8), "rgb8"),
    ("events", np.array([[0, 0, 64]], np.uint8), "mono8"),
    ("events", np.array([[127, 127, 63]], np.uint8), "mono8"),
    ("rgb", np.zeros((2, 3, 3), np.uint8), "rgb8"),  # colour has no "no measurement" value
])
def test_frames_with_one_valid_pixel_are_valid(modality, array, encoding):
    assert invalid_frame_reason(array, encoding, InputSpec(modality)) is None


def test_arrays_beyond_the_limits_are_refused_before_conversion():
    depth = InputSpec("depth")
    huge = np.broadcast_to(np.uint16(1000), (10_000, 10_000))  # a zero-stride view: 2 bytes, not 200 MB
    with pytest.raises(InputError, match=r"depth 16UC1 array of 10000×10000 pixels exceeds the input limit of "
                                         r"4096×4096 .* max_input_width / max_input_height"):
        modality_image(huge, "16UC1", depth)
    with pytest.raises(InputError, match="10000×10000 pixels"):
        preprocess(huge, "16UC1", depth)
    limits = InputLimits(max_width=8, max_height=4)
    assert preprocess(np.ones((4, 8), np.uint16), "16UC1", depth, limits).shape == (3, 512, 512)
    with pytest.raises(InputError, match="9×4 pixels exceeds the input limit of 8×4"):
        preprocess(np.ones((4, 9), np.uint16), "16UC1", depth, limits)
    with pytest.raises(InputError, match="8×5 pixels exceeds the input limit of 8×4"):
        modality_image(np.ones((5, 8, 3), np.uint8), "rgb8", InputSpec("rgb"), limits)


def test_input_limits_and_sensor_sizes():
    assert InputLimits() == DEFAULT_LIMITS == InputLimits(4096, 4096)
    for bad in (0, -1, 1.5, True, "4096"):
        with pytest.raises(ConfigError, match=rf"InputLimits.max_width must be a positive integer \(pixels\), got {bad!r}"):
            InputLimits(max_width=bad)
    check_sensor_size(1280, 720)
    check_sensor_size(np.uint16(2048), np.int64(2048))
    check_sensor_size(346, 260, InputLimits(346, 260))
    with pytest.raises(InputError, match=r"event sensor of 65535×65535 pixels exceeds the input limit of 4096×4096"):
        check_sensor_size(65535, 65535)
    with pytest.raises(InputError, match=r"event sensor of 347×260 pixels exceeds the input limit of 346×260"):
        check_sensor_size(347, 260, InputLimits(346, 260))
    with pytest.raises(InputError, match=r"event sensor size 0×480 has no pixels"):
        check_sensor_size(0, 480)
    with pytest.raises(InputError, match=r"event sensor width must be an integer number of pixels, got 640.0"):
        check_sensor_size(640.0, 480)
    with pytest.raises(InputError, match=r"thermal image of 5000×10 pixels exceeds"):
        check_image_size(5000, 10, what="thermal image")
