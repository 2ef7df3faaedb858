"""Stable Diffusion v1.x / v2.x from local files: a diffusers folder or one checkpoint file, nothing downloaded.

:func:`load_stable_diffusion` returns the UNet, VAE, scheduler and the CLIP embedding of the empty
prompt (the text encoder is run once on the CPU and dropped; MADM needs nothing else from it):

- **diffusers folder**: ``unet/``, ``vae/``, ``scheduler/`` and either ``text_encoder/`` +
  ``tokenizer/`` or a cached ``empty_prompt.safetensors`` (what ``SDBackbone.save_pretrained`` writes).
- **single file** in the original (LDM) layout, ``.safetensors`` or ``.ckpt``: it carries weights
  only, so the component configs come from this package (``sd_configs/<version>/``), the version is
  read off the weights (:func:`detect_version`) unless ``sd_version`` forces it, and the empty
  prompt's token ids are fixed numbers, so no tokenizer files are needed. ``config_dir`` replaces
  the bundled configs for other architectures (the tiny preset's single file, for one).
- :func:`load_text_encoder` keeps the text encoder, read the same way, with its tokenizer, for
  prompts other than "" (DIFF's class prompts); a single file has no tokenizer, so it takes a
  ``tokenizer=`` folder and checks that it gives the configs' empty-prompt token ids.
- A ``.ckpt`` is read with ``torch.load(weights_only=True)`` only. Lightning-era files also pickle
  training objects (e.g. ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`` as a key
  of ``callbacks``); they are refused with a :class:`~madm_ros.errors.ConfigError` that names the
  object and the fix, ``python -m madm_train convert-checkpoint IN.ckpt --out OUT.safetensors``
  (:func:`convert_checkpoint`), which keeps the tensors and runs nothing from the file.

Bundled configs, ``sd_configs/<version>/`` in the diffusers folder layout without weights
(``unet/config.json``, ``vae/config.json``, ``text_encoder/config.json``,
``scheduler/scheduler_config.json``) plus ``empty_prompt_tokens.json``:

======== ========================================= ================================
version  values from (Hugging Face hub repository) what it is
======== ========================================= ================================
v1       CompVis/stable-diffusion-v1-4             SD 1.x, 512², ε-prediction
v2       stabilityai/stable-diffusion-2-1          SD 2.x, 768², v-prediction
v2-base  stabilityai/stable-diffusion-2-1-base     SD 2.x, 512², ε-prediction
======== ========================================= ================================

The values are those of each repository's published config files, read from verbatim copies of
them in repositories duplicated from or saved out of these snapshots (``_name_or_path`` naming the
source snapshot); the provenance keys ``_diffusers_version``, ``_name_or_path`` and
``transformers_version`` are left out. What differs between the versions:

- UNet: v1 ``attention_head_dim`` 8, ``cross_attention_dim`` 768, convolutional attention
  projections; v2 ``attention_head_dim`` [5, 10, 20, 20], ``cross_attention_dim`` 1024,
  ``use_linear_projection`` true, ``upcast_attention`` true for 2-1 and false for 2-1-base,
  ``sample_size`` 96 (2-1) or 64 (v1, 2-1-base). Built on the meta device the UNets have
  859,520,964 (v1) and 865,910,724 (v2) parameters. The VAE is the same in all three (83,653,863
  parameters) but for ``sample_size``: 512 for v1, 768 for 2-1 and, as published, for 2-1-base too
  (unused here: the backbone resizes to its ``input_size``).
- Text encoder: v1 is CLIP ViT-L/14's text tower (12 layers, width 768, ``quick_gelu``;
  123,060,480 parameters); v2 is OpenCLIP ViT-H/14's as a ``CLIPTextModel`` with width 1024,
  16 heads, 4096 MLP, ``gelu`` and **23** layers (340,387,840 parameters). SD 2.x conditions on the
  *penultimate* of OpenCLIP's 24 layers followed by ``ln_final``
  (``FrozenOpenCLIPEmbedder(layer="penultimate")`` in Stability-AI/stablediffusion
  ``ldm/modules/encoders/modules.py``, used by its ``configs/stable-diffusion/v2-inference*.yaml``);
  a 23-layer ``CLIPTextModel``'s ``last_hidden_state`` (``final_layer_norm`` after layer 23) is
  exactly that, and diffusers' converter leaves resblock 23 out of the weights it loads.
- Scheduler: v1 ``PNDMScheduler``, 2-1 ``DDIMScheduler`` with ``prediction_type`` v_prediction,
  2-1-base ``PNDMScheduler`` with epsilon; all with the scaled-linear betas 0.00085 → 0.012 over
  1000 steps, which is what the backbone uses (``DDPMScheduler.add_noise``).
- Empty-prompt tokens: "" is ``<|startoftext|>`` (49406), ``<|endoftext|>`` (49407), then padding
  to 77. CLIP's vocabulary is the 256 byte symbols (``!`` first, id 0), their 256 end-of-word forms,
  48,894 merges, then those two special tokens (openai/CLIP's ``simple_tokenizer.py``, copied as
  mlfoundations/open_clip ``src/open_clip/tokenizer.py``). SD 1.x pads with ``<|endoftext|>``
  = 49407 (CompVis/stable-diffusion-v1-4 ``tokenizer/special_tokens_map.json`` and
  ``tokenizer_config.json``: ``"pad_token": "<|endoftext|>"``); SD 2.x pads with ``!`` = 0
  (stabilityai/stable-diffusion-2-1 and -2-1-base ``tokenizer/special_tokens_map.json``:
  ``"pad_token": "!"``, which is what ``open_clip.tokenize``, called by SD 2's
  ``FrozenOpenCLIPEmbedder``, does: it fills with zeros).

Version detection reuses diffusers' ``infer_diffusers_model_type`` (v2 when the first
cross-attention key width is 1024); 2-1 (v-prediction) and 2-1-base (ε) have the same keys and
shapes, and diffusers' own rule is kept: a ``.ckpt`` whose ``global_step`` is 875000 (the 2-base release)
is ε, any other SD 2.x file v-prediction. Pass ``sd_version="v2-base"`` for 2-1-base files.
"""

