"""Segmenter: the per-frame pipeline every node and the demo share, checked against its parts."""

from __future__ import annotations

import numpy as np
import pytest

from madm_ros.errors import BackendError, ConfigError, InputError
from madm_ros.limits import InputLimits
from madm_ros.palettes import colorize
from madm_ros.preprocessing import preprocess
from madm_ros.segmenter import UNLABELLED, Segmentation, Segmenter, resize_labels


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
    width_only = Segmenter.load(tiny_onnx_models["depth"], threads=1, mask_size=(0, 40))  # height keeps the aspect
    assert width_only.segment(np.ones((90, 170), np.float32), "32FC1").labels.shape == (21, 40)
    height_only = Segmenter.load(tiny_onnx_models["depth"], threads=1, mask_size=(45, 0))
    assert height_only.mask_shape((90, 170)) == (45, 85)
    with pytest.raises(InputError, match="mask of a 4096×2 input of 92160×45 pixels exceeds the input limit"):
        height_only.segment(np.full((2, 4096), 1.5, np.float32), "32FC1")  # refused before a 4 MB mask is made
    for bad in ((0, 0), (-1, 40)):
        with pytest.raises(ConfigError, match="at least one positive and neither negative"):
            Segmenter.load(tiny_onnx_models["depth"], mask_size=bad)


def test_wrong_encodings_and_arrays_are_input_errors(depth_segmenter):
    with pytest.raises(InputError, match="depth input must have encoding .*, got 'rgba8'"):
        depth_segmenter.segment(np.zeros((10, 10, 4), np.uint8), "rgba8")
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


def test_segment_frame_is_the_node_and_bag_eval_step_segment_then_the_images_asked_for(depth_segmenter):
    from madm_ros.node_params import ImageParams

    depth = np.random.default_rng(1).integers(0, 30_000, (40, 70)).astype(np.uint16)
    params = ImageParams(color_segmentation_mask_encoding="bgr8", overlay_alpha=0.3)
    outputs = depth_segmenter.segment_frame(depth, "16UC1", params)
    alone = depth_segmenter.segment(depth, "16UC1")
    assert np.array_equal(outputs.segmentation.labels, alone.labels)
    assert np.array_equal(outputs.colored, alone.colored("bgr8"))
    assert np.array_equal(outputs.overlay, alone.overlay(0.3, "bgr8"))
    skipped = depth_segmenter.segment_frame(depth, "16UC1", params, colored=False, overlay=False)
    assert skipped.colored is None and skipped.overlay is None  # what nobody subscribes to is not computed
    assert np.array_equal(skipped.segmentation.labels, alone.labels)


class CountingBackend:
    """Wraps a backend and counts the batches it runs (to prove a frame never reached the network)."""

    def __init__(self, backend):
        self.backend, self.metadata, self.calls = backend, backend.metadata, 0

    def infer(self, images):
        self.calls += 1
        return self.backend.infer(images)

    def describe(self):
        return self.backend.describe()


NAN, INF = np.float32(np.nan), np.float32(np.inf)


@pytest.mark.parametrize(("modality", "array", "encoding"), [
    ("depth", np.full((30, 40), NAN), "32FC1"),
    ("depth", np.full((30, 40), INF), "32FC1"),
    ("depth", np.full((30, 40), -INF), "32FC1"),
    ("depth", np.array([[NAN, INF, -INF, 0, -1.5]] * 6, np.float32), "32FC1"),
    ("depth", np.zeros((30, 40), np.uint16), "16UC1"),
    ("depth", np.zeros((30, 40), np.uint8), "mono8"),
    ("thermal", np.zeros((30, 40), np.uint16), "mono16"),
    ("thermal", np.full((30, 40), 3021, np.uint16), "mono16"),
    ("thermal", np.full((30, 40), 90, np.uint8), "mono8"),
    ("events", np.zeros((30, 40), np.uint8), "mono8"),
    ("events", np.full((30, 40), 127, np.uint8), "mono8"),
])
def test_a_frame_without_valid_pixels_is_all_unlabelled_and_never_reaches_the_network(tiny_onnx_models, modality,
                                                                                        array, encoding):
    spy = CountingBackend(Segmenter.load(tiny_onnx_models[modality], threads=1).backend)
    result = Segmenter(spy).segment(array.astype(array.dtype), encoding)
    assert spy.calls == 0
    assert not result.valid and result.invalid_reason
    assert result.labels.shape == array.shape and result.labels.dtype == np.uint8
    assert (result.labels == UNLABELLED).all()
    assert result.timings_ms["inference"] == 0.0 and set(result.timings_ms) == {"preprocess", "inference", "postprocess"}
    assert np.array_equal(result.overlay(1.0), np.repeat(result.image[:, :, None], 3, axis=2))  # nothing painted


