"""A loaded model plus the one preprocessing path: sensor array in, class-id mask at camera resolution out.

This is what nodes, the demo and offline evaluation call, so that a mask published on a topic is
bit for bit the mask the offline pipeline computes for the same array. The node and ``bag_eval``
both call :meth:`Segmenter.segment_frame` (segment, then colour mask and overlay with the node's
parameters), so their masks, colour masks and overlays of one frame are the same by construction.
It is ROS-free: message conversion lives in :mod:`madm_ros.nodes`.

Masks are resized to the camera (or a chosen mask) resolution with nearest-neighbour sampling, so
ids are never blended; pixels outside every class stay 255 (``UNLABELLED``). The colour mask and
the overlay are computed on request only, because a node skips them when nobody subscribes.

Bad input never reaches the network silently: frames beyond :class:`~madm_ros.limits.InputLimits`
are refused (:class:`InputError`), and a frame without any valid pixel (see
:func:`~madm_ros.preprocessing.invalid_frame_reason`) comes back as an all-unlabelled mask marked
``valid=False`` without running the network, so that callers count it instead of publishing a
confident segmentation of a blank image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.backends import Backend, ModelMetadata, load_backend
from madm_ros.errors import BackendError, ConfigError, InputError
from madm_ros.limits import DEFAULT_LIMITS, InputLimits, check_image_size
from madm_ros.palettes import LabelSet, colorize, get_label_set
from madm_ros.preprocessing import InputSpec, invalid_frame_reason, modality_image, to_network_input

__all__ = ["UNLABELLED", "FrameOutputs", "Segmentation", "Segmenter", "load_segmenter", "resize_labels"]

UNLABELLED = 255
"""Id of pixels without a class in ``raw_segmentation_mask``."""

COLOR_ENCODINGS = ("rgb8", "bgr8")


def resize_labels(labels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 id image to ``size_hw`` (ids are never interpolated)."""
    import cv2

    if labels.shape[:2] == tuple(size_hw):
        return labels
    return cv2.resize(labels, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)


@dataclass
class Segmentation:
    """One segmented frame.

    Attributes:
        labels: uint8 H×W class ids at the mask resolution, 255 = unlabelled (all 255 for an
            invalid frame).
        image: The 8-bit modality image the network saw before resizing (H×W or H×W×3 RGB),
            the background of the overlay.
        timings_ms: ``preprocess``, ``inference`` and ``postprocess`` wall times (steady clock);
            ``inference`` is 0 for an invalid frame, which the network did not see.
        invalid_reason: Why the frame was not segmented (it holds no valid pixel; see
            :func:`~madm_ros.preprocessing.invalid_frame_reason`), ``None`` for a segmented frame.
    """

    labels: np.ndarray
    image: np.ndarray
    label_set: LabelSet
    timings_ms: dict[str, float] = field(default_factory=dict)
    invalid_reason: str | None = None

    @property
    def valid(self) -> bool:
        """``False`` when the frame held no valid pixel and the mask is all unlabelled without inference."""
        return self.invalid_reason is None

    def colored(self, encoding: str = "rgb8") -> np.ndarray:
        """The palette image of the mask (unlabelled = black), in ``rgb8`` or ``bgr8`` channel order."""
        if encoding not in COLOR_ENCODINGS:
            raise ConfigError(f"colour mask encoding must be rgb8 or bgr8, got {encoding!r}")
        colors = colorize(self.labels, self.label_set)
        return colors[:, :, ::-1].copy() if encoding == "bgr8" else colors

    def overlay(self, alpha: float = 0.5, encoding: str = "rgb8") -> np.ndarray:
        """The input image with the colour mask blended in at ``alpha`` (unlabelled pixels stay as they were)."""
        from madm_ros.preprocessing import resize_image

        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"overlay_alpha must be in [0, 1], got {alpha}")
        background = resize_image(self.image, self.labels.shape[:2])
        if background.ndim == 2:
            background = np.repeat(background[:, :, None], 3, axis=2)
        colors = colorize(self.labels, self.label_set).astype(np.float32)
        blended = background.astype(np.float32) * (1 - alpha) + colors * alpha
        out = np.where((self.labels != UNLABELLED)[:, :, None], np.rint(blended), background).astype(np.uint8)
        return out[:, :, ::-1].copy() if encoding == "bgr8" else out


@dataclass(frozen=True)
class FrameOutputs:
    """One frame's images as the node publishes them and ``bag_eval`` writes them (:meth:`Segmenter.segment_frame`).

    Attributes:
        segmentation: The mask (``raw_segmentation_mask``) with its timings and validity.
        colored: ``colored_segmentation_mask`` in the parameters' colour encoding, ``None`` when not asked for.
        overlay: ``segmentation_overlay`` in the same encoding, ``None`` when not asked for.
    """

    segmentation: Segmentation
    colored: np.ndarray | None
    overlay: np.ndarray | None


