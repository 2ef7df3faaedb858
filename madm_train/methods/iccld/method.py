"""ICCLD's training step, stage by stage, on the interface of :mod:`madm_train.methods.base`.

**Stage 1** (E and D; the latent goes straight from E to D): source cross-entropy, plus DACS
self-training on the target — pseudo-labels of the target, ClassMix, the confidence-weighted
cross-entropy of the mixed image. Under the ``caption`` reading the trained network labels the
target itself and its EMA average is what is kept; under ``usual`` the EMA teacher labels it and the
trained network is kept. ``target_free`` leaves the target out (the source-only warm-up).

**Stage 2** (ε_θ; E and D frozen): one forward of source and target images together at a random
t per image gives ε_θ's prediction, the one-step estimate ẑ₀ and D's logits on it;

1. the diffusion loss on the source, ‖target − prediction‖²;
2. D's cross-entropy on the source's ẑ₀ (labels) and on the target's (the frozen stage-1 model's
   pseudo-labels of the target, weighted by their confidence q);
3. the discriminator's update on detached ẑ₀ (source 1, target 0), one step of its own Adam;
4. ε_θ's adversarial term: the target's ẑ₀ judged "source" by the just-updated discriminator, run
   with its parameters detached so that only ε_θ learns from it, × λ_adv (warmed up linearly).

The trainer back-propagates 1 + 2 + 4 into ε_θ.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from madm_ros.palettes import LabelSet
    from madm_train.methods.base import Batch, BuildContext, StepContext, StepResult
    from madm_train.methods.iccld.config import IccldConfig
    from madm_train.methods.iccld.model import IccldModel, OneStep

__all__ = ["IccldMethod"]


class IccldMethod:
    """The built ICCLD method of one stage (see the module docstring).

    Args:
        config: The ``method`` section.
        context: Label set, run folder, rank and the whole config.
    """

    def __init__(self, config: IccldConfig, context: BuildContext) -> None:
        from madm_train.methods.base import Adversary
        from madm_train.methods.iccld.discriminator import LatentDiscriminator
        from madm_train.methods.iccld.network import build_iccld_network

        self.config = config
        self.label_set: LabelSet = context.label_set
        self.network: IccldModel = build_iccld_network(config, context)
        net, caption = self.network, config.reading == "caption"
        self.needs_target = not config.target_free
        self.adversary = None
        if config.stage == 1:
            self.averaged = {} if config.target_free else {"encoder": net.encoder, "decoder": net.decoder}
        else:
            assert net.denoiser is not None  # attached by build_iccld_network in stage 2
            self.averaged = {"denoiser": net.denoiser} if caption else {}
            self.discriminator = LatentDiscriminator(net.encoder.latent_channels, config.adversarial.width)
            self.adversary = Adversary(self.discriminator, config.adversarial.lr, config.adversarial.betas)
        self.keeps_average = caption and bool(self.averaged)
        self.ema_alpha = config.ema.alpha
        seed = context.config.run.seed + context.rank
        self.noise_generator = torch.Generator().manual_seed(seed)
        self.mixing_generator = torch.Generator().manual_seed(seed + 1)

    def generators(self) -> dict[str, Any]:
        """Stage 2's timesteps and noise; stage 1's ClassMix, jitter and blur."""
        return {"noise": self.noise_generator, "mixing": self.mixing_generator}

    def predictor(self) -> IccldModel:
        """The network (the trainer swaps the EMA average in when :attr:`keeps_average`)."""
        return self.network

    def step(self, context: StepContext, source: Batch, target: Batch | None) -> StepResult:
        """The losses of one iteration of the configured stage."""
        if self.config.stage == 1:
            return self._stage_one(context, source, target)
        assert target is not None  # stage 2 always draws target images
        return self._stage_two(context, source, target)

    def _stage_one(self, context: StepContext, source: Batch, target: Batch | None) -> StepResult:
        from madm_train.methods.base import StepResult
        from madm_train.methods.self_training import self_training
        from madm_train.training.pseudo_labels import segmentation_loss

        c = self.config
        assert source.labels is not None  # source batches are labelled (the trainer draws them so)
        with context.autocast():
            logits_s = context.network(source.images)
        loss = segmentation_loss(logits_s, source.labels)
        scalars = {"loss_source_ce": loss.item()}
        images: dict[str, torch.Tensor] = {}
        if context.want_images:
            images = {"source": source.images[0], "label": source.labels[0], "prediction": logits_s[0].argmax(0)}
        if target is None:
            return StepResult(loss, scalars, images)

        with torch.no_grad(), context.autocast():
            if c.reading == "usual":
                assert context.teacher is not None  # the trainer builds it from ``averaged``
                with context.teacher.swapped():
                    logits_t = self.network(target.images)
            else:
                logits_t = self.network(target.images)

        def student(images: torch.Tensor) -> torch.Tensor:
            with context.autocast():
                return context.network(images)

        mixed = self_training(logits_t, source, target, student, self.mixing_generator, c.pseudo_labels, c.mixing)
        scalars.update(mixed.scalars())
        if context.want_images:
            images.update(mixed.images(target))
        return StepResult(loss + mixed.loss, scalars, images)

    def _stage_two(self, context: StepContext, source: Batch, target: Batch) -> StepResult:
        from madm_train.methods.base import StepResult
        from madm_train.methods.iccld.discriminator import adversarial_terms
        from madm_train.training.pseudo_labels import confidence_weight, pseudo_labels, segmentation_loss

        c, batch = self.config, source.images.shape[0]
        assert source.labels is not None and context.update_adversary is not None and context.adversary is not None
        denoiser = self.network.denoiser
        assert denoiser is not None  # stage 2 attaches it
        steps = denoiser.scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (2 * batch,), generator=self.noise_generator)
        with context.autocast():
            out: OneStep = context.network(torch.cat([source.images, target.images]), timesteps=timesteps,
                                           generator=self.noise_generator)
        loss_diffusion = F.mse_loss(out.prediction[:batch].float(), out.target[:batch].float())
        loss_source = segmentation_loss(out.logits[:batch], source.labels)
        with torch.no_grad(), context.autocast():
            pseudo, confidence = pseudo_labels(self.network.direct(target.images))
        q = confidence_weight(confidence, c.pseudo_labels.threshold)
        loss_target = q * segmentation_loss(out.logits[batch:], pseudo)

        latents = out.latent.float()
        with context.autocast():
            adversarial = adversarial_terms(self.discriminator, context.adversary, context.update_adversary,
                                            latents[:batch], latents[batch:], c.adversarial.loss)
        judged = adversarial.judged.float()
        weight = c.adversarial.ramp(context.iteration)

        d = c.diffusion
        loss = (d.weight * loss_diffusion + d.source_weight * loss_source + d.target_weight * loss_target
                + weight * adversarial.generator_loss)
        scalars = {"loss_diffusion": loss_diffusion.item(), "loss_source_ce": loss_source.item(),
                   "loss_target_ce": loss_target.item(), "pseudo_label_weight": q,
                   "loss_discriminator": adversarial.discriminator_loss,
                   "loss_adversarial": adversarial.generator_loss.item(),
                   "adversarial_weight": weight,
                   "discriminator_source_score": float(torch.sigmoid(judged[:batch]).mean()),
                   "discriminator_target_score": float(torch.sigmoid(judged[batch:]).mean())}
        images: dict[str, torch.Tensor] = {}
        if context.want_images:
            images = {"source": source.images[0], "label": source.labels[0], "prediction": out.logits[0].argmax(0),
                      "target": target.images[0], "pseudo_label": pseudo[0],
                      "target_prediction": out.logits[batch].argmax(0)}
        return StepResult(loss, scalars, images)
