"""DPLG: diffusion-based pseudo-label generation (madm_spec.md §3).

Early in training the teacher sees its target latent noised to a DDPM timestep that decays
linearly to zero: at iteration i ≤ E, k = ⌊k₀(1 − i/E)⌋ with k₀ drawn per iteration from a small
set ({60, 61} for depth, {50, 51} for infrared and events); afterwards k = 0. The noise is the
forward process q(z_k | z₀) = √ᾱ_k·z₀ + √(1 − ᾱ_k)·ε of the model's own ``DDPMScheduler``, and
the UNet's timestep input is the same k. Only the teacher's pass uses it; the student always runs
at t = 0.

The reference uses one fixed noise tensor (seed 42, 1×4×64×64, broadcast over the batch and
resized bicubically for other latent sizes) for every image and iteration; :func:`teacher_noise`
reproduces that with ``fixed_noise=True`` and draws fresh noise otherwise (an explicit departure).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

from madm_ros.errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch
    from diffusers import DDPMScheduler

__all__ = ["SHARED_NOISE_HW", "dplg_timestep", "draw_k0", "noisy_teacher_latent", "shared_noise", "teacher_noise"]

SHARED_NOISE_HW = (64, 64)
"""Size of the reference's shared noise tensor (the latent of a 512×512 input)."""


def dplg_timestep(iteration: int, *, k0: int, end_iter: int) -> int:
    """Teacher timestep k = ⌊k₀(1 − i/E)⌋ for i ≤ E, else 0 (``iteration`` i counts from 0, as the reference's)."""
    if iteration < 0:
        raise ConfigError(f"iteration must be ≥ 0, got {iteration}")
    if end_iter <= 0:
        raise ConfigError(f"DPLG end iteration must be ≥ 1, got {end_iter}")
    if iteration > end_iter:
        return 0
    # Evaluated in floating point exactly as the reference does (int(k0 * (1 - i / E))): at a few
    # iterations (e.g. k0 = 60, i = 2750) rounding gives one step less than exact arithmetic would.
    return int(k0 * (1 - iteration / end_iter))


def draw_k0(choices: Sequence[int], rng: random.Random) -> int:
    """k₀ for one iteration, uniform over ``choices`` (the reference: ``randint(60, 61)``)."""
    if not choices:
        raise ConfigError("DPLG needs at least one k0 choice")
    return choices[rng.randrange(len(choices))]


def shared_noise(seed: int = 42, *, channels: int = 4, size_hw: tuple[int, int] = SHARED_NOISE_HW) -> torch.Tensor:
    """The fixed N(0, I) noise tensor (1×C×H×W, float32, CPU) drawn once from ``seed``.

    The values are torch's CPU normal draws; the reference drew on its own device, so the exact
    pattern differs from the released code's (its statistics do not).
    """
    import torch

    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, channels, *size_hw), generator=generator)


def teacher_noise(latents: torch.Tensor, *, fixed: torch.Tensor | None = None,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Noise shaped like ``latents`` (exactly one of ``fixed`` and ``generator``).

    ``fixed`` is broadcast over the batch (resized bicubically when the latent is not its size);
    ``generator`` draws fresh N(0, I) noise.
    """
    import torch
    import torch.nn.functional as F

    if (fixed is None) == (generator is None):
        raise ConfigError("teacher_noise needs exactly one of fixed (shared noise) and generator (fresh noise)")
    if latents.ndim != 4:
        raise InputError(f"latents must be B×C×h×w, got shape {tuple(latents.shape)}")
    if fixed is not None:
        if fixed.shape[1] != latents.shape[1]:
            raise InputError(f"shared noise has {fixed.shape[1]} channels, latents {latents.shape[1]}")
        noise = fixed.to(device=latents.device, dtype=torch.float32)
        if noise.shape[-2:] != latents.shape[-2:]:
            noise = F.interpolate(noise, size=latents.shape[-2:], mode="bicubic", align_corners=False)
        return noise.expand(latents.shape[0], -1, -1, -1).to(latents.dtype)
    noise = torch.randn(latents.shape, generator=generator, device=generator.device, dtype=torch.float32)
    return noise.to(device=latents.device, dtype=latents.dtype)


def noisy_teacher_latent(latents: torch.Tensor, k: int, scheduler: DDPMScheduler, noise: torch.Tensor) -> torch.Tensor:
    """q(z_k | z₀) = √ᾱ_k·z₀ + √(1 − ᾱ_k)·ε through ``scheduler.add_noise``; a new tensor, inputs untouched.

    Args:
        latents: z₀, B×C×h×w (VAE posterior mean × scaling factor).
        k: Timestep shared by the batch (from :func:`dplg_timestep`).
        scheduler: The diffusion model's ``DDPMScheduler``.
        noise: ε, same shape as ``latents`` (from :func:`teacher_noise`).
    """
    import torch

    steps = scheduler.config.num_train_timesteps
    if not 0 <= k < steps:
        raise InputError(f"timestep k must lie in 0..{steps - 1}, got {k}")
    if noise.shape != latents.shape:
        raise InputError(f"noise shape {tuple(noise.shape)} differs from latent shape {tuple(latents.shape)}")
    timesteps = torch.full((latents.shape[0],), k, dtype=torch.long, device=latents.device)
    return scheduler.add_noise(latents, noise, timesteps)

