"""``pretrain-prior``: a small generative prior for the tiny preset, standing in for Stable Diffusion's pretraining.

MADM's premise is that a text-to-image diffusion model has learnt, from web-scale data, an image
space in which modalities are close; a randomly initialised tiny SD has learnt nothing and cannot
show that. This module gives the tiny preset a prior of its own, trained the way SD's parts were:

1. **Autoencoder.** The tiny VAE (``AutoencoderKL``) is trained to reconstruct unlabelled frames of
   every modality of a synthetic folder (RGB, depth, thermal, events, day and night) and
   palette-painted label images — the images LPLR later encodes and decodes — with an L1 + MSE
   reconstruction loss and a small KL term (SD's autoencoder used a KL weight of 1e-6). Its
   ``scaling_factor`` is then set to 1 / std of the latents, as SD's 0.18215 was chosen.
2. **Latent denoiser.** The tiny UNet is trained with the standard diffusion objective (ε-prediction
   at uniformly drawn timesteps of the DDPM schedule, conditioned on the empty prompt, the only
   prompt MADM uses) on the frozen VAE's latents of the same images.

The result is written, atomically, as a diffusers folder (``unet/``, ``vae/``, ``scheduler/``,
``text_encoder/``, ``tokenizer/``) like a real SD checkpoint, plus ``prior.json`` (settings and
final losses), and is loaded through the same code (``method.model.pretrained`` with ``method.model.preset: tiny``).
Frames should come from a folder generated with a different seed than the evaluation data, so the
prior never sees a test image.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.errors import ConfigError
from madm_ros.preprocessing import MODALITIES

__all__ = ["PRIOR_FILE", "PriorConfig", "load_prior_frames", "pretrain_prior"]

PRIOR_FILE = "prior.json"
"""Written beside the model folders: settings, losses and frame counts of the pretraining."""


@dataclass(frozen=True)
class PriorConfig:
    """Settings of :func:`pretrain_prior`.

    Attributes:
        crop: Side of the square random crops trained on (latents are crop/8).
        vae_steps: Autoencoder training steps.
        unet_steps: Latent-denoiser training steps.
        batch_size: Images per step (drawn from every modality and the painted labels alike).
        vae_lr: AdamW learning rate of the autoencoder.
        unet_lr: AdamW learning rate of the denoiser.
        kl_weight: Weight of the VAE's KL term.
        seed: Seed of the random tiny SD the training starts from and of every draw.
    """

    crop: int = 64
    vae_steps: int = 1500
    unet_steps: int = 1500
    batch_size: int = 16
    vae_lr: float = 1e-3
    unet_lr: float = 3e-4
    kl_weight: float = 1e-6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.crop < 8 or self.crop % 8:
            raise ConfigError(f"prior crop must be a positive multiple of 8 (the VAE's stride), got {self.crop}")
        for name in ("vae_steps", "unet_steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"prior {name} must be ≥ 1, got {getattr(self, name)}")
        for name in ("vae_lr", "unet_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"prior {name} must be > 0, got {getattr(self, name)}")


def load_prior_frames(root: str | Path) -> tuple[np.ndarray, dict[str, int]]:
    """Every frame of a synthetic folder in every modality, plus its painted label, as uint8 N×3×H×W.

    Images go through the same ``preprocess()`` path as training; labels are painted with the
    folder's palette (ignore pixels black, as LPLR paints them). Returns the stack and counts by kind.
    """
    import torch

    from madm_ros.folder_layout import FolderMeta, read_image
    from madm_ros.preprocessing import InputSpec
    from madm_train.data.datasets import FolderDataset
    from madm_train.methods.madm.lplr import paint_labels

    meta = FolderMeta.read(root)
    if not meta.frames:
        raise ConfigError(f"{root} lists no frames in meta.json")
    height, width = read_image(root, next(iter(meta.modalities)), meta.frames[0]).shape[:2]
    images: list[np.ndarray] = []
    counts: dict[str, int] = {}
    labels: list[np.ndarray] = []
    for modality in (m for m in MODALITIES if m in meta.modalities):
        data = FolderDataset(root, InputSpec(modality, height=height, width=width))
        for i in range(len(data)):
            sample = data[i]
            images.append(np.rint(sample.image * 255).astype(np.uint8))
            if modality == "rgb" and sample.label is not None:
                labels.append(sample.label)
        counts[modality] = len(data)
    if labels and data.label_set is not None:
        painted = paint_labels(torch.from_numpy(np.stack(labels)), data.label_set)
        images.extend(np.rint(painted.numpy() * 255).astype(np.uint8))
        counts["painted_labels"] = len(labels)
    if not images:
        raise ConfigError(f"{root} holds no frames of {', '.join(MODALITIES)}")
    return np.stack(images), counts


def _batches(frames: np.ndarray, config: PriorConfig, rng: np.random.Generator) -> Any:
    """Endless random crops with random flips, as float tensors in [-1, 1]."""
    import torch

    n, _, height, width = frames.shape
    if height < config.crop or width < config.crop:
        raise ConfigError(f"prior crop {config.crop} is larger than the frames ({height}x{width})")
    while True:
        index = rng.integers(n, size=config.batch_size)
        top = rng.integers(height - config.crop + 1, size=config.batch_size)
        left = rng.integers(width - config.crop + 1, size=config.batch_size)
        crops = np.stack([frames[i, :, t:t + config.crop, s:s + config.crop] for i, t, s in zip(index, top, left)])
        flip = rng.random(config.batch_size) < 0.5
        crops[flip] = crops[flip][..., ::-1]
        yield torch.from_numpy(crops.astype(np.float32) / 127.5 - 1.0)


def _fit(module: Any, loss_of_next_batch: Callable[[], Any], *, steps: int, lr: float, weight_decay: float,
         desc: str, progress: bool) -> float:
    """AdamW with a cosine schedule on ``module`` for ``steps``; returns the last loss."""
    import torch
    from tqdm import tqdm

    optimiser = torch.optim.AdamW(module.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    loss_value = float("nan")
    module.train()
    for _ in tqdm(range(steps), desc=desc, unit="step", disable=not progress):
        loss = loss_of_next_batch()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        loss_value = loss.item()
    module.eval()
    return loss_value


def _train_vae(vae: Any, frames: np.ndarray, config: PriorConfig, rng: np.random.Generator, progress: bool) -> float:
    """Reconstruction (L1 + MSE) plus a small KL term, as SD's KL autoencoder."""
    import torch.nn.functional as F

    batches = _batches(frames, config, rng)

    def loss() -> Any:
        x = next(batches)
        posterior = vae.encode(x).latent_dist
        reconstruction = vae.decode(posterior.sample()).sample
        return F.l1_loss(reconstruction, x) + F.mse_loss(reconstruction, x) + config.kl_weight * posterior.kl().mean()

    return _fit(vae, loss, steps=config.vae_steps, lr=config.vae_lr, weight_decay=0.0, desc="prior: autoencoder",
                progress=progress)


