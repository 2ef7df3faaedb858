"""TensorRT backend: runs a prebuilt engine after checking its sidecar against this machine.

Uses the name-based I/O API of TensorRT 10 and 11 (``set_input_shape``, ``set_tensor_address``,
``execute_async_v3``) with CUDA buffers allocated through PyTorch (present on Jetson images and
the safe choice when PyTorch shares the process). The engine is refused, with every reason
listed, when its TensorRT version, GPU, ONNX checksum, precision or shapes do not fit
(:mod:`madm_ros.backends.engine_info`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.backends import BackendOutput, ModelMetadata, TensorSignature, check_batch, check_model_signature, require
from madm_ros.backends.engine_info import EngineInfo, check_engine_info, read_engine_info
from madm_ros.errors import BackendError

__all__ = ["TensorRTBackend", "cuda_device_identity"]

INSTALL_HINT = "pip install 'madm_ros[tensorrt]' (desktop, TensorRT 11) or use JetPack's python3-libnvinfer (Jetson)"


def cuda_device_identity() -> tuple[str, str]:
    """(name, ``"major.minor"``) of the current CUDA device, through PyTorch."""
    torch = require("torch", "pip install torch (the TensorRT backend allocates CUDA buffers with it)")
    if not torch.cuda.is_available():
        raise BackendError("the TensorRT backend needs a CUDA device and none is available")
    major, minor = torch.cuda.get_device_capability()
    return torch.cuda.get_device_name(), f"{major}.{minor}"


class TensorRTBackend:
    """A deserialised engine with one execution context."""

    def __init__(self, engine: Any, path: Path, info: EngineInfo, metadata: ModelMetadata) -> None:
        self.engine, self.path, self.info, self.metadata = engine, path, info, metadata
        self.context = engine.create_execution_context()

    @classmethod
    def load(cls, path: str | Path | None, *, onnx: str | Path | None = None, precision: str | None = None,
             input_shape: tuple[int, int, int, int] | None = None) -> TensorRTBackend:
        """Validate and deserialise the engine at ``path``.

        Args:
            path: The ``.engine`` file; ``<path>.json`` must sit beside it.
            onnx: The ONNX the caller configured; the engine must have been built from exactly it.
            precision: Refuse an engine of another precision.
            input_shape: Refuse an engine whose profile does not admit this N×3×H×W; ``None``: the
                1×3×H×W of the metadata's ``input_spec``, which is what the segmenter feeds.

        Raises:
            BackendError: the engine does not fit this machine or its metadata (tensor shapes are
                checked with :func:`~madm_ros.backends.check_model_signature`).
        """
        if path is None:
            raise BackendError("the tensorrt backend needs an engine file (engine_file_path / --engine)")
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"TensorRT engine {path} not found; build it with python -m madm_train export --tensorrt")
        info = read_engine_info(path)
        metadata = ModelMetadata.from_json(info.metadata, str(path))
        if input_shape is None:
            input_shape = (1, 3, metadata.input_spec.height, metadata.input_spec.width)
        trt = require("tensorrt", INSTALL_HINT)
        gpu_name, capability = cuda_device_identity()
        check_engine_info(info, engine=path, tensorrt_version=trt.__version__, gpu_name=gpu_name,
                          compute_capability=capability, onnx=onnx if onnx is not None and Path(onnx).is_file() else None,
                          precision=precision, input_shape=input_shape)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(path.read_bytes())
        if engine is None:
            raise BackendError(f"TensorRT could not deserialise {path} although its sidecar fits; rebuild the engine")

        def signature(name: str) -> TensorSignature:  # dtypes are converted in infer(); shapes must fit
            return TensorSignature(tuple(n if n > 0 else None for n in engine.get_tensor_shape(name)))

        check_model_signature(path, metadata, image=signature(info.input_name), labels=signature(info.outputs["labels"]),
                              logits=signature(info.outputs["logits"]))
        return cls(engine, path, info, metadata)

    def infer(self, images: np.ndarray) -> BackendOutput:
        """See :meth:`madm_ros.backends.Backend.infer`."""
        import tensorrt as trt
        import torch

        images = check_batch(images)
        shape = images.shape
        if not all(low <= n <= high for low, n, high in zip(self.info.min_shape, shape, self.info.max_shape)):
            raise BackendError(f"input {shape} outside the engine's {self.info.min_shape}…{self.info.max_shape}")
        stream = torch.cuda.current_stream()
        x = torch.from_numpy(images).cuda()
        if self.engine.get_tensor_dtype(self.info.input_name) == trt.DataType.HALF:
            x = x.half()
        self.context.set_input_shape(self.info.input_name, tuple(shape))
        self.context.set_tensor_address(self.info.input_name, x.data_ptr())
        outputs = {}
        for key, name in self.info.outputs.items():
            dtype = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT32: torch.int32,
                     trt.DataType.INT64: torch.int64, trt.DataType.UINT8: torch.uint8}[self.engine.get_tensor_dtype(name)]
            outputs[key] = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=dtype, device="cuda")
            self.context.set_tensor_address(name, outputs[key].data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise BackendError(f"TensorRT failed to run {self.path}")
        stream.synchronize()
        labels = outputs["labels"].to(torch.uint8).reshape(shape[0], shape[2], shape[3])
        return BackendOutput(labels.cpu().numpy(), outputs["logits"].float().cpu().numpy())

    def describe(self) -> dict[str, Any]:
        """See :meth:`madm_ros.backends.Backend.describe`."""
        return {"backend": "tensorrt", "path": str(self.path), "precision": self.info.precision,
                "tensorrt": self.info.tensorrt_version, "gpu": self.info.gpu_name, "builder": self.info.builder,
                "shapes": [self.info.min_shape, self.info.max_shape], "label_set": self.metadata.label_set}