from __future__ import annotations

import json
import pickle
import re
import shlex
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

import torch
from torch import nn

from madm_ros.errors import ConfigError
from madm_train.models.owned_memory import own_memory

if TYPE_CHECKING:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

__all__ = [
    "CONFIGS_DIR",
    "CONFIG_FILES",
    "EMPTY_PROMPT_FILE",
    "SD_VERSIONS",
    "ConversionReport",
    "SDComponents",
    "SDModules",
    "SDVersion",
    "TextEncoder",
    "build_sd_modules",
    "bundled_config_dir",
    "convert_checkpoint",
    "detect_version",
    "empty_prompt_embedding",
    "empty_prompt_ids",
    "load_stable_diffusion",
    "load_text_encoder",
    "prompt_embedding",
]

SDVersion = Literal["v1", "v2", "v2-base"]
SD_VERSIONS: tuple[SDVersion, ...] = ("v1", "v2", "v2-base")
"""Versions with bundled configs: SD 1.x, SD 2.x 768² v-prediction, SD 2.x 512² ε-prediction."""
CONFIGS_DIR = Path(__file__).with_name("sd_configs")
"""Where the bundled component configs live, one folder per version."""
EMPTY_PROMPT_FILE = "empty_prompt.safetensors"
"""File in a saved backbone folder holding the cached empty-prompt CLIP embedding (key ``embedding``)."""
TOKENS_FILE = "empty_prompt_tokens.json"
"""File in a config folder with the token ids that make up "" (see :func:`empty_prompt_ids`)."""
CONFIG_FILES = ("unet/config.json", "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json",
                TOKENS_FILE)  # fmt: skip
"""What a config folder (bundled or ``config_dir``) holds."""
_V2_BASE_GLOBAL_STEP = 875000
"""``global_step`` of SD 2-base's ``512-base-ema.ckpt``: diffusers' only sign of an ε-prediction SD 2.x file."""
CONVERT_COMMAND = "python -m madm_train convert-checkpoint"
"""The command line that runs :func:`convert_checkpoint`."""


class SDComponents(NamedTuple):
    """What loading returns: the parts of Stable Diffusion the backbone keeps."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: DDPMScheduler
    empty_prompt: torch.Tensor
    """CLIP embedding of "" padded to the context length, float32, 1×77×768 (v1) or 1×77×1024 (v2)."""


class TextEncoder(NamedTuple):
    """The CLIP text encoder of a Stable Diffusion model and the tokenizer that feeds it (see :func:`load_text_encoder`)."""

    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer


class SDModules(NamedTuple):
    """Freshly built (random) Stable Diffusion modules, see :func:`build_sd_modules`."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    scheduler: DDPMScheduler
    text_encoder: CLIPTextModel


