"""The DIFF network of a :class:`~madm_train.methods.diff.config.DiffConfig`.

Weights come from ``init_weights`` (a whole saved DIFF model, e.g. a generalisation run to adapt),
else from a local Stable Diffusion (``sd`` preset: SD 2.1 as released, or 1.x) plus a random
aggregation, finecoder and head (``tiny`` preset: a random tiny SD written once into the run folder,
with toy widths, for CPU tests). The class prompts of the conditional branch are embedded once with
the model's own text encoder (:mod:`.prompts`), cached in the run folder, and kept as buffers.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from madm_ros.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from madm_train.methods.base import BuildContext
    from madm_train.methods.diff.config import DiffConfig
    from madm_train.methods.diff.model import DiffModel
    from madm_train.methods.diff.prompts import PromptEmbeddings

__all__ = ["PROMPT_CACHE", "SIZES", "build_diff_network"]

SIZES: dict[str, dict[str, Any]] = {
    "sd": {"widths": {8: 512, 16: 1024, 32: 2048}, "out_width": 256, "aggregation_groups": 16, "finecoder_groups": 32,
           "embed_dim": 256},
    "tiny": {"widths": {8: 32, 16: 64, 32: 64}, "out_width": 16, "aggregation_groups": 8, "finecoder_groups": 8,
             "embed_dim": 32},
}
"""Aggregation, finecoder and head sizes of each preset (``sd``: the released ones, iccld_diff_spec.md B.1)."""

PROMPT_CACHE = "prompt_embeddings.safetensors"
"""File in the run folder holding the class-prompt embeddings (computed by the main process)."""


def build_diff_network(config: DiffConfig, context: BuildContext) -> DiffModel:
    """Build (or load) the network on the CPU in float32; only fusion, head (and LoRA) are trainable."""
    from madm_train.methods.diff.model import DiffModel
    from madm_train.methods.sd_source import sd_source
    from madm_train.models.stable_diffusion import load_stable_diffusion

    model, num_classes = config.model, context.label_set.num_classes
    if model.init_weights:
        network = DiffModel.load(model.init_weights)
        if network.head.num_classes != num_classes:
            raise ConfigError(f"method.model.init_weights {model.init_weights} predicts {network.head.num_classes} "
                              f"classes, data.label_set {context.config.data.label_set} has {num_classes}")
        if config.ipkl.enabled and not network.prompt_classes:
            raise ConfigError(f"method.ipkl.enabled, but {model.init_weights} holds no class prompts (it was trained "
                              "without IPKL): set method.ipkl.enabled=false, or start from method.model.pretrained")
    else:
        texts = _prompt_texts(config, context)
        words = [word for text in texts.values() for word in re.findall(r"[A-Za-z]+", text)]
        source = sd_source(model.pretrained, model.preset, context, method="DIFF", words=words)
        sd = load_stable_diffusion(source, sd_version=model.sd_version or None)
        prompts = _prompt_embeddings(config, context, source, texts, sd.empty_prompt) if texts else None
        network = DiffModel(
            sd.unet, sd.vae, sd.scheduler, sd.empty_prompt, num_classes, steps=str(model.steps), eta=model.eta,
            eta_window=model.eta_window, deterministic=model.deterministic, v_to_epsilon=model.v_to_epsilon,
            input_size=model.input_size, aggregation=model.aggregation, guidance=config.ipkl.guidance,
            class_prompts=None if prompts is None else prompts.embeddings,
            prompt_classes=() if prompts is None else prompts.class_ids, **SIZES[model.preset],
        )
    if model.finetune == "lora" and context.config.task not in network.lora_adapters:
        network.add_lora(context.config.task, model.lora_rank, model.lora_alpha)  # one adapter per target modality
    return network


def _prompt_texts(config: DiffConfig, context: BuildContext) -> dict[int, str]:
    """Class id → prompt of the conditional branch: the set ``ipkl.prompts`` plus ``ipkl.prompt_texts`` (none without IPKL)."""
    from madm_train.methods.diff.prompts import class_prompts

    ipkl = config.ipkl
    if not ipkl.enabled:
        return {}
    names = context.label_set.class_names
    unknown = [name for name in ipkl.prompt_texts if name not in names]
    if unknown:
        raise ConfigError(f"method.ipkl.prompt_texts names {unknown}, which are not classes of {context.label_set.name}: "
                          f"{list(names)}")
    chosen = class_prompts(context.label_set.name, active=ipkl.prompts)
    active = [name for i, name in enumerate(names) if i in chosen or name in ipkl.prompt_texts]
    return class_prompts(context.label_set.name, active=active, overrides=ipkl.prompt_texts)


def _prompt_embeddings(config: DiffConfig, context: BuildContext, source: Path, texts: dict[int, str],
                       empty_prompt: torch.Tensor) -> PromptEmbeddings:
    """The class prompts' embeddings: computed by the main process (cached in the run folder), read by the rest."""
    from madm_train.methods.diff.prompts import PromptEmbeddings

    options = {"empty_prompt": empty_prompt, "cache": context.run_dir / PROMPT_CACHE,
               "sd_version": config.model.sd_version or None, "tokenizer": config.model.tokenizer or None}
    if context.is_main:
        embeddings = PromptEmbeddings.from_pretrained(source, texts, **options)
    context.barrier()
    if not context.is_main:
        embeddings = PromptEmbeddings.from_pretrained(source, texts, **options)
    return embeddings
