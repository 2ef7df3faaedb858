"""The sidecar JSON of a TensorRT engine, and the check that refuses an engine built for something else.

A TensorRT plan is only valid for the TensorRT version, GPU model and ONNX it was built from, and
for the input shapes of its optimisation profile. Deserialising a foreign plan fails at best and
silently computes garbage at worst, so every engine is written with ``<engine>.json`` beside it and
:func:`check_engine_info` compares it with the running system before the plan is touched. The
sidecar also stores the engine's own checksum, so a truncated or replaced engine file is caught
without a GPU. Pure Python: tested on machines without TensorRT.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import BackendError

__all__ = ["ENGINE_FORMAT", "PRECISIONS", "EngineInfo", "check_engine_info", "file_sha256", "folder_sha256", "read_engine_info",
           "sidecar_path", "write_engine_info"]

ENGINE_FORMAT = "madm-engine/1"
PRECISIONS = ("fp32", "fp16", "int8")


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: str | Path) -> str:
    """Hex SHA-256 over every file of a folder (relative names and contents, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def sidecar_path(engine: str | Path) -> Path:
    """``model.engine`` → ``model.engine.json``."""
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


@dataclass(frozen=True)
class EngineInfo:
    """What an engine was built from and for.

    Attributes:
        onnx_sha256: Checksum of the ONNX file the engine was built from.
        engine_sha256: Checksum of the engine file itself.
        tensorrt_version: ``tensorrt.__version__`` at build time (plans are not portable across versions).
        gpu_name: CUDA device name at build time.
        compute_capability: ``"major.minor"`` of that device.
        precision: ``fp32``, ``fp16`` or ``int8``.
        input_name: Name of the image input tensor.
        min_shape: Smallest N×3×H×W the optimisation profile accepts (equal to max for a static engine).
        max_shape: Largest N×3×H×W it accepts.
        outputs: madm output name (``labels``, ``logits``) → engine tensor name.
        builder: ``onnx`` (TensorRT's ONNX parser) or ``torch2trt``.
        metadata: The model's :class:`~madm_ros.backends.ModelMetadata` JSON.
        format: Layout tag of this file.
    """

    onnx_sha256: str
    engine_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_name: str
    min_shape: tuple[int, int, int, int]
    max_shape: tuple[int, int, int, int]
    outputs: dict[str, str]
    builder: str = "onnx"
    metadata: str = ""
    format: str = field(default=ENGINE_FORMAT)


def write_engine_info(engine: str | Path, info: EngineInfo) -> Path:
    """Write ``info`` atomically to the engine's sidecar path."""
    path = sidecar_path(engine)
    atomic_write_bytes(path, (json.dumps(asdict(info), indent=1, sort_keys=True) + "\n").encode())
    return path


def read_engine_info(engine: str | Path) -> EngineInfo:
    """Read and type-check the sidecar of ``engine``."""
    path = sidecar_path(engine)
    try:
        values: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BackendError(f"engine {engine} has no sidecar {path.name}; engines are only used with the JSON "
                           "written by python -m madm_train export (rebuild the engine)") from None
    except (OSError, ValueError) as error:
        raise BackendError(f"cannot read engine sidecar {path}: {error}") from None
    if not isinstance(values, dict) or values.get("format") != ENGINE_FORMAT:
        found = values.get("format") if isinstance(values, dict) else type(values).__name__
        raise BackendError(f"{path} has format {found!r}, expected {ENGINE_FORMAT!r}; rebuild the engine")
    try:
        info = EngineInfo(**{**values, "min_shape": tuple(values["min_shape"]), "max_shape": tuple(values["max_shape"])})
    except (TypeError, KeyError) as error:
        raise BackendError(f"{path} is not a valid engine sidecar ({error}); rebuild the engine") from None
    if info.precision not in PRECISIONS or len(info.min_shape) != 4 or len(info.max_shape) != 4:
        raise BackendError(f"{path}: precision {info.precision!r} or shapes {info.min_shape}/{info.max_shape} invalid")
    return info


def check_engine_info(info: EngineInfo, *, engine: str | Path, tensorrt_version: str, gpu_name: str,
                      compute_capability: str, onnx: str | Path | None = None, precision: str | None = None,
                      input_shape: tuple[int, ...] | None = None) -> None:
    """Raise :class:`BackendError` listing every way the engine does not fit; return quietly if it fits.

    Args:
        info: The engine's sidecar.
        engine: The engine file (its checksum must match ``info.engine_sha256``).
        tensorrt_version: The running TensorRT version (must equal the build version exactly).
        gpu_name: The running GPU's name.
        compute_capability: The running GPU's ``"major.minor"``.
        onnx: The ONNX file the caller means to run; the engine must have been built from it.
        precision: Requested precision, if the caller has one.
        input_shape: An N×3×H×W the caller will feed; it must lie within the profile.
    """
    problems = []
    if file_sha256(engine) != info.engine_sha256:
        problems.append("the engine file's checksum differs from its sidecar (corrupt, truncated or replaced)")
    if tensorrt_version != info.tensorrt_version:
        problems.append(f"built with TensorRT {info.tensorrt_version}, running {tensorrt_version}")
    if (gpu_name, compute_capability) != (info.gpu_name, info.compute_capability):
        problems.append(f"built for {info.gpu_name} (sm {info.compute_capability}), running on {gpu_name} "
                        f"(sm {compute_capability})")
    if onnx is not None and file_sha256(onnx) != info.onnx_sha256:
        problems.append(f"built from another ONNX than {onnx} (checksum differs)")
    if precision is not None and precision != info.precision:
        problems.append(f"built for {info.precision}, {precision} requested")
    if input_shape is not None and (len(input_shape) != 4 or not all(
            low <= n <= high for low, n, high in zip(info.min_shape, input_shape, info.max_shape))):
        problems.append(f"input shape {tuple(input_shape)} outside the engine's {info.min_shape}…{info.max_shape}")
    if problems:
        raise BackendError(f"refusing engine {engine}: " + "; ".join(problems) +
                           ". Rebuild it on this machine (python -m madm_train export --tensorrt, or force_engine_update)")
