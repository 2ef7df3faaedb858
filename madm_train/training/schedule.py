"""AdamW parameter groups and the learning-rate multiplier (madm_spec.md §2.5; the trainer clips through accelerate).

The reference (detectron2 via ODISE) multiplies lr 5e-6 by a ``WarmupParamScheduler`` around a
``MultiStepParamScheduler``, both evaluated at ``where = iteration / max_iter``:

- warm-up: for where < w (w = 500/184375, about 27 of 10,000 iterations) the multiplier rises
  linearly from ``warmup_factor`` (0.067) to the step schedule's value at w;
- steps: ``epoch = int((where + 1e-6)·N)`` with N = 2·max_iter − 1 (MADM's setting), and the
  multiplier drops to ``step_factors[j]`` once ``epoch`` reaches milestone j = ⌊f_j·N⌋ with
  f = (163889, 177546)/184375 — at max_iter 10,000 that is iteration 8889 (×0.1) and 9630 (×0.01).

:func:`lr_multiplier` is that formula for any ``max_iter``; :func:`build_lr_scheduler` wraps it in
a ``torch.optim.lr_scheduler.LambdaLR`` stepped once per iteration (its state dict is plain JSON).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from madm_ros.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from madm_train.config import OptimConfig

__all__ = ["LrMultiplier", "build_lr_scheduler", "build_optimizer", "lr_multiplier", "parameter_groups"]

_WHERE_EPSILON = 1e-6  # fvcore ParamScheduler.WHERE_EPSILON


def _norm_types() -> tuple[type, ...]:
    from torch import nn

    return (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.GroupNorm, nn.LayerNorm,
            nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.LocalResponseNorm)


def parameter_groups(modules: Iterable[nn.Module], *, lr: float, weight_decay: float,
                     extra_parameters: Iterable[torch.Tensor] = ()) -> list[dict[str, Any]]:
    """Two AdamW groups: ``decay`` and ``no_decay`` (norm layers' parameters and every ``bias``).

    As detectron2's ``get_default_optimizer_params`` with ``weight_decay_norm = weight_decay_bias = 0``.

    Parameters without gradient are left out; a parameter shared by several modules is listed once.
    ``extra_parameters`` (loose tensors such as a learned prompt) join the ``decay`` group.
    """
    norm_types = _norm_types()
    seen: set[int] = set()
    decay: list[torch.Tensor] = []
    no_decay: list[torch.Tensor] = []
    for root in modules:
        for module in root.modules():
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                (no_decay if isinstance(module, norm_types) or name == "bias" else decay).append(param)
    for param in extra_parameters:
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            decay.append(param)
    return [
        {"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay},
        {"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
    ]


def build_optimizer(groups: list[dict[str, Any]], optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``groups`` with the config's betas and ε (lr and weight decay come from the groups)."""
    import torch

    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)


def lr_multiplier(iteration: int, max_iter: int, *, warmup_factor: float = 0.067, warmup_fraction: float = 500 / 184_375,
                  milestone_fractions: Sequence[float] = (163_889 / 184_375, 177_546 / 184_375),
                  step_factors: Sequence[float] = (0.1, 0.01)) -> float:
    """The reference's learning-rate multiplier at ``iteration`` (0-based) of ``max_iter``."""
    if max_iter < 1:
        raise ConfigError(f"max_iter must be ≥ 1, got {max_iter}")
    if len(milestone_fractions) != len(step_factors):
        raise ConfigError("milestone_fractions and step_factors must have the same length")
    num_updates = 2 * max_iter - 1
    milestones = [math.floor(f * num_updates) for f in milestone_fractions]
    values = [1.0, *step_factors]

    def steps(where: float) -> float:
        epoch = int((where + _WHERE_EPSILON) * num_updates)
        return values[bisect.bisect_right(milestones, epoch)]

    where = iteration / max_iter
    if where < warmup_fraction:
        alpha = where / warmup_fraction
        return warmup_factor * steps(0.0) * (1 - alpha) + steps(warmup_fraction) * alpha
    return steps(where)


@dataclass(frozen=True)
class LrMultiplier:
    """:func:`lr_multiplier` with its settings bound, as a ``LambdaLR`` lambda (its fields are plain numbers)."""

    max_iter: int
    warmup_factor: float
    warmup_fraction: float
    milestone_fractions: tuple[float, ...]
    step_factors: tuple[float, ...]

    @classmethod
    def from_config(cls, optim: OptimConfig) -> LrMultiplier:
        """Bind the values of an ``OptimConfig``."""
        return cls(optim.max_iter, optim.warmup_factor, optim.warmup_fraction, tuple(optim.milestone_fractions),
                   tuple(optim.step_factors))

    def __call__(self, iteration: int) -> float:
        """The multiplier at ``iteration``."""
        return lr_multiplier(iteration, self.max_iter, warmup_factor=self.warmup_factor,
                             warmup_fraction=self.warmup_fraction, milestone_fractions=self.milestone_fractions,
                             step_factors=self.step_factors)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :class:`LrMultiplier`; call ``step()`` once after every optimiser step."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, LrMultiplier.from_config(optim))
