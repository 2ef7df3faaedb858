"""DIFF's fusion of multi-timestep taps: per-stride aggregation, then the "finecoder" up to stride 4.

**Aggregation** (iccld_diff_spec.md B.1, ``aggregation_network.py`` ``StrideDirectAggregationNetwork``):
every tap of one stride, at every saved step, is concatenated along channels and squeezed by one
detectron2-style bottleneck block (1×1 → 3×3 → 1×1 with GroupNorm(16), projection shortcut, ReLU)
to ``widths[stride]`` (released: 512 / 1024 / 2048 for strides 8 / 16 / 32). At SD size the input
widths are 17,280 / 34,560 / 69,120 channels, which is why the released block holds 237 M
parameters for these three strides. The released stride-64 block (91.9 M parameters) feeds nothing
(the finecoder never reads it) and is left out here.

``shared`` is the cheaper variant the spec recommends: one 1×1 projection per tapped layer,
shared by every saved step, mixed over steps and layers with learned softmax weights (as Diffusion
Hyperfeatures do), then the same bottleneck at the output width. Its parameters no longer grow
with the number of saved steps.

**Finecoder** (``finecoder.py`` ``DiftStrideFinecoder``): GroupNorm(32) on the stride-8/16/32 maps;
a transposed convolution (k 4, s 2, p 1) brings stride 32 to 16, where it is added to the stride-16
map and refined by a residual block (two 3×3 convolutions with GroupNorm); the same from 16 to 8;
a last transposed convolution and residual block give a map at stride 4. The DAFormer head reads
the stride-4 map and the three normalised maps (``s2`` … ``s5``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from madm_ros.errors import ConfigError
from madm_train.methods.diff.taps import TapLayer
from madm_train.models.sd_backbone import Bottleneck

__all__ = ["FUSED_STRIDES", "Aggregation", "Finecoder"]

FUSED_STRIDES = (8, 16, 32)
"""The strides the finecoder reads (the up path's stride-64 taps feed nothing, as in the released code)."""


class Aggregation(nn.Module):
    """Per-stride fusion of the saved steps' taps (see the module docstring).

    Args:
        layers: The tapped layers (:attr:`UpPathTaps.layers`).
        steps: Number of saved steps.
        widths: Output width per stride (released: ``{8: 512, 16: 1024, 32: 2048}``).
        kind: ``released`` (one bottleneck over the whole concatenation) or ``shared``.
        norm_groups: GroupNorm groups of the bottlenecks (released: 16).
    """

    def __init__(self, layers: Sequence[TapLayer], steps: int, widths: Mapping[int, int], *,
                 kind: Literal["released", "shared"] = "released", norm_groups: int = 16) -> None:
        super().__init__()
        if kind not in ("released", "shared"):
            raise ConfigError(f"aggregation must be released or shared, got {kind!r}")
        missing = [s for s in FUSED_STRIDES if s not in widths]
        if missing or steps < 1:
            raise ConfigError(f"aggregation needs widths for strides {FUSED_STRIDES} and ≥ 1 step, got {dict(widths)}, "
                              f"{steps} steps")
        self.kind, self.steps, self.norm_groups = kind, int(steps), int(norm_groups)
        self.widths = {int(s): int(widths[s]) for s in FUSED_STRIDES}
        self.layers = {s: [layer for layer in layers if layer.stride == s] for s in FUSED_STRIDES}
        if any(not found for found in self.layers.values()):
            raise ConfigError(f"the UNet has no tapped layer at some of the strides {FUSED_STRIDES}")
        self.blocks = nn.ModuleDict()
        self.projections = nn.ModuleDict()
        self.mixing = nn.ParameterDict()
        for s in FUSED_STRIDES:
            out = self.widths[s]
            if kind == "released":
                cin = steps * sum(layer.channels for layer in self.layers[s])
                self.blocks[str(s)] = Bottleneck(cin, out, max(out // 4, norm_groups), norm_groups)
            else:
                for layer in self.layers[s]:
                    self.projections[layer.name.replace(".", "_")] = nn.Conv2d(layer.channels, out, 1, bias=False)
                self.mixing[str(s)] = nn.Parameter(torch.zeros(steps, len(self.layers[s])))
                self.blocks[str(s)] = Bottleneck(out, out, max(out // 4, norm_groups), norm_groups)

    def config(self) -> dict[str, Any]:
        """What rebuilds this module beside the tap layers."""
        return {"steps": self.steps, "widths": {str(k): v for k, v in self.widths.items()}, "kind": self.kind,
                "norm_groups": self.norm_groups}

    def forward(self, taps: Sequence[Mapping[str, torch.Tensor]]) -> dict[int, torch.Tensor]:
        """Stride → fused map, from the taps of each saved step in order (layer name → B×C×H×W)."""
        if len(taps) != self.steps:
            raise ConfigError(f"aggregation was built for {self.steps} saved steps, got taps of {len(taps)}")
        fused = {}
        for s in FUSED_STRIDES:
            names = [layer.name for layer in self.layers[s]]
            if self.kind == "released":
                stacked = torch.cat([step[name].float() for step in taps for name in names], dim=1)
                fused[s] = self.blocks[str(s)](stacked)
                continue
            weights = torch.softmax(self.mixing[str(s)].reshape(-1), dim=0).reshape(self.steps, len(names))
            mixed = sum(weights[i, j] * self.projections[name.replace(".", "_")](step[name].float())
                        for i, step in enumerate(taps) for j, name in enumerate(names))
            fused[s] = self.blocks[str(s)](mixed)
        return fused


def _group_norm(groups: int, channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels)


class _ResidualBlock(nn.Module):
    """Two 3×3 convolutions with GroupNorm and a skip: relu(x + gn(conv(relu(gn(conv(x))))))."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm1 = _group_norm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.norm2 = _group_norm(groups, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(x + self.norm2(self.conv2(y)))


class Finecoder(nn.Module):
    """Stride 32 → 16 → 8 → 4 with the aggregated maps added on the way (see the module docstring).

    Args:
        widths: Widths of the aggregated maps by stride (8, 16, 32).
        out_width: Width of the stride-4 map (released: 256).
        norm_groups: GroupNorm groups (released: 32).
    """

    def __init__(self, widths: Mapping[int, int], out_width: int = 256, *, norm_groups: int = 32) -> None:
        super().__init__()
        self.widths = {int(s): int(widths[s]) for s in FUSED_STRIDES}
        self.out_width, self.norm_groups = int(out_width), int(norm_groups)
        w8, w16, w32 = (self.widths[s] for s in FUSED_STRIDES)
        self.norms = nn.ModuleDict({str(s): _group_norm(norm_groups, w) for s, w in self.widths.items()})
        self.up32 = nn.ConvTranspose2d(w32, w16, 4, stride=2, padding=1)
        self.fuse16 = _ResidualBlock(w16, norm_groups)
        self.up16 = nn.ConvTranspose2d(w16, w8, 4, stride=2, padding=1)
        self.fuse8 = _ResidualBlock(w8, norm_groups)
        self.up8 = nn.ConvTranspose2d(w8, self.out_width, 4, stride=2, padding=1)
        self.fuse4 = _ResidualBlock(self.out_width, norm_groups)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"widths": {str(k): v for k, v in self.widths.items()}, "out_width": self.out_width,
                "norm_groups": self.norm_groups}

    @property
    def feature_channels(self) -> dict[str, int]:
        """Widths of the head's inputs, stride 4 first (it sets the logits' resolution)."""
        return {"s2": self.out_width, "s3": self.widths[8], "s4": self.widths[16], "s5": self.widths[32]}

    def forward(self, fused: Mapping[int, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Head inputs ``s2`` (stride 4) … ``s5`` (stride 32)."""
        f8, f16, f32 = (self.norms[str(s)](fused[s]) for s in FUSED_STRIDES)
        x16 = self.fuse16(_resize_like(self.up32(f32), f16) + f16)
        x8 = self.fuse8(_resize_like(self.up16(x16), f8) + f8)
        x4 = self.fuse4(self.up8(x8))
        return {"s2": x4, "s3": f8, "s4": f16, "s5": f32}


def _resize_like(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``x`` at ``like``'s size (odd latent sizes make a transposed convolution miss by one)."""
    if x.shape[-2:] == like.shape[-2:]:
        return x
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)
