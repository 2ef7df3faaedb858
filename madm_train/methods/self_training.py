"""What self-training methods share (madm_spec.md §2.1–§2.3): EMA teacher, pseudo-label and mixing settings, the mixing step.

MADM uses them today; DIFF's adaptation mode and ICCLD's first stage self-train the same way. The
trainer owns the EMA teacher itself; a method says what it averages (``Method.averaged``) and with
which final α (:class:`EmaConfig`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from madm_ros.errors import ConfigError
from madm_train.config_loader import in_range

if TYPE_CHECKING:
    import torch

    from madm_train.methods.base import Batch

__all__ = ["EmaConfig", "MixedBatch", "MixingConfig", "PseudoLabelConfig", "SelfTraining", "mix_batches", "self_training"]


@dataclass(frozen=True)
class EmaConfig:
    """EMA teacher (madm_spec.md §2.1).

    Attributes:
        alpha: Final EMA factor; the ramp is min(1 − 1/(i+1), alpha).
        include_unet: Also average the UNet (the reference shares the live UNet with the teacher).
    """

    alpha: float = 0.999
    include_unet: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.alpha < 1:
            raise ConfigError(f"method.ema.alpha must lie in [0, 1), got {self.alpha}")


@dataclass(frozen=True)
class PseudoLabelConfig:
    """Teacher pseudo-labels (madm_spec.md §2.2).

    Attributes:
        threshold: q = fraction of teacher pixels whose softmax maximum is ≥ this.
    """

    threshold: float = 0.968

    def __post_init__(self) -> None:
        in_range("method.pseudo_labels.threshold", self.threshold, 0.0, 1.0)


@dataclass(frozen=True)
class MixingConfig:
    """ClassMix and photometric augmentation of the mixed image (madm_spec.md §2.3).

    Attributes:
        classmix: Paste half of the source classes onto the target image (off: target only).
        jitter_probability: Chance per batch of colour jitter.
        jitter_strength: Brightness, contrast, saturation and hue strength of the jitter.
        blur_probability: Chance per batch of Gaussian blur.
        blur_sigma: σ of the blur is drawn uniformly from this (low, high) range.
        blur_kernel_fraction: Kernel side ≈ this fraction of the image side, made odd.
    """

    classmix: bool = True
    jitter_probability: float = 0.8
    jitter_strength: float = 0.2
    blur_probability: float = 0.5
    blur_sigma: tuple[float, float] = (0.15, 1.15)
    blur_kernel_fraction: float = 0.1

    def __post_init__(self) -> None:
        in_range("method.mixing.jitter_probability", self.jitter_probability, 0.0, 1.0)
        in_range("method.mixing.jitter_strength", self.jitter_strength, 0.0, 0.5)
        in_range("method.mixing.blur_probability", self.blur_probability, 0.0, 1.0)
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ConfigError(f"method.mixing.blur_sigma must be (low, high) with 0 < low ≤ high, got {list(self.blur_sigma)}")
        in_range("method.mixing.blur_kernel_fraction", self.blur_kernel_fraction, 0.0, 1.0)


@dataclass
class MixedBatch:
    """ClassMix of a source and a target batch: images (jittered/blurred), labels, source-pixel masks."""

    images: torch.Tensor
    labels: torch.Tensor
    source_masks: torch.Tensor


def mix_batches(source: Batch, target: Batch, pseudo_labels: torch.Tensor, generator: torch.Generator,
                mixing: MixingConfig) -> MixedBatch:
    """ClassMix source onto target (half of each source image's classes), then colour jitter and blur.

    The mixed label takes source labels where the source was pasted and the teacher's pseudo-labels
    elsewhere; draws come from ``generator`` only, in a fixed order, so a resumed run repeats them.
    """
    import torch

    from madm_train.data.mixing import classmix_masks, mix, strong_augment

    assert source.labels is not None  # source batches are labelled (the trainer draws them so)
    masks = classmix_masks(source.labels, generator) if mixing.classmix else torch.zeros_like(source.labels, dtype=torch.bool)
    images = strong_augment(
        mix(masks, source.images, target.images), generator,
        jitter_probability=mixing.jitter_probability, jitter_strength=mixing.jitter_strength,
        blur_probability=mixing.blur_probability, blur_sigma=mixing.blur_sigma,
        blur_kernel_fraction=mixing.blur_kernel_fraction)
    return MixedBatch(images, mix(masks, source.labels, pseudo_labels), masks)


@dataclass
class SelfTraining:
    """The mixed-image term of one self-training iteration and what it was made of."""

    loss: torch.Tensor
    pseudo_labels: torch.Tensor
    q: float
    mixed: MixedBatch
    logits: torch.Tensor

    def scalars(self) -> dict[str, float]:
        """The term and the pseudo-label weight q, for the log."""
        return {"loss_mixed_ce": self.loss.item(), "pseudo_label_weight": self.q}

    def images(self, target: Batch) -> dict[str, torch.Tensor]:
        """First-image panels: target, pseudo-label, mixed image and its label."""
        return {"target": target.images[0], "pseudo_label": self.pseudo_labels[0], "mixed": self.mixed.images[0],
                "mixed_label": self.mixed.labels[0]}


def self_training(teacher_logits: torch.Tensor, source: Batch, target: Batch, student: Callable[[torch.Tensor], torch.Tensor],
                  generator: torch.Generator, pseudo: PseudoLabelConfig, mixing: MixingConfig) -> SelfTraining:
    """DACS's target term of one iteration: the mixed image's confidence-weighted cross-entropy.

    Pseudo-labels and q come from the teacher's logits of the target; ClassMix pastes source
    classes onto it; ``student`` maps the mixed images to logits with gradient.
    """
    from madm_train.training.pseudo_labels import confidence_weight, mixed_pixel_weight, pseudo_labels, segmentation_loss

    labels, confidence = pseudo_labels(teacher_logits, tuple(target.images.shape[-2:]))
    q = confidence_weight(confidence, pseudo.threshold)
    mixed = mix_batches(source, target, labels, generator, mixing)
    logits = student(mixed.images)
    loss = segmentation_loss(logits, mixed.labels, mixed_pixel_weight(mixed.source_masks, q))
    return SelfTraining(loss, labels, q, mixed, logits)
