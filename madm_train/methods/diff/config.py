"""DIFF's section of the training config: the network, IPKL and, in adaptation mode, the self-training settings.

Defaults are the released values (``Yux1angJi/DIFF``; iccld_diff_spec.md B.1–B.3) where the
released code has one; options the code does not have are marked as such.
"""

from __future__ import annotations

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

__all__ = ["DiffConfig", "DiffModelConfig", "IpklConfig"]


@dataclass(frozen=True)
class DiffModelConfig:
    """The DIFF network (:class:`~madm_train.methods.diff.model.DiffModel`).

    Attributes:
        pretrained: Local Stable Diffusion (released: SD 2.1; 1.x works too): a diffusers folder or
            one ``.safetensors``/``.ckpt`` file; never downloaded. ``tiny`` preset: a tiny SD folder,
            or empty for random tiny weights written into the run folder.
        sd_version: For a single file: ``v1``, ``v2`` or ``v2-base`` instead of the detected version.
        tokenizer: Tokenizer folder for the class prompts when ``pretrained`` is a single file
            (a diffusers folder brings its own ``tokenizer/``).
        preset: ``sd`` (the released widths) or ``tiny`` (the same classes at toy size, for the CPU).
        init_weights: A saved DIFF model folder to start from (e.g. a generalisation run to adapt).
        steps: Trajectory preset: ``37`` (released: 9 of 37 steps saved), ``5`` or ``1``.
        eta: η of the stochastic steps (released 1.0).
        eta_window: η applies while the current timestep lies in this open interval (released (10, 250)).
        deterministic: ``never`` (released: sampled latent and noise also at test time), ``eval``
            (posterior mean and η = 0 in eval mode: evaluation, teachers, export) or ``always``.
        v_to_epsilon: Convert a v-prediction UNet's output (SD 2.1) to ε before each update; the
            released code does not (an approximate inversion). No effect on ε-prediction models.
        input_size: Side every input is resized to, or null (the crop; sides multiples of 64).
        aggregation: ``released`` (one bottleneck over all steps and layers per stride) or
            ``shared`` (per-layer projections shared over steps; far fewer parameters).
        finetune: ``frozen`` (released) or ``lora`` (a peft adapter on the UNet's attention, trained
            through the saved steps; for modalities far from SD's images; not in the released code).
        lora_rank: LoRA rank (``finetune: lora``).
        lora_alpha: LoRA alpha (``finetune: lora``).
    """

    pretrained: str = ""
    sd_version: Literal["", "v1", "v2", "v2-base"] = ""
    tokenizer: str = ""
    preset: Literal["sd", "tiny"] = "sd"
    init_weights: str = ""
    steps: Literal[1, 5, 37] = 37
    eta: float = 1.0
    eta_window: tuple[int, int] = (10, 250)
    deterministic: Literal["never", "eval", "always"] = "eval"
    v_to_epsilon: bool = False
    input_size: int | None = None
    aggregation: Literal["released", "shared"] = "released"
    finetune: Literal["frozen", "lora"] = "frozen"
    lora_rank: int = 8
    lora_alpha: float = 8.0

    def __post_init__(self) -> None:
        at_least("method.model.eta", self.eta, 0.0)
        if not 0 <= self.eta_window[0] < self.eta_window[1]:
            raise ConfigError(f"method.model.eta_window must be (low, high) with 0 ≤ low < high, got {list(self.eta_window)}")
        latent_input_size("method.model.input_size", self.input_size)
        if self.finetune == "lora" and (self.lora_rank <= 0 or not self.lora_alpha > 0):
            raise ConfigError(f"method.model.lora_rank ({self.lora_rank}) and lora_alpha ({self.lora_alpha}) must be "
                              "positive with method.model.finetune=lora")

    def check_crop(self, crop_hw: tuple[int, int]) -> None:
        """Refuse a crop the network cannot run at without a resize (before any model loads)."""
        crop_fits_input_size(crop_hw, self.input_size)


