"""Saved model folders by format tag: one loader table for evaluate, distill, export, benchmark and the PyTorch backend.

Every saved model folder holds ``config.json`` with a ``format`` tag and ``model.safetensors``.
:data:`SAVED_FORMATS` maps each tag to the function that rebuilds the network from the config alone
(no pickle, nothing executed from the file); :func:`load_saved` reads the tag and returns a
:class:`LoadedModel` with what every consumer needs: the network, its logits function and
stride, and the label set and input spec where the folder carries them. A method whose model is
saved in a new format adds one line here, and every command can use it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from madm_ros.errors import ConfigError
from madm_ros.preprocessing import InputSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["SAVED_FORMATS", "LoadedModel", "load_saved", "saved_format"]


@dataclass(frozen=True)
class LoadedModel:
    """A saved model, loaded on the CPU in float32, in eval mode.

    Attributes:
        network: The module (``MadmModel``, ``DDRNetStudent``, …).
        format: Its format tag.
        logits: Images B×3×H×W in [0, 1] → logits B×K×h×w.
        logits_stride: h = H / ``logits_stride`` (1 for teachers whose logits come at their own input size).
        label_set: Name of the label set of the logits, where the folder records it (students).
        input_spec: How inputs were preprocessed in training, where the folder records it (students).
        input_size: Side of the square the network resizes every input to, if it does (MADM: 512).
    """

    network: nn.Module
    format: str
    logits: Callable[[torch.Tensor], torch.Tensor]
    logits_stride: int
    label_set: str | None
    input_spec: InputSpec | None
    input_size: int | None = None


def _load_madm(path: Path) -> LoadedModel:
    from madm_train.models.madm_model import CHECKPOINT_FORMAT, MadmModel

    model = MadmModel.load(path).eval()
    return LoadedModel(model, CHECKPOINT_FORMAT, model.logits, 1, None, None, model.backbone.input_size)


def _load_student(path: Path) -> LoadedModel:
    from madm_train.models.student import OUTPUT_STRIDE, STUDENT_FORMAT, load_student

    model, config = load_student(path)
    model.eval()
    return LoadedModel(model, STUDENT_FORMAT, model, OUTPUT_STRIDE, config["label_set"],
                       InputSpec.from_dict(config["input_spec"]))


SAVED_FORMATS: dict[str, Callable[[Path], LoadedModel]] = {
    "madm-model/1": _load_madm,
    "madm-student/1": _load_student,
}
"""Format tag of a saved folder's ``config.json`` → its loader."""


def saved_format(path: str | Path) -> str:
    """The format tag of the saved folder ``path`` (refused with the known tags when it has none we read)."""
    path = Path(path)
    try:
        found = json.loads((path / "config.json").read_text(encoding="utf-8")).get("format")
    except (OSError, ValueError, AttributeError) as error:
        raise ConfigError(f"{path} is not a saved model folder (config.json: {error}); give a run's model/ folder or "
                          "a distilled student/ folder") from None
    if found not in SAVED_FORMATS:
        raise ConfigError(f"{path}/config.json has format {found!r}; this version reads {', '.join(SAVED_FORMATS)}")
    return str(found)


def load_saved(path: str | Path) -> LoadedModel:
    """Load any saved model folder through :data:`SAVED_FORMATS`."""
    return SAVED_FORMATS[saved_format(path)](Path(path))
