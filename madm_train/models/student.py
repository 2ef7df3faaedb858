"""The real-time student: a DDRNet-23-slim-style dual-resolution CNN, written here from the paper's description.

Why this network (see ``reference/edge.md``): among the real-time segmenters with published
Cityscapes results it gives the best accuracy per millisecond that we measured on the CPU
(ORT, 2 threads: 73 ms at 480×640 for the slim width), and it uses only Conv / BatchNorm / ReLU /
Add / AveragePool / Resize / Concat, the ops TensorRT FP16/INT8 and ONNX Runtime handle best
(no LayerNorm or attention to overflow in FP16). It is not packaged anywhere usable, so the
architecture of Hong et al., "Deep Dual-resolution Networks for Real-time and Accurate Semantic
Segmentation of Road Scenes" (2021), is re-implemented below; weights start random.

Shape of the network (``c`` = ``channels``; strides relative to the input):

- stem: two 3×3 stride-2 convolutions (1/4), then residual stages at 1/4 (c) and 1/8 (2c);
- from 1/8 the network splits into a high-resolution branch that stays at 1/8 (2c) and a
  low-resolution branch that goes to 1/16 (4c) and 1/32 (8c); after each of these two stages the
  branches exchange information (bilateral fusion: the low branch is compressed by a 1×1
  convolution and upsampled into the high branch, the high branch is downsampled by strided 3×3
  convolutions into the low branch);
- a bottleneck stage on both branches (low branch to 1/64, 16c), then the deep aggregation
  pyramid pooling module (DAPPM: average pools of growing size whose outputs are fused
  hierarchically) on the low branch, upsampled and added to the high branch;
- a head (BN-ReLU-3×3 conv-BN-ReLU-1×1 conv) giving logits at 1/8; an auxiliary head on the
  first fused high-resolution map helps training and is left out of exported graphs.

``channels=32`` is DDRNet-23-slim (5.7 M parameters with 19 classes); smaller widths trade
accuracy for CPU speed: 24 is the project default because it meets 50 ms per 480×640 frame with
ONNX Runtime on 2 CPU cores where the slim width does not (bench/inference.py measures both).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from madm_ros.errors import ConfigError
from madm_ros.preprocessing import InputSpec

__all__ = ["STUDENT_FORMAT", "DDRNetStudent", "load_student", "save_student"]

STUDENT_FORMAT = "madm-student/1"
"""Value of ``format`` in a saved student's ``config.json``; bumped when the layout changes."""
OUTPUT_STRIDE = 8
"""Logits come out at 1/8 of the input size."""


def _conv_bn(cin: int, cout: int, kernel: int = 3, stride: int = 1, *, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _bn_relu_conv(cin: int, cout: int, kernel: int) -> nn.Sequential:
    """Pre-activation unit of DAPPM and the heads (normalise the incoming sum first)."""
    return nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False))


