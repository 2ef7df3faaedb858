"""Inference backends behind one small interface: TensorRT engines and ONNX Runtime.

Every backend takes a batch of network tensors exactly as :func:`madm_ros.preprocessing.preprocess`
makes them (float32 N×3×H×W in [0, 1]) and returns :class:`BackendOutput` (uint8 class ids at the
input resolution and the model's logits). Each one is a plain class satisfying :class:`Backend`,
chosen from the :data:`BACKENDS` table; :func:`load_backend` with ``kind="auto"`` picks the fastest
one that is installed and usable and logs its choice.

Every backend checks at load what the model file says about its tensors against its
:class:`ModelMetadata` (:func:`check_model_signature`), so a model that cannot run here, or whose
logits do not match its label set, is refused with one message instead of failing at the first frame.

Importing this package loads nothing heavy: each backend imports its library (``tensorrt``,
``onnxruntime``, ``torch``) when it is loaded, and says which package to install when it is missing.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np

from madm_ros.errors import BackendError, ConfigError, InputError
from madm_ros.palettes import get_label_set
from madm_ros.preprocessing import InputSpec

__all__ = [
    "AUTO_BACKEND",
    "BACKENDS",
    "BACKEND_CHOICES",
    "METADATA_KEY",
    "Backend",
    "BackendOutput",
    "ModelMetadata",
    "TensorSignature",
    "check_batch",
    "check_model_signature",
    "load_backend",
]

LOG = logging.getLogger("madm_ros.backends")

METADATA_KEY = "madm"
"""Key of the JSON :class:`ModelMetadata` in ONNX ``metadata_props`` and engine sidecars."""


@dataclass(frozen=True)
class ModelMetadata:
    """What a deployed model says about itself, so a node needs no other configuration to use it.

    Attributes:
        label_set: Name of the label set of the logits (``madm_ros.palettes``).
        input_spec: How inputs were preprocessed in training (modality, network size, ranges).
        logits_stride: The logits output is this many times smaller than the input.
        argmax_stride: The ``labels`` output was arg-maxed at 1/argmax_stride resolution.
    """

    label_set: str
    input_spec: InputSpec
    logits_stride: int
    argmax_stride: int

    def __post_init__(self) -> None:
        if not isinstance(self.label_set, str) or not self.label_set:
            raise ConfigError(f"ModelMetadata.label_set must be a label set name, got {self.label_set!r}")
        if not isinstance(self.input_spec, InputSpec):
            raise ConfigError(f"ModelMetadata.input_spec must be an InputSpec, got {type(self.input_spec).__name__}")
        for name in ("logits_stride", "argmax_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ModelMetadata.{name} must be a positive integer, got {value!r}")

    def to_json(self) -> str:
        """One JSON line, as stored in ONNX metadata and engine sidecars."""
        return json.dumps({"label_set": self.label_set, "input_spec": self.input_spec.to_dict(),
                           "logits_stride": self.logits_stride, "argmax_stride": self.argmax_stride}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> ModelMetadata:
        """Parse :meth:`to_json` output; ``source`` names the file in errors."""
        try:
            values = json.loads(text)
            return cls(values["label_set"], InputSpec.from_dict(values["input_spec"]), int(values["logits_stride"]),
                       int(values["argmax_stride"]))
        except (ValueError, KeyError, TypeError) as error:
            raise BackendError(f"{source}: unreadable madm metadata ({error}); re-export with python -m madm_train export") \
                from None


class BackendOutput(NamedTuple):
    """One batch of results.

    Attributes:
        labels: uint8 N×H×W class ids at the input resolution.
        logits: float32 N×K×h×w at the model's logits stride (see :class:`ModelMetadata`).
    """

    labels: np.ndarray
    logits: np.ndarray


class TensorSignature(NamedTuple):
    """Shape and element type of one model input or output, as the model file declares them.

    Attributes:
        shape: One entry per dimension: its size, or ``None`` where the dimension is dynamic.
        dtype: numpy name of the element type (``float32``, ``uint8``, …); ``None`` when unknown.
    """

    shape: tuple[int | None, ...]
    dtype: str | None = None

    def describe(self) -> str:
        """``1×3×64×128 float32`` (``?`` for a dynamic dimension)."""
        dims = "×".join("?" if n is None else str(n) for n in self.shape) or "a scalar"
        return f"{dims} {self.dtype}" if self.dtype else dims


def _fits(found: int | None, expected: int) -> bool:
    return found is None or found == expected


def check_model_signature(source: str | Path, metadata: ModelMetadata, *, image: TensorSignature,
                          labels: TensorSignature, logits: TensorSignature) -> None:
    """Refuse a model whose tensors do not fit its metadata, listing every problem in one :class:`BackendError`.

    What madm feeds and reads (see :class:`Backend`): ``image`` float32 N×3×H×W with H×W the
    metadata's ``input_spec`` size (or dynamic) and a batch of 1 allowed; ``labels`` uint8 N×H×W;
    ``logits`` N×K×h×w with K the number of classes of the metadata's label set, because the
    arg-max ids index that label set (a model with more logits than classes would publish ids
    beyond it). Dynamic dimensions pass; the segmenter checks them on the first output.

    Args:
        source: The model file, named in the message.
        metadata: The model's metadata.
        image: The input tensor as the file declares it.
        labels: The ``labels`` output.
        logits: The ``logits`` output.

    Raises:
        BackendError: the label set is unknown or a tensor does not fit (each problem named with the
            found and the expected shape or number).
    """
    spec = metadata.input_spec
    problems = []
    try:
        classes: int | None = get_label_set(metadata.label_set).num_classes
    except ConfigError as error:
        classes = None
        problems.append(f"its metadata names {error}")
    shape = image.shape
    if (len(shape) != 4 or image.dtype not in (None, "float32") or not _fits(shape[0], 1) or shape[1] != 3
            or not _fits(shape[2], spec.height) or not _fits(shape[3], spec.width)):
        problems.append(f"input is {image.describe()}; madm expects N×3×{spec.height}×{spec.width} float32 "
                        f"(3 channels, batch 1 or dynamic, H×W {spec.height}×{spec.width} as its metadata's input_spec "
                        "or dynamic)")
    if len(labels.shape) != 3 or labels.dtype not in (None, "uint8") or not _fits(labels.shape[1], spec.height) \
            or not _fits(labels.shape[2], spec.width):
        problems.append(f"output 'labels' is {labels.describe()}; madm expects N×{spec.height}×{spec.width} uint8 class ids")
    if len(logits.shape) != 4 or logits.dtype not in (None, "float32", "float16"):
        problems.append(f"output 'logits' is {logits.describe()}; madm expects N×K×h×w float32")
    elif classes is not None and logits.shape[1] is not None and logits.shape[1] != classes:
        problems.append(f"its logits have {logits.shape[1]} channels but its label set {metadata.label_set!r} has "
                        f"{classes} classes (ids would not match the label set)")
    if problems:
        raise BackendError(f"refusing model {source}: " + "; ".join(problems) +
                           ". Re-export it with python -m madm_train export from a student of this label set and size")


class Backend(Protocol):
    """A loaded model ready to run; construct through :func:`load_backend`."""

    metadata: ModelMetadata

    def infer(self, images: np.ndarray) -> BackendOutput:
        """Run one batch of float32 N×3×H×W [0, 1] network tensors."""

    def describe(self) -> dict[str, Any]:
        """Backend name, file, device/providers, precision and shapes, for logs and diagnostics."""


def check_batch(images: np.ndarray) -> np.ndarray:
    """Refuse anything but a contiguous float32 N×3×H×W batch (what every backend binds directly)."""
    if not isinstance(images, np.ndarray) or images.dtype != np.float32 or images.ndim != 4 or images.shape[1] != 3 \
            or images.size == 0:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise InputError(f"backends take float32 N×3×H×W batches from madm_ros.preprocessing, got {got}")
    return np.ascontiguousarray(images)


def require(module: str, install: str) -> Any:
    """Import ``module`` or raise :class:`BackendError` naming what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise BackendError(f"{module} is not installed ({error}); install it with: {install}") from None


