"""DAFormer's segmentation head as MADM configures it (spec §1.6), with the decoded UNet output as first input.

Per input a linear (MLP) embedding to ``embed_dim`` channels — written as a 1×1 convolution, the
same map as DAFormer's per-pixel ``nn.Linear``; all embeddings bilinearly resized to the size of the
**first** input (MADM: s0, the full-resolution decoded image) and concatenated; a depthwise-separable
ASPP (1×1 branch for dilation 1, depthwise 3×3 + pointwise for 6, 12, 18; BN + ReLU after every
convolution; no image pooling); a 3×3 bottleneck convolution (BN + ReLU); Dropout2d(0.1); a 1×1
classifier. Logits therefore come out at the first input's resolution (512×512 in MADM).
For MADM's widths (128, 512, 512, 512 → 256, 11 classes) this is 3.87 M parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from madm_ros.errors import ConfigError, InputError

__all__ = ["DAFormerHead"]


def _conv_bn_relu(cin: int, cout: int, kernel: int, *, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """As mmcv's ``ConvModule``: convolution without bias, BatchNorm, ReLU; Kaiming (fan-out) initialisation."""
    conv = nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, groups=groups, bias=False)
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DAFormerHead(nn.Module):
    """DAFormer head with a separable ASPP fusion (see the module docstring).

    Args:
        in_channels: Width of each input feature by name, in fusion order; the first entry sets
            the output resolution (MADM: ``{"s0": 128, "s3": 512, "s4": 512, "s5": 512}``, which is
            :attr:`SDBackbone.feature_channels <madm_train.models.sd_backbone.SDBackbone.feature_channels>`).
        num_classes: Logit channels K (11 for depth/events, 9 for infrared).
        embed_dim: Width of the embeddings, of each ASPP branch and of the bottleneck (MADM: 256).
        dilations: ASPP dilations (MADM: 1, 6, 12, 18); 1 is a 1×1 branch, others separable 3×3.
        dropout: Dropout2d probability before the classifier (MADM: 0.1).
    """

    def __init__(
        self,
        in_channels: Mapping[str, int],
        num_classes: int,
        embed_dim: int = 256,
        *,
        dilations: Sequence[int] = (1, 6, 12, 18),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not in_channels or any(int(c) <= 0 for c in in_channels.values()):
            raise ConfigError(f"in_channels {dict(in_channels)} must name at least one input with a positive width")
        if num_classes < 1 or embed_dim < 1:
            raise ConfigError(f"num_classes {num_classes} and embed_dim {embed_dim} must be positive")
        if not dilations or any(d < 1 for d in dilations):
            raise ConfigError(f"ASPP dilations {list(dilations)} must be positive integers (MADM: 1, 6, 12, 18)")
        if not 0 <= dropout < 1:
            raise ConfigError(f"dropout {dropout} must lie in [0, 1)")
        self.in_channels = {str(k): int(c) for k, c in in_channels.items()}
        self.num_classes = int(num_classes)
        self.embed_dim = int(embed_dim)
        self.dilations = tuple(int(d) for d in dilations)
        self.dropout_p = float(dropout)

        self.embed = nn.ModuleDict({k: nn.Conv2d(c, embed_dim, 1) for k, c in self.in_channels.items()})
        fused = embed_dim * len(self.in_channels)
        branches = []
        for d in self.dilations:
            if d == 1:
                branches.append(_conv_bn_relu(fused, embed_dim, 1))
            else:  # depthwise 3×3 (dilated) then pointwise, each with BN + ReLU (mmcv DepthwiseSeparableConvModule)
                depthwise = _conv_bn_relu(fused, fused, 3, dilation=d, groups=fused)
                branches.append(nn.Sequential(depthwise, _conv_bn_relu(fused, embed_dim, 1)))
        self.aspp = nn.ModuleList(branches)
        self.bottleneck = _conv_bn_relu(embed_dim * len(self.dilations), embed_dim, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(embed_dim, num_classes, 1)
        nn.init.normal_(self.classifier.weight, std=0.01)  # mmseg's conv_seg initialisation
        nn.init.zeros_(self.classifier.bias)

    def config(self) -> dict[str, Any]:
        """Constructor arguments (JSON-serialisable) that rebuild this head."""
        return {
            "in_channels": dict(self.in_channels),
            "num_classes": self.num_classes,
            "embed_dim": self.embed_dim,
            "dilations": list(self.dilations),
            "dropout": self.dropout_p,
        }

    def forward(self, features: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits B×K×H×W at the resolution of the first input (``features`` keyed as ``in_channels``)."""
        if set(features) != set(self.in_channels):
            raise InputError(f"head inputs {sorted(features)} do not match its in_channels {sorted(self.in_channels)}")
        first = next(iter(self.in_channels))
        size = features[first].shape[-2:]
        embedded = []
        for key, embed in self.embed.items():
            x = embed(features[key])
            if x.shape[-2:] != size:
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
            embedded.append(x)
        x = torch.cat(embedded, dim=1)
        x = torch.cat([branch(x) for branch in self.aspp], dim=1)
        return self.classifier(self.dropout(self.bottleneck(x)))