class Segmenter:
    """A backend with its metadata: ``segment(array, encoding)`` is the whole per-frame pipeline.

    Args:
        backend: A loaded backend (see :func:`madm_ros.backends.load_backend`).
        mask_size: ``(height, width)`` of the masks; ``None`` = the input's own resolution; one of
            the two 0 = that side follows the input's aspect ratio (so a node can take
            ``mask_width`` alone from ``ros2 param set``).
        limits: Largest input (and mask) width and height accepted; larger arrays are refused
            before preprocessing allocates anything.

    Raises:
        ConfigError: a bad ``mask_size``, or a label set too large for mono8 masks.
        BackendError: the model's network input is larger than ``limits``.
    """

    def __init__(self, backend: Backend, mask_size: tuple[int, int] | None = None, *,
                 limits: InputLimits = DEFAULT_LIMITS) -> None:
        if mask_size is not None and (len(mask_size) != 2 or min(mask_size) < 0 or max(mask_size) == 0):
            raise ConfigError(f"mask size must be (height, width), at least one positive and neither negative, got {mask_size}")
        if mask_size is not None and (mask_size[0] > limits.max_height or mask_size[1] > limits.max_width):
            raise ConfigError(f"mask size {mask_size[1]}×{mask_size[0]} (width×height) exceeds the input limit of "
                              f"{limits.max_width}×{limits.max_height}; choose a smaller mask_size or raise the limits")
        self.backend = backend
        self.mask_size = mask_size
        self.limits = limits
        self.metadata: ModelMetadata = backend.metadata
        self.spec: InputSpec = self.metadata.input_spec
        self.label_set: LabelSet = get_label_set(self.metadata.label_set)
        if self.label_set.num_classes > UNLABELLED:
            raise ConfigError(f"label set {self.label_set.name!r} has {self.label_set.num_classes} classes; "
                              f"mono8 masks hold at most {UNLABELLED}")
        if self.spec.width > limits.max_width or self.spec.height > limits.max_height:
            raise BackendError(f"the model's network input {self.spec.width}×{self.spec.height} (its metadata's "
                               f"input_spec) exceeds the input limit of {limits.max_width}×{limits.max_height}; "
                               "a madm model runs at a few hundred pixels (MADM: 512×512)")

    def mask_shape(self, input_hw: tuple[int, ...]) -> tuple[int, int]:
        """``(height, width)`` of the masks of an input of ``input_hw``: ``mask_size``, completed from the input's aspect.

        Raises:
            InputError: a side completed from an unusual input's aspect (a 4096×1 frame) exceeds ``limits``.
        """
        if self.mask_size is None:
            return int(input_hw[0]), int(input_hw[1])
        height, width = self.mask_size
        if height and width:
            return height, width
        if height:
            width = max(1, round(input_hw[1] * height / input_hw[0]))
        else:
            height = max(1, round(input_hw[0] * width / input_hw[1]))
        check_image_size(width, height, self.limits, what=f"mask of a {input_hw[1]}×{input_hw[0]} input")
        return height, width

    @classmethod
    def load(cls, model: str | Path, kind: str = "auto", *, engine: str | Path | None = None,
             mask_size: tuple[int, int] | None = None, limits: InputLimits = DEFAULT_LIMITS,
             **options: Any) -> Segmenter:
        """Load a model file (see :func:`load_backend` for the arguments; ``limits`` as in :class:`Segmenter`).

        Raises:
            BackendError: the file cannot be loaded, or its tensors do not fit its metadata (label
                set, input shape and channels, logits channels; see
                :func:`madm_ros.backends.check_model_signature`).
        """
        return cls(load_backend(model, kind, engine=engine, **options), mask_size, limits=limits)

    @property
    def modality(self) -> str:
        """The modality the model was trained for."""
        return self.spec.modality

    def warm_up(self) -> None:
        """Run one blank frame so that the backend allocates its buffers before the first real one.

        Also checks the logits' channel count, which a model with dynamic channels cannot declare.

        Raises:
            BackendError: the logits have another number of channels than the label set has classes.
        """
        output = self.backend.infer(np.zeros((1, 3, self.spec.height, self.spec.width), np.float32))
        channels = output.logits.shape[1] if output.logits.ndim == 4 else None
        if channels != self.label_set.num_classes:
            raise BackendError(f"model {self.backend.describe().get('path')} returned logits of shape "
                               f"{output.logits.shape}, expected {self.label_set.num_classes} channels, one per class "
                               f"of its label set {self.label_set.name!r}; re-export it with python -m madm_train export")

    def segment(self, array: np.ndarray, encoding: str) -> Segmentation:
        """Segment one sensor array given with its ``sensor_msgs/Image`` encoding.

        A frame without any valid pixel (:func:`~madm_ros.preprocessing.invalid_frame_reason`: depth
        all 0/NaN/±inf, a constant thermal frame, an edge frame without events) is not run through
        the network: its mask is all :data:`UNLABELLED` and the result has ``valid`` False and
        ``invalid_reason`` set, so callers can count it. Partially valid frames are segmented.

        Raises:
            InputError: the encoding does not suit the model's modality, the array is malformed, or
                it is larger than the segmenter's ``limits``.
            BackendError: the network returned class ids beyond its label set.
        """
        if not isinstance(array, np.ndarray) or array.ndim not in (2, 3) or array.size == 0:
            raise InputError(f"segment expects a non-empty H×W or H×W×C array, got {getattr(array, 'shape', type(array))}")
        start = time.perf_counter()
        image = modality_image(array, encoding, self.spec, self.limits)
        size = self.mask_shape(array.shape[:2])
        reason = invalid_frame_reason(array, encoding, self.spec)
        if reason is not None:
            labels = np.full(size, UNLABELLED, np.uint8)
            elapsed = (time.perf_counter() - start) * 1e3
            return Segmentation(labels, image, self.label_set,
                                {"preprocess": elapsed, "inference": 0.0, "postprocess": 0.0}, invalid_reason=reason)
        tensor = to_network_input(image, self.spec)[None]
        inferred = time.perf_counter()
        output = self.backend.infer(tensor)
        done = time.perf_counter()
        network = output.labels[0]
        if network.size and int(network.max()) >= self.label_set.num_classes:
            raise BackendError(f"the model returned class id {int(network.max())}, beyond its label set "
                               f"{self.label_set.name!r} (ids 0…{self.label_set.num_classes - 1}); re-export it")
        labels = resize_labels(network, size)
        finished = time.perf_counter()
        timings = {"preprocess": (inferred - start) * 1e3, "inference": (done - inferred) * 1e3,
                   "postprocess": (finished - done) * 1e3}
        return Segmentation(labels, image, self.label_set, timings)

    def segment_frame(self, array: np.ndarray, encoding: str, params: Any, *, colored: bool = True,
                      overlay: bool = True) -> FrameOutputs:
        """The per-frame step of the node and ``bag_eval``: :meth:`segment`, then the images asked for.

        ``params`` (a :class:`~madm_ros.node_params.SegmentationParams`) gives the colour encoding
        (``color_segmentation_mask_encoding``) and the overlay's ``overlay_alpha``; ``colored`` and
        ``overlay`` say which images to compute (a node skips those nobody subscribes to).

        Raises:
            InputError, BackendError: as :meth:`segment`.
            ConfigError: a colour encoding other than rgb8/bgr8, or an ``overlay_alpha`` outside [0, 1].
        """
        segmentation = self.segment(array, encoding)
        color = params.color_segmentation_mask_encoding
        return FrameOutputs(segmentation, segmentation.colored(color) if colored else None,
                            segmentation.overlay(params.overlay_alpha, color) if overlay else None)


