"""Build a TensorRT engine from a madm ONNX file, for TensorRT 10.x (JetPack 6 on Orin) and 11.x (PyPI).

The two versions differ in how precision is chosen (reference/edge.md §6):

- TensorRT 10.x is weakly typed: the FP32 ONNX is parsed and ``BuilderFlag.FP16`` / ``INT8``
  let the builder pick faster kernels; INT8 ranges come from an entropy calibrator fed with real
  target-modality frames.
- TensorRT 11.x is strongly typed only (the flags and calibrators are gone): the precision is put
  into the ONNX first (:mod:`madm_ros.backends.onnx_precision`: FP16 conversion, or INT8 Q/DQ
  nodes) and the network is created ``STRONGLY_TYPED``.

Which path runs is decided by what the installed module offers, not by version strings. The
engine is written atomically with its sidecar (:mod:`madm_ros.backends.engine_info`). Building
needs the target GPU; nodes call this at first launch when no valid engine is cached.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.backends import METADATA_KEY, require
from madm_ros.backends.engine_info import PRECISIONS, EngineInfo, file_sha256, write_engine_info
from madm_ros.backends.tensorrt_engine import INSTALL_HINT, cuda_device_identity
from madm_ros.errors import BackendError, InputError

__all__ = ["build_engine", "engine_info_for", "onnx_metadata"]

Shape = tuple[int, int, int, int]


def onnx_metadata(path: str | Path) -> str:
    """The madm metadata JSON stored in an ONNX file's ``metadata_props``."""
    onnx = require("onnx", "pip install onnx")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as error:  # protobuf's DecodeError and friends
        raise BackendError(f"cannot read ONNX model {path}: {error} (corrupt or not an ONNX file?)") from None
    props = {p.key: p.value for p in model.metadata_props}
    if METADATA_KEY not in props:
        raise BackendError(f"{path} carries no madm metadata; export it with python -m madm_train export")
    return props[METADATA_KEY]


def engine_info_for(engine: Path, onnx: Path, *, tensorrt_version: str, precision: str, input_name: str,
                    min_shape: Shape, max_shape: Shape, outputs: dict[str, str], builder: str) -> EngineInfo:
    """The sidecar record of a freshly written engine on this machine's GPU."""
    gpu_name, capability = cuda_device_identity()
    return EngineInfo(onnx_sha256=file_sha256(onnx), engine_sha256=file_sha256(engine), tensorrt_version=tensorrt_version,
                      gpu_name=gpu_name, compute_capability=capability, precision=precision, input_name=input_name,
                      min_shape=min_shape, max_shape=max_shape, outputs=outputs, builder=builder,
                      metadata=onnx_metadata(onnx))


def _entropy_calibrator(trt: Any, frames: np.ndarray, cache: Path) -> Any:
    """A TensorRT 10 ``IInt8EntropyCalibrator2`` that feeds ``frames`` one at a time (device copies via torch)."""
    import torch

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            super().__init__()
            self.index = 0
            self.buffer = torch.empty((1, *frames.shape[1:]), dtype=torch.float32, device="cuda")

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(frames):
                return None
            self.buffer.copy_(torch.from_numpy(frames[self.index:self.index + 1]))
            self.index += 1
            return [self.buffer.data_ptr()]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data: Any) -> None:
            atomic_write_bytes(cache, bytes(data))

    return Calibrator()


def build_engine(onnx: str | Path, engine: str | Path, *, precision: str = "fp16", min_shape: Shape, opt_shape: Shape,
                 max_shape: Shape, calibration: np.ndarray | None = None, workspace_bytes: int = 1 << 30) -> EngineInfo:
    """Build ``engine`` (and its sidecar) from ``onnx``; returns the sidecar record.

    Args:
        onnx: FP32 ONNX written by ``python -m madm_train export``.
        engine: Output ``.engine`` path.
        precision: ``fp32``, ``fp16`` or ``int8``.
        min_shape: Smallest N×3×H×W of the optimisation profile (equal to max for a static engine).
        opt_shape: The shape TensorRT tunes for (the camera's).
        max_shape: Largest N×3×H×W.
        calibration: float32 N×3×H×W target frames; required for ``int8``.
        workspace_bytes: Builder workspace limit.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and calibration is None:
        raise InputError("int8 needs calibration frames (real target-modality frames at the input size)")
    trt = require("tensorrt", INSTALL_HINT)
    onnx, engine = Path(onnx), Path(engine)
    onnx_metadata(onnx)  # refuse foreign or corrupt files before the GPU work
    weakly_typed = hasattr(trt.BuilderFlag, "FP16")  # TensorRT 10.x; 11.x removed the precision flags
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    with tempfile.TemporaryDirectory(dir=engine.parent) as temp:
        parse_from = onnx
        if not weakly_typed and precision != "fp32":
            from madm_ros.backends.onnx_precision import convert_fp16, quantize_int8_qdq

            parse_from = (convert_fp16(onnx, Path(temp) / "fp16.onnx") if precision == "fp16"
                          else quantize_int8_qdq(onnx, Path(temp) / "int8.onnx", calibration))  # type: ignore[arg-type]
        flags = 0 if weakly_typed else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(parse_from)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendError(f"TensorRT cannot parse {onnx}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        if weakly_typed and precision in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if weakly_typed and precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.int8_calibrator = _entropy_calibrator(trt, calibration, Path(temp) / "calibration.cache")  # type: ignore[arg-type]
        image = network.get_input(0)
        profile = builder.create_optimization_profile()
        profile.set_shape(image.name, min_shape, opt_shape, max_shape)
        config.add_optimization_profile(profile)
        if weakly_typed and precision == "int8":
            config.set_calibration_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise BackendError(f"TensorRT failed to build an engine from {onnx} (see the TensorRT log above)")
        atomic_write_bytes(engine, bytes(plan))
    outputs = {network.get_output(i).name: network.get_output(i).name for i in range(network.num_outputs)}
    info = engine_info_for(engine, onnx, tensorrt_version=trt.__version__, precision=precision, input_name=image.name,
                           min_shape=min_shape, max_shape=max_shape, outputs=outputs, builder="onnx")
    write_engine_info(engine, info)
    return info
