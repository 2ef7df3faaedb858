"""The one interface between an adaptation method and the trainer.

A method is a frozen config dataclass (its section of the training YAML, tagged ``method.name``)
whose :meth:`MethodConfig.build` returns a :class:`Method`. The trainer owns everything that is not
the method's: data and batch draws, devices, mixed precision, distribution (accelerate: DDP, FSDP),
gradient accumulation, the optimiser and schedule, the EMA teacher, checkpoints, evaluation and
logging. The method owns its modules and one training step:

1. :attr:`Method.network` — the one ``nn.Module`` that holds every trainable parameter; the
   trainer optimises it and hands it to accelerate (which may wrap it in DDP/FSDP), so every
   forward pass that needs a gradient must go through the ``network`` the step receives.
2. :attr:`Method.averaged` — the modules of ``network`` whose parameters the EMA teacher averages
   (empty: no teacher), with :attr:`Method.ema_alpha`.
3. :meth:`Method.step` — one iteration from a source and a target batch: returns the loss (the
   trainer does backward, clipping and the optimiser step), scalars for the log and images for
   TensorBoard.
4. :meth:`Method.predictor` — the saveable model that evaluation, distillation and export use.
5. :meth:`Method.generators` — every explicit random generator the step draws from, by name, so
   that checkpoints restore them and a resumed run draws what an uninterrupted one would.
6. :attr:`Method.adversary` — a second trained module with its own optimiser (ICCLD's latent
   discriminator), or None. The trainer builds its Adam, prepares both with accelerate (so
   checkpoints hold them) and hands the step :attr:`StepContext.update_adversary`, which takes one
   optimiser step of the adversary alone; the step decides when in the iteration it happens.
7. :attr:`Method.keeps_average` — the EMA average, not the trained network, is what is evaluated
   and saved (ICCLD's reading of its Figure 1).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch
    from torch import nn

    from madm_ros.palettes import LabelSet
    from madm_train.config import TrainConfig
    from madm_train.training.ema import EmaTeacher

__all__ = ["Adversary", "Batch", "BuildContext", "Method", "MethodConfig", "SavedModel", "StepContext", "StepResult"]


@dataclass
class Batch:
    """Network tensors of one side of an iteration: images B×3×H×W in [0, 1], labels B×H×W (long) or None."""

    images: torch.Tensor
    labels: torch.Tensor | None


@dataclass
class StepResult:
    """What :meth:`Method.step` returns.

    Attributes:
        loss: Scalar loss with gradient; the trainer calls ``backward`` on it.
        scalars: Values to log (floats), e.g. each loss term and the pseudo-label weight.
        images: First-image panels for TensorBoard when the trainer asked for them: 3×H×W float
            tensors in [0, 1] or H×W class-id tensors (coloured by the label set), in display order.
    """

    loss: torch.Tensor
    scalars: dict[str, float]
    images: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Adversary:
    """A module trained against the network with its own Adam (a GAN discriminator).

    Attributes:
        module: Its parameters are not part of ``Method.network`` and get no gradient from the
            network's loss (the step runs the network's adversarial term through it with its
            parameters detached).
        lr: Adam's learning rate.
        betas: Adam's β.
    """

    module: nn.Module
    lr: float
    betas: tuple[float, float]


@dataclass(frozen=True)
class BuildContext:
    """What a method needs to build its modules.

    Attributes:
        config: The whole resolved training config (the method's own section is ``config.method``).
        label_set: Classes of the labels and logits.
        run_dir: The run folder (for files the method writes once, e.g. a random tiny SD).
        rank: Index of this process (its random generators are seeded with ``run.seed + rank``).
        is_main: This process writes shared files; the others wait at ``barrier``.
        barrier: Waits for every process (a no-op in one process).
    """

    config: TrainConfig
    label_set: LabelSet
    run_dir: Path
    rank: int = 0
    is_main: bool = True
    barrier: Callable[[], None] = lambda: None


@dataclass(frozen=True)
class StepContext:
    """What one :meth:`Method.step` call gets from the trainer.

    Attributes:
        iteration: 0-based index of the optimiser step.
        network: ``Method.network`` as prepared by accelerate (possibly DDP/FSDP-wrapped): run
            every forward pass that needs a gradient through it.
        teacher: The EMA teacher of ``Method.averaged`` (None when the method averages nothing).
        autocast: Mixed-precision context for forward passes outside ``network`` (teacher passes).
        want_images: Fill ``StepResult.images`` this iteration.
        adversary: ``Method.adversary.module`` as prepared by accelerate (None without one).
        update_adversary: Backward of the adversary's loss and one step of its optimiser (a step
            skipped while gradients accumulate, as the network's); returns the loss value.
    """

    iteration: int
    network: nn.Module
    teacher: EmaTeacher | None
    autocast: Callable[[], AbstractContextManager[Any]]
    want_images: bool = False
    adversary: nn.Module | None = None
    update_adversary: Callable[[torch.Tensor], float] | None = None


class Method(Protocol):
    """A built method: modules plus the training step (see the module docstring)."""

    network: nn.Module
    averaged: Mapping[str, nn.Module]
    ema_alpha: float
    needs_target: bool
    adversary: Adversary | None
    keeps_average: bool

    def step(self, context: StepContext, source: Batch, target: Batch | None) -> StepResult:
        """One iteration's loss from a labelled source batch and an unlabelled target batch."""

    def predictor(self) -> SavedModel:
        """The model that is evaluated, saved, distilled and exported (unwrapped, on its device)."""

    def generators(self) -> dict[str, Any]:
        """The step's explicit random generators by name (torch, NumPy or ``random.Random``)."""


class SavedModel(Protocol):
    """A trained model: ``logits(images01)`` for evaluation and distillation, ``save(path)`` with a format tag."""

    def logits(self, images01: torch.Tensor) -> torch.Tensor:
        """B×K×H'×W' logits of B×3×H×W images in [0, 1]."""

    def save(self, path: str | Path) -> Path:
        """Write a self-describing folder (``config.json`` with a ``format`` tag + weights)."""


class MethodConfig(Protocol):
    """A method's config section: a frozen dataclass with a ``name`` tag and a builder."""

    name: ClassVar[str]
    find_unused_parameters: ClassVar[bool]
    """DDP must look for parameters that get no gradient in a step (costs a graph walk per step)."""
    optim_defaults: ClassVar[Mapping[str, Any]]
    """The method's released optimiser values (``OptimConfig`` fields) where they differ from MADM's."""

    @classmethod
    def for_task(cls, task: str) -> MethodConfig:
        """The released defaults of the method for a task (``depth``, ``infrared``, ``events``)."""

    def build(self, context: BuildContext) -> Method:
        """Build the method's modules (on the CPU, float32; the trainer places them)."""

    def check(self, config: TrainConfig) -> None:
        """Refuse combinations with the rest of the config that cannot work, before anything loads."""
