"""The MADM network of a :class:`~madm_train.methods.madm.config.ModelConfig`: SD backbone + DAFormer head.

Shared by ``madm`` and ``source_only`` (the same network without adaptation). Weights come from
``init_weights`` (a whole saved model), else the backbone from ``pretrained`` (``tiny`` without it:
a random tiny SD written once into the run folder) and a random head.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from madm_ros.errors import ConfigError

if TYPE_CHECKING:
    from madm_train.methods.base import BuildContext
    from madm_train.methods.madm.config import ModelConfig
    from madm_train.models.madm_model import MadmModel

__all__ = ["build_network"]


def build_network(model: ModelConfig, context: BuildContext) -> MadmModel:
    """Build (or load) the network on the CPU in float32, with the trainable parameters of ``model.finetune`` set."""
    from madm_train.models.head import DAFormerHead
    from madm_train.models.madm_model import MadmModel
    from madm_train.models.sd_backbone import SDBackbone
    from madm_train.models.tiny_sd import build_tiny_model, build_tiny_sd

    num_classes = context.label_set.num_classes
    if model.init_weights:
        network = MadmModel.load(model.init_weights)
        if network.head.num_classes != num_classes:
            raise ConfigError(f"method.model.init_weights {model.init_weights} predicts {network.head.num_classes} "
                              f"classes, data.label_set {context.config.data.label_set} has {num_classes}")
        saved = {"input_size": network.backbone.input_size, "noise_seed": network.backbone.noise_seed}
        wanted = {"input_size": model.input_size, "noise_seed": model.noise_seed}
        for key in saved:
            if saved[key] != wanted[key]:
                value = "null" if saved[key] is None else saved[key]  # as --set reads it (YAML)
                raise ConfigError(f"method.model.init_weights {model.init_weights} was saved with {key} {value}, "
                                  f"method.model.{key} is {wanted[key]}: use --set method.model.{key}={value}")
    elif model.preset == "tiny":
        folder = Path(model.pretrained) if model.pretrained else context.run_dir / "tiny_sd"
        if not model.pretrained and context.is_main and not (folder / "unet" / "config.json").exists():
            build_tiny_sd(folder, seed=context.config.run.seed)
        context.barrier()
        network = build_tiny_model(folder, num_classes, input_size=model.input_size, noise_seed=model.noise_seed)
    else:
        if not model.pretrained:
            raise ConfigError("method.model.pretrained is empty: the sd preset needs a local Stable Diffusion v1.x "
                              "diffusers folder or .safetensors/.ckpt file (--set method.model.pretrained=PATH); "
                              "nothing is downloaded")
        backbone = SDBackbone.from_pretrained(model.pretrained, input_size=model.input_size, noise_seed=model.noise_seed)
        network = MadmModel(backbone, DAFormerHead(backbone.feature_channels, num_classes))
    if model.finetune == "lora":  # one adapter per target modality, named after the task
        if context.config.task in network.backbone.lora_adapters:
            network.backbone.set_adapter(context.config.task)
        else:
            network.backbone.add_lora(context.config.task, model.lora_rank, model.lora_alpha)
    network.trainable_parameters(model.finetune)
    network.backbone.enable_gradient_checkpointing(model.gradient_checkpointing)
    return network