@dataclass(frozen=True)
class IpklConfig:
    """Implicit posterior knowledge learning (iccld_diff_spec.md B.2).

    Attributes:
        enabled: Train the conditional branch beside the unconditional one (released: on).
        prompts: ``released`` (the five classes the released code prompts: sidewalk, wall, rider,
            truck, train, where the label set has them) or ``all`` (every class of the label set).
        prompt_texts: Class name → prompt text, replacing the set's text for those classes (and
            adding classes to it).
        guidance: Classifier-free guidance of the class prompts (released 5).
        consistency: ``mse`` between the branches' logits, no stop-gradient (released), or ``kl``:
            KL from the conditional branch as teacher (detached), as the paper's figure draws it.
        consistency_weight: λ of the consistency term (released 1.0).
        temperature: Softmax temperature of the ``kl`` consistency.
    """

    enabled: bool = True
    prompts: Literal["released", "all"] = "released"
    prompt_texts: dict[str, str] = field(default_factory=dict)
    guidance: float = 5.0
    consistency: Literal["mse", "kl"] = "mse"
    consistency_weight: float = 1.0
    temperature: float = 1.0

    def __post_init__(self) -> None:
        at_least("method.ipkl.guidance", self.guidance, 0.0)
        at_least("method.ipkl.consistency_weight", self.consistency_weight, 0.0)
        if not self.temperature > 0:
            raise ConfigError(f"method.ipkl.temperature must be > 0, got {self.temperature}")


@dataclass(frozen=True)
class DiffConfig:
    """``method: {name: diff, ...}``: DIFF (Ji et al., ICASSP 2025) as a teacher.

    Attributes:
        mode: ``generalisation`` (released: labelled source only, no target image) or
            ``adaptation`` (DIFF inside the self-training loop: EMA teacher of the fusion and head,
            ClassMix, confidence-weighted pseudo-labels on the target; not in the released code).
        model: The network.
        ipkl: The conditional branch on labelled source images.
        ema: EMA teacher (adaptation).
        pseudo_labels: Pseudo-label confidence (adaptation).
        mixing: ClassMix and photometric augmentation (adaptation).
    """

    name: ClassVar[str] = "diff"
    find_unused_parameters: ClassVar[bool] = False
    optim_defaults: ClassVar[Mapping[str, Any]] = MappingProxyType({
        "lr": 6e-5, "head_lr_multiplier": 10.0, "weight_decay": 0.01, "grad_clip_norm": 5.0, "max_iter": 40_000,
        "schedule": "poly", "poly_power": 1.0, "warmup_factor": 1e-6, "warmup_fraction": 1_500 / 40_000,
    })  # fmt: skip
    """iccld_diff_spec.md B.3: AdamW 6e-5, head ×10, decay 0.01, clip 5, poly with 1.5k warm-up from 1e-6, 40k iterations."""
    mode: Literal["generalisation", "adaptation"] = "generalisation"
    model: DiffModelConfig = field(default_factory=DiffModelConfig)
    ipkl: IpklConfig = field(default_factory=IpklConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    mixing: MixingConfig = field(default_factory=MixingConfig)

    @classmethod
    def for_task(cls, task: str) -> DiffConfig:
        """The released generalisation recipe for RGB-to-RGB (``rgb``), adaptation for the modality tasks."""
        return cls(mode="generalisation" if task == "rgb" else "adaptation")

    def check(self, config: TrainConfig) -> None:
        """Refuse crops the network cannot run at, and the EMA over a UNet that is not trained."""
        self.model.check_crop(config.data.crop_hw)
        if self.ema.include_unet:
            raise ConfigError("method.ema.include_unet: DIFF's teacher shares the (frozen or LoRA) UNet with the student; "
                              "set method.ema.include_unet=false")

    def build(self, context: BuildContext) -> Method:
        """The DIFF network, its EMA-averaged parts (adaptation) and its step."""
        from madm_train.methods.diff.method import DiffMethod

        return DiffMethod(self, context)
