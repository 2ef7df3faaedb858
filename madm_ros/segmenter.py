"""A loaded model plus the one preprocessing path: sensor array in, class-id mask at camera resolution out.

This is what nodes, the demo and offline evaluation call, so that a mask published on a topic is
bit for bit the mask the offline pipeline computes for the same array. It is ROS-free: message
conversion lives in :mod:`madm_ros.nodes`.

Masks are resized to the camera (or a chosen mask) resolution with nearest-neighbour sampling, so
ids are never blended; pixels outside every class stay 255 (``UNLABELLED``). The colour mask and
the overlay are computed on request only, because a node skips them when nobody subscribes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.backends import Backend, ModelMetadata, load_backend
from madm_ros.errors import ConfigError, InputError
from madm_ros.palettes import LabelSet, colorize, get_label_set
from madm_ros.preprocessing import InputSpec, modality_image, to_network_input

__all__ = ["UNLABELLED", "Segmentation", "Segmenter", "load_segmenter", "resize_labels", "scale_camera_matrix"]

UNLABELLED = 255
"""Id of pixels without a class in ``raw_segmentation_mask``."""

COLOR_ENCODINGS = ("rgb8", "bgr8")


def resize_labels(labels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a uint8 id image to ``size_hw`` (ids are never interpolated)."""
    import cv2

    if labels.shape[:2] == tuple(size_hw):
        return labels
    return cv2.resize(labels, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)


def scale_camera_matrix(values: Any, sx: float, sy: float, columns: int) -> list[float]:
    """Scale a row-major camera matrix (``K``: 3 columns, ``P``: 4) to an image resized by ``sx``, ``sy``.

    Rows 0 and 1 (focal lengths, principal point, and for ``P`` the baseline term) scale with x
    and y; row 2 is unchanged, as image_proc's resize does.
    """
    out = [float(v) for v in values]
    for c in range(columns):
        out[c] *= sx
        out[columns + c] *= sy
    return out


@dataclass
class Segmentation:
    """One segmented frame.

    Attributes:
        labels: uint8 H×W class ids at the mask resolution, 255 = unlabelled.
        image: The 8-bit modality image the network saw before resizing (H×W or H×W×3 RGB),
            the background of the overlay.
        timings_ms: ``preprocess``, ``inference`` and ``postprocess`` wall times (steady clock).
    """

    labels: np.ndarray
    image: np.ndarray
    label_set: LabelSet
    timings_ms: dict[str, float] = field(default_factory=dict)

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


class Segmenter:
    """A backend with its metadata: ``segment(array, encoding)`` is the whole per-frame pipeline.

    Args:
        backend: A loaded backend (see :func:`madm_ros.backends.load_backend`).
        mask_size: ``(height, width)`` of the masks; ``None`` = the input's own resolution.
    """

    def __init__(self, backend: Backend, mask_size: tuple[int, int] | None = None) -> None:
        if mask_size is not None and (len(mask_size) != 2 or min(mask_size) <= 0):
            raise ConfigError(f"mask size must be two positive integers (height, width), got {mask_size}")
        self.backend = backend
        self.mask_size = mask_size
        self.metadata: ModelMetadata = backend.metadata
        self.spec: InputSpec = self.metadata.input_spec
        self.label_set: LabelSet = get_label_set(self.metadata.label_set)
        if self.label_set.num_classes > UNLABELLED:
            raise ConfigError(f"label set {self.label_set.name!r} has {self.label_set.num_classes} classes; "
                              f"mono8 masks hold at most {UNLABELLED}")

    @classmethod
    def load(cls, model: str | Path, kind: str = "auto", *, engine: str | Path | None = None,
             mask_size: tuple[int, int] | None = None, **options: Any) -> Segmenter:
        """Load a model file (see :func:`load_backend` for the arguments)."""
        return cls(load_backend(model, kind, engine=engine, **options), mask_size)

    @property
    def modality(self) -> str:
        """The modality the model was trained for."""
        return self.spec.modality

    def warm_up(self) -> None:
        """Run one blank frame so that the backend allocates its buffers before the first real one."""
        self.backend.infer(np.zeros((1, 3, self.spec.height, self.spec.width), np.float32))

    def segment(self, array: np.ndarray, encoding: str) -> Segmentation:
        """Segment one sensor array given with its ``sensor_msgs/Image`` encoding.

        Raises:
            InputError: the encoding does not suit the model's modality, or the array is malformed.
        """
        if not isinstance(array, np.ndarray) or array.ndim not in (2, 3) or array.size == 0:
            raise InputError(f"segment expects a non-empty H×W or H×W×C array, got {getattr(array, 'shape', type(array))}")
        start = time.perf_counter()
        image = modality_image(array, encoding, self.spec)
        tensor = to_network_input(image, self.spec)[None]
        inferred = time.perf_counter()
        output = self.backend.infer(tensor)
        done = time.perf_counter()
        labels = resize_labels(output.labels[0], self.mask_size or array.shape[:2])
        finished = time.perf_counter()
        timings = {"preprocess": (inferred - start) * 1e3, "inference": (done - inferred) * 1e3,
                   "postprocess": (finished - done) * 1e3}
        return Segmentation(labels, image, self.label_set, timings)


def load_segmenter(params: Any, modality: str | None) -> Segmenter:
    """Load the model a node's parameters name (the built-in default when empty), checked against ``modality``.

    ``modality`` is the one the model must have (``None``: any; then ``params.model_file_path`` must be set).
    """
    from madm_ros.default_models import default_model_path

    model = params.model_file_path or str(default_model_path(modality or "events"))
    if not Path(model).exists():
        raise ConfigError(f"model {model} does not exist; give an exported .onnx (python -m madm_train export) "
                          "or leave it out for the built-in default")
    options: dict[str, Any] = {}
    if params.backend in ("auto", "onnxruntime") and Path(model).suffix == ".onnx":
        options["threads"] = params.threads
    segmenter = Segmenter.load(model, params.backend, engine=params.engine_file_path or None, mask_size=params.mask_size,
                               **options)
    if modality is not None and segmenter.modality != modality:
        raise ConfigError(f"model {model} was trained for {segmenter.modality} input, but this input is {modality}; "
                          f"use a {modality} model")
    return segmenter
