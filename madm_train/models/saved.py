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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from madm_ros.errors import ConfigError
from madm_ros.preprocessing import InputSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = ["CONFIG_FILE", "LOGITS_METHOD", "SAVED_FORMATS", "WEIGHTS_FILE", "LoadedModel", "fill_weights", "load_saved",
           "read_format_config", "read_model_folder", "saved_format", "windowed_logits", "write_model_folder"]

LOGITS_METHOD = "windowed-1"
"""How :func:`load_saved`'s ``logits`` label a frame, as a name: bump it whenever that changes.

Cached teacher logits (:class:`~madm_train.deploy.teacher_cache.TeacherCache`) are keyed by it
beside the teacher's weights: same weights labelled another way (sliding windows instead of
padding, 2026-12) must not be served the old logits.
"""
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


def read_format_config(config_file: Path, expected_format: str) -> dict[str, Any]:
    """Read a saved folder's ``config.json`` and check its ``format`` tag (one error type for every saved artifact)."""
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ConfigError(f"could not read {config_file}: {error}") from None
    if not isinstance(config, dict) or config.get("format") != expected_format:
        found = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise ConfigError(f"{config_file} has format {found!r}, expected {expected_format!r}")
    return config


def write_model_folder(path: str | Path, config: Mapping[str, Any], state_dict: Mapping[str, torch.Tensor]) -> Path:
    """Write ``config.json`` (with its ``format`` tag) and ``model.safetensors`` into ``path``, replacing it atomically."""
    from safetensors.torch import save_file

    from madm_train.models.sd_backbone import atomic_folder

    path = Path(path)
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in state_dict.items()}
    with atomic_folder(path) as temp:
        save_file(state, str(temp / WEIGHTS_FILE), metadata={"format": str(config["format"])})
        (temp / CONFIG_FILE).write_text(json.dumps(config, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_model_folder(path: str | Path, expected_format: str) -> tuple[dict[str, Any], Path]:
    """``(config, weights file)`` of a saved folder whose format tag is ``expected_format``."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    missing = [p.name for p in (config_file, weights_file) if not p.is_file()]
    if missing:
        raise ConfigError(f"{path} is not a saved model of format {expected_format}: {', '.join(missing)} missing")
    return read_format_config(config_file, expected_format), weights_file


def fill_weights(module: nn.Module, weights_file: Path, *, dtype: torch.dtype | None = None) -> None:
    """Load ``weights_file`` into ``module`` built on the meta device (``assign``), strictly: every tensor must fit."""
    from safetensors.torch import load_file

    from madm_train.models.owned_memory import own_memory

    try:
        state = load_file(str(weights_file))
    except Exception as error:  # safetensors raises its own error types for a broken file
        raise ConfigError(f"could not read weights {weights_file}: {error}") from None
    if dtype is not None:
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    try:
        module.load_state_dict(state, assign=True)
    except RuntimeError as error:
        raise ConfigError(f"weights {weights_file} do not fit the network of its config.json: {error}") from None
    left = [name for name, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
    if left:
        raise ConfigError(f"weights {weights_file} lack tensors {left[:5]}…; the checkpoint is incomplete")
    own_memory(module)  # assign=True left them where the file's memory map puts them


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
        size_multiple: The network's own input sides must be multiples of this (a diffusion UNet
            without ``input_size``: 64). :func:`load_saved` slides windows of such sizes over
            other inputs (:func:`windowed_logits`), so ``logits`` takes any size.
    """

    network: nn.Module
    format: str
    logits: Callable[[torch.Tensor], torch.Tensor]
    logits_stride: int
    label_set: str | None
    input_spec: InputSpec | None
    input_size: int | None = None
    size_multiple: int = 1


def _sd_multiple(input_size: int | None) -> int:
    """A diffusion UNet halves its latent three times after the VAE's ×8: sides multiple of 64 unless it resizes."""
    return 64 if input_size is None else 1


def windowed_logits(logits: Callable[[torch.Tensor], torch.Tensor], multiple: int,
                    stride: int = 1) -> Callable[[torch.Tensor], torch.Tensor]:
    """``logits`` for any input size, from windows whose sides are multiples of ``multiple``.

    Why: a teacher that needs sides of multiples of 64 must still label frames of the deployment's
    size (3:4 at 96×128 for the default students). Padding such a frame up to 128×128 moves the
    frame's border away from where the network learnt it (a depth teacher trained at 64×128 fell
    from 10.6 to 5.9 mIoU with the padding split top and bottom, and to 3.0 with all of it at the
    bottom); sliding windows of the largest multiple that fits, as the references' slide inference
    does, keep every window at a size the network knows, and overlapping logits are averaged.
    A side shorter than ``multiple`` is padded (reflected) up to it, and every side first to a
    multiple of the logits' ``stride`` so that windows fall on whole logit cells; the padding's
    logits are cut off.
    """
    import torch.nn.functional as F

    def tops(side: int, window: int) -> list[int]:
        count = -(-(side - window) // window) + 1  # windows, overlapping evenly, that cover the side
        return [0] if count == 1 else [round(i * (side - window) / (count - 1) / stride) * stride for i in range(count)]

    def slide(images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        if not height % multiple and not width % multiple:
            return logits(images)
        pad_h = max(multiple - height, -height % stride)
        pad_w = max(multiple - width, -width % stride)
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            images = F.pad(images, (0, pad_w, 0, pad_h), mode=mode)
        full_h, full_w = images.shape[-2:]
        win_h, win_w = full_h // multiple * multiple, full_w // multiple * multiple
        total = count = None
        for top in tops(full_h, win_h):
            for left in tops(full_w, win_w):
                out = logits(images[..., top:top + win_h, left:left + win_w])
                if total is None:
                    total = out.new_zeros((*out.shape[:2], full_h // stride, full_w // stride))
                    count = out.new_zeros((1, 1, full_h // stride, full_w // stride))
                rows = slice(top // stride, top // stride + out.shape[-2])
                cols = slice(left // stride, left // stride + out.shape[-1])
                total[..., rows, cols] += out
                count[..., rows, cols] += 1
        assert total is not None and count is not None
        return (total / count)[..., : -(-height // stride), : -(-width // stride)]

    return slide


def _load_madm(path: Path) -> LoadedModel:
    from madm_train.models.madm_model import CHECKPOINT_FORMAT, MadmModel

    model = MadmModel.load(path).eval()
    size = model.backbone.input_size
    return LoadedModel(model, CHECKPOINT_FORMAT, model.logits, 1, None, None, size, _sd_multiple(size))


def _load_student(path: Path) -> LoadedModel:
    from madm_train.models.student import OUTPUT_STRIDE, STUDENT_FORMAT, load_student

    model, config = load_student(path)
    model.eval()
    return LoadedModel(model, STUDENT_FORMAT, model, OUTPUT_STRIDE, config["label_set"],
                       InputSpec.from_dict(config["input_spec"]))


def _load_diff(path: Path) -> LoadedModel:
    from madm_train.methods.diff.model import DIFF_FORMAT, DiffModel

    model = DiffModel.load(path).eval()
    return LoadedModel(model, DIFF_FORMAT, model.logits, 4, None, None, model.input_size, _sd_multiple(model.input_size))


def _load_iccld(path: Path) -> LoadedModel:
    from madm_train.methods.iccld.model import ICCLD_FORMAT, IccldModel

    model = IccldModel.load(path).eval()
    return LoadedModel(model, ICCLD_FORMAT, model.logits, 1, None, None, model.input_size)


SAVED_FORMATS: dict[str, Callable[[Path], LoadedModel]] = {
    "madm-model/1": _load_madm,
    "madm-diff/1": _load_diff,
    "madm-iccld/1": _load_iccld,
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
        inside = next((f"; it looks like a run or distill folder: give {path / name}" for name in ("model", "student")
                       if (path / name / "config.json").is_file()), "")
        raise ConfigError(f"{path}/config.json has format {found!r}; this version reads {', '.join(SAVED_FORMATS)}{inside}")
    return str(found)


def load_saved(path: str | Path) -> LoadedModel:
    """Load any saved model folder through :data:`SAVED_FORMATS`; its ``logits`` take any input size."""
    import dataclasses

    loaded = SAVED_FORMATS[saved_format(path)](Path(path))
    if loaded.size_multiple == 1:
        return loaded
    return dataclasses.replace(loaded, logits=windowed_logits(loaded.logits, loaded.size_multiple, loaded.logits_stride))
