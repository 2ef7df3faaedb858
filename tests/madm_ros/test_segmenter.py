"""Segmenter: the per-frame pipeline every node and the demo share, checked against its parts."""

from __future__ import annotations

import numpy as np
import pytest

from madm_ros.errors import ConfigError, InputError
from madm_ros.palettes import colorize
from madm_ros.preprocessing import preprocess
from madm_ros.segmenter import UNLABELLED, Segmentation, Segmenter, resize_labels, scale_camera_matrix


@pytest.fixture(scope="module")
def depth_segmenter(tiny_onnx_models):
    return Segmenter.load(tiny_onnx_models["depth"], threads=1)


def test_segment_is_preprocess_then_backend_then_nearest_resize(depth_segmenter):
    depth = np.random.default_rng(0).integers(0, 30_000, (90, 170)).astype(np.uint16)
    result = depth_segmenter.segment(depth, "16UC1")
    network = depth_segmenter.backend.infer(preprocess(depth, "16UC1", depth_segmenter.spec)[None]).labels[0]
    assert result.labels.shape == (90, 170) and result.labels.dtype == np.uint8
    assert np.array_equal(result.labels, resize_labels(network, (90, 170)))
    assert set(np.unique(result.labels)) <= set(np.unique(network))  # nearest never invents ids
    assert set(result.timings_ms) == {"preprocess", "inference", "postprocess"}


def test_mask_size_overrides_the_camera_resolution(tiny_onnx_models):
    segmenter = Segmenter.load(tiny_onnx_models["depth"], threads=1, mask_size=(30, 40))
    assert segmenter.segment(np.ones((90, 170), np.float32), "32FC1").labels.shape == (30, 40)
    with pytest.raises(ConfigError):
        Segmenter.load(tiny_onnx_models["depth"], mask_size=(0, 40))


def test_wrong_encodings_and_arrays_are_input_errors(depth_segmenter):
    with pytest.raises(InputError, match="mono16"):
        depth_segmenter.segment(np.zeros((10, 10), np.uint16), "mono16")
    with pytest.raises(InputError):
        depth_segmenter.segment(np.zeros((0, 10), np.uint16), "16UC1")


def test_colored_and_overlay_keep_unlabelled_pixels_and_channel_order():
    from madm_ros.palettes import DSEC_11

    labels = np.array([[0, 1], [UNLABELLED, 10]], np.uint8)
    image = np.full((2, 2), 100, np.uint8)
    result = Segmentation(labels, image, DSEC_11)
    assert np.array_equal(result.colored("rgb8"), colorize(labels, DSEC_11))
    assert np.array_equal(result.colored("bgr8"), colorize(labels, DSEC_11)[:, :, ::-1])
    overlay = result.overlay(1.0)
    assert np.array_equal(overlay[1, 0], [100, 100, 100])  # unlabelled: the input shows through
    assert np.array_equal(overlay[0, 1], DSEC_11.palette()[1])
    assert np.array_equal(result.overlay(0.0), np.repeat(image[:, :, None], 3, axis=2))
    with pytest.raises(ConfigError):
        result.overlay(1.5)
    with pytest.raises(ConfigError):
        result.colored("mono8")


def test_camera_matrices_scale_rows_zero_and_one_only():
    k = [500.0, 0, 320, 0, 500, 240, 0, 0, 1]
    assert scale_camera_matrix(k, 0.5, 0.25, 3) == [250.0, 0, 160, 0, 125, 60, 0, 0, 1]
    p = [500.0, 0, 320, -50, 0, 500, 240, 0, 0, 0, 1, 0]
    assert scale_camera_matrix(p, 0.5, 0.5, 4) == [250.0, 0, 160, -25, 0, 250, 120, 0, 0, 0, 1, 0]