def bundled_config_dir(version: str) -> Path:
    """The package's config folder of SD ``version`` (one of :data:`SD_VERSIONS`)."""
    if version not in SD_VERSIONS:
        raise ConfigError(f"unknown Stable Diffusion version {version!r}; bundled configs exist for {list(SD_VERSIONS)}")
    return CONFIGS_DIR / version


def build_sd_modules(config_dir: str | Path) -> SDModules:
    """UNet, VAE, scheduler and text encoder with random weights, built from a config folder.

    ``config_dir`` is laid out like the bundled ones (``bundled_config_dir("v1")`` gives SD-1.4's
    architecture). Modules are built on the current default device: inside ``with
    torch.device("meta")`` nothing is allocated, which is how the shapes of the real sizes are checked.
    """
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    folder = _checked_config_dir(Path(config_dir))
    return SDModules(
        unet=UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet")),
        vae=AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae")),
        scheduler=DDPMScheduler.from_config(DDPMScheduler.load_config(folder / "scheduler")),
        text_encoder=CLIPTextModel(CLIPTextConfig.from_pretrained(folder / "text_encoder")),
    )


def empty_prompt_ids(*, bos_token_id: int, eos_token_id: int, pad_token_id: int, model_max_length: int) -> torch.Tensor:
    """Token ids of "" as a CLIP tokenizer pads it to ``model_max_length``: BOS, EOS, then padding (1×L, int64).

    The keyword names are those of ``empty_prompt_tokens.json``; the values for SD 1.x and 2.x and
    where they come from are in the module docstring.
    """
    if model_max_length < 2:
        raise ConfigError(f"model_max_length {model_max_length} must leave room for the start and end tokens (SD: 77)")
    ids = [bos_token_id, eos_token_id] + [pad_token_id] * (model_max_length - 2)
    return torch.tensor([ids], dtype=torch.long)


def empty_prompt_embedding(text_encoder: nn.Module, tokenizer: Any) -> torch.Tensor:
    """CLIP text embedding of "" after the final layer norm, float32 (1×77×768 for SD-1.x).

    ``tokenizer`` is a CLIP tokenizer, or the token ids of "" themselves (from :func:`empty_prompt_ids`).
    """
    if not isinstance(tokenizer, torch.Tensor):
        return prompt_embedding(text_encoder, tokenizer, "")
    with torch.no_grad():
        return text_encoder(tokenizer).last_hidden_state.float()