def _latent_scale(vae: Any, frames: np.ndarray, config: PriorConfig, rng: np.random.Generator) -> float:
    """1 / std of the posterior means over a few batches: SD's recipe for ``scaling_factor``."""
    import torch

    batches = _batches(frames, config, rng)
    with torch.no_grad():
        latents = torch.cat([vae.encode(next(batches)).latent_dist.mean for _ in range(8)])
    return float(1.0 / latents.std().clamp_min(1e-6))


def _train_unet(unet: Any, vae: Any, scheduler: Any, empty_prompt: Any, frames: np.ndarray, config: PriorConfig,
                rng: np.random.Generator, progress: bool) -> float:
    """ε-prediction at uniform DDPM timesteps on the frozen VAE's scaled latents, empty-prompt conditioned."""
    import torch
    import torch.nn.functional as F

    batches = _batches(frames, config, rng)
    generator = torch.Generator().manual_seed(config.seed)
    context = empty_prompt.expand(config.batch_size, -1, -1)
    steps = scheduler.config.num_train_timesteps

    def loss() -> Any:
        with torch.no_grad():
            latents = vae.encode(next(batches)).latent_dist.mean * vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.randint(0, steps, (latents.shape[0],), generator=generator)
        predicted = unet(scheduler.add_noise(latents, noise, timesteps), timesteps, encoder_hidden_states=context).sample
        return F.mse_loss(predicted, noise)

    return _fit(unet, loss, steps=config.unet_steps, lr=config.unet_lr, weight_decay=0.01,
                desc="prior: latent denoiser", progress=progress)


def pretrain_prior(data_root: str | Path, out: str | Path, config: PriorConfig | None = None, *,
                   progress: bool = True) -> Path:
    """Train the tiny preset's prior on the frames of ``data_root`` and write it to ``out``; returns ``out``.

    Starts from the random tiny SD of :func:`madm_train.models.tiny_sd.build_tiny_sd` (seed ``config.seed``),
    trains its VAE, then its UNet (see the module docstring), and replaces ``out`` atomically.
    """
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from madm_train.models.sd_backbone import atomic_folder
    from madm_train.models.stable_diffusion import empty_prompt_embedding
    from madm_train.models.tiny_sd import build_tiny_sd

    config = config or PriorConfig()
    out = Path(out)
    frames, counts = load_prior_frames(data_root)
    print(f"prior: {len(frames)} images from {data_root} ({', '.join(f'{k} {v}' for k, v in counts.items())})",
          file=sys.stderr)
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    with atomic_folder(out) as temp:
        build_tiny_sd(temp, seed=config.seed)
        vae = AutoencoderKL.from_pretrained(temp / "vae", local_files_only=True)
        vae_loss = _train_vae(vae, frames, config, rng, progress)
        vae.register_to_config(scaling_factor=_latent_scale(vae, frames, config, rng))
        vae.requires_grad_(False)
        unet = UNet2DConditionModel.from_pretrained(temp / "unet", local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(temp / "scheduler", local_files_only=True)
        empty = empty_prompt_embedding(CLIPTextModel.from_pretrained(temp / "text_encoder", local_files_only=True),
                                        CLIPTokenizer.from_pretrained(temp / "tokenizer", local_files_only=True))
        unet_loss = _train_unet(unet, vae, scheduler, empty, frames, config, rng, progress)
        for name, part in (("vae", vae), ("unet", unet)):
            shutil.rmtree(temp / name)
            part.save_pretrained(temp / name)
        record = {"data_root": str(data_root), "images": counts, "settings": asdict(config),
                  "final_loss": {"autoencoder": vae_loss, "denoiser": unet_loss},
                  "scaling_factor": vae.config.scaling_factor}
        (temp / PRIOR_FILE).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return out
