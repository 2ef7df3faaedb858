"""The ``--tiny`` preset: a Stable-Diffusion-v1-shaped model small enough for tests and CPU runs.

:func:`build_tiny_sd` writes a diffusers folder (``unet/``, ``vae/``, ``scheduler/``,
``text_encoder/``, ``tokenizer/``) built from the *real* classes — ``UNet2DConditionModel``,
``AutoencoderKL``, ``DDPMScheduler``, ``CLIPTextModel``, ``CLIPTokenizer`` — with SD-1.x's block
structure and random weights, so every code path that loads real Stable Diffusion loads it too.
What is kept from SD-1.x and why:

- UNet: four down blocks (three with cross-attention), four up blocks with three
  resnet(+attention) sub-layers each (``layers_per_block=2``), so MADM's tap indices 5, 8, 11 exist
  and sit at strides 32, 16, 8 exactly as in SD-1.4. Channels (32, 64, 64, 64) instead of
  (320, 640, 1280, 1280); cross-attention width 32 instead of 768.
- VAE: four blocks, i.e. ×8 down-sampling, 4 latent channels, ``scaling_factor`` 0.18215.
- Scheduler: 1000 steps, scaled-linear betas 0.00085 → 0.012 (SD-1.x's values).
- Text encoder: 2-layer CLIP with a 77-token context; the tokenizer's vocabulary is generated here
  (the 256 byte symbols, their end-of-word forms and the two special tokens, in CLIP's order, so
  ``!`` is id 0), so nothing is downloaded. Byte symbols alone spend one token per letter, so a
  sentence longer than 75 characters would not fit; ``words`` adds BPE merges that make each given
  word one token (a vocabulary "trained" on exactly those words), which is how DIFF's class
  prompts fit the tiny context.

The folder also holds ``empty_prompt_tokens.json`` (the token ids of "" for its tokenizer), which
makes it a config folder in the layout of ``madm_train/models/sd_configs/v1`` as well.
:func:`write_single_file` turns it into one original-layout (LDM) ``.safetensors`` file, the form in
which SD checkpoints are distributed (text encoder in SD 1.x's CLIP or SD 2.x's OpenCLIP layout), so
the single-file loading path is tested with the same real code; such a file loads with
``config_dir=`` this folder. :func:`build_tiny_model` adds small projections and head (the ``--tiny``
architecture preset for CPU runs).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

    from madm_train.models.madm_model import MadmModel

__all__ = [
    "TINY_BACKBONE_OPTIONS",
    "TINY_BOTTLENECK_CHANNELS",
    "TINY_EMBED_DIM",
    "TINY_NORM_GROUPS",
    "TINY_PROJECTION_DIMS",
    "build_tiny_model",
    "build_tiny_sd",
    "write_single_file",
]

TINY_PROJECTION_DIMS: tuple[int, int, int, int] = (16, 32, 32, 32)
"""Projection widths of the tiny preset for (s0, s3, s4, s5); MADM uses (128, 512, 512, 512)."""
TINY_BOTTLENECK_CHANNELS = 16
"""Bottleneck width inside each tiny projection; MADM uses 128."""
TINY_NORM_GROUPS = 8
"""GroupNorm groups of the tiny projections; MADM uses 32."""
TINY_EMBED_DIM = 32
"""DAFormer head width of the tiny preset (embeddings, ASPP branches); MADM uses 256."""
TINY_BACKBONE_OPTIONS = {"projection_dims": TINY_PROJECTION_DIMS, "bottleneck_channels": TINY_BOTTLENECK_CHANNELS,
                         "norm_groups": TINY_NORM_GROUPS}
"""``SDBackbone.from_pretrained`` keyword arguments of the tiny preset's projections."""

_CROSS_ATTENTION_DIM = 32
_CONTEXT_LENGTH = 77