def prompt_embedding(text_encoder: nn.Module, tokenizer: Any, text: str) -> torch.Tensor:
    """CLIP text embedding of ``text`` as Stable Diffusion conditions on it, float32 (1×77×768 for SD-1.x).

    The text is padded to the tokenizer's full context and passed without an attention mask, as the
    SD pipelines (and DIFF's ``get_tokens_embedding``) do: the UNet attends to all 77 positions, the
    padding included. A text with more tokens than the context is refused, not cut, so a long class
    prompt cannot silently lose its end. ``tokenizer`` is a CLIP tokenizer.
    """
    length = len(tokenizer(text).input_ids)
    if length > tokenizer.model_max_length:
        raise ConfigError(
            f"prompt {text!r} is {length} tokens with its start and end tokens, more than the text encoder's context "
            f"of {tokenizer.model_max_length}; shorten it"
        )
    ids = tokenizer(text, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt")
    with torch.no_grad():
        return text_encoder(ids.input_ids).last_hidden_state.float()


def load_stable_diffusion(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    sd_version: SDVersion | None = None,
    config_dir: str | Path | None = None,
) -> SDComponents:
    """Load SD v1.x/v2.x from a local diffusers folder or one checkpoint file (see the module docstring).

    Args:
        path: A diffusers folder, or an original-layout ``.safetensors``/``.ckpt`` file.
        dtype: Weight dtype of UNet and VAE (the empty-prompt embedding is computed in float32).
        sd_version: For a single file: use the bundled configs of this version instead of the
            detected one (needed for SD 2.1-base files, which look like SD 2.1's).
        config_dir: For a single file: a folder laid out like ``sd_configs/v1`` whose configs
            describe the file, for architectures other than the bundled ones.
    """
    path = Path(path)
    _check_source_options(path, sd_version, config_dir)
    if path.is_dir():
        return _load_folder(path, dtype)
    if path.is_file():
        return _load_single_file(path, dtype=dtype, sd_version=sd_version, config_dir=config_dir)
    raise _not_found(path)


def load_text_encoder(
    path: str | Path,
    *,
    sd_version: SDVersion | None = None,
    config_dir: str | Path | None = None,
    tokenizer: str | Path | None = None,
) -> TextEncoder:
    """Load the CLIP text encoder and tokenizer of SD v1.x/v2.x from local files, float32 on the CPU.

    For text other than "" (DIFF's class prompts): :func:`load_stable_diffusion` keeps only the
    empty-prompt embedding, this keeps the encoder itself. It is read exactly as there: from a
    folder's ``text_encoder/``, or from a single file's ``cond_stage_model`` weights with the
    bundled (or ``config_dir``) config, so SD 2.x gives the 23-layer encoder whose last hidden state
    is the penultimate OpenCLIP layer SD conditions on. A single file holds no tokenizer: pass
    ``tokenizer``; it must tokenize "" into the ids that the configs' ``empty_prompt_tokens.json``
    name (which tells SD 1.x's from SD 2.x's padding). Nothing is downloaded.

    Args:
        path: A diffusers folder, or an original-layout ``.safetensors``/``.ckpt`` file (the
            ``path`` of :func:`load_stable_diffusion`).
        sd_version: For a single file, as in :func:`load_stable_diffusion`.
        config_dir: For a single file, as in :func:`load_stable_diffusion`.
        tokenizer: A local tokenizer folder (``vocab.json``, ``merges.txt``, ...), or a diffusers
            folder with ``tokenizer/``; required for a single file, replaces a folder's own.
    """
    path = Path(path)
    _check_source_options(path, sd_version, config_dir)
    if path.is_dir():
        if not (path / "text_encoder" / "config.json").is_file():
            raise ConfigError(
                f"{path} has no text_encoder/ (a saved backbone keeps only {EMPTY_PROMPT_FILE}), and text prompts need "
                "the text encoder: point to the Stable Diffusion folder or file the backbone was loaded from"
            )
        if tokenizer is None and not (path / "tokenizer").is_dir():
            raise ConfigError(f"{path} has no tokenizer/; pass tokenizer= a local tokenizer folder of the same model")
        tokens = _prompt_tokenizer(path / "tokenizer" if tokenizer is None else _tokenizer_folder(tokenizer))
        try:
            encoder = _read_folder_text_encoder(path)
        except (OSError, ValueError, KeyError, RuntimeError) as error:
            raise ConfigError(f"could not load the text encoder of {path}: {error}") from None
        _check_tokenizer(encoder, tokens, None, path)
        return TextEncoder(encoder.float().eval(), tokens)
    if not path.is_file():
        raise _not_found(path)
    if tokenizer is None:
        raise ConfigError(
            f"{path} is a single checkpoint file, which holds no tokenizer, and the conditional branch needs the tokenizer "
            "of the text encoder to turn its class prompts into tokens: pass tokenizer= a local tokenizer folder of the "
            "same model (the tokenizer/ of a diffusers copy, e.g. of CompVis/stable-diffusion-v1-4 for SD 1.x or "
            "stabilityai/stable-diffusion-2-1 for SD 2.x), or load from that diffusers folder; nothing is downloaded"
        )
    tokens = _prompt_tokenizer(_tokenizer_folder(tokenizer))
    checkpoint, global_step = _read_single_file(path)
    folder, described = _single_file_configs(checkpoint, global_step, sd_version, config_dir)
    expected_ids = _read_tokens(folder)
    encoder = _single_file_text_encoder(checkpoint, path, folder, described)
    del checkpoint
    _check_tokenizer(encoder, tokens, expected_ids, folder / TOKENS_FILE)
    return TextEncoder(encoder.float().eval(), tokens)


def _check_source_options(path: Path, sd_version: SDVersion | None, config_dir: str | Path | None) -> None:
    if sd_version is not None and config_dir is not None:
        raise ConfigError(f"pass sd_version ({sd_version!r}) or config_dir ({config_dir}), not both")
    if path.is_dir() and (sd_version is not None or config_dir is not None):
        raise ConfigError(
            f"sd_version and config_dir are only for single-file checkpoints; {path} is a folder with its own configs"
        )


def _not_found(path: Path) -> ConfigError:
    return ConfigError(
        f"Stable Diffusion weights {path} not found: pass a local diffusers folder (unet/, vae/, scheduler/, "
        "text_encoder/, tokenizer/) or one .safetensors/.ckpt file; nothing is downloaded"
    )


def detect_version(state_dict: Mapping[str, Any], global_step: int | None = None) -> SDVersion:
    """SD version of an original-layout state dict, from its keys and shapes (diffusers' own inference).

    ``global_step`` is the ``.ckpt``'s top-level value, if any; it only tells SD 2-base (ε) from the
    768² v-prediction models (see the module docstring). Raises ConfigError for other model types
    (SDXL, inpainting, upscaler, ...).
    """
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, is_clip_model, is_open_clip_model

    model_type = infer_diffusers_model_type(state_dict)
    if model_type == "v1" and is_clip_model(state_dict):
        return "v1"
    if model_type == "v2" and is_open_clip_model(state_dict):
        return "v2-base" if global_step == _V2_BASE_GLOBAL_STEP else "v2"
    text = "CLIP" if is_clip_model(state_dict) else "OpenCLIP" if is_open_clip_model(state_dict) else "none found"
    raise ConfigError(
        f"the weights look like diffusers model type {model_type!r} (text encoder: {text}), not SD v1.x "
        f"(CLIP, cross-attention width 768) or v2.x (OpenCLIP, width 1024); pass sd_version= one of "
        f"{list(SD_VERSIONS)} if it is one, or config_dir= a folder of its configs laid out like {CONFIGS_DIR / 'v1'}"
    )


# -- folder ---------------------------------------------------------------------------------------


def _missing_weights(folder: Path) -> bool:
    return not any((folder / name).is_file() for name in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"))


def _load_folder(path: Path, dtype: torch.dtype) -> SDComponents:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from safetensors.torch import load_file

    problems = []
    for sub, config in (("unet", "config.json"), ("vae", "config.json"), ("scheduler", "scheduler_config.json")):
        if not (path / sub / config).is_file():
            problems.append(f"{sub}/{config}")
        elif sub != "scheduler" and _missing_weights(path / sub):
            problems.append(f"{sub}/diffusion_pytorch_model.safetensors")
    has_cache = (path / EMPTY_PROMPT_FILE).is_file()
    has_text = (path / "text_encoder" / "config.json").is_file() and (path / "tokenizer").is_dir()
    if not has_cache and not has_text:
        problems.append(f"text_encoder/ + tokenizer/ (or a cached {EMPTY_PROMPT_FILE})")
    if problems:
        raise ConfigError(
            f"Stable Diffusion folder {path} is incomplete, missing: {', '.join(problems)}; "
            "point to a full diffusers SD-1.x folder (e.g. a local copy of CompVis/stable-diffusion-v1-4)"
        )
    try:
        unet = UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype, local_files_only=True)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype, local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(path, subfolder="scheduler", local_files_only=True)
        if has_cache:
            empty = load_file(str(path / EMPTY_PROMPT_FILE))["embedding"]
        else:
            tokenizer = _read_tokenizer(path / "tokenizer")
            text_encoder = _read_folder_text_encoder(path)
            empty = empty_prompt_embedding(text_encoder, tokenizer)
            del text_encoder  # used once; the embedding is all MADM needs from it
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ConfigError(f"could not load Stable Diffusion folder {path}: {error}") from None
    return SDComponents(own_memory(unet), own_memory(vae), scheduler, empty)


def _read_folder_text_encoder(path: Path) -> CLIPTextModel:
    """The text encoder of the diffusers folder ``path``, as ``from_pretrained`` gives it."""
    from transformers import CLIPTextModel

    return own_memory(CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True))


