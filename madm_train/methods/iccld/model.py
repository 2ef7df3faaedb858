"""The ICCLD network: encoder E, denoising UNet ε_θ on [z_t ; z₀], decoder D with inter-coder connections.

As the paper's Figure 2 draws it (iccld_diff_spec.md A.1), with the reconstruction of A.2 for what
it does not publish (:mod:`madm_train.methods.iccld.config` names each choice and its precedent):

- **E** (:class:`LatentEncoder`): Stable Diffusion's VAE encoder; z₀ = posterior mean × the
  scaling factor; the output of each of its four stages (strides 1, 2, 4, 8) is kept.
- **ε_θ** (:class:`LatentDenoiser`): SD's ``UNet2DConditionModel`` with ``conv_in`` widened to take
  [z_t ; z₀] (8 channels), conditioned on the empty prompt (a buffer; no text encoder is kept).
- **D** (:class:`InterCoderDecoder`): SD's VAE decoder ending in class logits at image
  resolution; before each of its four up blocks, E's feature of the same stride is added through
  a zero-initialised 1×1 projection (the inter-coder connections; ``inter_coder="none"`` drops them).

Paths through the network (:meth:`IccldModel.forward`):

- **direct** (stage 1, and the "without stage 2" ablation): D(z₀, E's features);
- **sampled** (inference after stage 2): z_T ~ N(0, I) from a seeded generator, T DDIM steps
  (η = 0) of ε_θ([z_t ; z₀]) → ẑ₀, then D(ẑ₀, E's features); logits averaged over ``sampling_seeds``
  draws — the same input gives the same logits every time;
- **one step** (stage-2 training): z_t = √ᾱ_t z₀ + √(1−ᾱ_t) ε at given t, ε_θ's prediction, its
  training target (ε or v, as the scheduler predicts), the one-step estimate ẑ₀ and D's logits on it.

Saved models are folders of format ``madm-iccld/1`` (:mod:`madm_train.models.saved`); a stage-1
model has no ε_θ.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from madm_ros.errors import ConfigError, InputError
from madm_train.config_loader import latent_input_size

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

__all__ = ["ICCLD_FORMAT", "IccldModel", "InterCoderDecoder", "LatentDenoiser", "LatentEncoder", "OneStep", "widen_conv_in"]

ICCLD_FORMAT = "madm-iccld/1"
"""``format`` tag of a saved ICCLD model folder."""


class OneStep(NamedTuple):
    """Stage-2 training outputs of one batch (see the module docstring)."""

    prediction: torch.Tensor
    """ε_θ's output, B×c×h×w."""
    target: torch.Tensor
    """What it should have predicted: ε, or v for a v-prediction scheduler."""
    latent: torch.Tensor
    """The one-step estimate ẑ₀ (scaled latent space), what the discriminator sees."""
    logits: torch.Tensor
    """D's logits on ẑ₀, B×K×H×W."""