class _Residual(nn.Module):
    """Residual unit: two 3×3 convolutions (``bottleneck=False``) or 1×1-3×3-1×1 with 2× expansion."""

    def __init__(self, cin: int, width: int, stride: int = 1, *, bottleneck: bool = False) -> None:
        super().__init__()
        cout = 2 * width if bottleneck else width
        if bottleneck:
            self.body = nn.Sequential(_conv_bn(cin, width, 1), _conv_bn(width, width, 3, stride),
                                      _conv_bn(width, cout, 1, relu=False))
        else:
            self.body = nn.Sequential(_conv_bn(cin, width, 3, stride), _conv_bn(width, cout, 3, relu=False))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else _conv_bn(cin, cout, 1, stride, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


def _stage(cin: int, width: int, blocks: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(_Residual(cin, width, stride), *[_Residual(width, width) for _ in range(blocks - 1)])


def _resize(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class _DAPPM(nn.Module):
    """Deep aggregation pyramid pooling: pooled context at four scales plus global, fused coarse to fine."""

    POOLS = ((5, 2), (9, 4), (17, 8))  # (kernel, stride) of the average pools; the last scale is global

    def __init__(self, cin: int, branch: int, cout: int) -> None:
        super().__init__()
        self.scale0 = _bn_relu_conv(cin, branch, 1)
        self.pooled = nn.ModuleList([
            nn.Sequential(nn.AvgPool2d(k, s, k // 2), *_bn_relu_conv(cin, branch, 1)) for k, s in self.POOLS
        ])
        self.pooled.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), *_bn_relu_conv(cin, branch, 1)))
        self.process = nn.ModuleList([_bn_relu_conv(branch, branch, 3) for _ in range(len(self.pooled))])
        self.compression = _bn_relu_conv(branch * (len(self.pooled) + 1), cout, 1)
        self.shortcut = _bn_relu_conv(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = [self.scale0(x)]
        for pool, process in zip(self.pooled, self.process):
            outputs.append(process(_resize(pool(x), x) + outputs[-1]))
        return self.compression(torch.cat(outputs, 1)) + self.shortcut(x)


class _Head(nn.Sequential):
    def __init__(self, cin: int, width: int, num_classes: int) -> None:
        super().__init__(_bn_relu_conv(cin, width, 3), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                         nn.Conv2d(width, num_classes, 1))


class DDRNetStudent(nn.Module):
    """Dual-resolution student: ``forward(images01) -> logits`` B×K×⌈H/8⌉×⌈W/8⌉.

    Args:
        num_classes: Output classes K (11 for depth/events, 9 for infrared).
        channels: Base width c (32 = DDRNet-23-slim, 64 = DDRNet-23); must be a positive multiple of 4.
        head_channels: Width of the segmentation heads (64 in DDRNet-23-slim).
        ppm_channels: Width of each DAPPM branch (128 in DDRNet-23-slim).
        aux_head: Build the auxiliary head on the 1/8 branch (training only; ``forward(..., with_aux=True)``).

    Input is the madm network tensor (float32 [0, 1], 3 channels); it is centred inside the network
    so that every backend feeds exactly what ``madm_ros.preprocessing`` produces.
    """

    def __init__(self, num_classes: int, *, channels: int = 32, head_channels: int = 64, ppm_channels: int = 128,
                 aux_head: bool = True) -> None:
        super().__init__()
        if num_classes < 1 or channels < 4 or channels % 4 or head_channels < 1 or ppm_channels < 1:
            raise ConfigError(f"student needs num_classes ≥ 1, channels a positive multiple of 4 and positive head/ppm "
                              f"widths; got {num_classes}, {channels}, {head_channels}, {ppm_channels}")
        c = channels
        self._config = {"num_classes": num_classes, "channels": channels, "head_channels": head_channels,
                        "ppm_channels": ppm_channels, "aux_head": aux_head}
        self.stem = nn.Sequential(_conv_bn(3, c, 3, 2), _conv_bn(c, c, 3, 2))
        self.layer1 = _stage(c, c, 2)
        self.layer2 = _stage(c, 2 * c, 2, stride=2)
        self.low3, self.high3 = _stage(2 * c, 4 * c, 2, stride=2), _stage(2 * c, 2 * c, 2)
        self.down3, self.compress3 = _conv_bn(2 * c, 4 * c, 3, 2, relu=False), _conv_bn(4 * c, 2 * c, 1, relu=False)
        self.low4, self.high4 = _stage(4 * c, 8 * c, 2, stride=2), _stage(2 * c, 2 * c, 2)
        self.down4 = nn.Sequential(_conv_bn(2 * c, 4 * c, 3, 2), _conv_bn(4 * c, 8 * c, 3, 2, relu=False))
        self.compress4 = _conv_bn(8 * c, 2 * c, 1, relu=False)
        self.low5 = _Residual(8 * c, 8 * c, 2, bottleneck=True)
        self.high5 = _Residual(2 * c, 2 * c, bottleneck=True)
        self.dappm = _DAPPM(16 * c, ppm_channels, 4 * c)
        self.head = _Head(4 * c, head_channels, num_classes)
        self.aux = _Head(2 * c, head_channels, num_classes) if aux_head else None
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, images01: torch.Tensor, *, with_aux: bool = False) -> Any:
        """Logits at 1/8; with ``with_aux`` a pair (logits, auxiliary logits), both at 1/8."""
        x = self.layer2(self.layer1(self.stem((images01 - 0.5) * 4.0)))
        low, high = self.low3(x), self.high3(x)
        low, high = F.relu(low + self.down3(high)), F.relu(high + _resize(self.compress3(low), high))
        aux_input = high
        low, high = self.low4(low), self.high4(high)
        low, high = F.relu(low + self.down4(high)), F.relu(high + _resize(self.compress4(low), high))
        high = self.high5(high) + _resize(self.dappm(self.low5(low)), high)
        logits = self.head(high)
        if with_aux:
            if self.aux is None:
                raise ConfigError("this student was built without an auxiliary head (aux_head=False)")
            return logits, self.aux(aux_input)
        return logits

    def config(self) -> dict[str, Any]:
        """Constructor arguments, as written to ``config.json``."""
        return dict(self._config)




def save_student(model: DDRNetStudent, path: str | Path, *, label_set: str, input_spec: InputSpec,
                 extra: dict[str, Any] | None = None) -> Path:
    """Write ``config.json`` (architecture, label set, input spec, ``extra`` such as the teacher) and weights, atomically.

    The auxiliary head is saved too, so that distillation can be continued from the folder.
    """
    from madm_train.models.saved import write_model_folder

    config = {"format": STUDENT_FORMAT, "student": model.config(), "label_set": label_set,
              "input_spec": input_spec.to_dict(), **(extra or {})}
    return write_model_folder(path, config, model.state_dict())


def load_student(path: str | Path) -> tuple[DDRNetStudent, dict[str, Any]]:
    """Rebuild a saved student (in eval mode, on the CPU) and return it with its ``config.json``."""
    from safetensors.torch import load_file

    from madm_train.models.saved import read_model_folder

    config, weights_file = read_model_folder(path, STUDENT_FORMAT)
    try:
        model = DDRNetStudent(**config["student"])
        model.load_state_dict(load_file(str(weights_file)))
    except Exception as error:  # a bad config (KeyError/TypeError), missing tensors, or safetensors' own error types
        raise ConfigError(f"could not load the student weights {weights_file}: {error}") from None
    return model.eval(), config