# -- tokenizer ------------------------------------------------------------------------------------


def _tokenizer_folder(tokenizer: str | Path) -> Path:
    """The tokenizer folder named by ``tokenizer=``: the folder itself, or the ``tokenizer/`` of a diffusers folder."""
    folder = Path(tokenizer)
    if (folder / "tokenizer").is_dir():
        return folder / "tokenizer"
    if not folder.is_dir():
        raise ConfigError(f"tokenizer folder {folder} not found; pass a local CLIP tokenizer folder (vocab.json, merges.txt)")
    return folder


def _read_tokenizer(folder: Path) -> CLIPTokenizer:
    """The CLIP tokenizer saved in ``folder``."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(folder, local_files_only=True)


def _prompt_tokenizer(folder: Path) -> CLIPTokenizer:
    """:func:`_read_tokenizer` for :func:`load_text_encoder`, whose errors name the folder and what it must hold."""
    try:
        return _read_tokenizer(folder)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"could not load a CLIP tokenizer from {folder} (it needs the vocab.json, merges.txt and tokenizer configs "
            f"that a saved CLIPTokenizer writes): {error}"
        ) from None


def _check_tokenizer(text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, empty_ids: torch.Tensor | None,
                     described: Path) -> None:  # fmt: skip
    """Refuse a tokenizer that does not feed ``text_encoder`` (vocabulary, context, the ids of "" if known)."""
    config = text_encoder.config
    if len(tokenizer) > config.vocab_size:
        raise ConfigError(
            f"the tokenizer has {len(tokenizer)} tokens, the text encoder embeds only {config.vocab_size}: "
            "they belong to different models; pass the tokenizer of this model"
        )
    if tokenizer.model_max_length != config.max_position_embeddings:
        raise ConfigError(
            f"the tokenizer pads to {tokenizer.model_max_length} tokens, the text encoder's context is "
            f"{config.max_position_embeddings} (SD: 77); pass the tokenizer of this model"
        )
    if empty_ids is not None:
        ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
        if not torch.equal(ids, empty_ids):
            raise ConfigError(
                f'the tokenizer turns "" into {ids[0, :4].tolist()}..., {described} says {empty_ids[0, :4].tolist()}... '
                '(SD 1.x pads with <|endoftext|>, SD 2.x with "!" = 0): it is the tokenizer of another model; pass the '
                "tokenizer of this one"
            )


# -- single file ----------------------------------------------------------------------------------


def _checked_config_dir(folder: Path) -> Path:
    missing = [name for name in CONFIG_FILES if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"config folder {folder} lacks {', '.join(missing)}; lay it out like {CONFIGS_DIR / 'v1'} "
            "(diffusers configs without weights, plus the token ids of the empty prompt)"
        )
    return folder


def _read_tokens(folder: Path) -> torch.Tensor:
    file = folder / TOKENS_FILE
    try:
        return empty_prompt_ids(**json.loads(file.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:
        raise ConfigError(
            f"{file} must be a JSON object with integer bos_token_id, eos_token_id, pad_token_id and "
            f"model_max_length (SD 1.x: 49406, 49407, 49407, 77): {error}"
        ) from None


_UNSAFE_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], int | None]:
    """State dict of a ``.safetensors``/``.ckpt`` (unwrapped from ``state_dict``) and the ``global_step`` if any."""
    from safetensors.torch import load_file

    try:
        if path.suffix == ".safetensors":
            return load_file(str(path)), None
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        text = str(error)
        found = _UNSAFE_GLOBAL.search(text)
        if found is None:  # a broken pickle (torch words it "Unsupported operand ..."), not a refused object
            detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()
            raise ConfigError(f"could not read checkpoint {path}: {detail[0] if detail else type(error).__name__}") from None
        raise ConfigError(
            f"{path} holds pickled Python objects besides tensors (first refused: {found.group(1)}), so torch.load("
            "weights_only=True) cannot read it, and unpickling anything else could run code from the file. "
            f"Convert it once into a tensors-only file, which runs nothing from it: {CONVERT_COMMAND} "
            f"{shlex.quote(str(path))} --out {shlex.quote(str(path.with_suffix('.safetensors')))}"
        ) from None
    except Exception as error:  # safetensors and torch.load raise many unrelated types for a broken file
        raise ConfigError(f"could not read checkpoint {path}: {error}") from None
    global_step = checkpoint.get("global_step") if isinstance(checkpoint, dict) else None
    while isinstance(checkpoint, dict) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict):
        raise ConfigError(f"could not read checkpoint {path}: it holds a {type(checkpoint).__name__}, not a state dict")
    return checkpoint, global_step if isinstance(global_step, int) else None


def _fill(module: nn.Module, state: Mapping[str, torch.Tensor], dtype: torch.dtype, what: str, path: Path,
          described: str) -> None:  # fmt: skip
    """Give ``module`` (built on the meta device) the converted weights ``state``; every weight must be there."""
    expected = module.state_dict()
    wrong = [f"{key} is {tuple(state[key].shape)} there, {tuple(value.shape)} in the configs"
             for key, value in expected.items() if key in state and state[key].shape != value.shape]  # fmt: skip
    if wrong:
        raise ConfigError(
            f"the {what} weights of {path} do not fit {described}: {'; '.join(wrong[:3])}"
            f"{f' (and {len(wrong) - 3} more)' if len(wrong) > 3 else ''}. {_OTHER_ARCHITECTURE}"
        )
    missing = [key for key in expected if key not in state]
    if missing:
        raise ConfigError(
            f"{path} lacks {len(missing)} {what} weights that {described} call for (e.g. {missing[0]}); "
            "use a complete checkpoint of that architecture"
        )
    module.load_state_dict({key: state[key].to(dtype).contiguous() for key in expected}, assign=True)


_OTHER_ARCHITECTURE = (
    f"If it is another SD version, pass sd_version= one of {list(SD_VERSIONS)}; if it is not a standard SD v1.x/v2.x "
    f"checkpoint, pass config_dir= a folder of its configs laid out like {CONFIGS_DIR / 'v1'}"
)


_LDM_PARTS = {
    "UNet (model.diffusion_model.*)": ("model.diffusion_model.",),
    "VAE (first_stage_model.*)": ("first_stage_model.",),
    "CLIP text encoder (cond_stage_model.transformer.* or cond_stage_model.model.*)": (
        "cond_stage_model.transformer.", "cond_stage_model.model."),
}  # fmt: skip
"""What a full original-layout SD checkpoint holds: each part and the key prefixes of its weights."""


def _read_single_file(path: Path) -> tuple[dict[str, Any], int | None]:
    """State dict and ``global_step`` of an original-layout SD file; refuses other suffixes and incomplete files."""
    if path.suffix not in (".safetensors", ".ckpt"):
        raise ConfigError(
            f"{path} is not a Stable Diffusion checkpoint: expected a .safetensors or .ckpt file, or a diffusers folder"
        )
    checkpoint, global_step = _read_checkpoint(path)
    absent = [what for what, prefixes in _LDM_PARTS.items() if not any(k.startswith(prefixes) for k in checkpoint)]
    if absent:
        raise ConfigError(
            f"{path} is not a full SD v1.x/v2.x checkpoint, it lacks the {', '.join(absent)} weights; "
            "use a complete original-layout checkpoint or a diffusers folder"
        )
    return checkpoint, global_step


def _single_file_configs(checkpoint: Mapping[str, Any], global_step: int | None, sd_version: SDVersion | None,
                         config_dir: str | Path | None) -> tuple[Path, str]:  # fmt: skip
    """The config folder that describes a single file, and how to name it in errors."""
    if config_dir is not None:
        return _checked_config_dir(Path(config_dir)), f"the configs of {config_dir}"
    version = sd_version or detect_version(checkpoint, global_step)
    return bundled_config_dir(version), f"the bundled SD {version} configs"


def _single_file_text_encoder(checkpoint: Mapping[str, Any], path: Path, folder: Path, described: str) -> CLIPTextModel:
    """The CLIP text encoder of an original-layout state dict, converted by diffusers; every weight must be there."""
    from diffusers.loaders.single_file_utils import create_diffusers_clip_model_from_ldm
    from transformers import CLIPTextModel

    try:
        text_encoder = create_diffusers_clip_model_from_ldm(
            CLIPTextModel, checkpoint, subfolder="text_encoder", config=str(folder), local_files_only=True
        )
    except (OSError, ValueError, KeyError, RuntimeError) as error:
        raise ConfigError(f"the text encoder weights of {path} do not fit {described}: {error}. {_OTHER_ARCHITECTURE}") from None
    unloaded = [name for name, p in text_encoder.named_parameters() if p.is_meta]
    if unloaded:
        raise ConfigError(
            f"{path} lacks {len(unloaded)} text encoder weights that {described} call for (e.g. {unloaded[0]}); "
            "use a complete checkpoint of that architecture"
        )
    return own_memory(text_encoder)


def _load_single_file(
    path: Path, *, dtype: torch.dtype, sd_version: SDVersion | None, config_dir: str | Path | None
) -> SDComponents:
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint

    checkpoint, global_step = _read_single_file(path)
    folder, described = _single_file_configs(checkpoint, global_step, sd_version, config_dir)
    ids = _read_tokens(folder)
    with init_empty_weights():
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))
    # diffusers' own LDM → diffusers key conversions. extract_ema: files that carry both weight sets
    # (e.g. sd-v1-4-full-ema.ckpt) give their EMA weights, which the published diffusers folders hold.
    _fill(unet, convert_ldm_unet_checkpoint(checkpoint, unet.config, extract_ema=True), dtype, "UNet", path, described)
    _fill(vae, convert_ldm_vae_checkpoint(checkpoint, vae.config), dtype, "VAE", path, described)
    scheduler = DDPMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    # float32 on the CPU whatever dtype is: used once, for the embedding
    text_encoder = _single_file_text_encoder(checkpoint, path, folder, described)
    empty = empty_prompt_embedding(text_encoder, ids)
    del text_encoder, checkpoint
    return SDComponents(own_memory(unet.eval()), own_memory(vae.eval()), scheduler, empty)


# -- conversion of pickled checkpoints ------------------------------------------------------------

_TENSOR_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
})  # fmt: skip
"""The only globals :func:`convert_checkpoint` resolves: what ``torch.save`` writes for a state dict of tensors
(storage types are resolved by torch itself, to typed storages and nothing else)."""


class _Inert:
    """Stands in for an object of a refused global: takes any arguments, state and items, and runs nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return self

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, item: Any) -> None:
        pass

    def extend(self, items: Any) -> None:
        pass


