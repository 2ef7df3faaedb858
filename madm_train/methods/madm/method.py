"""MADM's training step (madm_spec.md §2–§4), on the interface of :mod:`madm_train.methods.base`.

One iteration, after the trainer drew B source and B target images and updated the EMA teacher:

1. source forward at t = 0: cross-entropy on the labels + LPLR L1 of the UNet output to the VAE
   latent of the palette-painted labels (weight λ_s);
2. teacher pass on the clean target image with the EMA head, projections and prompt (the UNet
   is shared) at the DPLG timestep k = ⌊k₀(1 − i/E)⌋: pseudo-labels and their weight q;
3. ClassMix of source and target, colour jitter and blur; mixed forward: cross-entropy on the
   mixed label (source pixels weight 1, target pixels q) + LPLR on the mixed label (λ_t·q).

The trainer then runs backward, clips the gradient norm and steps AdamW and the schedule.
Both student passes go through the prepared ``network`` (one backward for both, which DDP
accepts: each parameter's gradient arrives once, summed over the two uses); the teacher pass runs
on the unwrapped model without gradient.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import torch

from madm_ros.palettes import LabelSet

if TYPE_CHECKING:
    from madm_train.methods.base import Batch, BuildContext, StepContext, StepResult
    from madm_train.methods.madm.config import MadmConfig
    from madm_train.models.madm_model import MadmModel

__all__ = ["MadmMethod"]


class MadmMethod:
    """The built MADM method: the student network, what its EMA teacher averages, and the step.

    Args:
        config: The ``method`` section.
        context: Label set, run folder, rank and the whole config (seed).
    """

    needs_target = True
    adversary = None
    keeps_average = False

    def __init__(self, config: MadmConfig, context: BuildContext) -> None:
        from madm_train.methods.madm.network import build_network

        self.config = config
        self.label_set: LabelSet = context.label_set
        self.network: MadmModel = build_network(config.model, context)
        backbone = self.network.backbone
        self.averaged = {"head": self.network.head, "projections": backbone.projections, "prompt": backbone.prompt}
        if config.ema.include_unet:
            self.averaged["unet"] = backbone.unet
        self.ema_alpha = config.ema.alpha
        seed = context.config.run.seed + context.rank
        self.mixing_generator = torch.Generator().manual_seed(seed)
        self.k0_rng = random.Random(seed)

    def generators(self) -> dict[str, Any]:
        """ClassMix/jitter/blur/fresh-noise draws and the per-iteration k₀."""
        return {"mixing": self.mixing_generator, "k0": self.k0_rng}

    def predictor(self) -> MadmModel:
        """The student (MADM evaluates the student, not the EMA teacher; madm_spec.md §5.6)."""
        return self.network

    def _latent_target(self, labels: torch.Tensor, unet_output: torch.Tensor) -> torch.Tensor:
        """VAE latent of the painted labels at the network's working size (8× the UNet output)."""
        from madm_train.methods.madm.lplr import latent_target

        return latent_target(labels, self.network.backbone.encode, self.label_set,
                             unlabelled_color=self.config.lplr.unlabelled_color,
                             size_hw=(8 * unet_output.shape[-2], 8 * unet_output.shape[-1]))

    def _teacher_noise(self, images: torch.Tensor) -> torch.Tensor | None:
        """ε of the teacher pass: None (the backbone's shared noise) or fresh noise of the latent's shape."""
        from madm_train.methods.madm.dplg import teacher_noise

        if self.config.dplg.fixed_noise:
            return None
        backbone = self.network.backbone
        side = backbone.input_size
        height, width = (side, side) if side is not None else images.shape[-2:]
        shape = (images.shape[0], backbone.vae.config.latent_channels, height // 8, width // 8)
        return teacher_noise(torch.empty(shape, device=images.device, dtype=backbone.unet.dtype),
                             generator=self.mixing_generator)

    def step(self, context: StepContext, source: Batch, target: Batch | None) -> StepResult:
        """Losses of one MADM iteration (module docstring steps 1–3)."""
        from madm_train.methods.base import StepResult
        from madm_train.methods.madm.dplg import dplg_timestep, draw_k0
        from madm_train.methods.madm.lplr import lplr_loss
        from madm_train.methods.self_training import mix_batches
        from madm_train.training.pseudo_labels import confidence_weight, mixed_pixel_weight, pseudo_labels, segmentation_loss

        c = self.config
        assert source.labels is not None and target is not None and context.teacher is not None  # trainer contract

        # 1. source forward
        with context.autocast():
            logits_s, out_s = context.network(source.images)
        loss_source = segmentation_loss(logits_s, source.labels)
        loss = loss_source
        scalars = {"loss_source_ce": loss_source.item()}
        if c.lplr.source_weight > 0:
            reg_s = lplr_loss(out_s.unet_output, self._latent_target(source.labels, out_s.unet_output), source.labels,
                              weight=c.lplr.source_weight)
            loss = loss + reg_s
            scalars["loss_source_lplr"] = reg_s.item()

        # 2. teacher on the clean target, DPLG-noised early in training
        k = 0
        if c.dplg.enabled:
            k = dplg_timestep(context.iteration, k0=draw_k0(c.dplg.k0_choices, self.k0_rng), end_iter=c.dplg.end_iter)
        timesteps = torch.full((target.images.shape[0],), k, dtype=torch.long, device=target.images.device)
        noise = self._teacher_noise(target.images)
        with torch.no_grad(), context.teacher.swapped(), context.autocast():
            logits_t, _ = self.network(target.images, timesteps, noise)
        pseudo, confidence = pseudo_labels(logits_t, tuple(target.images.shape[-2:]))
        q = confidence_weight(confidence, c.pseudo_labels.threshold)

        # 3. ClassMix + jitter/blur, mixed forward
        mixed = mix_batches(source, target, pseudo, self.mixing_generator, c.mixing)
        with context.autocast():
            logits_m, out_m = context.network(mixed.images)
        loss_mixed = segmentation_loss(logits_m, mixed.labels, mixed_pixel_weight(mixed.source_masks, q))
        loss = loss + loss_mixed
        scalars.update(loss_mixed_ce=loss_mixed.item(), pseudo_label_weight=q, dplg_timestep=float(k))
        if c.lplr.target_weight > 0:
            reg_m = lplr_loss(out_m.unet_output, self._latent_target(mixed.labels, out_m.unet_output), mixed.labels,
                              confidence=q, weight=c.lplr.target_weight)
            loss = loss + reg_m
            scalars["loss_mixed_lplr"] = reg_m.item()

        images = {}
        if context.want_images:
            images = {"target": target.images[0], "pseudo_label": pseudo[0], "mixed": mixed.images[0],
                      "mixed_label": mixed.labels[0], "prediction": logits_m[0].argmax(0), "palette": out_m.decoded[0]}
        return StepResult(loss, scalars, images)
