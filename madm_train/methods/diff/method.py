"""DIFF's training step in both modes, on the interface of :mod:`madm_train.methods.base`.

**Generalisation** (released; iccld_diff_spec.md B.2–B.3): one labelled source batch, the
unconditional branch p_u (empty prompt) and, with IPKL, the conditional branch p_c (class prompts
inside the label masks); L = CE(p_c, y) + CE(p_u, y) + λ·MSE(p_c, p_u), no stop-gradient (or, as an
option, λ·T²·KL(p_c ‖ p_u) with the conditional branch as a detached teacher). Only the
unconditional branch runs at inference.

**Adaptation** (not in the released code): the same source losses, plus self-training on the
target modality as MADM does it — the EMA teacher (fusion and head averaged; the UNet shared) labels
the target batch, ClassMix pastes source classes onto it, and the mixed image is trained with the
confidence-weighted pseudo-labels. Both student passes of a batch and both branches go through the
prepared ``network`` (DDP accepts several forward passes before one backward).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from madm_ros.palettes import LabelSet
    from madm_train.methods.base import Batch, BuildContext, StepContext, StepResult
    from madm_train.methods.diff.config import DiffConfig
    from madm_train.methods.diff.model import DiffModel

__all__ = ["DiffMethod", "consistency_loss"]


def consistency_loss(conditional: torch.Tensor, unconditional: torch.Tensor, kind: str, temperature: float) -> torch.Tensor:
    """IPKL's tie between the branches: MSE on logits (released) or T²·KL(softmax(p_c/T) ‖ softmax(p_u/T)), p_c detached."""
    if kind == "mse":
        return F.mse_loss(conditional.float(), unconditional.float())
    teacher = F.log_softmax(conditional.detach().float() / temperature, dim=1)
    student = F.log_softmax(unconditional.float() / temperature, dim=1)
    return temperature**2 * F.kl_div(student, teacher, reduction="batchmean", log_target=True) / teacher[0, 0].numel()


class DiffMethod:
    """The built DIFF method (see the module docstring).

    Args:
        config: The ``method`` section.
        context: Label set, run folder, rank and the whole config.
    """

    adversary = None
    keeps_average = False

    def __init__(self, config: DiffConfig, context: BuildContext) -> None:
        from madm_train.methods.diff.network import build_diff_network

        self.config = config
        self.label_set: LabelSet = context.label_set
        self.network: DiffModel = build_diff_network(config, context)
        self.needs_target = config.mode == "adaptation"
        self.averaged = ({"aggregation": self.network.aggregation, "finecoder": self.network.finecoder,
                          "head": self.network.head} if self.needs_target else {})
        self.ema_alpha = config.ema.alpha
        seed = context.config.run.seed + context.rank
        self.trajectory_generator = torch.Generator().manual_seed(seed)
        self.mixing_generator = torch.Generator().manual_seed(seed + 1)

    def generators(self) -> dict[str, Any]:
        """The VAE samples and trajectory noise; ClassMix, jitter and blur."""
        return {"trajectory": self.trajectory_generator, "mixing": self.mixing_generator}

    def predictor(self) -> DiffModel:
        """The student network (its unconditional branch is what is evaluated and distilled)."""
        return self.network

    def step(self, context: StepContext, source: Batch, target: Batch | None) -> StepResult:
        """The losses of one iteration (module docstring)."""
        from madm_train.methods.base import StepResult
        from madm_train.methods.self_training import self_training
        from madm_train.training.pseudo_labels import segmentation_loss

        c = self.config
        assert source.labels is not None  # source batches are labelled (the trainer draws them so)
        with context.autocast():
            p_u = context.network(source.images, None, self.trajectory_generator)
        loss_u = segmentation_loss(p_u, source.labels)
        loss, scalars = loss_u, {"loss_source_ce": loss_u.item()}
        if c.ipkl.enabled:
            with context.autocast():
                p_c = context.network(source.images, source.labels, self.trajectory_generator)
            loss_c = segmentation_loss(p_c, source.labels)
            tie = consistency_loss(p_c, p_u, c.ipkl.consistency, c.ipkl.temperature)
            loss = loss + loss_c + c.ipkl.consistency_weight * tie
            scalars.update(loss_conditional_ce=loss_c.item(), loss_consistency=tie.item())
        images: dict[str, torch.Tensor] = {}
        if context.want_images:
            images = {"source": source.images[0], "label": source.labels[0], "prediction": p_u[0].argmax(0)}
        if not self.needs_target:
            return StepResult(loss, scalars, images)

        assert target is not None and context.teacher is not None  # the trainer's contract in adaptation mode
        with torch.no_grad(), context.teacher.swapped(), context.autocast():
            logits_t = self.network(target.images, None, self.trajectory_generator)

        def student(images: torch.Tensor) -> torch.Tensor:
            with context.autocast():
                return context.network(images, None, self.trajectory_generator)

        mixed = self_training(logits_t, source, target, student, self.mixing_generator, c.pseudo_labels, c.mixing)
        scalars.update(mixed.scalars())
        if context.want_images:
            images.update(mixed.images(target))
        return StepResult(loss + mixed.loss, scalars, images)
