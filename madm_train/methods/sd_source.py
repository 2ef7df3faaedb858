"""Where a method's Stable Diffusion comes from: a local model, or random tiny weights written once into the run folder.

DIFF and ICCLD both build on SD's modules; this is their one rule for finding them, so a ``tiny``
run and an ``sd`` run differ only in the folder loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from madm_ros.errors import ConfigError

if TYPE_CHECKING:
    from madm_train.methods.base import BuildContext

__all__ = ["sd_source"]


def sd_source(pretrained: str, preset: str, context: BuildContext, *, method: str, words: Sequence[str] = ()) -> Path:
    """The SD folder or file to load for ``method``.

    ``tiny`` preset without ``pretrained``: the main process writes a random tiny SD (seeded by
    ``run.seed``, its tokenizer knowing ``words``) into ``<run>/tiny_sd`` once; the others wait.
    ``sd`` preset: ``pretrained`` is required (nothing is downloaded).
    """
    from madm_train.models.tiny_sd import build_tiny_sd

    if pretrained:
        return Path(pretrained)
    if preset != "tiny":
        raise ConfigError(f"method.model.pretrained is empty: {method} needs a local Stable Diffusion (a diffusers "
                          "folder or a .safetensors/.ckpt file: --set method.model.pretrained=PATH); nothing is downloaded")
    source = context.run_dir / "tiny_sd"
    if context.is_main and not (source / "unet" / "config.json").exists():
        build_tiny_sd(source, seed=context.config.run.seed, words=words)
    context.barrier()
    return source
