"""The deployed graph: any logits network plus the arg-max that turns it into a uint8 mask.

Exported ONNX files, TensorRT engines and the PyTorch backend all run this one module, so the
three backends can only differ by numerics, never by post-processing. Outputs:

- ``labels``: N×H×W uint8 class ids at the input resolution;
- ``logits``: N×K×h×w float32 at the network's own output stride (1/8 for the student), kept for
  distillation and confidence maps without paying for full-resolution float maps.

The arg-max may run at a reduced resolution (``argmax_stride``): logits are resized bilinearly to
⌈H/s⌉×⌈W/s⌉, the arg-max is taken there and the ids are upsampled by nearest neighbour. At the
student's own stride (8) no resize is needed at all; this is the cheapest graph, at the price of
blockier class boundaries (bench/inference.py measures the cost of each choice).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from madm_ros.errors import ConfigError

__all__ = ["ARGMAX_STRIDES", "DEFAULT_ARGMAX_STRIDE", "SegmentationGraph"]

ARGMAX_STRIDES = (1, 2, 4, 8)
"""Allowed ``argmax_stride`` values."""
DEFAULT_ARGMAX_STRIDE = 4
"""Arg-max at 1/4: measured as fast as at the logits' 1/8 on the CPU (bench/inference.py), with finer boundaries."""


class SegmentationGraph(nn.Module):
    """``forward(images01) -> (labels uint8 N×H×W, logits float32 N×K×h×w)``.

    Args:
        model: Maps float32 N×3×H×W in [0, 1] to logits (a tensor, or a tuple whose first item is the logits).
        logits_stride: How much smaller than the input the model's logits are (8 for the student, 1 for MADM).
        argmax_stride: Resolution divisor of the arg-max (one of :data:`ARGMAX_STRIDES`, ≥ ``logits_stride``
            only when it equals it; a finer arg-max than the logits is fine, a coarser one is pointless).
    """

    def __init__(self, model: nn.Module, *, logits_stride: int, argmax_stride: int) -> None:
        super().__init__()
        if argmax_stride not in ARGMAX_STRIDES:
            raise ConfigError(f"argmax_stride must be one of {ARGMAX_STRIDES}, got {argmax_stride}")
        if argmax_stride > logits_stride:
            raise ConfigError(f"argmax_stride {argmax_stride} is coarser than the logits (stride {logits_stride})")
        self.model = model
        self.logits_stride = logits_stride
        self.argmax_stride = argmax_stride

    def forward(self, images01: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(labels, logits) of a batch; see the module docstring."""
        logits = self.model(images01)
        if isinstance(logits, tuple):
            logits = logits[0]
        height, width = images01.shape[-2:]
        scores = logits
        if self.argmax_stride != self.logits_stride or self.logits_stride == 1:
            # (stride 1: MADM resizes to its own 512² internally, so its logits need not match the input size)
            s = self.argmax_stride
            scores = F.interpolate(logits, size=((height + s - 1) // s, (width + s - 1) // s), mode="bilinear",
                                   align_corners=False)
        ids = scores.argmax(1, keepdim=True)
        if self.argmax_stride != 1:
            # Resize has no integer-index mode in every runtime; ids < 256 are exact in float32.
            ids = F.interpolate(ids.float(), size=(height, width), mode="nearest")
        return ids[:, 0].to(torch.uint8), logits.float()