def load_segmenter(params: Any, modality: str | None, **options: Any) -> Segmenter:
    """Load the model a node's parameters name (the built-in default when empty), checked against ``modality``.

    ``modality`` is the one the model must have (``None``: any; then ``params.model_file_path`` must be set).
    ``params.limits`` (``max_input_width`` / ``max_input_height``) bound the frames
    :meth:`Segmenter.segment` accepts. ``options`` go to the backend (``providers="cpu"`` for a
    quick check that builds no GPU engine).

    Raises:
        ConfigError: the model file is missing or made for another modality.
        BackendError: the model cannot be loaded or does not fit its own metadata (checked at load).
    """
    from madm_ros.default_models import default_model_path

    model = params.model_file_path or str(default_model_path(modality or "events"))
    if not Path(model).exists():
        raise ConfigError(f"model {model} does not exist; give an exported .onnx (python -m madm_train export) "
                          "or leave it out for the built-in default")
    segmenter = Segmenter.load(model, params.backend, engine=params.engine_file_path or None, mask_size=params.mask_size,
                               limits=params.limits, threads=params.threads, **options)
    if modality is not None and segmenter.modality != modality:
        raise ConfigError(f"model {model} was trained for {segmenter.modality} input, but this input is {modality}; "
                          f"use {'an' if modality[0] in 'aeiou' else 'a'} {modality} model")
    return segmenter
