"""Stage 2's latent discriminator and its GAN losses (AdaptSegNet's output-space alignment, moved to latents).

The discriminator is fully convolutional and judges each latent patch "source" (1) or "target"
(0). Latents are 8× smaller than images, so it has two stride-2 layers where AdaptSegNet's has
five: a 128² crop's 16² latent still gives a 4² map of judgements.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from madm_ros.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["GAN_LOSSES", "AdversarialTerms", "LatentDiscriminator", "adversarial_terms", "discriminator_loss",
           "generator_loss"]


class LatentDiscriminator(nn.Module):
    """Latent B×c×h×w → judgements B×1×h/4×w/4 (logits; > 0 means "source").

    Args:
        channels: Latent channels.
        width: Channels of the first layer, doubled by each of the next two.
    """

    def __init__(self, channels: int, width: int = 64) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * width, 1, 3, padding=1),
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Patch logits."""
        return self.layers(latents.float())


def _bce(judgements: torch.Tensor, label: float) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(judgements, torch.full_like(judgements, label))


def _least_squares(judgements: torch.Tensor, label: float) -> torch.Tensor:
    return F.mse_loss(judgements, torch.full_like(judgements, label))


GAN_LOSSES: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {"bce": _bce, "lsgan": _least_squares}
"""``adversarial.loss`` → the loss of judgements against a label (1 source, 0 target)."""


def _loss(kind: str) -> Callable[[torch.Tensor, float], torch.Tensor]:
    if kind not in GAN_LOSSES:
        raise ConfigError(f"method.adversarial.loss must be one of {', '.join(GAN_LOSSES)}, got {kind!r}")
    return GAN_LOSSES[kind]


def discriminator_loss(source: torch.Tensor, target: torch.Tensor, kind: str) -> torch.Tensor:
    """The discriminator's loss: source judged 1, target judged 0 (mean of the two)."""
    loss = _loss(kind)
    return (loss(source, 1.0) + loss(target, 0.0)) / 2


def generator_loss(target: torch.Tensor, kind: str) -> torch.Tensor:
    """ε_θ's adversarial loss: the target's latents judged 1 ("source")."""
    return _loss(kind)(target, 1.0)


class AdversarialTerms(NamedTuple):
    """What one alternation gives: the discriminator's loss (already stepped) and the generator's term."""

    discriminator_loss: float
    generator_loss: torch.Tensor
    """With gradient into the latents only."""
    judged: torch.Tensor
    """The discriminator's judgements of [source ; target] before its step (for the log)."""


def adversarial_terms(discriminator: nn.Module, judge: Callable[[torch.Tensor], torch.Tensor],
                      update: Callable[[torch.Tensor], float], source: torch.Tensor, target: torch.Tensor,
                      kind: str) -> AdversarialTerms:
    """One alternation: the discriminator steps first, then the generator's term runs through its new weights.

    1. ``judge`` (the discriminator as the trainer prepared it) sees the detached latents of both
       domains in one pass; ``update`` back-propagates its loss and steps its optimiser;
    2. ``discriminator`` (the same module, unwrapped) judges the target latents with its parameters
       detached, so the generator's term gives gradient to the latents and none to it.
    """
    judged = judge(torch.cat([source, target]).detach())
    count = source.shape[0]
    loss_d = update(discriminator_loss(judged[:count], judged[count:], kind))
    frozen = {name: p.detach() for name, p in discriminator.named_parameters()}
    fooled = torch.func.functional_call(discriminator, frozen, (target,))
    return AdversarialTerms(loss_d, generator_loss(fooled, kind), judged.detach())
