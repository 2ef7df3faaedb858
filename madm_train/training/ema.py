"""EMA teacher (madm_spec.md §2.1): θ_teacher ← α_i·θ_teacher + (1 − α_i)·θ_student, α_i = min(1 − 1/(i+1), α).

The reference averages only the feature projections, the segmentation head and the prompt/time
parameters; the teacher shares the live UNet (``ema.include_unet=false``). Which modules and
parameters are averaged is the caller's choice: pass the UNet too to average it.

Only parameters are averaged. Buffers (BatchNorm running statistics) are copied once and then
belong to the teacher: its own forward passes (the teacher runs in train mode in the reference)
update them, the student's never do. :meth:`EmaTeacher.swapped` runs a pass through the student's
modules with the teacher's parameters and buffers swapped in, which needs no second copy of the
model graph; :attr:`EmaTeacher.modules` holds standalone teacher copies for callers that prefer them.

At i = 0, α = 0, so the first update copies the student (DAFormer initialises the teacher that way).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

from madm_ros.errors import InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["EmaTeacher", "ema_alpha"]


def ema_alpha(iteration: int, alpha_max: float = 0.999) -> float:
    """α_i = min(1 − 1/(i+1), alpha_max): 0 at i = 0, 0.5 at 1, 0.909… at 10, ``alpha_max`` from i = 999 on (0.999)."""
    if iteration < 0:
        raise InputError(f"iteration must be ≥ 0, got {iteration}")
    return min(1 - 1 / (iteration + 1), alpha_max)


class EmaTeacher:
    """Exponential-moving-average copies of named student modules and parameter lists.

    Args:
        modules: Student modules to average, by name (e.g. ``{"head": …, "projections": …}``;
            add ``"unet"`` for ``ema.include_unet``). The teacher holds deep copies, gradients off.
        parameters: Loose student parameters to average, by group name: a list, or a mapping by
            name (e.g. ``{"prompt": backbone.prompt_parameters()}``). The teacher holds detached clones.
        alpha_max: Final α (0.999).
    """

    def __init__(self, modules: Mapping[str, nn.Module] | None = None,
                 parameters: Mapping[str, Sequence[torch.Tensor] | Mapping[str, torch.Tensor]] | None = None, *,
                 alpha_max: float = 0.999) -> None:
        modules = dict(modules or {})
        named: dict[str, dict[str, torch.Tensor]] = {}
        for group, values in (parameters or {}).items():
            items = values.items() if isinstance(values, Mapping) else ((str(i), p) for i, p in enumerate(values))
            named[group] = dict(items)
        parameters = named
        overlap = sorted(set(modules) & set(parameters))
        if overlap:
            raise InputError(f"EMA names {overlap} are used for both a module and a parameter list")
        if not 0 <= alpha_max < 1:
            raise InputError(f"alpha_max must lie in [0, 1), got {alpha_max}")
        self.alpha_max = alpha_max
        self.student_modules = modules
        self.student_parameters = parameters
        self.modules: dict[str, nn.Module] = {}
        for name, module in modules.items():
            teacher = copy.deepcopy(module)
            teacher.requires_grad_(False)
            self.modules[name] = teacher
        self.parameters: dict[str, dict[str, torch.Tensor]] = {
            group: {name: p.detach().clone() for name, p in values.items()} for group, values in parameters.items()
        }

    def _pairs(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        """(state name, teacher tensor, student tensor) for every averaged parameter."""
        for name, module in self.student_modules.items():
            teacher = dict(self.modules[name].named_parameters())
            for key, param in module.named_parameters():
                yield f"{name}.{key}", teacher[key], param
        for group, values in self.student_parameters.items():
            for name, param in values.items():
                yield f"{group}.{name}", self.parameters[group][name], param

    def _buffer_pairs(self) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
        for name, module in self.student_modules.items():
            teacher = dict(self.modules[name].named_buffers())
            for key, buffer in module.named_buffers():
                yield f"{name}.{key}", teacher[key], buffer

    def update(self, iteration: int) -> float:
        """Average the student into the teacher with α of ``iteration``; returns α."""
        import torch

        alpha = ema_alpha(iteration, self.alpha_max)
        with torch.no_grad():
            for _, teacher, student in self._pairs():
                teacher.mul_(alpha).add_(student.detach().to(teacher.dtype), alpha=1 - alpha)
        return alpha

    @contextlib.contextmanager
    def swapped(self) -> Iterator[None]:
        """Run the student's modules with the teacher's values inside the block.

        Parameters and buffers are exchanged (no copy); on exit both sides get their own values
        back. Use it under ``torch.no_grad()``.
        """
        pairs = list(self._pairs()) + list(self._buffer_pairs())
        for _, teacher, student in pairs:
            teacher.data, student.data = student.data, teacher.data
        try:
            yield
        finally:
            for _, teacher, student in pairs:
                teacher.data, student.data = student.data, teacher.data

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Teacher parameters and buffers by flat name (safetensors-ready)."""
        state = {name: teacher.detach() for name, teacher, _ in self._pairs()}
        state.update({name: teacher.detach() for name, teacher, _ in self._buffer_pairs()})
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` output; every name must match."""
        import torch

        targets = {name: teacher for name, teacher, _ in list(self._pairs()) + list(self._buffer_pairs())}
        missing, unexpected = sorted(set(targets) - set(state)), sorted(set(state) - set(targets))
        if missing or unexpected:
            raise InputError(f"EMA state does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        with torch.no_grad():
            for name, tensor in targets.items():
                tensor.copy_(state[name])
