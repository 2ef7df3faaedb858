"""``python -m madm_train export``: student → ONNX (fixed and dynamic size) → parity check → TensorRT engines.

Steps, in order, all written into one folder:

1. ``student_<H>x<W>.onnx`` (static shape, the camera's) and ``student_dynamic.onnx`` (batch,
   height and width free), opset ≥ 17, exported by PyTorch's TorchScript-based exporter and
   simplified by onnxslim; both carry the madm metadata (label set, input spec, strides) that the
   backends and nodes read.
2. ``parity.json``: ONNX Runtime (CPU) against PyTorch on random and, where a training config
   names target frames, real inputs: max |Δlogit| and arg-max agreement of the ``labels`` output.
3. Optionally TensorRT engines per precision, through the ONNX parser
   (:func:`madm_ros.backends.tensorrt_build.build_engine`) or torch2trt, each with its sidecar.

The exported graph is :class:`madm_train.deploy.graph.SegmentationGraph` (``labels`` uint8 + ``logits``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.backends import METADATA_KEY, ModelMetadata, require
from madm_ros.backends.engine_info import PRECISIONS
from madm_ros.errors import ConfigError

__all__ = ["ExportOptions", "check_parity", "export", "export_onnx"]

TORCH2TRT_HINT = ("torch2trt is not on PyPI: install it from source (git clone https://github.com/NVIDIA-AI-IOT/torch2trt, "
                  "python setup.py install); it needs TensorRT 10.x (JetPack 6)")


@dataclass(frozen=True)
class ExportOptions:
    """What ``export`` does.

    Attributes:
        student: Saved student folder (written by ``distill``).
        out_dir: Output folder (created).
        size: Static input (height, width); ``None``: the student's training size.
        argmax_stride: Resolution divisor of the in-graph arg-max (1, 2, 4 or 8; 8 = the logits' own; see
            :data:`~madm_train.deploy.graph.DEFAULT_ARGMAX_STRIDE`).
        opset: ONNX opset (≥ 17).
        frames: Target frames for the parity check and INT8 calibration, float32 N×3×H×W at ``size``
            (``None``: random inputs only).
        tensorrt: Precisions to build engines for (empty: no engines).
        builder: ``onnx`` (TensorRT's ONNX parser) or ``torch2trt``.
        max_batch: Largest batch of the dynamic ONNX's engine profile.
        simplify: Run onnxslim.
    """

    student: Path
    out_dir: Path
    size: tuple[int, int] | None = None
    argmax_stride: int = 4
    opset: int = 17
    frames: np.ndarray | None = None
    tensorrt: tuple[str, ...] = ()
    builder: str = "onnx"
    max_batch: int = 1
    simplify: bool = True

    def __post_init__(self) -> None:
        if self.opset < 17:
            raise ConfigError(f"opset must be ≥ 17 (LayerNorm/Resize semantics TensorRT expects), got {self.opset}")
        bad = [p for p in self.tensorrt if p not in PRECISIONS]
        if bad:
            raise ConfigError(f"unknown TensorRT precisions {bad}; choose from {', '.join(PRECISIONS)}")
        if self.builder not in ("onnx", "torch2trt"):
            raise ConfigError(f"builder must be onnx or torch2trt, got {self.builder!r}")
        if "int8" in self.tensorrt and self.frames is None:
            raise ConfigError("int8 engines need calibration frames: pass --config with the training YAML of the target")


def export_onnx(graph: Any, metadata: ModelMetadata, path: Path, *, size: tuple[int, int], dynamic: bool, opset: int = 17,
                simplify: bool = True) -> Path:
    """Export ``graph`` (a SegmentationGraph) to ``path`` with ``metadata``; written atomically.

    The file describes itself: its metadata's input spec is set to ``size``, the size it is
    exported at (the runtime refuses a file whose input differs from its spec).
    """
    import onnx
    import torch

    metadata = dataclasses.replace(metadata, input_spec=dataclasses.replace(metadata.input_spec, height=size[0],
                                                                            width=size[1]))

    example = torch.rand(1, 3, *size)
    buffer = io.BytesIO()
    axes = {"image": {0: "batch", 2: "height", 3: "width"}, "labels": {0: "batch", 1: "height", 2: "width"},
            "logits": {0: "batch", 2: "logits_height", 3: "logits_width"}} if dynamic else None
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs onnxscript
        # (not a dependency here); it exports these plain CNN graphs exactly and is what TensorRT 10 users know.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(graph.eval(), (example,), buffer, dynamo=False, opset_version=opset, input_names=["image"],
                          output_names=["labels", "logits"], dynamic_axes=axes)
    model = onnx.load_from_string(buffer.getvalue())
    if simplify:
        import onnxslim

        model = onnxslim.slim(model)
    onnx.helper.set_model_props(model, {METADATA_KEY: metadata.to_json()})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_bytes(path, model.SerializeToString())


def check_parity(graph: Any, onnx_path: Path, inputs: np.ndarray) -> dict[str, float]:
    """ONNX Runtime (CPU) vs PyTorch on ``inputs``: max |Δlogit|, arg-max agreement of ``labels``, pixels compared."""
    import torch

    from madm_ros.backends.ort import OnnxRuntimeBackend

    backend = OnnxRuntimeBackend.load(onnx_path, providers="cpu")
    max_error, agree, pixels = 0.0, 0, 0
    for start in range(len(inputs)):
        batch = inputs[start:start + 1]
        with torch.inference_mode():
            labels, logits = graph(torch.from_numpy(batch))
        out = backend.infer(batch)
        max_error = max(max_error, float(np.abs(out.logits - logits.numpy()).max()))
        agree += int((out.labels == labels.numpy()).sum())
        pixels += labels.numel()
    return {"max_abs_logit_error": max_error, "argmax_agreement": agree / pixels, "pixels": pixels}


def _build_torch2trt(graph: Any, onnx_path: Path, engine: Path, precision: str, shape: tuple[int, int, int, int],
                     frames: np.ndarray | None) -> Any:
    """Engine from the PyTorch graph with torch2trt (TensorRT 10.x only), with the same sidecar as the ONNX path."""
    import tensorrt as trt
    import torch

    from madm_ros.backends.engine_info import write_engine_info
    from madm_ros.backends.tensorrt_build import engine_info_for

    converter = require("torch2trt", TORCH2TRT_HINT)
    cuda_graph = graph.cuda().eval()
    calibration = [[torch.from_numpy(f[None]).cuda()] for f in frames] if frames is not None else None
    trt_module = converter.torch2trt(cuda_graph, [torch.rand(shape, device="cuda")], input_names=["image"],
                                     output_names=["labels", "logits"], fp16_mode=precision in ("fp16", "int8"),
                                     int8_mode=precision == "int8", int8_calib_dataset=calibration)
    atomic_write_bytes(engine, bytes(trt_module.engine.serialize()))
    info = engine_info_for(engine, onnx_path, tensorrt_version=trt.__version__, precision=precision, input_name="image",
                           min_shape=shape, max_shape=shape, outputs={"labels": "labels", "logits": "logits"},
                           builder="torch2trt")
    write_engine_info(engine, info)
    graph.cpu()
    return info


def export(options: ExportOptions, *, log: Any = None) -> dict[str, Any]:
    """Run the export steps of ``options``; returns (and writes to ``export.json``) the report.

    ``log`` receives the progress lines: the ``sys.stderr`` of the moment when None (a default
    bound at import would keep writing to a stream replaced or closed since).
    """
    log = sys.stderr if log is None else log
    from madm_train.deploy.pytorch_backend import load_graph

    if options.tensorrt:  # say so before any work, not after minutes of export
        require("tensorrt", "pip install 'madm_ros[tensorrt]' (desktop) or use JetPack's TensorRT (Jetson)")
        if options.builder == "torch2trt":
            require("torch2trt", TORCH2TRT_HINT)
    graph, metadata = load_graph(options.student, argmax_stride=options.argmax_stride)
    if metadata.label_set == "unknown":  # before minutes of tracing, and before anything is written
        raise ConfigError(f"{options.student} is an adapted teacher (it records no label set or input spec), not a "
                          f"distilled student: distil it first (python -m madm_train distill --teacher {options.student} "
                          "...) and export the student/ folder distill writes")
    height, width = options.size or (metadata.input_spec.height, metadata.input_spec.width)
    # the files describe themselves: the arg-max stride the graph really uses (export_onnx sets the size)
    metadata = dataclasses.replace(metadata, argmax_stride=min(options.argmax_stride, metadata.logits_stride))
    out = Path(options.out_dir)
    static = export_onnx(graph, metadata, out / f"student_{height}x{width}.onnx", size=(height, width), dynamic=False,
                         opset=options.opset, simplify=options.simplify)
    dynamic = export_onnx(graph, metadata, out / "student_dynamic.onnx", size=(height, width), dynamic=True,
                          opset=options.opset, simplify=options.simplify)
    print(f"export: wrote {static} and {dynamic}", file=log)
    random_inputs = np.random.default_rng(0).random((2, 3, height, width), dtype=np.float32)
    report: dict[str, Any] = {"onnx": {"static": str(static), "dynamic": str(dynamic)}, "opset": options.opset,
                              "size": [height, width], "argmax_stride": options.argmax_stride, "parity": {}}
    for name, path in (("static", static), ("dynamic", dynamic)):
        report["parity"][f"{name}_random"] = check_parity(graph, path, random_inputs)
        if options.frames is not None:
            report["parity"][f"{name}_real"] = check_parity(graph, path, options.frames)
    for key, values in report["parity"].items():
        print(f"export: parity {key}: max |Δlogit| {values['max_abs_logit_error']:.2e}, "
              f"arg-max agreement {100 * values['argmax_agreement']:.3f} %", file=log)
    report["engines"] = {}
    for precision in options.tensorrt:
        engine = out / f"student_{height}x{width}_{precision}.engine"
        shape = (1, 3, height, width)
        if options.builder == "torch2trt":
            info = _build_torch2trt(graph, static, engine, precision, shape, options.frames)
        else:
            from madm_ros.backends.tensorrt_build import build_engine

            info = build_engine(static, engine, precision=precision, min_shape=shape, opt_shape=shape, max_shape=shape,
                                calibration=options.frames)
        report["engines"][precision] = {"engine": str(engine), "tensorrt": info.tensorrt_version, "gpu": info.gpu_name}
        print(f"export: built {engine} (TensorRT {info.tensorrt_version}, {info.gpu_name})", file=log)
    atomic_write_bytes(out / "export.json", (json.dumps(report, indent=1) + "\n").encode())
    return report