def _tensors_only_pickle(refused: dict[str, type[_Inert]]) -> Any:
    """A ``pickle_module`` for ``torch.load`` (torch reads the archive and storages, this reads the pickles).

    Its unpickler resolves :data:`_TENSOR_GLOBALS` only; every other global becomes an :class:`_Inert`
    subclass, recorded in ``refused`` by its dotted name, and nothing is imported.
    """

    class Unpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in _TENSOR_GLOBALS:
                return super().find_class(module, name)
            key = f"{module}.{name}"
            if key not in refused:
                refused[key] = type(name.replace(".", "_"), (_Inert,), {})
            return refused[key]

    def load(file: Any, **kwargs: Any) -> Any:
        return Unpickler(file, **kwargs).load()

    return SimpleNamespace(__name__="madm_tensors_only_pickle", Unpickler=Unpickler, load=load)


@dataclass(frozen=True)
class ConversionReport:
    """What :func:`convert_checkpoint` wrote and what it left behind.

    Attributes:
        path: The ``.safetensors`` file written.
        tensors: Number of tensors in it (the tensors of the checkpoint's ``state_dict``).
        dropped: ``state_dict`` entries that were not tensors and were left out.
        refused_globals: Python objects in the file that were not rebuilt (placeholders took their place).
    """

    path: Path
    tensors: int
    dropped: int
    refused_globals: tuple[str, ...]


