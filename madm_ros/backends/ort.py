"""ONNX Runtime backend: the CPU fallback everywhere, CUDA and TensorRT execution providers where installed.

CPU settings follow what we measured (reference/edge.md §4–5): ``ORT_ENABLE_ALL`` (about 2× on
these CNNs), sequential execution with ``intra_op_num_threads`` = the cores given to the node,
and no spinning between runs so an idle node leaves the CPU to the rest of the robot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.backends import (
    METADATA_KEY,
    BackendOutput,
    ModelMetadata,
    TensorSignature,
    check_batch,
    check_model_signature,
    require,
)
from madm_ros.errors import BackendError

__all__ = ["PROVIDER_PREFERENCE", "OnnxRuntimeBackend"]

PROVIDER_PREFERENCE = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
"""Fastest first; ``providers="auto"`` keeps the installed ones in this order."""


def _signature(node: Any) -> TensorSignature:
    """An ONNX Runtime ``NodeArg`` as a :class:`TensorSignature` (symbolic or unknown dimensions → ``None``)."""
    element = str(node.type).removeprefix("tensor(").removesuffix(")")
    dtype = {"float": "float32", "double": "float64"}.get(element, element)
    return TensorSignature(tuple(n if isinstance(n, int) and n > 0 else None for n in (node.shape or ())), dtype)


class OnnxRuntimeBackend:
    """An ``onnxruntime.InferenceSession`` over an exported madm ONNX file."""

    def __init__(self, session: Any, path: Path, metadata: ModelMetadata, threads: int) -> None:
        self.session = session
        self.path = path
        self.metadata = metadata
        self.threads = threads
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise BackendError(f"refusing model {path}: it has {len(inputs)} inputs {[i.name for i in inputs]}; "
                               "a madm model has one, the N×3×H×W image")
        self._input = inputs[0].name
        outputs = {o.name: o for o in session.get_outputs()}
        if not {"labels", "logits"} <= set(outputs):
            raise BackendError(f"{path} has outputs {list(outputs)}; a madm model has 'labels' and 'logits'")
        check_model_signature(path, metadata, image=_signature(inputs[0]), labels=_signature(outputs["labels"]),
                              logits=_signature(outputs["logits"]))

    @classmethod
    def load(cls, path: str | Path, *, threads: int = 0, providers: str | list[str] = "auto",
             spinning: bool = False) -> OnnxRuntimeBackend:
        """Open ``path``.

        Args:
            path: An ONNX file written by ``python -m madm_train export``.
            threads: Intra-op threads of the CPU provider (0: ONNX Runtime's choice, one per core).
            providers: ``auto`` (installed ones, fastest first), ``cpu``, or an explicit provider list.
            spinning: Let idle worker threads spin (slightly lower latency, burns CPU between frames).

        Raises:
            BackendError: onnxruntime missing, the file unreadable or without madm metadata, or its
                input/outputs do not fit that metadata (see :func:`~madm_ros.backends.check_model_signature`).
        """
        ort = require("onnxruntime", "pip install onnxruntime (or onnxruntime-gpu)")
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"ONNX model {path} not found")
        if threads < 0:
            raise BackendError(f"threads must be ≥ 0 (0 = one per core), got {threads}")
        available = ort.get_available_providers()
        if providers == "auto":
            chosen = [p for p in PROVIDER_PREFERENCE if p in available]
        elif providers == "cpu":
            chosen = ["CPUExecutionProvider"]
        else:
            missing = [p for p in providers if p not in available]
            if missing:
                raise BackendError(f"ONNX Runtime providers {missing} are not available here; installed: {available}")
            chosen = list(providers)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        try:
            session = ort.InferenceSession(str(path), options, providers=chosen)
        except Exception as error:  # ORT raises its own pybind error types (InvalidProtobuf, Fail, …)
            raise BackendError(f"cannot load ONNX model {path}: {str(error).strip().splitlines()[0]} "
                               "(corrupt or not an ONNX file? re-export with python -m madm_train export)") from None
        text = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if text is None:
            raise BackendError(f"{path} carries no madm metadata; export it with python -m madm_train export")
        return cls(session, path, ModelMetadata.from_json(text, str(path)), threads)

    def infer(self, images: np.ndarray) -> BackendOutput:
        """See :meth:`madm_ros.backends.Backend.infer`."""
        labels, logits = self.session.run(["labels", "logits"], {self._input: check_batch(images)})
        return BackendOutput(labels, logits)

    def describe(self) -> dict[str, Any]:
        """See :meth:`madm_ros.backends.Backend.describe`."""
        return {"backend": "onnxruntime", "path": str(self.path), "providers": self.session.get_providers(),
                "threads": self.threads, "label_set": self.metadata.label_set,
                "input": self.session.get_inputs()[0].shape}
