"""LPLR: label palette and latent regression (madm_spec.md §4).

A label map is painted with its label set's colours (the Cityscapes colours of the kept classes,
``madm_ros.palettes``), VAE-encoded exactly like an input image, and the UNet's own output latent
is regressed onto it with a masked L1 loss. Ignore pixels (255) are painted with
``unlabelled_color`` (black in the reference, whose palette is zero-padded to 256 entries) and
excluded from the loss.

The loss divides by the **total** element count B·C·h·w, not by the number of valid elements, as
the reference criterion does (``sum(|o − z|·mask) / numel · weight``); an image with many ignored
pixels therefore contributes a smaller loss. For the target term the mask is also multiplied by
the scalar pseudo-label confidence q (on every pixel of the mixed label, pasted source pixels
included — the reference multiplies by the unmixed pseudo-label weight).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from madm_ros.errors import InputError
from madm_ros.palettes import IGNORE_INDEX, LabelSet

if TYPE_CHECKING:
    import torch

__all__ = ["latent_target", "latent_valid_mask", "lplr_loss", "paint_labels"]


def _check_labels(labels: torch.Tensor) -> None:
    import torch

    if labels.ndim != 3:
        raise InputError(f"labels must be B×H×W class ids, got shape {tuple(labels.shape)}")
    if labels.dtype not in (torch.uint8, torch.int16, torch.int32, torch.int64):
        raise InputError(f"labels must be an integer tensor (uint8 or long), got {labels.dtype}")


def paint_labels(labels: torch.Tensor, label_set: LabelSet, *,
                 unlabelled_color: tuple[int, int, int] = (0, 0, 0)) -> torch.Tensor:
    """Class ids (B×H×W, 255 = ignore) → palette images B×3×H×W, float32 in [0, 1] (v/255).

    Every value that is not a class of ``label_set`` (255 and unused ids) gets ``unlabelled_color``,
    as the reference's zero-padded PIL palette does.
    """
    import torch

    _check_labels(labels)
    lut = torch.from_numpy(label_set.color_lut(unlabelled_color)).to(device=labels.device, dtype=torch.float32) / 255.0
    ids = labels.long().clamp(0, 255)
    return lut[ids].permute(0, 3, 1, 2).contiguous()


def latent_target(labels: torch.Tensor, encode: Callable[[torch.Tensor], torch.Tensor], label_set: LabelSet, *,
                  unlabelled_color: tuple[int, int, int] = (0, 0, 0), size_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """The regression target: ``encode(paint_labels(labels))`` without gradient.

    Args:
        labels: B×H×W class ids (source labels, or the mixed label for the target term).
        encode: Images in [0, 1] (B×3×H×W) → latents (B×4×H/8×W/8): ``SDBackbone.encode``, which
            maps to [-1, 1] and returns the VAE posterior mean × scaling factor.
        label_set: Classes and colours of ``labels``.
        unlabelled_color: Colour of ignore pixels.
        size_hw: The size the network works at, when it resizes its input (MADM: 512² whatever
            the crop): labels are resized to it by nearest neighbour first, so the target latent
            has the UNet output's size. None: the labels' own size.
    """
    import torch
    import torch.nn.functional as F

    _check_labels(labels)
    if size_hw is not None and tuple(labels.shape[-2:]) != tuple(size_hw):
        labels = F.interpolate(labels[:, None].float(), size=size_hw, mode="nearest")[:, 0].to(labels.dtype)
    with torch.no_grad():
        return encode(paint_labels(labels, label_set, unlabelled_color=unlabelled_color)).detach()


def latent_valid_mask(labels: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """1.0 where the label is not ignore, nearest-downsampled to the latent size (B×1×h×w, float32).

    Nearest neighbour keeps the top-left pixel of each 8×8 block (torch's ``nearest``), as the
    reference does.
    """
    import torch
    import torch.nn.functional as F

    _check_labels(labels)
    valid = (labels != IGNORE_INDEX).to(torch.float32)[:, None]
    return F.interpolate(valid, size=size_hw, mode="nearest")


def lplr_loss(unet_output: torch.Tensor, target_latent: torch.Tensor, labels: torch.Tensor, *,
              confidence: float | torch.Tensor = 1.0, weight: float = 1.0) -> torch.Tensor:
    """Masked L1 between the UNet output and the label latent, ÷ total element count, × ``weight``.

    Args:
        unet_output: The UNet's final output o (B×4×h×w) from the same forward as the logits.
        target_latent: ``latent_target`` of ``labels`` (B×4×h×w).
        labels: B×H×W class ids whose non-ignore pixels count.
        confidence: Scalar q multiplying the mask (the target term; 1 for the source term).
        weight: λ of this term (1.0 for depth and infrared, 20.0 for the event source term).

    Returns:
        A scalar: Σ |o − z|·mask·q / (B·4·h·w) · weight.
    """
    if unet_output.shape != target_latent.shape:
        raise InputError(f"UNet output {tuple(unet_output.shape)} and target latent {tuple(target_latent.shape)} differ")
    if labels.shape[0] != unet_output.shape[0]:
        raise InputError(f"{labels.shape[0]} label maps for a batch of {unet_output.shape[0]}")
    mask = latent_valid_mask(labels, tuple(unet_output.shape[-2:])).to(unet_output.device) * confidence
    error = (unet_output.float() - target_latent.float()).abs()
    return (error * mask).sum() / error.numel() * weight