BACKENDS: dict[str, str] = {
    "tensorrt": "madm_ros.backends.tensorrt_engine:TensorRTBackend",
    "onnxruntime": "madm_ros.backends.ort:OnnxRuntimeBackend",
}
"""Backend name → ``module:class``; each class has ``load(path, **options)``. The one list of backend
names: node parameters, launch arguments and command lines read it. (Saved PyTorch folders run on
``madm_train.deploy.pytorch_backend`` on the training side; the runtime runs exported files only.)"""

AUTO_BACKEND = "auto"
"""The ``backend`` value that lets :func:`load_backend` pick the fastest usable backend for the files at hand."""

BACKEND_CHOICES: tuple[str, ...] = (AUTO_BACKEND, *BACKENDS)
"""Values of a ``backend`` parameter or option."""


def _backend_class(kind: str) -> Any:
    if kind not in BACKENDS:
        raise BackendError(f"unknown backend {kind!r}; choose auto, {', '.join(BACKENDS)}")
    module, name = BACKENDS[kind].split(":")
    return getattr(importlib.import_module(module), name)


def _auto_kind(model: Path, engine: Path | None) -> str:
    """Fastest usable backend for the files at hand: TensorRT engine > ONNX Runtime."""
    if engine is not None and engine.is_file() and importlib.util.find_spec("tensorrt") is not None:
        return "tensorrt"
    if model.suffix == ".onnx" and importlib.util.find_spec("onnxruntime") is not None:
        return "onnxruntime"
    if model.is_dir():
        raise BackendError(f"{model} is a folder; the runtime runs exported files: export it to ONNX with "
                           "python -m madm_train export --student FOLDER --out DIR")
    raise BackendError(f"no installed backend can run {model}" + (f" or {engine}" if engine else "") +
                       ": need an .engine with tensorrt or an .onnx with onnxruntime")


def load_backend(model: str | Path, kind: str = "auto", *, engine: str | Path | None = None, threads: int | None = None,
                 **options: Any) -> Backend:
    """Load ``model`` (an ``.onnx`` file) or ``engine`` with backend ``kind``.

    Args:
        model: ONNX file (onnxruntime; also checked against the engine's sidecar).
        kind: ``auto``, ``tensorrt`` or ``onnxruntime``.
        engine: TensorRT engine file (``tensorrt``; its sidecar JSON must sit beside it).
        threads: CPU threads of ONNX Runtime, used only when ONNX Runtime is the backend chosen
            (so ``auto`` with an engine at hand runs TensorRT whatever the node's ``threads``).
        options: Passed to the backend's ``load`` (e.g. ``providers`` for onnxruntime,
            ``precision`` for tensorrt).
    """
    model = Path(model)
    engine = Path(engine) if engine is not None else None
    chosen = _auto_kind(model, engine) if kind == "auto" else kind
    cls = _backend_class(chosen)
    if threads is not None and chosen == "onnxruntime":
        options["threads"] = threads
    backend = cls.load(engine, onnx=model, **options) if chosen == "tensorrt" else cls.load(model, **options)
    if kind == "auto":
        LOG.info("backend auto: using %s (%s)", chosen, backend.describe())
    return backend
