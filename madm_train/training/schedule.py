"""AdamW parameter groups and the learning-rate multiplier (the trainer clips through accelerate).

Two schedules, each its reference's formula, chosen by ``optim.schedule``:

``step`` (MADM, madm_spec.md §2.5). The reference (detectron2 via ODISE) multiplies lr 5e-6 by a ``WarmupParamScheduler`` around a
``MultiStepParamScheduler``, both evaluated at ``where = iteration / max_iter``:

- warm-up: for where < w (w = 500/184375, about 27 of 10,000 iterations) the multiplier rises
  linearly from ``warmup_factor`` (0.067) to the step schedule's value at w;
- steps: ``epoch = int((where + 1e-6)·N)`` with N = 2·max_iter − 1 (MADM's setting), and the
  multiplier drops to ``step_factors[j]`` once ``epoch`` reaches milestone j = ⌊f_j·N⌋ with
  f = (163889, 177546)/184375 — at max_iter 10,000 that is iteration 8889 (×0.1) and 9630 (×0.01).

``poly`` (DIFF, iccld_diff_spec.md B.3; mmcv's ``PolyLrUpdaterHook`` with linear warm-up, as
DAFormer configures it): (1 − i/max_iter)^power, min lr 0, times r + (1 − r)·i/W during the W
warm-up iterations (W = ``warmup_fraction``·max_iter, r = ``warmup_factor``; DIFF: W = 1500 of
40,000, r = 1e-6).

:func:`lr_multiplier` is either formula for any ``max_iter``; :func:`build_lr_scheduler` wraps it in
a ``torch.optim.lr_scheduler.LambdaLR`` stepped once per iteration (its state dict is plain JSON).
A head learning-rate multiplier (DIFF: ×10 for the decode head, as DAFormer's ``custom_keys``) is
a pair of extra parameter groups (:func:`parameter_groups`), scaled by the same multiplier.
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
                     extra_parameters: Iterable[torch.Tensor] = (), head_lr_multiplier: float = 1.0) -> list[dict[str, Any]]:
    """AdamW groups ``decay`` and ``no_decay`` (norm layers' parameters and every ``bias``).

    As detectron2's ``get_default_optimizer_params`` with ``weight_decay_norm = weight_decay_bias = 0``.

    Parameters without gradient are left out; a parameter shared by several modules is listed once.
    ``extra_parameters`` (loose tensors such as a learned prompt) join the ``decay`` group. With
    ``head_lr_multiplier`` ≠ 1 the parameters of each module's ``head`` child go into two more
    groups, ``head_decay`` and ``head_no_decay``, at ``lr × head_lr_multiplier`` (with 1 there
    are only the two groups, so optimiser states of earlier runs still load).
    """
    norm_types = _norm_types()
    seen: set[int] = set()
    split_head = head_lr_multiplier != 1.0
    groups: dict[str, list[torch.Tensor]] = {"decay": [], "no_decay": [], "head_decay": [], "head_no_decay": []}
    for root in modules:
        for module_name, module in root.named_modules():
            prefix = "head_" if split_head and (module_name == "head" or module_name.startswith("head.")) else ""
            for name, param in module.named_parameters(recurse=False):
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                groups[prefix + ("no_decay" if isinstance(module, norm_types) or name == "bias" else "decay")].append(param)
    for param in extra_parameters:
        if param.requires_grad and id(param) not in seen:
            seen.add(id(param))
            groups["decay"].append(param)
    result = [
        {"name": "decay", "params": groups["decay"], "lr": lr, "weight_decay": weight_decay},
        {"name": "no_decay", "params": groups["no_decay"], "lr": lr, "weight_decay": 0.0},
    ]
    if split_head:
        result += [
            {"name": "head_decay", "params": groups["head_decay"], "lr": lr * head_lr_multiplier, "weight_decay": weight_decay},
            {"name": "head_no_decay", "params": groups["head_no_decay"], "lr": lr * head_lr_multiplier, "weight_decay": 0.0},
        ]
    return result


def build_optimizer(groups: list[dict[str, Any]], optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over ``groups`` with the config's betas and ε (lr and weight decay come from the groups)."""
    import torch

    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)


def lr_multiplier(iteration: int, max_iter: int, *, warmup_factor: float = 0.067, warmup_fraction: float = 500 / 184_375,
                  milestone_fractions: Sequence[float] = (163_889 / 184_375, 177_546 / 184_375),
                  step_factors: Sequence[float] = (0.1, 0.01), schedule: str = "step", poly_power: float = 1.0) -> float:
    """The learning-rate multiplier at ``iteration`` (0-based) of ``max_iter`` (``step``: MADM's, ``poly``: DIFF's)."""
    if max_iter < 1:
        raise ConfigError(f"max_iter must be ≥ 1, got {max_iter}")
    if schedule == "poly":
        value = max(1.0 - iteration / max_iter, 0.0) ** poly_power
        warmup = warmup_fraction * max_iter
        if iteration < warmup:
            value *= warmup_factor + (1.0 - warmup_factor) * iteration / warmup
        return value
    if schedule != "step":
        raise ConfigError(f"schedule must be step or poly, got {schedule!r}")
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
    schedule: str = "step"
    poly_power: float = 1.0

    @classmethod
    def from_config(cls, optim: OptimConfig) -> LrMultiplier:
        """Bind the values of an ``OptimConfig``."""
        return cls(optim.max_iter, optim.warmup_factor, optim.warmup_fraction, tuple(optim.milestone_fractions),
                   tuple(optim.step_factors), optim.schedule, optim.poly_power)

    def __call__(self, iteration: int) -> float:
        """The multiplier at ``iteration``."""
        return lr_multiplier(iteration, self.max_iter, warmup_factor=self.warmup_factor,
                             warmup_fraction=self.warmup_fraction, milestone_fractions=self.milestone_fractions,
                             step_factors=self.step_factors, schedule=self.schedule, poly_power=self.poly_power)


def build_lr_scheduler(optimizer: torch.optim.Optimizer, optim: OptimConfig) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :class:`LrMultiplier`; call ``step()`` once after every optimiser step."""
    import torch

    return torch.optim.lr_scheduler.LambdaLR(optimizer, LrMultiplier.from_config(optim))