def test_invalid_frames_follow_the_mask_size_and_name_the_reason(tiny_onnx_models):
    segmenter = Segmenter.load(tiny_onnx_models["depth"], threads=1, mask_size=(12, 16))
    result = segmenter.segment(np.full((90, 170), NAN), "32FC1")
    assert result.labels.shape == (12, 16) and (result.labels == UNLABELLED).all()
    assert "no valid pixel" in result.invalid_reason and "NaN" in result.invalid_reason


@pytest.mark.parametrize(("modality", "array", "encoding"), [
    ("depth", np.where(np.arange(90 * 170).reshape(90, 170) % 7 == 0, np.float32(2.5), NAN).astype(np.float32), "32FC1"),
    ("depth", np.pad(np.full((1, 1), 1200, np.uint16), ((40, 49), (80, 89))), "16UC1"),
    ("thermal", np.pad(np.full((1, 1), 3022, np.uint16), ((40, 49), (80, 89)), constant_values=3021), "mono16"),
    ("events", np.pad(np.full((1, 1), 64, np.uint8), ((40, 49), (80, 89))), "mono8"),
])
def test_a_partially_valid_frame_is_segmented_as_before(tiny_onnx_models, modality, array, encoding):
    spy = CountingBackend(Segmenter.load(tiny_onnx_models[modality], threads=1).backend)
    segmenter = Segmenter(spy)
    result = segmenter.segment(array, encoding)
    network = spy.backend.infer(preprocess(array, encoding, segmenter.spec)[None]).labels[0]
    assert result.valid and result.invalid_reason is None and spy.calls == 1
    assert np.array_equal(result.labels, resize_labels(network, array.shape))


def test_frames_and_masks_beyond_the_limits_are_refused(tiny_onnx_models):
    backend = Segmenter.load(tiny_onnx_models["depth"], threads=1).backend
    small = Segmenter(backend, limits=InputLimits(max_width=160, max_height=100))
    assert small.segment(np.ones((100, 160), np.float32), "32FC1").valid  # the limits themselves are accepted
    with pytest.raises(InputError, match=r"depth 32FC1 array of 170×90 pixels exceeds the input limit of 160×100"):
        small.segment(np.ones((90, 170), np.float32), "32FC1")
    huge = np.broadcast_to(np.float32(1.0), (5000, 20_000))  # a view: nothing of that size is ever allocated
    with pytest.raises(InputError, match=r"20000×5000 pixels exceeds the input limit of 4096×4096"):
        Segmenter(backend).segment(huge, "32FC1")
    with pytest.raises(ConfigError, match=r"mask size 200×30 \(width×height\) exceeds the input limit of 160×100"):
        Segmenter(backend, (30, 200), limits=InputLimits(max_width=160, max_height=100))
    with pytest.raises(BackendError, match=r"network input 128×64 .* exceeds the input limit of 100×100"):
        Segmenter(backend, limits=InputLimits(max_width=100, max_height=100))


def test_warm_up_and_segment_refuse_ids_beyond_the_label_set(tiny_onnx_models):
    from madm_ros.backends import BackendOutput

    class Bad(CountingBackend):
        def infer(self, images):
            output = self.backend.infer(images)
            return BackendOutput(np.full_like(output.labels, 200), np.zeros((1, 19, 8, 16), np.float32))

    segmenter = Segmenter(Bad(Segmenter.load(tiny_onnx_models["depth"], threads=1).backend))
    with pytest.raises(BackendError, match=r"logits of shape \(1, 19, 8, 16\), expected 11 channels.*'dsec11'"):
        segmenter.warm_up()
    with pytest.raises(BackendError, match=r"class id 200, beyond its label set 'dsec11' \(ids 0…10\)"):
        segmenter.segment(np.ones((10, 10), np.float32), "32FC1")
    Segmenter.load(tiny_onnx_models["depth"], threads=1).warm_up()  # a real model passes
