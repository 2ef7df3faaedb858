"""DIFF's timestep trajectory: the VAE latent walked *forward* in noise level, the UNet run at every step.

As released (``Yux1angJi/DIFF`` ``diffusion.py`` ``generalized_steps``; iccld_diff_spec.md B.1):
the UNet runs at the current timestep t of each pair (t → t′), and the latent moves to t′ by the
DDIM formula used in the noising direction. With ᾱ the cumulative product of SD's scaled-linear
schedule, ε̂ the UNet's (guided) prediction and a = ᾱ_{t′}/ᾱ_t::

    x̂₀ = (x − √(1−ᾱ_t)·ε̂) / √ᾱ_t
    σ  = η·√((1 − a)(1 − ᾱ_{t′}) / (1 − ᾱ_t))
    c  = √max(1 − ᾱ_{t′} − σ², 1e-10)
    x′ = √ᾱ_{t′}·x̂₀ + σ·z + c·ε̂,   z ~ N(0, I)

η is 1 while 10 < t < 250 (the current t) and 0 otherwise, so 26 of the released 37 steps inject
fresh noise. Features are kept at some of the steps (:attr:`Trajectory.saved`); the steps after
the last saved one change nothing that is kept and are not run (the released code runs and
discards three of them). SD-2.1's UNet predicts v, which the released code treats as ε (an
approximate inversion); :func:`v_to_epsilon` is the exact conversion, used when asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from madm_ros.errors import ConfigError

if TYPE_CHECKING:
    import torch

__all__ = ["PRESETS", "Trajectory", "ddim_forward_step", "eta_at", "v_to_epsilon"]

StepsPreset = Literal["1", "5", "37"]

_RELEASED_37 = (*range(0, 24), 26, 30, 34, 40, 45, 52, 60, 69, 80, 91, 105, 121, 139)


@dataclass(frozen=True)
class Trajectory:
    """The steps of one trajectory.

    Attributes:
        steps: The timesteps t at which the UNet runs, in order (ascending noise).
        next_steps: The timestep t′ each step moves the latent to.
        saved: Indices into ``steps`` whose features are kept, in concatenation order.
    """

    steps: tuple[int, ...]
    next_steps: tuple[int, ...]
    saved: tuple[int, ...]

    def __post_init__(self) -> None:
        if not self.steps or len(self.steps) != len(self.next_steps):
            raise ConfigError(f"a trajectory needs as many next steps as steps, got {self.steps} → {self.next_steps}")
        if any(b <= a for a, b in zip(self.steps, self.next_steps)):
            raise ConfigError(f"every step must move forward in noise (t′ > t), got {self.steps} → {self.next_steps}")
        if not self.saved or any(not 0 <= i < len(self.steps) for i in self.saved) or len(set(self.saved)) != len(self.saved):
            raise ConfigError(f"saved step indices {self.saved} must be distinct indices into the {len(self.steps)} steps")

    @classmethod
    def preset(cls, name: str) -> Trajectory:
        """``37`` (released: 9 of 37 steps saved, t = 91 … 3), ``5`` (t = 0, 1, 20, 40, 60, all saved) or ``1`` (t = 0)."""
        if name not in PRESETS:
            raise ConfigError(f"trajectory preset must be one of {', '.join(PRESETS)}, got {name!r}")
        return PRESETS[name]

    @property
    def run_until(self) -> int:
        """Number of steps to run: up to and including the last saved one."""
        return max(self.saved) + 1


PRESETS: dict[str, Trajectory] = {
    # the configured 37 steps {1…23, 26, …, 160} sorted and paired from 0; saved at step indices
    # 33, 29, 25, 22, 18, 14, 11, 7, 3, i.e. t = 91, 52, 30, 22, 18, 14, 11, 7, 3 (diff_config.yaml)
    "37": Trajectory(_RELEASED_37, (*_RELEASED_37[1:], 160), (33, 29, 25, 22, 18, 14, 11, 7, 3)),
    # the config's commented alternative {80, 60, 40, 20, 1}: UNet at t = 0, 1, 20, 40, 60, all saved
    "5": Trajectory((0, 1, 20, 40, 60), (1, 20, 40, 60, 80), (4, 3, 2, 1, 0)),
    "1": Trajectory((0,), (1,), (0,)),
}
"""The trajectories DIFF offers, by name (``model.steps``)."""


def eta_at(t: int, eta: float, window: tuple[int, int]) -> float:
    """η of the step at the current timestep ``t``: ``eta`` inside the open ``window`` (released: (10, 250)), else 0."""
    return eta if window[0] < t < window[1] else 0.0


def ddim_forward_step(x: torch.Tensor, eps: torch.Tensor, alpha_t: float, alpha_next: float, eta: float,
                      noise: torch.Tensor | None) -> torch.Tensor:
    """One step of the trajectory (module docstring); ``noise`` may be None when η is 0."""
    x0 = (x - math.sqrt(1 - alpha_t) * eps) / math.sqrt(alpha_t)
    sigma = eta * math.sqrt((1 - alpha_next / alpha_t) * (1 - alpha_next) / (1 - alpha_t))
    c = math.sqrt(max(1 - alpha_next - sigma**2, 1e-10))
    out = math.sqrt(alpha_next) * x0 + c * eps
    if sigma > 0:
        if noise is None:
            raise ConfigError("a step with η > 0 needs noise")
        out = out + sigma * noise
    return out


def v_to_epsilon(v: torch.Tensor, x: torch.Tensor, alpha_t: float) -> torch.Tensor:
    """ε of a v-prediction at x_t: ε = √ᾱ_t·v + √(1−ᾱ_t)·x_t (Salimans & Ho 2022)."""
    return math.sqrt(alpha_t) * v + math.sqrt(1 - alpha_t) * x