class LatentEncoder(nn.Module):
    """E: the VAE encoder; returns z₀ (posterior mean × scaling factor) and its four stage features.

    The stage outputs are read by forward hooks on each down block's last ResNet (before its
    down-sampler), so diffusers' own forward runs unchanged.
    """

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.encoder, self.quant_conv = vae.encoder, vae.quant_conv
        self.latent_channels = int(vae.config.latent_channels)
        self.scaling_factor = float(vae.config.scaling_factor)
        self.feature_channels = tuple(int(c) for c in vae.config.block_out_channels)

    def forward(self, images01: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(z₀ B×c×H/8×W/8, [features at strides 1, 2, 4, 8])."""
        features: list[torch.Tensor] = []
        hooks = [block.resnets[-1].register_forward_hook(lambda _m, _i, out: features.append(out))
                 for block in self.encoder.down_blocks]
        try:
            moments = self.encoder(images01 * 2 - 1)
        finally:
            for hook in hooks:
                hook.remove()
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        return moments[:, : self.latent_channels] * self.scaling_factor, features


class InterCoderDecoder(nn.Module):
    """D: the VAE decoder's blocks ending in K class logits, with E's features added before each up block.

    Args:
        vae: The autoencoder whose decoder is reused (its ``conv_out`` is replaced by a class layer).
        num_classes: Logit channels.
        encoder_channels: E's feature channels at strides 1, 2, 4, 8.
        inter_coder: Add E's features (``add``) or not (``none``: no projections at all).
    """

    def __init__(self, vae: AutoencoderKL, num_classes: int, encoder_channels: Sequence[int], inter_coder: str) -> None:
        super().__init__()
        if inter_coder not in ("add", "none"):
            raise ConfigError(f"inter_coder must be add or none, got {inter_coder!r}")
        decoder = vae.decoder
        self.post_quant_conv = vae.post_quant_conv
        self.scaling_factor = float(vae.config.scaling_factor)
        self.conv_in, self.mid_block, self.up_blocks = decoder.conv_in, decoder.mid_block, decoder.up_blocks
        self.conv_norm_out, self.conv_act = decoder.conv_norm_out, decoder.conv_act
        self.conv_out = nn.Conv2d(decoder.conv_out.in_channels, num_classes, kernel_size=3, padding=1)
        self.num_classes, self.inter_coder = int(num_classes), inter_coder
        self.skips: nn.ModuleList | None = None
        if inter_coder == "add":
            # up block j runs at stride 8 / 2**j and meets E's stage of that stride (channels[-1 - j])
            self.skips = nn.ModuleList(
                nn.Conv2d(encoder_channels[-1 - j], block.resnets[0].in_channels, kernel_size=1)
                for j, block in enumerate(self.up_blocks))
            for skip in self.skips:
                nn.init.zeros_(skip.weight)
                nn.init.zeros_(skip.bias)

    def forward(self, latents: torch.Tensor, features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits B×K×H×W of scaled latents B×c×H/8×W/8 and E's features (ignored without inter-coder connections)."""
        sample = latents / self.scaling_factor
        if self.post_quant_conv is not None:
            sample = self.post_quant_conv(sample)
        sample = self.mid_block(self.conv_in(sample), None)
        for j, block in enumerate(self.up_blocks):
            if self.skips is not None:
                sample = sample + self.skips[j](features[-1 - j]).to(sample.dtype)
            sample = block(sample, None)
        return self.conv_out(self.conv_act(self.conv_norm_out(sample)))


def widen_conv_in(unet: UNet2DConditionModel, channels: int) -> None:
    """Give ``unet.conv_in`` ``channels`` input channels: the old weights first, zeros for the new (InstructPix2Pix)."""
    old = unet.conv_in
    if old.in_channels == channels:
        return
    new = nn.Conv2d(channels, old.out_channels, kernel_size=old.kernel_size, padding=old.padding,
                    device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=channels)


class LatentDenoiser(nn.Module):
    """ε_θ: the UNet on [z_t ; z₀] at timestep t, conditioned on the empty prompt."""

    def __init__(self, unet: UNet2DConditionModel, scheduler: DDPMScheduler, empty_prompt: torch.Tensor) -> None:
        super().__init__()
        self.unet, self.scheduler = unet, scheduler
        self.register_buffer("empty_prompt", empty_prompt.detach().clone())

    def forward(self, noisy: torch.Tensor, condition: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The UNet's prediction (ε or v, as the scheduler's ``prediction_type``) for B×c×h×w latents."""
        context = self.empty_prompt.expand(noisy.shape[0], -1, -1).to(self.unet.dtype)
        sample = torch.cat([noisy, condition], dim=1).to(self.unet.dtype)
        return self.unet(sample, timesteps, encoder_hidden_states=context).sample

    @property
    def predicts_velocity(self) -> bool:
        """The scheduler (and UNet) predict v (SD 2.x at 768) rather than ε."""
        return self.scheduler.config.prediction_type == "v_prediction"


class IccldModel(nn.Module):
    """E, D and (after stage 2) ε_θ; see the module docstring.

    Args:
        vae: The autoencoder E and D are made of (its modules are taken over).
        num_classes: Logit channels.
        inter_coder: ``add`` or ``none``.
        input_size: Side every input is resized to, or None (inputs whose sides are not multiples
            of 64 are resized up to the next ones, and the logits back).
        sampling_steps: T of the sampled path.
        sampling_seed: Seed of z_T (draw i uses ``sampling_seed + i``).
        sampling_seeds: Draws averaged.
    """

    def __init__(self, vae: AutoencoderKL, num_classes: int, *, inter_coder: str = "add", input_size: int | None = None,
                 sampling_steps: int = 10, sampling_seed: int = 0, sampling_seeds: int = 1) -> None:
        super().__init__()
        latent_input_size("input_size", input_size)
        self.vae_config = dict(vae.config)
        self.encoder = LatentEncoder(vae)
        self.decoder = InterCoderDecoder(vae, num_classes, self.encoder.feature_channels, inter_coder)
        self.denoiser: LatentDenoiser | None = None
        self.input_size = input_size
        self.set_sampling(sampling_steps, sampling_seed, sampling_seeds)

    # -- configuration, saving ------------------------------------------------------------------

    def set_sampling(self, steps: int, seed: int, seeds: int) -> None:
        """How the sampled path draws: T steps, the first seed, how many draws are averaged."""
        if steps < 1 or seeds < 1:
            raise ConfigError(f"sampling needs ≥ 1 step and ≥ 1 seed, got steps={steps}, seeds={seeds}")
        self.sampling_steps, self.sampling_seed, self.sampling_seeds = int(steps), int(seed), int(seeds)

    def attach_denoiser(self, unet: UNet2DConditionModel, scheduler: DDPMScheduler, empty_prompt: torch.Tensor, *,
                        from_scratch: bool = False) -> None:
        """Add ε_θ (stage 2): ``unet`` with conv_in widened to [z_t ; z₀]; ``from_scratch`` re-initialises it."""
        from diffusers import UNet2DConditionModel

        latent = self.encoder.latent_channels
        if unet.config.in_channels != latent or unet.config.out_channels != latent:
            raise ConfigError(f"the UNet takes {unet.config.in_channels} and gives {unet.config.out_channels} channels; "
                              f"ICCLD's latent has {latent}: give a Stable Diffusion whose VAE and UNet belong together")
        if from_scratch:
            unet = UNet2DConditionModel.from_config(unet.config)
        widen_conv_in(unet, 2 * latent)
        self.denoiser = LatentDenoiser(unet, scheduler, empty_prompt)

    def config(self) -> dict[str, Any]:
        """Everything :meth:`load` needs to rebuild the network (JSON-serialisable)."""
        denoiser = self.denoiser
        return {
            "format": ICCLD_FORMAT, "vae": _plain(self.vae_config), "num_classes": self.decoder.num_classes,
            "inter_coder": self.decoder.inter_coder, "input_size": self.input_size,
            "sampling_steps": self.sampling_steps, "sampling_seed": self.sampling_seed,
            "sampling_seeds": self.sampling_seeds,
            "unet": None if denoiser is None else json.loads(denoiser.unet.to_json_string()),
            "scheduler": None if denoiser is None else json.loads(denoiser.scheduler.to_json_string()),
            "empty_prompt_shape": None if denoiser is None else list(denoiser.empty_prompt.shape),
        }

    def save(self, path: str | Path, *, state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
        """Write the folder (``config.json`` + ``model.safetensors``) atomically; ``state_dict`` overrides the weights."""
        from madm_train.models.saved import write_model_folder

        return write_model_folder(path, self.config(), self.state_dict() if state_dict is None else state_dict)

    @classmethod
    def load(cls, path: str | Path, *, dtype: torch.dtype = torch.float32) -> IccldModel:
        """Rebuild from ``config.json`` on the meta device and fill with ``model.safetensors`` (strict)."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        from madm_train.models.saved import fill_weights, read_model_folder

        config, weights_file = read_model_folder(path, ICCLD_FORMAT)
        try:
            with torch.device("meta"):
                model = cls(AutoencoderKL.from_config(config["vae"]), config["num_classes"],
                            inter_coder=config["inter_coder"], input_size=config["input_size"],
                            sampling_steps=config["sampling_steps"], sampling_seed=config["sampling_seed"],
                            sampling_seeds=config["sampling_seeds"])
                if config["unet"] is not None:
                    unet = UNet2DConditionModel.from_config(config["unet"])
                    model.denoiser = LatentDenoiser(unet, DDPMScheduler.from_config(config["scheduler"]),
                                                    torch.zeros(config["empty_prompt_shape"]))
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{path}/config.json is not a complete ICCLD config: {error}") from None
        fill_weights(model, weights_file, dtype=dtype)
        return model

    # -- forward ------------------------------------------------------------------------------

    def logits(self, images01: torch.Tensor) -> torch.Tensor:
        """Logits at the input's resolution: the sampled path after stage 2, the direct one before."""
        return self(images01)

    def forward(self, images01: torch.Tensor, *, timesteps: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor | OneStep:
        """Logits B×K×H×W (direct or sampled path), or with ``timesteps`` the stage-2 :class:`OneStep`.

        ``generator`` draws the one-step path's noise (the sampled path seeds its own).
        """
        if images01.ndim != 4 or images01.shape[1] != 3:
            raise InputError(f"ICCLD takes B×3×H×W images in [0, 1], got {tuple(images01.shape)}")
        size = tuple(images01.shape[-2:])
        work = self._work_size(size)
        if work != size:
            images01 = F.interpolate(images01, size=work, mode="bilinear", align_corners=False)
        latents, features = self.encoder(images01)
        if timesteps is not None:
            step = self.one_step(latents, features, timesteps, generator)
            return step._replace(logits=_resized(step.logits, size))
        if self.denoiser is not None:
            logits = torch.stack([self.decoder(self.sample(latents, self.sampling_seed + i), features)
                                  for i in range(self.sampling_seeds)]).mean(0)
        else:
            logits = self.decoder(latents, features)
        return _resized(logits, size)

    def direct(self, images01: torch.Tensor) -> torch.Tensor:
        """D(E(x)): the stage-1 model's logits, also after stage 2 (stage 2's pseudo-labels)."""
        size = tuple(images01.shape[-2:])
        work = self._work_size(size)
        if work != size:
            images01 = F.interpolate(images01, size=work, mode="bilinear", align_corners=False)
        return _resized(self.decoder(*self.encoder(images01)), size)

    def _work_size(self, size: tuple[int, ...]) -> tuple[int, int]:
        if self.input_size is not None:
            return self.input_size, self.input_size
        return -(-size[0] // 64) * 64, -(-size[1] // 64) * 64

    def _require_denoiser(self) -> LatentDenoiser:
        if self.denoiser is None:
            raise ConfigError("this ICCLD model has no denoising UNet yet (a stage-1 model): train stage 2 first")
        return self.denoiser

    @torch.no_grad()
    def sample(self, condition: torch.Tensor, seed: int) -> torch.Tensor:
        """ẑ₀: z_T ~ N(0, I) drawn on the CPU from ``seed``, T DDIM steps (η = 0) of ε_θ([z_t ; z₀])."""
        from diffusers import DDIMScheduler

        denoiser = self._require_denoiser()
        scheduler = DDIMScheduler.from_config(denoiser.scheduler.config)
        scheduler.set_timesteps(self.sampling_steps, device=condition.device)
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn(condition.shape, generator=generator, dtype=torch.float32).to(condition.device)
        latents = latents * scheduler.init_noise_sigma
        for t in scheduler.timesteps:
            prediction = denoiser(latents, condition, t.expand(latents.shape[0]))
            latents = scheduler.step(prediction.float(), t, latents, eta=0.0).prev_sample
        return latents.to(condition.dtype)

    def one_step(self, latents: torch.Tensor, features: Sequence[torch.Tensor], timesteps: torch.Tensor,
                 generator: torch.Generator | None) -> OneStep:
        """Noise z₀ to z_t, predict, and decode the one-step estimate ẑ₀ (stage-2 training)."""
        denoiser = self._require_denoiser()
        scheduler = denoiser.scheduler
        noise = torch.randn(latents.shape, generator=generator, dtype=torch.float32).to(latents.device, latents.dtype)
        timesteps = timesteps.to(latents.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        prediction = denoiser(noisy, latents, timesteps)
        alpha = scheduler.alphas_cumprod.to(latents.device)[timesteps].view(-1, 1, 1, 1).to(latents.dtype)
        if denoiser.predicts_velocity:
            target = scheduler.get_velocity(latents, noise, timesteps)
            estimate = alpha.sqrt() * noisy - (1 - alpha).sqrt() * prediction.to(latents.dtype)
        else:
            target = noise
            estimate = (noisy - (1 - alpha).sqrt() * prediction.to(latents.dtype)) / alpha.sqrt()
        return OneStep(prediction, target, estimate, self.decoder(estimate, features))


def _resized(logits: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


def _plain(config: Mapping[str, Any]) -> dict[str, Any]:
    """A diffusers config as JSON values (tuples as lists; private ``_`` keys dropped)."""
    return json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}, default=list))
