"""The DIFF network: a Stable Diffusion UNet as multi-timestep feature extractor, fusion, DAFormer head at stride 4.

Data flow of :meth:`DiffModel.forward` (iccld_diff_spec.md B.1–B.2; ``images01`` B×3×H×W in [0, 1]):

1. resize to ``input_size`` when set; VAE latent = a posterior **sample** × 0.18215 (released), or
   the posterior mean in deterministic mode;
2. the latent walks the :class:`~madm_train.methods.diff.trajectory.Trajectory`; at each step the
   UNet runs on one copy per prompt: the empty prompt, plus (conditional branch) one per class
   prompt whose class is present in the labels. A class prompt's prediction is guided,
   ε_u + g·(ε_k − ε_u) with g = 5; each prompt gives its own update (own noise draw), and the next
   latent is their mask-weighted average with the empty prompt's update everywhere (weight 1)
   and each class's inside its label mask (MultiDiffusion-style composition, as released);
3. at the saved steps the up-path taps (:mod:`~madm_train.methods.diff.taps`) are kept: ResNet
   taps from the empty-prompt copy, attention taps summed over the released prompt passes — two
   empty-prompt passes (the released classifier-free-guidance pair, run once here and counted
   twice: identical result, half the work) plus every class pass;
4. :class:`~madm_train.methods.diff.fusion.Aggregation` per stride, the finecoder, the DAFormer
   head: logits at stride 4.

With no class present the conditional branch is the unconditional one exactly (tested). The UNet
and VAE are frozen; with a LoRA adapter (an option) gradients reach the UNet only through the
saved steps, the trajectory itself is detached. Saved models are folders of format
``madm-diff/1`` (:mod:`madm_train.models.saved`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from madm_ros.errors import ConfigError, InputError
from madm_train.config_loader import latent_input_size
from madm_train.methods.diff.fusion import Aggregation, Finecoder
from madm_train.methods.diff.taps import UpPathTaps
from madm_train.methods.diff.trajectory import Trajectory, ddim_forward_step, eta_at, v_to_epsilon
from madm_train.models.head import DAFormerHead

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

__all__ = ["DIFF_FORMAT", "DiffModel"]

DIFF_FORMAT = "madm-diff/1"
"""``format`` tag of a saved DIFF model folder."""

Deterministic = Literal["never", "eval", "always"]


class DiffModel(nn.Module):
    """DIFF's backbone, fusion and head (see the module docstring).

    Args:
        unet: SD 1.x/2.x ``UNet2DConditionModel`` (frozen unless a LoRA adapter is attached).
        vae: ``AutoencoderKL`` (frozen).
        scheduler: ``DDPMScheduler`` whose ``alphas_cumprod`` the trajectory uses.
        empty_prompt: Text embedding of "", 1×L×D.
        num_classes: Logit channels.
        steps: Trajectory preset, ``37`` (released), ``5`` or ``1``.
        eta: η inside ``eta_window`` (released 1.0).
        eta_window: Open interval of current timesteps with noise (released (10, 250)).
        deterministic: ``never`` (released: sampled latent and η noise in training and test),
            ``eval`` (deterministic in eval mode: teachers, evaluation, export) or ``always``.
        v_to_epsilon: Convert a v-prediction UNet's output to ε before the update (the released
            code does not; SD-1.x predicts ε, where this changes nothing).
        input_size: Side every input is resized to, or None (the input size; sides multiple of 64).
        aggregation: ``released`` or ``shared`` (:class:`Aggregation`).
        widths: Aggregated widths by stride (released ``{8: 512, 16: 1024, 32: 2048}``).
        out_width: Finecoder width at stride 4 (released 256).
        aggregation_groups: GroupNorm groups of the aggregation (released 16).
        finecoder_groups: GroupNorm groups of the finecoder (released 32).
        embed_dim: DAFormer head width (released 256).
        guidance: Classifier-free guidance of the class prompts (released 5).
        class_prompts: Embeddings of the class prompts, K×L×D (from ``prompts.PromptEmbeddings``).
        prompt_classes: The class id of each of those prompts.
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: DDPMScheduler,
        empty_prompt: torch.Tensor,
        num_classes: int,
        *,
        steps: str = "37",
        eta: float = 1.0,
        eta_window: tuple[int, int] = (10, 250),
        deterministic: Deterministic = "eval",
        v_to_epsilon: bool = False,
        input_size: int | None = None,
        aggregation: Literal["released", "shared"] = "released",
        widths: Mapping[int, int] | None = None,
        out_width: int = 256,
        aggregation_groups: int = 16,
        finecoder_groups: int = 32,
        embed_dim: int = 256,
        guidance: float = 5.0,
        class_prompts: torch.Tensor | None = None,
        prompt_classes: Sequence[int] = (),
    ) -> None:
        super().__init__()
        if deterministic not in ("never", "eval", "always"):
            raise ConfigError(f"deterministic must be never, eval or always, got {deterministic!r}")
        latent_input_size("input_size", input_size)
        prompts = class_prompts if class_prompts is not None else empty_prompt.new_zeros((0, *empty_prompt.shape[1:]))
        if prompts.shape[0] != len(prompt_classes) or prompts.shape[1:] != empty_prompt.shape[1:]:
            raise ConfigError(f"class_prompts {tuple(prompts.shape)} must be one {tuple(empty_prompt.shape[1:])} "
                              f"embedding per prompt class {list(prompt_classes)}")
        self.unet, self.vae, self.scheduler = unet, vae, scheduler
        self.trajectory = Trajectory.preset(steps)
        self.steps, self.eta, self.eta_window = steps, float(eta), (int(eta_window[0]), int(eta_window[1]))
        self.deterministic, self.v_to_epsilon, self.input_size = deterministic, bool(v_to_epsilon), input_size
        self.guidance = float(guidance)
        self.prompt_classes = tuple(int(c) for c in prompt_classes)
        self.register_buffer("empty_prompt", empty_prompt.detach().clone())
        self.register_buffer("class_prompts", prompts.detach().clone())
        unet.requires_grad_(False)
        vae.requires_grad_(False)
        self.taps = UpPathTaps(unet)
        widths = dict(widths or {8: 512, 16: 1024, 32: 2048})
        self.aggregation = Aggregation(self.taps.layers, len(self.trajectory.saved), widths, kind=aggregation,
                                       norm_groups=aggregation_groups)
        self.finecoder = Finecoder(widths, out_width, norm_groups=finecoder_groups)
        self.head = DAFormerHead(self.finecoder.feature_channels, num_classes, embed_dim)
        self.lora_adapters: dict[str, dict[str, float]] = {}

    # -- configuration, saving ------------------------------------------------------------------

    def add_lora(self, adapter_name: str, rank: int, alpha: float) -> None:
        """Attach and activate a peft LoRA adapter on the UNet's attention projections (trainable)."""
        from madm_train.models.lora import attach_lora

        attach_lora(self.unet, adapter_name, rank, alpha, self.lora_adapters)
        self.lora_adapters[adapter_name] = {"rank": int(rank), "alpha": alpha}

    def config(self) -> dict[str, Any]:
        """Everything :meth:`load` needs to rebuild the network (JSON-serialisable)."""
        return {
            "format": DIFF_FORMAT,
            "unet": json.loads(self.unet.to_json_string()), "vae": json.loads(self.vae.to_json_string()),
            "scheduler": json.loads(self.scheduler.to_json_string()),
            "empty_prompt_shape": list(self.empty_prompt.shape), "prompt_classes": list(self.prompt_classes),
            "steps": self.steps, "eta": self.eta, "eta_window": list(self.eta_window),
            "deterministic": self.deterministic, "v_to_epsilon": self.v_to_epsilon, "input_size": self.input_size,
            "guidance": self.guidance, "aggregation": self.aggregation.config(), "finecoder": self.finecoder.config(),
            "head": self.head.config(), "lora_adapters": {k: dict(v) for k, v in self.lora_adapters.items()},
        }

    def save(self, path: str | Path, *, state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
        """Write the folder (``config.json`` + ``model.safetensors``), atomically; ``state_dict`` as :meth:`MadmModel.save`."""
        from madm_train.models.saved import write_model_folder

        return write_model_folder(path, self.config(), self.state_dict() if state_dict is None else state_dict)

    @classmethod
    def load(cls, path: str | Path, *, dtype: torch.dtype = torch.float32) -> DiffModel:
        """Rebuild from ``config.json`` on the meta device and fill with ``model.safetensors`` (strict)."""
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        from madm_train.models.saved import fill_weights, read_model_folder

        config, weights_file = read_model_folder(path, DIFF_FORMAT)
        try:
            aggregation, finecoder, head = config["aggregation"], config["finecoder"], config["head"]
            scheduler = DDPMScheduler.from_config(config["scheduler"])
            with torch.device("meta"):
                unet = UNet2DConditionModel.from_config(config["unet"])
                vae = AutoencoderKL.from_config(config["vae"])
                shape = config["empty_prompt_shape"]
                model = cls(unet, vae, scheduler, torch.zeros(shape), head["num_classes"], steps=config["steps"],
                            eta=config["eta"], eta_window=tuple(config["eta_window"]), deterministic=config["deterministic"],
                            v_to_epsilon=config["v_to_epsilon"], input_size=config["input_size"],
                            aggregation=aggregation["kind"], widths={int(k): v for k, v in aggregation["widths"].items()},
                            out_width=finecoder["out_width"], aggregation_groups=aggregation["norm_groups"],
                            finecoder_groups=finecoder["norm_groups"], embed_dim=head["embed_dim"],
                            guidance=config["guidance"], class_prompts=torch.zeros(len(config["prompt_classes"]), *shape[1:]),
                            prompt_classes=config["prompt_classes"])
                for name, lora in config["lora_adapters"].items():
                    model.add_lora(name, int(lora["rank"]), lora["alpha"])
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigError(f"{path}/config.json is not a complete DIFF config: {error}") from None
        fill_weights(model, weights_file, dtype=dtype)
        return model

    # -- forward ------------------------------------------------------------------------------

    def logits(self, images01: torch.Tensor) -> torch.Tensor:
        """Unconditional logits at stride 4 (what evaluation, distillation and export use)."""
        return self(images01)

    def forward(self, images01: torch.Tensor, labels: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Logits B×K×⌈H/4⌉×⌈W/4⌉; with ``labels`` (B×H×W class ids) the conditional branch (module docstring).

        With ``input_size`` the network runs at that square and its logits are resized back to the
        input's stride-4 grid, so every consumer sees stride-4 logits of the image it gave.
        """
        features = self.features(images01, labels, generator)
        logits = self.head(self.finecoder(self.aggregation(features)))
        height, width = (-(-side // 4) for side in images01.shape[-2:])
        if tuple(logits.shape[-2:]) != (height, width):
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        return logits

    def _stochastic(self) -> bool:
        return self.deterministic == "never" or (self.deterministic == "eval" and self.training)

    @torch.no_grad()
    def encode(self, images01: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """The VAE latent: a posterior sample (stochastic mode) or the posterior mean, × the scaling factor."""
        if images01.ndim != 4 or images01.shape[1] != 3:
            raise InputError(f"DIFF takes B×3×H×W images in [0, 1], got {tuple(images01.shape)}")
        if self.input_size is not None and tuple(images01.shape[-2:]) != (self.input_size,) * 2:
            images01 = F.interpolate(images01, size=(self.input_size,) * 2, mode="bilinear", align_corners=False)
        elif self.input_size is None and (images01.shape[-2] % 64 or images01.shape[-1] % 64):
            raise InputError(f"input {images01.shape[-2]}×{images01.shape[-1]} is not a multiple of 64 and input_size "
                             "is None; crop or resize it, or set method.model.input_size")
        posterior = self.vae.encode(images01.to(self.vae.dtype) * 2 - 1).latent_dist
        latents = posterior.sample(generator) if self._stochastic() else posterior.mean
        return (latents * self.vae.config.scaling_factor).to(self.unet.dtype)

    def _conditions(self, labels: torch.Tensor | None, latent_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (K×L×D) and latent-grid masks (K×B×1×h×w) of the prompt classes present in ``labels``."""
        if labels is None or not self.prompt_classes:
            return self.class_prompts[:0], torch.zeros(0, device=self.empty_prompt.device)
        small = F.interpolate(labels[:, None].float(), size=latent_hw, mode="nearest")[:, 0]
        present = [k for k, c in enumerate(self.prompt_classes) if bool((labels == c).any())]
        masks = torch.stack([(small == self.prompt_classes[k]).float()[:, None] for k in present]) if present else \
            torch.zeros(0, device=labels.device)
        return self.class_prompts[present], masks

    def features(self, images01: torch.Tensor, labels: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> list[dict[str, torch.Tensor]]:
        """The taps of each saved step, in the trajectory's saved order (steps 1–3 of the module docstring)."""
        latents = self.encode(images01, generator)
        batch = latents.shape[0]
        contexts, masks = self._conditions(labels, tuple(latents.shape[-2:]))
        passes = 1 + contexts.shape[0]
        context = torch.cat([self.empty_prompt, contexts]).to(self.unet.dtype)
        context = context.repeat_interleave(batch, dim=0)  # pass-major: [empty × B, class₁ × B, …]
        alphas = self.scheduler.alphas_cumprod
        stochastic, trained = self._stochastic(), any(p.requires_grad for p in self.unet.parameters())
        saved_taps: dict[int, dict[str, torch.Tensor]] = {}
        for i in range(self.trajectory.run_until):
            t, t_next = self.trajectory.steps[i], self.trajectory.next_steps[i]
            keep = i in self.trajectory.saved
            timesteps = torch.full((passes * batch,), t, dtype=torch.long, device=latents.device)
            grad = torch.enable_grad() if keep and trained else torch.no_grad()
            with grad, (self.taps.capture() if keep else nullcontext({})) as taps:
                eps = self.unet(latents.repeat(passes, 1, 1, 1), timesteps, encoder_hidden_states=context).sample
            if keep:
                saved_taps[i] = self._combine(taps, batch, passes)
            with torch.no_grad():
                eps = eps.detach()
                alpha_t, alpha_next = float(alphas[t]), float(alphas[t_next])
                if self.v_to_epsilon and self.scheduler.config.prediction_type == "v_prediction":
                    eps = v_to_epsilon(eps, latents.repeat(passes, 1, 1, 1), alpha_t)
                eps = eps.reshape(passes, batch, *eps.shape[1:])
                eta = eta_at(t, self.eta, self.eta_window) if stochastic else 0.0
                update = self._update(latents, eps[0], alpha_t, alpha_next, eta, generator)
                if passes > 1:
                    total, weight = update, torch.ones_like(masks[0])
                    for k in range(1, passes):
                        guided = eps[0] + self.guidance * (eps[k] - eps[0])
                        total = total + masks[k - 1] * self._update(latents, guided, alpha_t, alpha_next, eta, generator)
                        weight = weight + masks[k - 1]
                    update = total / weight
                latents = update
        return [saved_taps[i] for i in self.trajectory.saved]

    @staticmethod
    def _update(latents: torch.Tensor, eps: torch.Tensor, alpha_t: float, alpha_next: float, eta: float,
                generator: torch.Generator | None) -> torch.Tensor:
        noise = None
        if eta > 0:
            noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=torch.float32)
            noise = noise.to(latents.dtype)
        return ddim_forward_step(latents, eps, alpha_t, alpha_next, eta, noise)

    def _combine(self, taps: Mapping[str, torch.Tensor], batch: int, passes: int) -> dict[str, torch.Tensor]:
        """ResNet taps of the empty-prompt copy; attention taps summed over the released passes (empty counted twice)."""
        combined = {}
        for layer in self.taps.layers:
            value = taps[layer.name]
            if layer.kind == "resnet":
                combined[layer.name] = value[:batch]
            else:
                copies = value.reshape(passes, batch, *value.shape[1:])
                combined[layer.name] = 2 * copies[0] + copies[1:].sum(dim=0)
        return combined