def _byte_symbols() -> list[str]:
    """The 256 printable symbols byte-level BPE uses for the bytes 0–255 (GPT-2/CLIP's table)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def _word_merges(words: Sequence[str]) -> list[tuple[str, str]]:
    """BPE merges (in rank order) under which each lower-case letter word of ``words`` is one token.

    Each word is split as the merges so far split it (:func:`_bpe`); while it is in several pieces,
    a merge of its first two is appended. A word made whole keeps its tokenization when later
    merges are added: at every step one of its own, lower-ranked merges still applies.
    """
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in dict.fromkeys(w.lower() for w in words if w.isalpha()):
        while len(pieces := _bpe(word, ranks)) > 1:
            ranks[pieces[0], pieces[1]] = len(merges)
            merges.append((pieces[0], pieces[1]))
    return merges


def _bpe(word: str, ranks: dict[tuple[str, str], int]) -> list[str]:
    """CLIP's byte-pair encoding of one word: merge every occurrence of the lowest-ranked pair until none applies."""
    pieces = [*word[:-1], word[-1] + "</w>"]
    while len(pieces) > 1:
        pairs = [pair for pair in itertools.pairwise(pieces) if pair in ranks]
        if not pairs:
            break
        best = min(pairs, key=ranks.__getitem__)
        merged: list[str] = []
        i = 0
        while i < len(pieces):
            if i + 1 < len(pieces) and (pieces[i], pieces[i + 1]) == best:
                merged.append(pieces[i] + pieces[i + 1])
                i += 2
            else:
                merged.append(pieces[i])
                i += 1
        pieces = merged
    return pieces


