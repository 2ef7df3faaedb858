"""Inference backends behind one small interface: TensorRT engines and ONNX Runtime.

Every backend takes a batch of network tensors exactly as :func:`madm_ros.preprocessing.preprocess`
makes them (float32 N×3×H×W in [0, 1]) and returns :class:`BackendOutput` (uint8 class ids at the
input resolution and the model's logits). Each one is a plain class satisfying :class:`Backend`,
chosen from the :data:`BACKENDS` table; :func:`load_backend` with ``kind="auto"`` picks the fastest
one that is installed and usable and logs its choice.

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

from madm_ros.errors import BackendError, InputError
from madm_ros.preprocessing import InputSpec

__all__ = [
    "BACKENDS",
    "METADATA_KEY",
    "Backend",
    "BackendOutput",
    "ModelMetadata",
    "check_batch",
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

BACKEND_CHOICES: tuple[str, ...] = ("auto", *BACKENDS)
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


def load_backend(model: str | Path, kind: str = "auto", *, engine: str | Path | None = None, **options: Any) -> Backend:
    """Load ``model`` (an ``.onnx`` file) or ``engine`` with backend ``kind``.

    Args:
        model: ONNX file (onnxruntime; also checked against the engine's sidecar).
        kind: ``auto``, ``tensorrt`` or ``onnxruntime``.
        engine: TensorRT engine file (``tensorrt``; its sidecar JSON must sit beside it).
        options: Passed to the backend's ``load`` (e.g. ``threads``/``providers`` for onnxruntime,
            ``precision`` for tensorrt).
    """
    model = Path(model)
    engine = Path(engine) if engine is not None else None
    chosen = _auto_kind(model, engine) if kind == "auto" else kind
    cls = _backend_class(chosen)
    backend = cls.load(engine, onnx=model, **options) if chosen == "tensorrt" else cls.load(model, **options)
    if kind == "auto":
        LOG.info("backend auto: using %s (%s)", chosen, backend.describe())
    return backend
