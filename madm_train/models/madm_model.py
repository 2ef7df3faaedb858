"""``MadmModel``: the SD backbone and the DAFormer head as one module, saved together with its config.

A saved model is a folder with ``config.json`` (the constructor arguments of backbone and head,
including the diffusers configs of UNet, VAE and scheduler and the LoRA adapters) and
``model.safetensors`` (all weights and persistent buffers). :meth:`MadmModel.load` rebuilds the
network from the config alone and loads the tensors — no pickle, nothing executed from the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from madm_ros.errors import ConfigError
from madm_train.models.head import DAFormerHead
from madm_train.models.sd_backbone import BackboneOutput, SDBackbone, TrainMode

__all__ = ["CHECKPOINT_FORMAT", "MadmModel"]

CHECKPOINT_FORMAT = "madm-model/1"
"""Value of ``format`` in a saved model's ``config.json``; bumped when the layout changes."""


class MadmModel(nn.Module):
    """Backbone + head: ``forward(images01, timesteps, noise) -> (logits, BackboneOutput)``.

    Args:
        backbone: The SD backbone with its projections and learned prompt.
        head: A head whose ``in_channels`` equal ``backbone.feature_channels``.
    """

    def __init__(self, backbone: SDBackbone, head: DAFormerHead) -> None:
        super().__init__()
        if head.in_channels != backbone.feature_channels:
            raise ConfigError(
                f"head in_channels {head.in_channels} differ from the backbone's features {backbone.feature_channels}"
            )
        self.backbone = backbone
        self.head = head

    def forward(
        self,
        images01: torch.Tensor,
        timesteps: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, BackboneOutput]:
        """Logits B×K×H'×W' at the backbone's input resolution (H' = W' = ``input_size`` if set) and the backbone output."""
        out = self.backbone(images01, timesteps, noise)
        return self.head(out.features), out

    def logits(self, images01: torch.Tensor) -> torch.Tensor:
        """Logits only (at t = 0): what evaluation, distillation and the deployed graph use."""
        return self(images01)[0]

    def trainable_parameters(self, mode: TrainMode) -> dict[str, nn.Parameter]:
        """Backbone parameters of ``mode`` (see :meth:`SDBackbone.trainable_parameters`) plus the whole head, by name."""
        trainable = {f"backbone.{name}": p for name, p in self.backbone.trainable_parameters(mode).items()}
        for name, parameter in self.head.named_parameters():
            parameter.requires_grad_(True)
            trainable[f"head.{name}"] = parameter
        return trainable

    def config(self) -> dict[str, Any]:
        """The JSON written beside the weights: format tag, backbone and head constructor arguments."""
        return {"format": CHECKPOINT_FORMAT, "backbone": self.backbone.config(), "head": self.head.config()}

    def save(self, path: str | Path, *, state_dict: Mapping[str, torch.Tensor] | None = None) -> Path:
        """Write ``config.json`` and ``model.safetensors`` to the folder ``path`` (replaced atomically).

        ``state_dict`` replaces this module's own (the trainer passes accelerate's gathered full
        state when the parameters are sharded across processes).
        """
        from madm_train.models.saved import write_model_folder

        return write_model_folder(path, self.config(), self.state_dict() if state_dict is None else state_dict)

    @classmethod
    def load(cls, path: str | Path, *, dtype: torch.dtype = torch.float32) -> MadmModel:
        """Rebuild the network from ``path/config.json`` and load ``path/model.safetensors`` (strict: every tensor must match)."""
        from madm_train.models.saved import fill_weights, read_model_folder

        config, weights_file = read_model_folder(path, CHECKPOINT_FORMAT)
        unknown = sorted(set(config) - {"format", "backbone", "head"})
        if unknown or "backbone" not in config or "head" not in config:
            raise ConfigError(f"{path}/config.json: expected keys format, backbone, head; unknown {unknown}")
        # Parameters are created on the meta device and replaced by the loaded tensors (assign=True),
        # so a full SD model is not randomly initialised first only to be overwritten.
        backbone = SDBackbone.from_config(config["backbone"], dtype=dtype, empty_weights=True)
        try:
            with torch.device("meta"):
                head = DAFormerHead(**config["head"])
        except TypeError as error:
            raise ConfigError(f"{path}/config.json: bad head config: {error}") from None
        model = cls(backbone, head)
        fill_weights(model, weights_file, dtype=dtype)
        return model