def _write_tokenizer(folder: Path, words: Sequence[str] = ()) -> int:
    """Write a tiny CLIP tokenizer (padding with ``<|endoftext|>``, as SD 1.x's) to ``folder``; returns its vocabulary size."""
    from transformers import CLIPTokenizer

    symbols = _byte_symbols()
    merges = _word_merges(words)
    tokens = [*symbols, *(s + "</w>" for s in symbols), *(a + b for a, b in merges), "<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(tokens)}
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (raw / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8")
    tokenizer = CLIPTokenizer(vocab=str(raw / "vocab.json"), merges=str(raw / "merges.txt"), model_max_length=_CONTEXT_LENGTH)
    tokenizer.save_pretrained(folder)
    for file in raw.iterdir():
        file.unlink()
    raw.rmdir()
    return len(vocab)


def build_tiny_sd(path: str | Path, *, seed: int = 0, words: Sequence[str] = ()) -> Path:
    """Write a tiny SD-1.x-shaped diffusers folder with random weights to ``path``; returns ``path``.

    Args:
        path: Folder to create (may exist; its SD sub-folders are overwritten).
        seed: Seed of the random weights; the same seed (and ``words``) gives the same files.
        words: Words the tokenizer encodes as one token each (letters only; others are ignored).
    """
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_tokenizer(folder / "tokenizer", words)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=64,
        in_channels=4,
        out_channels=4,
        layers_per_block=2,
        block_out_channels=(32, 64, 64, 64),
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=_CROSS_ATTENTION_DIM,
        attention_head_dim=4,
        norm_num_groups=16,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 16, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=512,
        scaling_factor=0.18215,
    )
    scheduler = DDPMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="epsilon",
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=_CROSS_ATTENTION_DIM,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=_CONTEXT_LENGTH,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    scheduler.save_pretrained(folder / "scheduler")
    text_encoder.save_pretrained(folder / "text_encoder")
    tokens = {"bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1, "pad_token_id": vocab_size - 1,
              "model_max_length": _CONTEXT_LENGTH}  # fmt: skip
    (folder / "empty_prompt_tokens.json").write_text(json.dumps(tokens, indent=2) + "\n", encoding="utf-8")
    return folder


_UNET_RESNET_TO_LDM = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION_TO_LDM = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _unet_key_to_ldm(key: str, *, layers_per_block: int, up_block_has_attention: list[bool]) -> str:
    """Map one diffusers UNet key to its original-layout name (inverse of diffusers' converter)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    if key in top:
        return top[key]
    parts = key.split(".")
    per = layers_per_block + 1

    def resnet(rest: list[str]) -> str:
        return ".".join([_UNET_RESNET_TO_LDM.get(rest[0], rest[0]), *rest[1:]])

    if parts[0] in ("down_blocks", "up_blocks"):
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        if parts[0] == "down_blocks":
            if kind == "downsamplers":  # "downsamplers.0.conv.weight" → "input_blocks.N.0.op.weight"
                return f"input_blocks.{(block + 1) * per}.0.op.{rest[-1]}"
            slot = block * per + index + 1
            prefix = "input_blocks"
        else:
            if kind == "upsamplers":
                where = 2 if up_block_has_attention[block] else 1
                return f"output_blocks.{block * per + layers_per_block}.{where}.conv.{rest[-1]}"
            slot = block * per + index
            prefix = "output_blocks"
        if kind == "resnets":
            return f"{prefix}.{slot}.0.{resnet(rest)}"
        return f"{prefix}.{slot}.1.{'.'.join(rest)}"
    if parts[0] == "mid_block":
        kind, index, rest = parts[1], int(parts[2]), parts[3:]
        if kind == "resnets":
            return f"middle_block.{2 * index}.{resnet(rest)}"
        return f"middle_block.1.{'.'.join(rest)}"
    raise ValueError(f"no original-layout name known for UNet parameter {key!r}")


def _vae_key_to_ldm(key: str, *, num_up_blocks: int) -> str:
    """Map one diffusers VAE key to its original-layout name (inverse of diffusers' converter)."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    top = DIFFUSERS_TO_LDM_MAPPING["vae"]
    if key in top:
        return top[key]
    side, *parts = key.split(".")
    if parts[0] in ("down_blocks", "up_blocks"):
        block, kind, rest = int(parts[1]), parts[2], parts[3:]
        name, index = ("down", block) if parts[0] == "down_blocks" else ("up", num_up_blocks - 1 - block)
        if kind == "resnets":
            rest = [rest[0], *[("nin_shortcut" if p == "conv_shortcut" else p) for p in rest[1:]]]
            return f"{side}.{name}.{index}.block.{'.'.join(rest)}"
        sampler = "downsample" if kind == "downsamplers" else "upsample"
        return f"{side}.{name}.{index}.{sampler}.{'.'.join(rest[1:])}"
    if parts[0] == "mid_block":
        kind, index, rest = parts[1], int(parts[2]), ".".join(parts[3:])
        if kind == "resnets":
            return f"{side}.mid.block_{index + 1}.{rest.replace('conv_shortcut', 'nin_shortcut')}"
        module, leaf = rest.rsplit(".", 1)
        return f"{side}.mid.attn_1.{_VAE_ATTENTION_TO_LDM[module]}.{leaf}"
    raise ValueError(f"no original-layout name known for VAE parameter {key!r}")


def _open_clip_text_encoder_to_ldm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModel weights in SD 2.x's OpenCLIP layout (inverse of diffusers' ``convert_open_clip_checkpoint``).

    Each layer's q/k/v projections become one ``attn.in_proj_weight``/``in_proj_bias``; the
    ``text_projection`` SD 2.x files carry (width × width, unused by the UNet) is added as zeros.
    """
    import torch
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    mapping = DIFFUSERS_TO_LDM_MAPPING["openclip"]
    ldm: dict[str, torch.Tensor] = {}
    projections: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key if key.startswith("text_model.") else "text_model." + key
        if key in mapping["layers"]:
            ldm[mapping["layers"][key]] = value
            continue
        for diffusers_part, ldm_part in mapping["transformer"].items():
            key = key.replace(diffusers_part, ldm_part)
        if "_proj." in key and ".attn." in key and ".out_proj." not in key:  # resblocks.N.attn.q_proj.weight
            prefix, which, kind = key.rsplit(".", 2)
            projections.setdefault(f"transformer.{prefix}.in_proj_{kind}", {})[which] = value
        else:
            ldm[f"transformer.{key}"] = value
    for key, parts in projections.items():
        ldm[key] = torch.cat([parts["q_proj"], parts["k_proj"], parts["v_proj"]])
    width = ldm["token_embedding.weight"].shape[1]
    ldm["text_projection"] = torch.zeros(width, width)
    return ldm


def write_single_file(
    folder: str | Path, file: str | Path, *, text_encoder_layout: Literal["clip", "open_clip"] = "clip"
) -> Path:
    """Write the UNet, VAE and text encoder of a diffusers SD folder as one original-layout ``.safetensors``.

    Keys follow the released checkpoints (``model.diffusion_model.*``, ``first_stage_model.*``; VAE
    attention weights as 1×1 convolutions), i.e. what diffusers' converters turn back, and the text
    encoder is stored as SD 1.x stores CLIP (``cond_stage_model.transformer.text_model.*``) or, with
    ``text_encoder_layout="open_clip"``, as SD 2.x stores OpenCLIP (``cond_stage_model.model.*``,
    every layer of the folder's encoder). Configs, scheduler and tokenizer are not part of such a
    file: a tiny one loads with ``config_dir=`` (a folder like ``folder``).
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextModel

    folder = Path(folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True)
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(folder / "text_encoder", local_files_only=True)
    has_attention = ["CrossAttn" in name for name in unet.config.up_block_types]
    state: dict[str, torch.Tensor] = {}
    for key, value in unet.state_dict().items():
        name = _unet_key_to_ldm(key, layers_per_block=unet.config.layers_per_block, up_block_has_attention=has_attention)
        state["model.diffusion_model." + name] = value
    for key, value in vae.state_dict().items():
        name = _vae_key_to_ldm(key, num_up_blocks=len(vae.config.up_block_types))
        if ".mid.attn_1." in name and name.endswith("weight") and value.ndim == 2:
            value = value[:, :, None, None]  # the original VAE's attention projections are 1×1 convolutions
        state["first_stage_model." + name] = value
    if text_encoder_layout == "open_clip":
        for key, value in _open_clip_text_encoder_to_ldm(text_encoder.state_dict()).items():
            state["cond_stage_model.model." + key] = value
    else:
        text_prefix = "cond_stage_model.transformer." + ("" if hasattr(text_encoder, "text_model") else "text_model.")
        for key, value in text_encoder.state_dict().items():
            state[text_prefix + key] = value
    file = Path(file)
    save_file({k: v.contiguous() for k, v in state.items()}, str(file))
    return file


def build_tiny_model(folder: str | Path, num_classes: int, *, dtype: torch.dtype | None = None,
                     input_size: int | None = None, noise_seed: int = 42) -> MadmModel:
    """Load the tiny SD folder at ``folder`` and add the tiny projections and DAFormer head.

    Same classes as the full model; only widths differ (see the ``TINY_*`` constants). By default the
    backbone keeps the input size (``input_size=None``: no resize to 512), so 64×64 or 128×128 inputs
    run in well under a second on a CPU; ``noise_seed`` seeds the shared latent noise (as in SDBackbone).
    """
    import torch

    from madm_train.models.head import DAFormerHead
    from madm_train.models.madm_model import MadmModel
    from madm_train.models.sd_backbone import SDBackbone

    backbone = SDBackbone.from_pretrained(
        folder,
        dtype=dtype or torch.float32,
        input_size=input_size,
        noise_seed=noise_seed,
        **TINY_BACKBONE_OPTIONS,
    )
    head = DAFormerHead(backbone.feature_channels, num_classes, embed_dim=TINY_EMBED_DIM)
    return MadmModel(backbone, head)