def convert_checkpoint(src: str | Path, dst: str | Path) -> ConversionReport:
    """Write the tensors of a pickled ``.ckpt``'s ``state_dict`` to ``dst`` (``.safetensors``), atomically.

    Safe for untrusted files: the pickle is read by an unpickler that resolves only the globals
    ``torch.save`` uses for tensors and ordered dicts; any other (``ModelCheckpoint`` callbacks,
    optimizer classes, ``os.system``, ...) is replaced by an inert placeholder, so no code from the
    file runs and no module it names is imported. The file is written in memory first and then
    renamed into place (``madm_ros.atomic_io``), so it needs about the checkpoint's size in RAM.
    Command line: ``python -m madm_train convert-checkpoint IN.ckpt --out OUT.safetensors``.
    """
    from safetensors.torch import save

    from madm_ros.atomic_io import atomic_write_bytes

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ConfigError(f"checkpoint {src} not found")
    if dst.suffix != ".safetensors":
        raise ConfigError(f"--out {dst} must end in .safetensors")
    if dst.resolve() == src.resolve():
        raise ConfigError(f"--out {dst} is the input file; pick another name")
    refused: dict[str, type[_Inert]] = {}
    try:
        checkpoint = torch.load(src, map_location="cpu", weights_only=False, pickle_module=_tensors_only_pickle(refused),
                                mmap=zipfile.is_zipfile(src))  # fmt: skip
    except Exception as error:  # torch.load and pickle raise many unrelated types for a broken file
        raise ConfigError(f"could not read {src} as a PyTorch checkpoint: {error}") from None
    while isinstance(checkpoint, Mapping) and "state_dict" in checkpoint:
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, Mapping):
        raise ConfigError(f"{src} holds no state dict of tensors (found a {type(checkpoint).__name__})")
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()
    for key, value in checkpoint.items():
        if isinstance(key, str) and isinstance(value, torch.Tensor):
            tensor = value.detach().contiguous()
            storage = tensor.untyped_storage().data_ptr()
            tensors[key] = tensor.clone() if storage in storages else tensor  # safetensors refuses shared memory
            storages.add(storage)
    if not tensors:
        raise ConfigError(f"{src} holds no tensors in its state dict; it is not a model checkpoint")
    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dst, save(tensors, metadata={"format": "pt", "converted_from": src.name}))
    return ConversionReport(dst, len(tensors), len(checkpoint) - len(tensors), tuple(sorted(refused)))
