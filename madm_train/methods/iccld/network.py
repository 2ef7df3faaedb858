"""The ICCLD network of an :class:`~madm_train.methods.iccld.config.IccldConfig`, per stage.

Stage 1 builds E and D from a local Stable Diffusion's VAE (``sd`` preset) or a random tiny SD
written once into the run folder (``tiny``), or continues a saved ICCLD model (``init_weights``).
Stage 2 loads stage 1's model, freezes E and D and attaches ε_θ from the same kind of Stable
Diffusion (its UNet, conv_in widened; or the same architecture from scratch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from madm_ros.errors import ConfigError

if TYPE_CHECKING:
    from madm_train.methods.base import BuildContext
    from madm_train.methods.iccld.config import IccldConfig
    from madm_train.methods.iccld.model import IccldModel

__all__ = ["build_iccld_network"]


def build_iccld_network(config: IccldConfig, context: BuildContext) -> IccldModel:
    """Build (or load) the network of ``config.stage`` on the CPU in float32, with the right parts trainable."""
    from madm_train.methods.iccld.model import IccldModel
    from madm_train.methods.sd_source import sd_source
    from madm_train.models.stable_diffusion import load_stable_diffusion

    model, num_classes = config.model, context.label_set.num_classes
    sd = None
    if model.init_weights:
        network = IccldModel.load(model.init_weights)
        if network.decoder.num_classes != num_classes:
            raise ConfigError(f"method.model.init_weights {model.init_weights} predicts {network.decoder.num_classes} "
                              f"classes, data.label_set {context.config.data.label_set} has {num_classes}")
        if network.decoder.inter_coder != model.inter_coder:
            raise ConfigError(f"method.model.init_weights {model.init_weights} was trained with inter_coder="
                              f"{network.decoder.inter_coder}, the config asks for {model.inter_coder}: set "
                              f"method.model.inter_coder={network.decoder.inter_coder} or start from another model")
        if config.stage == 1 and network.denoiser is not None:
            raise ConfigError(f"method.model.init_weights {model.init_weights} is a stage-2 model (it has ε_θ); stage 1 "
                              "adapts E and D before ε_θ exists: start stage 1 from a stage-1 model or from pretrained")
    else:
        source = sd_source(model.pretrained, model.preset, context, method="ICCLD")
        sd = load_stable_diffusion(source, sd_version=model.sd_version or None)
        network = IccldModel(sd.vae, num_classes, inter_coder=model.inter_coder, input_size=model.input_size)
    network.set_sampling(model.sampling_steps, model.sampling_seed, model.sampling_seeds)
    network.input_size = model.input_size
    if config.stage == 2:
        network.encoder.requires_grad_(False)
        network.decoder.requires_grad_(False)
        if network.denoiser is None:
            if sd is None:
                source = sd_source(model.pretrained, model.preset, context, method="ICCLD's denoising UNet")
                sd = load_stable_diffusion(source, sd_version=model.sd_version or None)
            network.attach_denoiser(sd.unet, sd.scheduler, sd.empty_prompt, from_scratch=model.unet_init == "scratch")
        if model.gradient_checkpointing:
            network.denoiser.unet.enable_gradient_checkpointing()
    return network
