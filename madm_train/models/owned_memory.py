"""Weights moved out of memory-mapped files into tensors torch allocated itself (64-byte aligned).

``from_pretrained`` and ``load_state_dict(..., assign=True)`` keep safetensors weights where the
file's memory map puts them: at the file offset of each tensor, often 8 or 24 bytes past a 64-byte
boundary. CPU kernels (oneDNN convolutions, MKL GEMM) round differently depending on that alignment:
the same tiny UNet, same weights, gives outputs 7e-7 apart when its parameters sit at an offset of
24 instead of 0 (measured here). So a model loaded from a diffusers folder, the same model reloaded
from a run's ``model/`` folder, and a resumed run would not compute bit for bit alike. Every
loader of weights files therefore ends with :func:`own_memory`; torch's own allocations are 64-byte
aligned, so the numbers depend on the weights only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ALIGNMENT", "own_memory"]

ALIGNMENT = 64
"""Bytes; what torch's CPU allocator guarantees (c10 ``gAlignment``)."""

ModuleT = TypeVar("ModuleT", bound="nn.Module")


def own_memory(module: ModuleT) -> ModuleT:
    """Copy every parameter and buffer of ``module`` not on a 64-byte boundary into fresh memory, in place.

    Parameters keep their identity (``.data`` is replaced), and tensors shared by several modules
    stay shared. Meta tensors are left alone. Returns ``module``.
    """
    import torch

    copies: dict[int, torch.Tensor] = {}

    def owned(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.is_meta or tensor.device.type != "cpu" or tensor.data_ptr() % ALIGNMENT == 0:
            return tensor
        key = tensor.data_ptr()
        if key not in copies:
            copies[key] = tensor.clone(memory_format=torch.contiguous_format)
        return copies[key]

    with torch.no_grad():
        for child in module.modules():
            for parameter in child._parameters.values():
                if parameter is not None:
                    parameter.data = owned(parameter.data)
            for name, buffer in child._buffers.items():
                if buffer is not None:
                    child._buffers[name] = owned(buffer)
    return module
