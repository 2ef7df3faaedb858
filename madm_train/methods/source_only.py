"""``method: {name: source_only}``: the MADM network trained on labelled source images alone.

The baseline every adaptation is measured against: the source cross-entropy only — no teacher,
no target images, no mixing, no pseudo-labels, no LPLR.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar

from madm_train.methods.madm.config import ModelConfig

if TYPE_CHECKING:
    from madm_ros.palettes import LabelSet
    from madm_train.config import TrainConfig
    from madm_train.methods.base import Batch, BuildContext, Method, StepContext, StepResult
    from madm_train.models.madm_model import MadmModel

__all__ = ["SourceOnlyConfig", "SourceOnlyMethod"]


@dataclass(frozen=True)
class SourceOnlyConfig:
    """The network (``model``, as MADM's); nothing else is configurable."""

    name: ClassVar[str] = "source_only"
    find_unused_parameters: ClassVar[bool] = False
    optim_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    model: ModelConfig = field(default_factory=ModelConfig)

    @classmethod
    def for_task(cls, task: str) -> SourceOnlyConfig:
        """The same for every task of ``madm_train.config.TASKS`` (``rgb`` included: nothing here is per task)."""
        from madm_ros.errors import ConfigError
        from madm_train.config import TASKS

        if task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        return cls()

    def check(self, config: TrainConfig) -> None:
        """Refuse crops the network cannot run at."""
        self.model.check_crop(config.data.crop_hw)

    def build(self, context: BuildContext) -> Method:
        """The network and the cross-entropy step."""
        return SourceOnlyMethod(self, context)


class SourceOnlyMethod:
    """Source cross-entropy on the MADM network; no teacher (``averaged`` is empty)."""

    needs_target = False
    ema_alpha = 0.0
    adversary = None
    keeps_average = False

    def __init__(self, config: SourceOnlyConfig, context: BuildContext) -> None:
        from madm_train.methods.madm.network import build_network

        self.label_set: LabelSet = context.label_set
        self.network: MadmModel = build_network(config.model, context)
        self.averaged: dict[str, Any] = {}

    def generators(self) -> dict[str, Any]:
        """None: the step draws nothing."""
        return {}

    def predictor(self) -> MadmModel:
        """The trained network."""
        return self.network

    def step(self, context: StepContext, source: Batch, target: Batch | None) -> StepResult:
        """Cross-entropy of the source batch."""
        from madm_train.methods.base import StepResult
        from madm_train.training.pseudo_labels import segmentation_loss

        assert source.labels is not None  # source batches are labelled (the trainer draws them so)
        with context.autocast():
            logits, _ = context.network(source.images)
        loss = segmentation_loss(logits, source.labels)
        images = {}
        if context.want_images:
            images = {"source": source.images[0], "label": source.labels[0], "prediction": logits[0].argmax(0)}
        return StepResult(loss, {"loss_source_ce": loss.item()}, images)
