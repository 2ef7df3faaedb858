"""The one path from a sensor array to the network tensor, shared by training, bag evaluation and nodes.

Two steps, both pure numpy/OpenCV:

1. :func:`modality_image` turns what a sensor delivers (depth in mm or m, thermal counts, an RGB
   image, an event edge frame) into an 8-bit image, the form MADM's data sets store on disk
   (MADM reads every modality as an 8-bit image and repeats single channels to three). The
   mapping is explicit and recorded in :class:`InputSpec`, which travels with the model, so a
   node cannot silently use other ranges than its model was trained with.
2. :func:`to_network_input` resizes that image to the network size and scales it to float32
   [0, 1], channels first, three channels (MADM divides by 255 and maps to [-1, 1] inside the
   model).

:func:`preprocess` chains both; callers use it rather than the steps, so that trainer, bag
evaluation and nodes cannot drift apart.

Arrays larger than :class:`~madm_ros.limits.InputLimits` are refused before step 1 allocates
anything, and :func:`invalid_frame_reason` says when a frame holds no valid pixel at all (a blank
input the network would segment confidently); :class:`madm_ros.segmenter.Segmenter` skips such
frames.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from madm_ros.errors import ConfigError, InputError, check_known_keys
from madm_ros.image_conversion import IMAGE_ENCODINGS
from madm_ros.limits import DEFAULT_LIMITS, InputLimits, check_image_size

__all__ = [
    "ENCODINGS",
    "ENCODING_ALIASES",
    "IMAGE_MODALITIES",
    "MODALITIES",
    "NODE_MODALITIES",
    "InputSpec",
    "Modality",
    "depth_to_image",
    "invalid_frame_reason",
    "modality_image",
    "percentiles_u16",
    "preprocess",
    "resize_image",
    "sensor_encoding",
    "thermal_to_image",
    "to_network_input",
]

Modality = Literal["rgb", "depth", "thermal", "events"]
MODALITIES: tuple[str, ...] = get_args(Modality)
"""The one list of modality names; typed fields use :data:`Modality`, everything else reads this."""

IMAGE_MODALITIES: tuple[str, ...] = ("depth", "thermal")
"""The modalities a sensor delivers as raw-unit ``sensor_msgs/Image`` frames (mm or m, camera counts): the
image node's. RGB is the labelled source; events arrive as event messages."""

NODE_MODALITIES: tuple[str, ...] = (*IMAGE_MODALITIES, "events")
"""The modalities a segmentation node runs on, each adapted from RGB: default models, bag targets and
the benchmark's targets."""

ENCODINGS: dict[str, tuple[str, ...]] = {
    "rgb": ("rgb8", "bgr8"),
    "depth": ("16UC1", "32FC1", "mono8", "rgb8", "bgr8"),
    "thermal": ("mono8", "mono16", "rgb8", "bgr8"),
    "events": ("mono8",),
}
"""Image encodings (sensor_msgs/Image names) each modality accepts.

For depth, ``mono8``/``rgb8``/``bgr8`` (and ``rgb8``/``bgr8`` for thermal) are images already
rendered to 8 bits, such as DELIVER's depth PNGs and FMB's infrared PNGs; they are used as they
are, as MADM does.
"""

ENCODING_ALIASES: dict[str, dict[str, str]] = {
    "rgb": {},
    "depth": {"mono16": "16UC1", "8UC1": "mono8"},
    "thermal": {"16UC1": "mono16", "8UC1": "mono8"},
    "events": {"8UC1": "mono8"},
}
"""Encodings that hold the same bytes as one of :data:`ENCODINGS` under another name, per modality.

Why: drivers differ in the name they give one layout (a thermal camera publishing its counts as
``16UC1``, a depth driver its millimetres as ``mono16``); cv_bridge treats these pairs alike.
"""


