"""Multi-timestep features of the UNet's up path, by forward hooks (no patching of diffusers classes).

DIFF keeps, at each saved step (iccld_diff_spec.md B.1, "Which features"):

- the **residual branch** of every up-path ResNet block: the output of ``resnet.conv2``, before the
  skip addition and the output scale (the released code patches ``ResnetBlock2D.forward``; with
  dropout 0 this hook gives the same tensor);
- the output of the **first transformer block** of every up-path attention (after its feed-forward),
  B×HW×C, reshaped to a map of its block's resolution.

:class:`UpPathTaps` registers the hooks once; :meth:`UpPathTaps.capture` records one UNet call. A
layer's stride is that of its up-block: 8·2^(n−1−b) for up-block b of n (SD at a 64×64 latent:
64, 32, 16, 8).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    import torch
    from diffusers import UNet2DConditionModel

__all__ = ["TapLayer", "UpPathTaps"]


@dataclass(frozen=True)
class TapLayer:
    """One tapped layer: its name, kind, up-block, stride (relative to the image) and channels."""

    name: str
    kind: Literal["resnet", "attention"]
    block: int
    stride: int
    channels: int


class UpPathTaps:
    """Hooks on every up-path ResNet's ``conv2`` and every attention's first transformer block.

    Args:
        unet: A diffusers ``UNet2DConditionModel`` (SD 1.x/2.x layout or the tiny preset's).
    """

    def __init__(self, unet: UNet2DConditionModel) -> None:
        self.layers: list[TapLayer] = []
        self._store: dict[str, torch.Tensor] | None = None
        self._block_hw: dict[int, tuple[int, int]] = {}
        n = len(unet.up_blocks)
        for b, block in enumerate(unet.up_blocks):
            stride = 8 * 2 ** (n - 1 - b)
            for j, resnet in enumerate(block.resnets):
                layer = TapLayer(f"up{b}.resnet{j}", "resnet", b, stride, int(resnet.conv2.out_channels))
                self.layers.append(layer)
                resnet.conv2.register_forward_hook(self._resnet_hook(layer))
            for j, attention in enumerate(getattr(block, "attentions", None) or ()):
                channels = int(attention.transformer_blocks[0].norm1.normalized_shape[0])
                layer = TapLayer(f"up{b}.attention{j}", "attention", b, stride, channels)
                self.layers.append(layer)
                attention.transformer_blocks[0].register_forward_hook(self._attention_hook(layer))

    @property
    def strides(self) -> list[int]:
        """The strides with at least one tapped layer, largest first (SD: 64, 32, 16, 8)."""
        return sorted({layer.stride for layer in self.layers}, reverse=True)

    @contextmanager
    def capture(self) -> Iterator[dict[str, torch.Tensor]]:
        """Record the taps of the UNet calls inside the block into the yielded dict (layer name → B×C×H×W)."""
        self._store = {}
        try:
            yield self._store
        finally:
            self._store = None

    def _resnet_hook(self, layer: TapLayer) -> Any:
        def hook(module: Any, args: Any, output: torch.Tensor) -> None:
            self._block_hw[layer.block] = tuple(output.shape[-2:])  # type: ignore[assignment]
            if self._store is not None:  # None outside capture, e.g. in a checkpointed re-run during backward
                self._store[layer.name] = output

        return hook

    def _attention_hook(self, layer: TapLayer) -> Any:
        def hook(module: Any, args: Any, output: torch.Tensor) -> None:
            if self._store is not None:
                height, width = self._block_hw[layer.block]  # the block's resnet ran just before
                batch, _, channels = output.shape
                self._store[layer.name] = output.transpose(1, 2).reshape(batch, channels, height, width)

        return hook
