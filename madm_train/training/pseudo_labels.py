"""Teacher pseudo-labels, their confidence weight and the segmentation losses (madm_spec.md §2.2).

DAFormer/DACS weighting as MADM keeps it: the teacher's logits are upsampled to the label size,
soft-maxed; the argmax is the pseudo-label and one scalar per batch,
q = (pixels whose maximum probability ≥ threshold) / (all pixels of the batch), weighs every
target-origin pixel of the mixed label (source-origin pixels weigh 1). Cross-entropy is averaged
over **all** pixels, ignored ones included in the denominator (mmseg's ``mean`` reduction).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from madm_ros.errors import InputError
from madm_ros.palettes import IGNORE_INDEX

if TYPE_CHECKING:
    import torch

__all__ = ["confidence_weight", "mixed_pixel_weight", "pseudo_labels", "segmentation_loss"]


def pseudo_labels(logits: torch.Tensor, size_hw: tuple[int, int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher logits (B×K×h×w) → (labels B×H×W long, confidence B×H×W float32).

    Logits are bilinearly upsampled to ``size_hw`` first (``align_corners=False``) when given.
    """
    import torch
    import torch.nn.functional as F

    if logits.ndim != 4:
        raise InputError(f"logits must be B×K×h×w, got shape {tuple(logits.shape)}")
    logits = logits.detach().float()
    if size_hw is not None and tuple(logits.shape[-2:]) != tuple(size_hw):
        logits = F.interpolate(logits, size=size_hw, mode="bilinear", align_corners=False)
    confidence, labels = torch.softmax(logits, dim=1).max(dim=1)
    return labels, confidence


def confidence_weight(confidence: torch.Tensor, threshold: float = 0.968) -> float:
    """q: the fraction of pixels (whole batch) whose softmax maximum is ≥ ``threshold``."""
    if confidence.numel() == 0:
        raise InputError("confidence_weight needs at least one pixel")
    return float((confidence >= threshold).sum().item()) / confidence.numel()


def mixed_pixel_weight(source_mask: torch.Tensor, q: float) -> torch.Tensor:
    """Per-pixel weight of the mixed label: 1 where the pixel came from the source, q elsewhere."""
    import torch

    return torch.where(source_mask.bool(), torch.ones((), device=source_mask.device),
                       torch.full((), float(q), device=source_mask.device))


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, pixel_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy (ignore 255) of logits upsampled to the label size, × ``pixel_weight``, mean over all pixels."""
    import torch.nn.functional as F

    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits.float(), labels.long(), ignore_index=IGNORE_INDEX, reduction="none")
    if pixel_weight is not None:
        loss = loss * pixel_weight
    return loss.mean()
