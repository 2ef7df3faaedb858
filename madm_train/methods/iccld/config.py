"""ICCLD's section of the training config: the network, the stage, self-training and the adversarial latent alignment.

ICCLD (Yu et al., CVPR 2025 Workshops) has no public code; its abstract and figure captions fix
the architecture and the two stages (iccld_diff_spec.md A.1). Every value the paper does not
publish is an option here whose default is the reconstruction of iccld_diff_spec.md A.2 and whose
docstring names its precedent. What this builds is "ICCLD as published in its figures", not a
reproduction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from madm_ros.errors import ConfigError
from madm_train.config_loader import at_least, crop_fits_input_size, latent_input_size
from madm_train.methods.self_training import EmaConfig, MixingConfig, PseudoLabelConfig

if TYPE_CHECKING:
    from madm_train.config import TrainConfig
    from madm_train.methods.base import BuildContext, Method

__all__ = ["AdversarialConfig", "DiffusionConfig", "IccldConfig", "IccldModelConfig"]


@dataclass(frozen=True)
class IccldModelConfig:
    """The ICCLD network (:class:`~madm_train.methods.iccld.model.IccldModel`).

    E and D are Stable Diffusion's VAE encoder and decoder (initialised from ``pretrained``): E keeps
    the features of its four stages for the inter-coder connections, D gets a class output layer
    and zero-initialised 1×1 projections that add E's features to the input of each of its four
    up blocks (ControlNet's zero convolutions: a pretrained D starts as it was). ε_θ is the SD UNet
    with ``conv_in`` widened from 4 to 8 channels for [z_t ; z₀] (InstructPix2Pix's widening: the
    new channels start at zero), conditioned on the empty prompt.

    Attributes:
        pretrained: Local Stable Diffusion (1.x or 2.x): a diffusers folder or one
            ``.safetensors``/``.ckpt`` file; never downloaded. ``tiny`` preset: a tiny SD folder, or
            empty for random tiny weights written into the run folder.
        sd_version: For a single file: ``v1``, ``v2`` or ``v2-base`` instead of the detected version.
        preset: ``sd`` (Stable Diffusion's sizes) or ``tiny`` (the same classes at toy size, CPU).
        init_weights: A saved ICCLD model folder to start from: stage 2 starts from stage 1's
            ``model/`` (required), stage 1 may start from a source-only ICCLD run.
        inter_coder: ``add`` (E's stage features added into D's up blocks; the paper's inter-coder
            connections) or ``none`` (the paper's Figure 4 ablation: D sees the latent only).
        unet_init: ``pretrained`` (ε_θ from ``pretrained``'s UNet, conv_in widened) or ``scratch``
            (the same architecture, random).
        sampling_steps: T, the DDIM denoising steps at inference (the spec's 10–50; 10 by default).
        sampling_seed: Seed of z_T at inference (evaluation, teachers, export repeat exactly).
        sampling_seeds: Average the logits over this many z_T draws (seeds ``sampling_seed`` + i).
        input_size: Side every input is resized to, or null (the crop; sides multiples of 64).
        gradient_checkpointing: Recompute the UNet's activations in backward (stage 2 at SD size).
    """

    pretrained: str = ""
    sd_version: Literal["", "v1", "v2", "v2-base"] = ""
    preset: Literal["sd", "tiny"] = "sd"
    init_weights: str = ""
    inter_coder: Literal["add", "none"] = "add"
    unet_init: Literal["pretrained", "scratch"] = "pretrained"
    sampling_steps: int = 10
    sampling_seed: int = 0
    sampling_seeds: int = 1
    input_size: int | None = None
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        at_least("method.model.sampling_steps", self.sampling_steps, 1)
        at_least("method.model.sampling_seeds", self.sampling_seeds, 1)
        latent_input_size("method.model.input_size", self.input_size)

    def check_crop(self, crop_hw: tuple[int, int]) -> None:
        """Refuse a crop the UNet cannot run at without a resize (before any model loads)."""
        crop_fits_input_size(crop_hw, self.input_size)


@dataclass(frozen=True)
class DiffusionConfig:
    """Stage 2's losses on ε_θ besides the adversarial one (iccld_diff_spec.md A.2, reconstruction).

    Attributes:
        weight: Weight of the diffusion loss on source latents, ‖target − UNet([z_t ; z₀], t)‖²
            (target ε or v, as the scheduler predicts).
        source_weight: Cross-entropy of D on the one-step estimate ẑ₀ of the source (labels).
        target_weight: Cross-entropy of D on the target's ẑ₀ with the frozen stage-1 model's
            pseudo-labels, weighted by their confidence q.
    """

    weight: float = 1.0
    source_weight: float = 1.0
    target_weight: float = 1.0

    def __post_init__(self) -> None:
        for key in ("weight", "source_weight", "target_weight"):
            at_least(f"method.diffusion.{key}", getattr(self, key), 0.0)


@dataclass(frozen=True)
class AdversarialConfig:
    """Stage 2's latent discriminator and its loss (AdaptSegNet's output-space recipe moved to latents).

    The discriminator sees the one-step estimate ẑ₀ at a random t of source ("source") and target
    ("target") latents; ε_θ is trained to make the target's look like the source's. Each iteration
    first updates the discriminator (its own Adam) on detached latents, then ε_θ through the updated
    discriminator with its parameters frozen for that pass.

    Attributes:
        weight: λ_adv of the generator side (AdaptSegNet: 1e-3).
        warmup_iters: λ_adv rises linearly from 0 over these iterations (the discriminator trains
            from the first).
        loss: ``bce`` (AdaptSegNet) or ``lsgan`` (least squares).
        lr: The discriminator's Adam learning rate (AdaptSegNet: 1e-4).
        betas: Its Adam β (AdaptSegNet: (0.9, 0.99)).
        width: Channels of its first convolution (×2 for each of the next two; AdaptSegNet: 64).
    """

    weight: float = 1e-3
    warmup_iters: int = 1000
    loss: Literal["bce", "lsgan"] = "bce"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    width: int = 64

    def __post_init__(self) -> None:
        at_least("method.adversarial.weight", self.weight, 0.0)
        at_least("method.adversarial.warmup_iters", self.warmup_iters, 0)
        if not self.lr > 0:
            raise ConfigError(f"method.adversarial.lr must be > 0, got {self.lr}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"method.adversarial.betas must lie in [0, 1), got {list(self.betas)}")
        at_least("method.adversarial.width", self.width, 1)

    def ramp(self, iteration: int) -> float:
        """λ_adv at ``iteration``: linear from 0 to ``weight`` over ``warmup_iters``."""
        if self.warmup_iters == 0:
            return self.weight
        return self.weight * min(1.0, iteration / self.warmup_iters)


@dataclass(frozen=True)
class IccldConfig:
    """``method: {name: iccld, ...}``: ICCLD (Yu et al., CVPR 2025 W), as published in its figures.

    Attributes:
        stage: ``1``: E and D adapted by self-training (source CE, ClassMix with confidence-weighted
            pseudo-labels, EMA); the latent goes straight from E to D. ``2``: E and D frozen (from
            stage 1's model), ε_θ trained with the diffusion loss, D's segmentation losses on ẑ₀ and
            the adversarial latent alignment.
        reading: Which network is trained and which is kept (Figure 1's caption: "the losses are
            computed with the teacher, the student follows by EMA"). ``caption``: the trained network
            labels the target itself and the EMA average is the model that is evaluated and saved
            (in stage 2 the EMA of ε_θ). ``usual`` (DACS): the EMA teacher labels the target and the
            trained network is kept.
        model: The network.
        diffusion: Stage 2's diffusion and segmentation loss weights.
        adversarial: Stage 2's discriminator.
        ema: EMA average (stage 1: E and D; stage 2, ``caption`` reading: ε_θ).
        pseudo_labels: Pseudo-label confidence.
        mixing: ClassMix and photometric augmentation (stage 1).
        target_free: Stage 1 on labelled source only (no target image): the source-only
            warm-up every adaptation continues from in the benchmark.
    """

    name: ClassVar[str] = "iccld"
    find_unused_parameters: ClassVar[bool] = False
    optim_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({
        "lr": 6e-5, "weight_decay": 0.01, "grad_clip_norm": math.inf, "max_iter": 40_000,
        "schedule": "poly", "poly_power": 1.0, "warmup_factor": 1e-6, "warmup_fraction": 1_500 / 40_000,
    })  # fmt: skip
    """DAFormer's (iccld_diff_spec.md A.2 stage 1): AdamW 6e-5, decay 0.01, no gradient clipping (an infinite
    bound), poly, 1.5k warm-up, 40k. Without DAFormer's ×10 for its random decode head: D is Stable
    Diffusion's pretrained decoder."""
    stage: Literal[1, 2] = 1
    reading: Literal["caption", "usual"] = "caption"
    model: IccldModelConfig = field(default_factory=IccldModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)
    target_free: bool = False

    @classmethod
    def for_task(cls, task: str) -> IccldConfig:
        """Stage 1 for every task (stage 2 needs stage 1's model: ``--set method.stage=2 method.model.init_weights=…``)."""
        from madm_train.config import TASKS

        if task not in TASKS:
            raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
        return cls()

    def check(self, config: TrainConfig) -> None:
        """Refuse crops the UNet cannot run at, and a stage 2 without stage 1's model."""
        self.model.check_crop(config.data.crop_hw)
        if self.stage == 2 and not self.model.init_weights:
            raise ConfigError("method.stage=2 trains ε_θ on stage 1's encoder and decoder: set "
                              "method.model.init_weights to stage 1's run folder model/ (e.g. runs/<stage-1>/model)")
        if self.stage == 2 and self.target_free:
            raise ConfigError("method.target_free applies to stage 1 (the source-only warm-up); stage 2 aligns target "
                              "latents and needs target images: set method.target_free=false")
        if self.ema.include_unet:
            raise ConfigError("method.ema.include_unet: ICCLD chooses what its EMA averages by stage (stage 1: E and D; "
                              "stage 2: ε_θ under reading=caption); set method.ema.include_unet=false")

    def build(self, context: BuildContext) -> Method:
        """The network, what the EMA averages, the discriminator (stage 2) and the step."""
        from madm_train.methods.iccld.method import IccldMethod

        return IccldMethod(self, context)