def sensor_encoding(encoding: str, modality: str) -> str:
    """The :data:`ENCODINGS` name ``modality`` reads an image of ``encoding`` as (aliases resolved).

    Raises:
        InputError: ``modality`` does not take ``encoding``, naming what it takes.
    """
    if encoding in ENCODINGS[modality]:
        return encoding
    alias = ENCODING_ALIASES[modality].get(encoding)
    if alias is None:
        taken = (*ENCODINGS[modality], *ENCODING_ALIASES[modality])
        raise InputError(f"{modality} input must have encoding {' or '.join(taken)}, got {encoding!r}")
    return alias


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its input; saved with every checkpoint and exported model.

    Attributes:
        modality: ``rgb``, ``depth``, ``thermal`` or ``events``.
        height: Network input rows (MADM: 512).
        width: Network input columns (MADM: 512).
        depth_min_m: Depth mapped to the brightest valid value, metres. Closer valid depth clips to it.
        depth_max_m: Depth mapped to the darkest valid value (1), metres. Farther depth clips to it.
        depth_mapping: ``inverse`` (1/d, default: resolution where obstacles are near, like
            disparity), ``linear`` or ``log`` between the two limits. Valid depth becomes 1…255 with
            near = bright; invalid depth (0, NaN, ±inf, negative) becomes 0, so "no measurement"
            never looks like a real distance.
        thermal_min: Raw value (counts of the camera's mono8/mono16 output) mapped to 0; with
            ``thermal_max`` a fixed radiometric window. ``None`` for both: each frame is stretched
            between its 1st and 99th percentile (for cameras without stable radiometry).
        thermal_max: Raw value mapped to 255 (see ``thermal_min``).
    """

    modality: Modality
    height: int = 512
    width: int = 512
    depth_min_m: float = 0.5
    depth_max_m: float = 80.0
    depth_mapping: Literal["inverse", "linear", "log"] = "inverse"
    thermal_min: float | None = None
    thermal_max: float | None = None

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ConfigError(f"modality must be one of {', '.join(MODALITIES)}, got {self.modality!r}")
        if not (isinstance(self.height, int) and isinstance(self.width, int) and self.height > 0 and self.width > 0):
            raise ConfigError(f"height and width must be positive integers, got {self.height!r}×{self.width!r}")
        if not 0 < self.depth_min_m < self.depth_max_m:
            raise ConfigError(
                f"need 0 < depth_min_m < depth_max_m, got depth_min_m={self.depth_min_m}, depth_max_m={self.depth_max_m}"
            )
        if self.depth_mapping not in ("inverse", "linear", "log"):
            raise ConfigError(f"depth_mapping must be inverse, linear or log, got {self.depth_mapping!r}")
        if (self.thermal_min is None) != (self.thermal_max is None):
            raise ConfigError("set both thermal_min and thermal_max (a fixed window) or neither (per-frame percentiles)")
        if self.thermal_min is not None and not self.thermal_min < self.thermal_max:  # type: ignore[operator]
            raise ConfigError(f"need thermal_min < thermal_max, got {self.thermal_min} and {self.thermal_max}")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for checkpoints, ONNX metadata and YAML."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> InputSpec:
        """Inverse of :meth:`to_dict`; unknown keys are an error, not ignored."""
        check_known_keys(values, cls, "InputSpec")
        return cls(**values)


def _check_array(array: np.ndarray, encoding: str, channels: int) -> None:
    expected = IMAGE_ENCODINGS[encoding][0]
    shape_ok = array.ndim == 2 if channels == 1 else (array.ndim == 3 and array.shape[2] == channels)
    if array.dtype != expected or not shape_ok or array.size == 0:
        want = "H×W" if channels == 1 else f"H×W×{channels}"
        raise InputError(
            f"{encoding} image must be a non-empty {want} {np.dtype(expected).name} array, "
            f"got {array.dtype} with shape {array.shape}"
        )


def depth_to_image(depth: np.ndarray, encoding: str, spec: InputSpec) -> np.ndarray:
    """Metric depth (``16UC1`` millimetres or ``32FC1`` metres) → H×W uint8 (see :class:`InputSpec`).

    ``16UC1`` has only 65,536 possible values, so it is mapped through a table of the very same
    float32 arithmetic (:func:`_millimetre_table`): identical bytes, one pass over the frame instead
    of about ten (0.3 ms instead of 3 ms for 640×480 on one core, most of a depth node's preprocessing).
    """
    _check_array(depth, encoding, 1)
    if encoding == "16UC1":
        return np.take(_millimetre_table(spec.depth_min_m, spec.depth_max_m, spec.depth_mapping), depth)
    return _metres_to_image(depth.astype(np.float32), spec.depth_min_m, spec.depth_max_m, spec.depth_mapping)


@functools.lru_cache(maxsize=8, typed=True)
def _millimetre_table(depth_min_m: float, depth_max_m: float, mapping: str) -> np.ndarray:
    """The uint8 image value of every ``16UC1`` millimetre value (read-only; cached per depth window)."""
    metres = np.arange(65536, dtype=np.uint16).astype(np.float32) * np.float32(0.001)
    table = _metres_to_image(metres, depth_min_m, depth_max_m, mapping)
    table.setflags(write=False)
    return table


def _metres_to_image(metres: np.ndarray, depth_min_m: float, depth_max_m: float, mapping: str) -> np.ndarray:
    """float32 metres → uint8: invalid (0, NaN, ±inf, negative) → 0, valid → 1…255 with near = bright."""
    valid = np.isfinite(metres) & (metres > 0)
    clipped = np.clip(np.where(valid, metres, depth_max_m), depth_min_m, depth_max_m)
    near, far = np.float32(depth_min_m), np.float32(depth_max_m)
    if mapping == "inverse":
        closeness = (1 / clipped - 1 / far) / (1 / near - 1 / far)
    elif mapping == "log":
        closeness = (np.log(far) - np.log(clipped)) / (np.log(far) - np.log(near))
    else:
        closeness = (far - clipped) / (far - near)
    image = (1 + np.rint(closeness * 254)).astype(np.uint8)
    image[~valid] = 0
    return image


def thermal_to_image(raw: np.ndarray, encoding: str, spec: InputSpec) -> np.ndarray:
    """Thermal ``mono8`` (used as is unless a window is set) or ``mono16`` counts → H×W uint8."""
    _check_array(raw, encoding, 1)
    if encoding == "mono8" and spec.thermal_min is None:
        return raw
    if spec.thermal_min is not None:
        low, high = float(spec.thermal_min), float(spec.thermal_max)  # type: ignore[arg-type]
    else:
        low, high = percentiles_u16(raw, (1, 99))
        if high <= low:  # a flat frame (lens cap, first frames after a shutter): keep it flat, mid-grey
            return np.full(raw.shape, 128, dtype=np.uint8)
    scaled = (raw.astype(np.float32) - np.float32(low)) * np.float32(255 / (high - low))
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def percentiles_u16(raw: np.ndarray, percentiles: tuple[float, ...]) -> list[float]:
    """``np.percentile(raw, percentiles)`` (its default ``linear`` method, same floats) of a uint16 array, from its histogram.

    A thermal frame is stretched between its 1st and 99th percentile; ``np.percentile`` partitions
    the whole frame for that (2.5 ms for 640×480 mono16 on one core, most of a thermal node's
    preprocessing), while 16-bit counts have only 65,536 values to count (0.6 ms). The order
    statistics next to each virtual index are read off the cumulative histogram and interpolated
    exactly as numpy does, so the result is the same to the last bit (tested against numpy).

    Raises:
        ValueError: ``raw`` is not a non-empty uint8/uint16 array, or a percentile lies outside 0…100.
    """
    if raw.dtype not in (np.uint8, np.uint16) or raw.size == 0:
        raise ValueError(f"percentiles_u16 needs a non-empty uint8 or uint16 array, got {raw.dtype} {raw.shape}")
    if not all(0 <= q <= 100 for q in percentiles):
        raise ValueError(f"percentiles must lie in 0…100, got {percentiles}")
    ends = np.cumsum(np.bincount(raw.ravel(), minlength=65536))  # ends[v] = how many values are <= v
    last = raw.size - 1
    values = []
    for quantile in np.true_divide(np.asarray(percentiles, dtype=np.float64), 100):
        virtual = last * quantile
        below = min(int(np.floor(virtual)), last)
        gamma = virtual - np.floor(virtual)
        a, b = (float(v) for v in np.searchsorted(ends, (below, min(below + 1, last)), side="right"))
        values.append(float(b - (b - a) * (1 - gamma) if gamma >= 0.5 else a + (b - a) * gamma))  # numpy's two-sided lerp
    return values


def modality_image(array: np.ndarray, encoding: str, spec: InputSpec, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Step 1: a sensor array with its ``sensor_msgs/Image`` encoding → the 8-bit image of ``spec.modality``.

    Three-channel input comes back H×W×3 in RGB order; depth, thermal and event edge frames H×W.
    Arrays wider or taller than ``limits`` are refused before any conversion allocates memory
    (depth conversion alone makes several float32 copies of the frame).

    Raises:
        InputError: the encoding does not suit ``spec.modality``, the array is malformed, or it is
            larger than ``limits``.
    """
    encoding = sensor_encoding(encoding, spec.modality)
    if isinstance(array, np.ndarray) and array.ndim >= 2:
        check_image_size(array.shape[1], array.shape[0], limits, what=f"{spec.modality} {encoding} array")
    if encoding in ("rgb8", "bgr8"):
        _check_array(array, encoding, 3)
        return array[:, :, ::-1] if encoding == "bgr8" else array
    if spec.modality == "depth" and encoding != "mono8":
        return depth_to_image(array, encoding, spec)
    if spec.modality == "thermal":
        return thermal_to_image(array, encoding, spec)
    _check_array(array, encoding, 1)
    return array


def resize_image(image: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an 8-bit image to ``size_hw`` = (height, width): the one image resize of madm."""
    import cv2

    if image.shape[:2] == tuple(size_hw):
        return image
    return cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_LINEAR)


def to_network_input(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Step 2: an 8-bit image (H×W or H×W×3) → float32 3×height×width in [0, 1] (bilinear resize)."""
    if (image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3)
            or image.size == 0):
        raise InputError(f"to_network_input expects a non-empty H×W or H×W×3 uint8 image, got {image.dtype} {image.shape}")
    image = resize_image(image, (spec.height, spec.width))
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    return np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) * np.float32(1 / 255)


def invalid_frame_reason(array: np.ndarray, encoding: str, spec: InputSpec) -> str | None:
    """Why a sensor frame holds no valid pixel, or ``None`` when at least one pixel is a real measurement.

    A frame without any valid pixel reaches the network as a blank image, which it segments with
    full confidence; callers skip such frames (the segmenter returns an all-unlabelled mask) and
    count them. "No valid pixel" per modality:

    - depth ``16UC1`` / ``32FC1``: no pixel is finite and > 0 (0, NaN, ±inf and negative values are
      "no measurement", exactly the pixels :func:`depth_to_image` maps to 0);
    - depth already rendered to ``mono8`` / ``rgb8``: every byte is 0, the rendering's "no measurement";
    - thermal (``mono8``, ``mono16``, ``rgb8``): every pixel has the same raw value (all zero or any
      constant): a camera not streaming yet, a closed shutter during flat-field correction, a lens
      cap. A real scene always shows some sensor noise, so this never drops a live frame; a scene
      that a fixed ``thermal_min``/``thermal_max`` window clips flat is still a measurement and is
      segmented;
    - events (``mono8`` edge frame): every pixel holds the same value, i.e. the accumulator's
      neutral byte (0 by default): the slice had no event;
    - rgb: never invalid (8-bit colour has no "no measurement" value).

    Partially valid frames return ``None`` and are segmented as usual. The array must already have
    passed :func:`modality_image` (encoding and shape checked); this costs one pass over it.
    """
    encoding = sensor_encoding(encoding, spec.modality)
    if spec.modality == "depth":
        if encoding in ("16UC1", "32FC1"):
            # millimetres are finite and never negative; for metres NaN compares False and +inf
            # fails "< inf", so this is "finite and > 0" in two comparisons
            if not (array.any() if encoding == "16UC1" else np.any((array > 0) & (array < np.inf))):
                return f"depth frame has no valid pixel (every value is 0, NaN, ±inf or negative; {encoding})"
            return None
        if not array.any():
            return f"depth frame has no valid pixel (every byte is 0, the {encoding} rendering's no-measurement value)"
        return None
    if spec.modality in ("thermal", "events"):
        first = array[0, 0]  # a scalar, or the RGB triple of an rgb8 frame
        if not np.any(array != first):
            value = first.tolist()
            if spec.modality == "events":
                return f"event frame has no event (every pixel is {value}, the neutral value)"
            return f"thermal frame has no valid pixel (every pixel is {value}: shutter closed, lens cap or no data yet)"
    return None


def preprocess(array: np.ndarray, encoding: str, spec: InputSpec, limits: InputLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Sensor array → network tensor (3×height×width float32): the function every caller uses.

    Raises:
        InputError: see :func:`modality_image` (wrong encoding, malformed array, larger than ``limits``).
    """
    return to_network_input(modality_image(array, encoding, spec, limits), spec)
