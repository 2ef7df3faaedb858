"""MADM's section of the training config: the network, DPLG, LPLR and the self-training settings.

The defaults are the released values (madm_spec.md §1–§4); :meth:`MadmConfig.for_task` applies the
per-task ones (k₀ and E of DPLG, LPLR weights). :class:`ModelConfig` also describes the network
that ``source_only`` trains, which is MADM's without its adaptation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from madm_ros.errors import ConfigError
from madm_train.config_loader import at_least
from madm_train.methods.self_training import EmaConfig, MixingConfig, PseudoLabelConfig

if TYPE_CHECKING:
    from madm_train.config import TrainConfig
    from madm_train.methods.base import BuildContext, Method

__all__ = ["DplgConfig", "LplrConfig", "MadmConfig", "ModelConfig"]

LATENT_MULTIPLE = 64
"""Network input sides must be multiples of this: the VAE's ×8 and the UNet's three ×2 down-samplings."""


@dataclass(frozen=True)
class ModelConfig:
    """Which diffusion model and what of it is trained (madm_spec.md §1, §8).

    Attributes:
        pretrained: Local Stable Diffusion v1.x: a diffusers folder or a single ``.safetensors``/``.ckpt``
            file; never downloaded. Required by the ``sd`` preset. With the ``tiny`` preset: a tiny SD
            folder such as ``python -m madm_train pretrain-prior`` writes, or empty for random tiny weights.
        preset: ``sd`` (Stable Diffusion v1.x sizes) or ``tiny`` (same classes at toy size, CPU).
        init_weights: A saved model folder (a run's ``model/``) whose weights initialise the whole
            network, e.g. a source-only run to adapt from; it must match the preset and classes.
            Empty: ``pretrained`` for the backbone and a random head (the reference).
        input_size: Side of the square the backbone resizes every input to (MADM: 512, which its
            512² crops meet without a resize). Null: no resize; the network runs at the crop size,
            whose sides must then be multiples of 64 (256, 384, 512, …).
        finetune: ``full`` (the released configs: the whole UNet is trained) or ``lora`` (peft
            LoRA on to_q/to_k/to_v/to_out.0, UNet frozen otherwise; fits one 24 GB GPU).
        lora_rank: LoRA rank r (``finetune: lora`` only).
        lora_alpha: LoRA alpha (``finetune: lora`` only).
        noise_seed: Seed of the one shared N(0, I) latent noise tensor (42 in the reference): the
            ε of the student's t = 0 pass and of DPLG's teacher pass with ``dplg.fixed_noise``.
        gradient_checkpointing: Recompute UNet activations in the backward pass (less memory,
            about a third more compute); off in the reference.
    """

    pretrained: str = ""
    preset: Literal["sd", "tiny"] = "sd"
    init_weights: str = ""
    input_size: int | None = None
    finetune: Literal["full", "lora"] = "full"
    lora_rank: int = 8
    lora_alpha: float = 8.0
    noise_seed: int = 42
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.input_size is not None and (self.input_size <= 0 or self.input_size % LATENT_MULTIPLE):
            raise ConfigError(f"method.model.input_size must be a positive multiple of {LATENT_MULTIPLE} (MADM: 512) "
                              f"or null (the crop size), got {self.input_size}")
        if self.finetune == "lora" and self.lora_rank <= 0:
            raise ConfigError(f"method.model.lora_rank must be ≥ 1 with method.model.finetune=lora, got {self.lora_rank}")
        if self.finetune == "lora" and not self.lora_alpha > 0:
            raise ConfigError(f"method.model.lora_alpha must be > 0 with method.model.finetune=lora, got {self.lora_alpha}")
        at_least("method.model.noise_seed", self.noise_seed, 0)

    def check_crop(self, crop_hw: tuple[int, int]) -> None:
        """Refuse a crop the network cannot run at without a resize (before any model loads)."""
        if self.input_size is None and any(side % LATENT_MULTIPLE for side in crop_hw):
            raise ConfigError(
                f"data.crop_hw {list(crop_hw)} must be multiples of {LATENT_MULTIPLE} when method.model.input_size is "
                f"null (the network runs at the crop size): use e.g. [256, 256], [384, 384] or [512, 512], or resize "
                f"inside the network with --set method.model.input_size=512")


@dataclass(frozen=True)
class DplgConfig:
    """Diffusion-based pseudo-label generation (madm_spec.md §3).

    Attributes:
        enabled: Noise the teacher's latent early in training.
        k0_choices: k₀ is drawn uniformly from these per iteration ({60, 61} depth, {50, 51} else).
        end_iter: E: the teacher timestep is ⌊k₀(1 − i/E)⌋ for i ≤ E and 0 afterwards.
        fixed_noise: Use the one shared noise tensor (``model.noise_seed``) as the reference does;
            ``false`` draws fresh noise every iteration (an explicit departure, untested in the paper).
    """

    enabled: bool = True
    k0_choices: tuple[int, ...] = (60, 61)
    end_iter: int = 5000
    fixed_noise: bool = True

    def __post_init__(self) -> None:
        if not self.k0_choices:
            raise ConfigError("method.dplg.k0_choices must name at least one timestep")
        for k0 in self.k0_choices:
            if not 0 <= k0 <= 999:
                raise ConfigError(f"method.dplg.k0_choices must lie in 0..999 (the 1000 DDPM timesteps), "
                                  f"got {list(self.k0_choices)}")
        at_least("method.dplg.end_iter", self.end_iter, 1)


@dataclass(frozen=True)
class LplrConfig:
    """Label palette and latent regression (madm_spec.md §4).

    Attributes:
        source_weight: λ_s of the L1 latent regression on source labels (0 switches it off).
        target_weight: λ_t on the mixed labels (0 switches it off; the event task uses source only).
        unlabelled_color: RGB that ignore (255) pixels are painted with before encoding (black in
            the reference, where the palette is zero-padded); they are masked out of the loss anyway.
    """

    source_weight: float = 1.0
    target_weight: float = 1.0
    unlabelled_color: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        at_least("method.lplr.source_weight", self.source_weight, 0.0)
        at_least("method.lplr.target_weight", self.target_weight, 0.0)
        if any(not 0 <= c <= 255 for c in self.unlabelled_color):
            raise ConfigError(f"method.lplr.unlabelled_color must be three values in 0..255, "
                              f"got {list(self.unlabelled_color)}")


@dataclass(frozen=True)
class MadmConfig:
    """``method: {name: madm, ...}``: MADM self-training with DPLG and LPLR (see each section's class)."""

    name: ClassVar[str] = "madm"
    find_unused_parameters: ClassVar[bool] = False
    optim_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({})
    model: ModelConfig = field(default_factory=ModelConfig)
    dplg: DplgConfig = field(default_factory=DplgConfig)
    lplr: LplrConfig = field(default_factory=LplrConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)

    def __post_init__(self) -> None:
        if self.model.finetune == "lora" and self.ema.include_unet:
            raise ConfigError("method.ema.include_unet=true averages UNet weights, but method.model.finetune=lora "
                              "trains only the adapters: set method.ema.include_unet=false")

    @classmethod
    def for_task(cls, task: str) -> MadmConfig:
        """The released per-task values (madm_spec.md §3, §4.3): k₀ and E of DPLG, the LPLR weights.

        MADM released no RGB → RGB task; ``rgb`` (GTA5 → Cityscapes) gets the depth task's values
        (k₀ ∈ {60, 61}, E = 5000, λ_s = λ_t = 1), the defaults, as an untuned starting point.
        """
        from madm_train.config import TASKS

        if task in ("depth", "rgb"):
            return cls()
        if task == "infrared":
            return cls(dplg=DplgConfig(k0_choices=(50, 51), end_iter=8000))
        if task == "events":
            return cls(dplg=DplgConfig(k0_choices=(50, 51), end_iter=8000), lplr=LplrConfig(source_weight=20.0,
                                                                                          target_weight=0.0))
        raise ConfigError(f"task must be one of {', '.join(TASKS)}, got {task!r}")

    def check(self, config: TrainConfig) -> None:
        """Refuse crops the network cannot run at."""
        self.model.check_crop(config.data.crop_hw)

    def build(self, context: BuildContext) -> Method:
        """The MADM student, its EMA-averaged parts and its step (:class:`~madm_train.methods.madm.method.MadmMethod`)."""
        from madm_train.methods.madm.method import MadmMethod

        return MadmMethod(self, context)
