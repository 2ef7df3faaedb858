"""MADM's Stable Diffusion backbone: one UNet pass at t = 0 on the VAE latent, features from three up-blocks.

Data flow of :meth:`SDBackbone.forward` (spec §9 step 3; ``x`` float32 B×3×H×W in [0, 1]):

1. resize to ``input_size`` (bilinear; MADM: 512²), map to [-1, 1];
2. frozen VAE encoder, posterior *mean* × ``scaling_factor`` (0.18215) → latent z (B×4×H/8×W/8), no grad;
3. ``scheduler.add_noise(z, ε, t)`` with t = 0 and ε the fixed seed-42 tensor unless told otherwise
   (even t = 0 perturbs: z' = 0.9996·z + 0.0292·ε for SD-1.x's schedule); DPLG passes a larger t;
4. UNet(z', t) conditioned on c = tanh(A_u)·u + tanh(A_c)·P (u: cached CLIP embedding of the empty
   prompt, P: learned prompt, A_*: learned gates) and with tanh(a_t)·E_t added to the time embedding;
   forward hooks keep the outputs of up-block sub-layers 5, 8, 11 (see ``tap_indices``);
5. frozen VAE decoder on the UNet output o, under ``no_grad`` (spec §4.4: the head's s0 input sends
   no gradient into the UNet; the UNet learns to paint the palette image only through LPLR's L1 on o);
6. detectron2-style bottleneck projections with GroupNorm: s0 (decoded image, unclipped, [-1, 1]
   scale) 3→128, s3 (tap 11) 320→512, s4 (tap 8) 640→512, s5 (tap 5) 1280→512.

Shapes for SD-1.4 at 512² (latent 64×64): tap 5 → 1280×16², tap 8 → 640×32², tap 11 → 320×64²;
the UNet output is 4×64², the decoded image 3×512².

Loading never downloads: :meth:`SDBackbone.from_pretrained` reads a local diffusers folder or a
single ``.safetensors``/``.ckpt`` file of SD v1.x/v2.x, whose missing configs the package carries
(:mod:`madm_train.models.stable_diffusion`). The text encoder is used once for the empty-prompt
embedding and then dropped.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from madm_ros.errors import ConfigError, InputError
from madm_train.models.stable_diffusion import EMPTY_PROMPT_FILE, SDVersion, load_stable_diffusion

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

__all__ = [
    "BackboneOutput",
    "Bottleneck",
    "PromptConditioning",
    "SDBackbone",
    "atomic_folder",
]

FROZEN_UNET_MODULES: tuple[str, ...] = ("conv_norm_out", "conv_out")
"""UNet modules that get no gradient from the tapped features and stay frozen (spec §1.7)."""
TrainMode = Literal["full", "lora"]


@contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it replaces ``path`` in one rename.

    A reader never sees a half-written folder; an existing ``path`` is swapped out and removed only
    after the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        yield temp
        os.chmod(temp, 0o755)
        old = None
        if path.exists():
            old = path.parent / f".{path.name}.{os.getpid()}.old"
            os.replace(path, old)
        os.replace(temp, path)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise


@dataclass(frozen=True)
class BackboneOutput:
    """What one backbone pass returns.

    Attributes:
        features: Projected maps for the head, in head order: ``s0`` (decoded UNet output,
            full input resolution, detached before its projection), then the UNet taps by
            increasing stride (``s3`` stride 8, ``s4`` 16, ``s5`` 32 for taps 11, 8, 5).
        unet_output: UNet output o, B×4×H/8×W/8, with gradient (LPLR's L1 target side).
        latents: Clean VAE latent z (posterior mean × scaling factor) of the resized input, no grad.
        decoded: VAE decoding of o mapped to [0, 1] and clipped, detached (for inspection only).
    """

    features: dict[str, torch.Tensor]
    unet_output: torch.Tensor
    latents: torch.Tensor
    decoded: torch.Tensor


class PromptConditioning(nn.Module):
    """MADM's learned text and time conditioning (spec §1.4); no class names, no captioner.

    Encoder hidden states c = tanh(A_u)·u + tanh(A_c)·P (element-wise), where u is the cached CLIP
    embedding of "" (a buffer), P the learned prompt (truncated normal, std 0.02), A_c and A_u gates
    (uniform [0, 1)). The time-embedding offset tanh(a_t)·E_t has E_t truncated normal (std 0.02) and
    a_t zeros, so it starts at exactly zero. For SD-1.x: 3·77·768 + 2·1280 = 179,968 parameters.

    Args:
        empty_prompt: u, 1×L×D (SD-1.x: 1×77×768).
        time_embed_dim: Width of the UNet's time embedding (SD-1.x: 1280).
    """

    def __init__(self, empty_prompt: torch.Tensor, time_embed_dim: int) -> None:
        super().__init__()
        if empty_prompt.ndim != 3 or empty_prompt.shape[0] != 1:
            raise ConfigError(f"empty-prompt embedding must be 1×tokens×width, got {tuple(empty_prompt.shape)}")
        shape = tuple(empty_prompt.shape)
        self.register_buffer("empty_prompt", empty_prompt.detach().clone())
        self.prompt = nn.Parameter(nn.init.trunc_normal_(torch.empty(shape, dtype=empty_prompt.dtype), std=0.02))
        self.prompt_gate = nn.Parameter(torch.rand(shape, dtype=empty_prompt.dtype))
        self.empty_gate = nn.Parameter(torch.rand(shape, dtype=empty_prompt.dtype))
        offset = torch.empty(1, 1, time_embed_dim, dtype=empty_prompt.dtype)
        self.time_offset = nn.Parameter(nn.init.trunc_normal_(offset, std=0.02))
        self.time_gate = nn.Parameter(torch.zeros(time_embed_dim, dtype=empty_prompt.dtype))

    def encoder_hidden_states(self, batch: int) -> torch.Tensor:
        """Encoder hidden states c for a batch of ``batch`` images, B×L×D."""
        c = torch.tanh(self.empty_gate) * self.empty_prompt + torch.tanh(self.prompt_gate) * self.prompt
        return c.expand(batch, -1, -1)

    def time_embedding_offset(self) -> torch.Tensor:
        """tanh(a_t)·E_t as 1×D, added to the UNet's time embedding."""
        return (torch.tanh(self.time_gate) * self.time_offset).reshape(1, -1)


class Bottleneck(nn.Module):
    """detectron2's ``BottleneckBlock`` with GroupNorm: 1×1 → 3×3 → 1×1 plus a projected shortcut, ReLU.

    MADM projects each feature map with one such block (spec §1.6), bottleneck width 128, GN(32).
    Convolutions have no bias (each is followed by a norm) and MSRA (fan-out) initialisation.
    """

    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, norm_groups: int) -> None:
        super().__init__()

        def conv_norm(cin: int, cout: int, kernel: int) -> nn.Sequential:
            conv = nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            return nn.Sequential(conv, nn.GroupNorm(norm_groups, cout))

        self.shortcut = conv_norm(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()
        self.conv1 = conv_norm(in_channels, bottleneck_channels, 1)
        self.conv2 = conv_norm(bottleneck_channels, bottleneck_channels, 3)
        self.conv3 = conv_norm(bottleneck_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project ``x`` (B×in×H×W) to B×out×H×W."""
        y = F.relu(self.conv1(x))
        y = F.relu(self.conv2(y))
        return F.relu(self.conv3(y) + self.shortcut(x))


class SDBackbone(nn.Module):
    """Stable Diffusion v1.x UNet + frozen VAE as MADM's segmentation backbone (see the module docstring).

    Build it with :meth:`from_pretrained` (I/O) or :meth:`from_config` (random weights, for
    :meth:`MadmModel.load <madm_train.models.madm_model.MadmModel.load>`); the constructor only assembles modules.

    Args:
        unet: SD-1.x ``UNet2DConditionModel``; fine-tuned except ``conv_norm_out``/``conv_out``.
        vae: ``AutoencoderKL``; frozen.
        scheduler: ``DDPMScheduler``; only ``add_noise`` is used.
        empty_prompt: Cached CLIP embedding of "", 1×77×768 for SD-1.x.
        input_size: Side length every input is bilinearly resized to (MADM: 512). ``None`` keeps the
            input size, which must then be a multiple of 64 (the ×8 VAE and the UNet's three
            down-samplings); the tiny preset uses this.
        tap_indices: Up-block sub-layers whose outputs are features, counted over the resnet
            (+attention) sub-layers of all up-blocks (SD-1.x: 12, three per block). MADM: 5, 8, 11.
            At most one per up-block; a tap of up-block b is named ``s<log2 stride>``.
        projection_dims: Output widths of the projections for s0 and the taps in increasing stride
            order (MADM: 128, 512, 512, 512).
        bottleneck_channels: Bottleneck width inside each projection (MADM: 128).
        norm_groups: GroupNorm groups in the projections (MADM: 32); must divide the widths.
        noise_seed: Seed of the shared noise ε (1×4×64×64, bicubically resized to other latent
            sizes) used when ``forward`` gets no ``noise`` (MADM: 42).
    """

    def __init__(
        self,
        unet: UNet2DConditionModel,
        vae: AutoencoderKL,
        scheduler: DDPMScheduler,
        empty_prompt: torch.Tensor,
        *,
        input_size: int | None = 512,
        tap_indices: Sequence[int] = (5, 8, 11),
        projection_dims: Sequence[int] = (128, 512, 512, 512),
        bottleneck_channels: int = 128,
        norm_groups: int = 32,
        noise_seed: int = 42,
    ) -> None:
        super().__init__()
        sub_layers = self._up_sub_layers(unet)
        taps = [int(i) for i in tap_indices]
        bad = [i for i in taps if not 0 <= i < len(sub_layers)]
        if not taps or bad:
            raise ConfigError(
                f"tap_indices {list(tap_indices)} must be non-empty indices 0…{len(sub_layers) - 1} of the UNet's "
                f"{len(sub_layers)} up-block sub-layers (MADM uses 5, 8, 11)"
            )
        blocks = [sub_layers[i][0] for i in taps]
        if len(set(blocks)) != len(blocks):
            raise ConfigError(
                f"tap_indices {taps} take two sub-layers of one up-block; use at most one per block (MADM: 5, 8, 11)"
            )
        if len(projection_dims) != len(taps) + 1:
            raise ConfigError(
                f"projection_dims {list(projection_dims)} needs {len(taps) + 1} widths: s0 and one per tap {taps}"
            )
        if input_size is not None and (input_size <= 0 or input_size % 64):
            raise ConfigError(f"input_size {input_size} must be a positive multiple of 64 (MADM: 512), or None")
        widths = [int(bottleneck_channels), *(int(d) for d in projection_dims)]
        if norm_groups <= 0 or any(w <= 0 or w % norm_groups for w in widths):
            raise ConfigError(
                f"norm_groups {norm_groups} must divide bottleneck_channels {bottleneck_channels} and "
                f"projection_dims {list(projection_dims)}"
            )
        self.unet = unet
        self.vae = vae
        self.scheduler = scheduler
        self.input_size = input_size
        self.tap_indices = tuple(sorted(taps, reverse=True))  # increasing stride: 11, 8, 5
        self.projection_dims = tuple(int(d) for d in projection_dims)
        self.bottleneck_channels = int(bottleneck_channels)
        self.norm_groups = int(norm_groups)
        self.noise_seed = int(noise_seed)
        self.lora_adapters: dict[str, dict[str, float]] = {}
        self.active_adapter: str | None = None

        vae.requires_grad_(False)
        for name in FROZEN_UNET_MODULES:
            getattr(unet, name).requires_grad_(False)
        self.prompt = PromptConditioning(empty_prompt, unet.time_embedding.linear_2.out_features)

        num_up = len(unet.up_blocks)
        up_channels = list(reversed(unet.config.block_out_channels))
        self.tap_names = {i: f"s{3 + num_up - 1 - sub_layers[i][0]}" for i in self.tap_indices}
        in_channels = {"s0": vae.config.out_channels}
        in_channels.update({self.tap_names[i]: up_channels[sub_layers[i][0]] for i in self.tap_indices})
        self.projections = nn.ModuleDict(
            {
                key: Bottleneck(cin, cout, self.bottleneck_channels, self.norm_groups)
                for (key, cin), cout in zip(in_channels.items(), self.projection_dims)
            }
        )
        generator = torch.Generator(device="cpu").manual_seed(self.noise_seed)
        noise = torch.randn((1, vae.config.latent_channels, 64, 64), generator=generator, device="cpu")
        self.register_buffer("shared_noise", noise.to(empty_prompt.dtype), persistent=False)

        # Hooks: the tap outputs are collected per call (None outside a forward, so the re-runs of
        # checkpointed sub-layers during backward store nothing), the time offset is added to the
        # time embedding's output (diffusers has no argument for an additive offset).
        self._tap_store: dict[int, torch.Tensor] | None = None
        for index in self.tap_indices:
            sub_layers[index][1].register_forward_hook(self._tap_hook(index))
        unet.time_embedding.register_forward_hook(self._time_offset_hook)

    # -- construction ---------------------------------------------------------------------------

    @staticmethod
    def _up_sub_layers(unet: UNet2DConditionModel) -> list[tuple[int, nn.Module]]:
        """(up-block index, module) per sub-layer: the attention after resnet j if the block has one, else the resnet."""
        layers = []
        for b, block in enumerate(unet.up_blocks):
            attentions = getattr(block, "attentions", None)
            for j, resnet in enumerate(block.resnets):
                layers.append((b, attentions[j] if attentions is not None else resnet))
        return layers

    def _tap_hook(self, index: int) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if self._tap_store is not None:
                self._tap_store[index] = output[0] if isinstance(output, tuple) else getattr(output, "sample", output)

        return hook

    def _time_offset_hook(self, module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output + self.prompt.time_embedding_offset().to(output.dtype)

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype = torch.float32,
        sd_version: SDVersion | None = None,
        config_dir: str | Path | None = None,
        input_size: int | None = 512,
        tap_indices: Sequence[int] = (5, 8, 11),
        projection_dims: Sequence[int] = (128, 512, 512, 512),
        bottleneck_channels: int = 128,
        norm_groups: int = 32,
        noise_seed: int = 42,
    ) -> SDBackbone:
        """Load SD v1.x/v2.x from a local diffusers folder or a single ``.safetensors``/``.ckpt``; never downloads.

        Args:
            path: A diffusers folder with ``unet/``, ``vae/``, ``scheduler/`` and either
                ``text_encoder/`` + ``tokenizer/`` or a cached ``empty_prompt.safetensors`` (what
                :meth:`save_pretrained` writes); or one original-layout checkpoint file holding UNet,
                VAE and CLIP text encoder, which is all a single file needs (configs and the
                empty prompt's token ids are bundled; ``.ckpt`` is read with ``weights_only=True``).
            dtype: Weight dtype (float32 unless the caller chooses otherwise).
            sd_version: Single file only: ``"v1"``, ``"v2"`` (768², v-prediction) or ``"v2-base"``
                (512², ε) instead of the version read off the weights; SD 2.1-base files need it.
            config_dir: Single file only: a folder of component configs laid out like
                ``madm_train/models/sd_configs/v1``, for architectures other than SD v1.x/v2.x.
            input_size: As in the constructor (MADM's values by default, here and below).
            tap_indices: As in the constructor.
            projection_dims: As in the constructor.
            bottleneck_channels: As in the constructor.
            norm_groups: As in the constructor.
            noise_seed: As in the constructor.
        """
        unet, vae, scheduler, empty = load_stable_diffusion(path, dtype=dtype, sd_version=sd_version, config_dir=config_dir)
        return cls(
            unet,
            vae,
            scheduler,
            empty.to(dtype),
            input_size=input_size,
            tap_indices=tap_indices,
            projection_dims=projection_dims,
            bottleneck_channels=bottleneck_channels,
            norm_groups=norm_groups,
            noise_seed=noise_seed,
        )

    def config(self) -> dict[str, Any]:
        """Everything :meth:`from_config` needs to rebuild this network (JSON-serialisable)."""
        return {
            "unet": json.loads(self.unet.to_json_string()),
            "vae": json.loads(self.vae.to_json_string()),
            "scheduler": json.loads(self.scheduler.to_json_string()),
            "empty_prompt_shape": list(self.prompt.empty_prompt.shape),
            "input_size": self.input_size,
            "tap_indices": sorted(self.tap_indices),
            "projection_dims": list(self.projection_dims),
            "bottleneck_channels": self.bottleneck_channels,
            "norm_groups": self.norm_groups,
            "noise_seed": self.noise_seed,
            "lora_adapters": {name: dict(v) for name, v in self.lora_adapters.items()},
            "active_adapter": self.active_adapter,
        }

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], *, dtype: torch.dtype = torch.float32, empty_weights: bool = False
    ) -> SDBackbone:
        """Rebuild the architecture described by :meth:`config` with random weights.

        With ``empty_weights`` the weights are left on the meta device, to be filled by
        ``load_state_dict(..., assign=True)`` (what :meth:`MadmModel.load` does).
        """
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel

        known = {
            "unet", "vae", "scheduler", "empty_prompt_shape", "input_size", "tap_indices", "projection_dims",
            "bottleneck_channels", "norm_groups", "noise_seed", "lora_adapters", "active_adapter",
        }  # fmt: skip
        unknown, missing = sorted(set(config) - known), sorted(known - set(config))
        if unknown or missing:
            raise ConfigError(f"backbone config: unknown keys {unknown}, missing keys {missing}")
        scheduler = DDPMScheduler.from_config(config["scheduler"])
        empty = torch.zeros(config["empty_prompt_shape"], dtype=dtype)
        with torch.device("meta") if empty_weights else nullcontext():
            unet = UNet2DConditionModel.from_config(config["unet"])
            vae = AutoencoderKL.from_config(config["vae"])
            if dtype != torch.float32:
                unet, vae = unet.to(dtype), vae.to(dtype)
            backbone = cls(
                unet,
                vae,
                scheduler,
                empty,
                input_size=config["input_size"],
                tap_indices=config["tap_indices"],
                projection_dims=config["projection_dims"],
                bottleneck_channels=config["bottleneck_channels"],
                norm_groups=config["norm_groups"],
                noise_seed=config["noise_seed"],
            )
            for name, lora in config["lora_adapters"].items():
                backbone.add_lora(name, rank=int(lora["rank"]), alpha=lora["alpha"])
        if config["active_adapter"] is not None:
            backbone.set_adapter(config["active_adapter"])
        return backbone

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``unet/``, ``vae/``, ``scheduler/`` and the cached ``empty_prompt.safetensors`` to ``path`` (atomically).

        This is the Stable Diffusion part only, in the folder format :meth:`from_pretrained` reads:
        the text encoder is not written (its one result, the empty-prompt embedding, is). Learned
        prompt, projections and LoRA adapters belong to the whole model: save it with
        :meth:`MadmModel.save <madm_train.models.madm_model.MadmModel.save>`.
        """
        from safetensors.torch import save_file

        if self.lora_adapters:
            raise ConfigError(
                f"save_pretrained writes plain Stable Diffusion weights, but LoRA adapters {sorted(self.lora_adapters)} "
                "are attached; save the whole model with MadmModel.save instead"
            )
        path = Path(path)
        with atomic_folder(path) as temp:
            self.unet.save_pretrained(temp / "unet")
            self.vae.save_pretrained(temp / "vae")
            self.scheduler.save_pretrained(temp / "scheduler")
            save_file({"embedding": self.prompt.empty_prompt.detach().contiguous().cpu()}, str(temp / EMPTY_PROMPT_FILE))
        return path

    # -- training switches ------------------------------------------------------------------------

    def prompt_parameters(self) -> dict[str, nn.Parameter]:
        """The learned prompt, its gates and the time offset (the parts with an EMA copy), by name."""
        return {f"prompt.{name}": p for name, p in self.prompt.named_parameters()}

    def enable_gradient_checkpointing(self, flag: bool = True) -> None:
        """Recompute UNet block activations in backward (diffusers' checkpointing); same results, less memory."""
        if flag:
            self.unet.enable_gradient_checkpointing()
        else:
            self.unet.disable_gradient_checkpointing()

    def add_lora(self, adapter_name: str, rank: int, alpha: float) -> None:
        """Attach a peft LoRA adapter named ``adapter_name`` to the UNet's attention projections and activate it.

        Targets ``to_q``, ``to_k``, ``to_v``, ``to_out.0`` (128 projections in SD-1.x) with Gaussian
        initialisation of A and zeros in B, so a new adapter leaves the output unchanged. One adapter
        per target modality; switch with :meth:`set_adapter`.
        """
        from madm_train.models.lora import attach_lora

        attach_lora(self.unet, adapter_name, rank, alpha, self.lora_adapters)
        self.lora_adapters[adapter_name] = {"rank": int(rank), "alpha": alpha}
        self.active_adapter = adapter_name

    def set_adapter(self, name: str) -> None:
        """Make the LoRA adapter ``name`` the active one (the others stay attached but unused)."""
        if name not in self.lora_adapters:
            raise ConfigError(f"no LoRA adapter {name!r}; adapters: {sorted(self.lora_adapters)} (add one with add_lora)")
        self.unet.set_adapter(name)
        self.active_adapter = name

    def trainable_parameters(self, mode: TrainMode) -> dict[str, nn.Parameter]:
        """Set ``requires_grad`` for ``mode`` and return the trainable parameters by name.

        ``full`` (MADM's released setting, spec §1.7): every UNet weight except ``conv_norm_out`` and
        ``conv_out``, the projections and the prompt/time parameters; LoRA weights stay frozen.
        ``lora``: only the active adapter's LoRA weights in the UNet, plus projections and prompt.
        The VAE is frozen in both (the text encoder is gone after loading).
        """
        if mode not in ("full", "lora"):
            raise ConfigError(f"training mode {mode!r} is not one of 'full', 'lora'")
        if mode == "lora" and self.active_adapter is None:
            raise ConfigError("training mode 'lora' needs a LoRA adapter: call add_lora(name, rank, alpha) first")
        trainable: dict[str, nn.Parameter] = {}
        for name, parameter in self.named_parameters():
            parts = name.split(".")
            if parts[0] == "vae":
                train = False
            elif parts[0] == "unet":
                lora_at = next((k for k, p in enumerate(parts) if p in ("lora_A", "lora_B")), None)
                if lora_at is not None:
                    train = mode == "lora" and parts[lora_at + 1] == self.active_adapter
                else:
                    train = mode == "full" and parts[1] not in FROZEN_UNET_MODULES
            else:
                train = True
            parameter.requires_grad_(train)
            if train:
                trainable[name] = parameter
        return trainable

    # -- forward ------------------------------------------------------------------------------------

    @property
    def feature_channels(self) -> dict[str, int]:
        """Widths of :attr:`BackboneOutput.features` in head order (the head's ``in_channels``)."""
        return {key: dim for key, dim in zip(self.projections.keys(), self.projection_dims)}

    @torch.no_grad()
    def encode(self, images01: torch.Tensor) -> torch.Tensor:
        """VAE posterior mean × scaling factor of images in [0, 1] (B×3×H×W → B×4×H/8×W/8), no grad, no resize."""
        x = images01.to(self.vae.dtype) * 2 - 1
        latents = self.vae.encode(x).latent_dist.mean * self.vae.config.scaling_factor
        return latents.to(self.unet.dtype)

    @torch.no_grad()
    def _decode_raw(self, latents: torch.Tensor) -> torch.Tensor:
        # Frozen decoder under no_grad (spec §4.4): nothing flows back from the head's s0 into the UNet.
        z = latents.to(self.vae.dtype) / self.vae.config.scaling_factor
        return self.vae.decode(z).sample.to(self.unet.dtype)

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Frozen VAE decoding of latents to images in [0, 1] (clipped); no grad (spec §4.4)."""
        return ((self._decode_raw(latents) + 1) / 2).clamp(0, 1)

    def shared_noise_like(self, latents: torch.Tensor) -> torch.Tensor:
        """The fixed seed-``noise_seed`` noise, bicubically resized to the latent size and broadcast over the batch."""
        noise = self.shared_noise
        if noise.shape[-2:] != latents.shape[-2:]:
            noise = F.interpolate(noise, size=latents.shape[-2:], mode="bicubic", align_corners=False)
        return noise.to(latents.dtype).expand(latents.shape[0], -1, -1, -1)

    def run_unet(self, latents: torch.Tensor, timesteps: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        """UNet pass with MADM's conditioning; returns the raw taps by sub-layer index and the output o.

        ``latents`` are passed as they are (already noised); for SD-1.4 with 64×64 latents the taps are
        5 → 1280×16×16, 8 → 640×32×32, 11 → 320×64×64.
        """
        cond = self.prompt.encoder_hidden_states(latents.shape[0]).to(self.unet.dtype)
        self._tap_store = {}
        try:
            output = self.unet(latents, timesteps, encoder_hidden_states=cond).sample
            taps = self._tap_store
        finally:
            self._tap_store = None
        return taps, output

    def forward(
        self,
        images01: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> BackboneOutput:
        """Backbone pass (module docstring steps 1–6).

        Args:
            images01: B×3×H×W float in [0, 1] (``madm_ros.preprocessing`` output).
            timesteps: B diffusion timesteps (integers in [0, num_train_timesteps)); ``None`` is t = 0,
                the student's and evaluation's setting. DPLG passes its k for the teacher.
            noise: ε for ``add_noise``, shaped like the latent; ``None`` is the shared seed-42 noise.
        """
        x = self._check_images(images01)
        if self.input_size is not None and tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        latents = self.encode(x)
        batch = latents.shape[0]
        if timesteps is None:
            timesteps = torch.zeros(batch, dtype=torch.long, device=latents.device)
        self._check_timesteps(timesteps, batch)
        if noise is None:
            noise = self.shared_noise_like(latents)
        elif noise.shape != latents.shape:
            raise InputError(
                f"noise has shape {tuple(noise.shape)}, the latent {tuple(latents.shape)}; pass one of that shape or None"
            )
        noisy = self.scheduler.add_noise(latents, noise.to(latents.dtype), timesteps)
        taps, output = self.run_unet(noisy, timesteps)
        decoded = self._decode_raw(output)
        features = {"s0": self.projections["s0"](decoded)}
        for index in self.tap_indices:
            key = self.tap_names[index]
            features[key] = self.projections[key](taps[index])
        return BackboneOutput(features, output, latents, ((decoded + 1) / 2).clamp(0, 1))

    def _check_images(self, images01: torch.Tensor) -> torch.Tensor:
        if images01.ndim != 4 or images01.shape[1] != 3 or not images01.is_floating_point():
            raise InputError(
                f"backbone input must be float B×3×H×W in [0, 1], got {images01.dtype} {tuple(images01.shape)}; "
                "use madm_ros.preprocessing (single channels are repeated to three)"
            )
        if self.input_size is None and (images01.shape[-2] % 64 or images01.shape[-1] % 64):
            raise InputError(
                f"input {images01.shape[-2]}×{images01.shape[-1]} is not a multiple of 64 and input_size is None; "
                "resize or crop it (MADM: 512×512) or build the backbone with input_size=512"
            )
        return images01

    def _check_timesteps(self, timesteps: torch.Tensor, batch: int) -> None:
        steps = self.scheduler.config.num_train_timesteps
        if timesteps.shape != (batch,) or timesteps.is_floating_point():
            raise InputError(
                f"timesteps must be an integer tensor of shape ({batch},), got {timesteps.dtype} {tuple(timesteps.shape)}"
            )
        if bool((timesteps < 0).any()) or bool((timesteps >= steps).any()):
            raise InputError(f"timesteps {timesteps.tolist()} must lie in [0, {steps})")

