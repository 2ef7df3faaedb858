"""peft LoRA adapters on a diffusers UNet's attention projections: one named adapter per target modality.

MADM's released code carries (dormant) multi-LoRA support on ``to_q``/``to_k``/``to_v``/``to_out.0``
(madm_spec.md §1.7, §8); DIFF may adapt its otherwise frozen UNet the same way. Gaussian
initialisation of A and zeros in B, so a new adapter leaves the UNet's output unchanged.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from madm_ros.errors import ConfigError

__all__ = ["LORA_TARGET_MODULES", "attach_lora"]

LORA_TARGET_MODULES: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
"""UNet attention projections that get LoRA adapters (128 projections in SD-1.x)."""


def attach_lora(unet: Any, adapter_name: str, rank: int, alpha: float, existing: Mapping[str, Any] = ()) -> None:
    """Attach and activate the adapter ``adapter_name`` (refused if it exists in ``existing`` or the values are bad)."""
    from peft import LoraConfig

    if not adapter_name or not adapter_name.isidentifier():
        raise ConfigError(f"LoRA adapter name {adapter_name!r} must be a non-empty identifier, e.g. 'depth'")
    if adapter_name in existing:
        raise ConfigError(f"LoRA adapter {adapter_name!r} exists already; adapters: {sorted(existing)}")
    if int(rank) != rank or rank <= 0 or alpha <= 0:
        raise ConfigError(f"LoRA rank {rank} must be a positive integer and alpha {alpha} positive")
    config = LoraConfig(r=int(rank), lora_alpha=alpha, init_lora_weights="gaussian", target_modules=list(LORA_TARGET_MODULES))
    with warnings.catch_warnings():
        # peft warns on every adapter after the first; several named adapters are the point here.
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute", category=UserWarning)
        unet.add_adapter(config, adapter_name=adapter_name)
