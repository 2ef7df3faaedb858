"""Reduced-precision ONNX files for strongly typed TensorRT (11.x, and 10.x with ``STRONGLY_TYPED``).

TensorRT 11 removed the FP16/INT8 builder flags and calibrators: the precision must already be in
the ONNX. NVIDIA's ModelOpt does both conversions and is used when installed
(``pip install nvidia-modelopt[onnx]``); otherwise ONNX Runtime's own tools, already a dependency,
do the same job (``float16`` converter; static quantisation to symmetric INT8 Q/DQ, the form
TensorRT's explicit quantisation wants, placed on convolution inputs). Both keep float32 inputs
and outputs so callers feed the same tensors at every precision. Runs on the CPU: a Q/DQ model can
be made on a machine without a GPU and the engine built later on the target.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from madm_ros.backends import require
from madm_ros.errors import InputError

__all__ = ["convert_fp16", "quantize_int8_qdq"]


def _has_modelopt() -> bool:
    return importlib.util.find_spec("modelopt") is not None


def convert_fp16(src: str | Path, dst: str | Path) -> Path:
    """Write an FP16 copy of the ONNX ``src`` to ``dst`` (float32 inputs/outputs kept)."""
    onnx = require("onnx", "pip install onnx")
    if _has_modelopt():
        from modelopt.onnx.autocast import convert_to_mixed_precision

        model = convert_to_mixed_precision(onnx_path=str(src), low_precision_type="fp16", keep_io_types=True)
    else:
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(dst))
    return Path(dst)


class _Frames:
    """ONNX Runtime calibration reader over a batch of frames, one frame per step."""

    def __init__(self, input_name: str, frames: np.ndarray) -> None:
        self._items: Iterator[np.ndarray] = iter(frames[i:i + 1] for i in range(len(frames)))
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        item = next(self._items, None)
        return None if item is None else {self.input_name: item}


def quantize_int8_qdq(src: str | Path, dst: str | Path, calibration: np.ndarray) -> Path:
    """Write a symmetric INT8 Q/DQ copy of ``src`` to ``dst``, calibrated (entropy) on ``calibration`` frames.

    ``calibration`` is float32 N×3×H×W of real target-modality frames at the model's input size
    (a few dozen are enough; random tensors would calibrate ranges the camera never produces).
    """
    if calibration.dtype != np.float32 or calibration.ndim != 4 or len(calibration) == 0:
        raise InputError(f"calibration frames must be a non-empty float32 N×3×H×W array, got {calibration.dtype} "
                         f"{calibration.shape}")
    if _has_modelopt():
        from modelopt.onnx.quantization import quantize

        quantize(onnx_path=str(src), quantize_mode="int8", calibration_data=calibration, calibration_method="entropy",
                 output_path=str(dst))
        return Path(dst)
    onnx = require("onnx", "pip install onnx")
    quantization = require("onnxruntime.quantization", "pip install onnxruntime")
    input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
    quantization.quantize_static(
        str(src), str(dst), _Frames(input_name, calibration),
        quant_format=quantization.QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
        activation_type=quantization.QuantType.QInt8, weight_type=quantization.QuantType.QInt8,
        calibrate_method=quantization.CalibrationMethod.Entropy,
        extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
    )
    return Path(dst)
