"""Training checkpoints: atomic, numbered, pruned, resumable bit for bit — and free of pickle.

Layout (``diffusers``-style numbered folders inside a run's checkpoint folder)::

    <folder>/checkpoint-<step>/
        model.safetensors       model weights (``safetensors.torch.save_model``, shared tensors handled)
        ema.safetensors         EMA teacher parameters and buffers (if any)
        optimizer.safetensors   optimiser state tensors, named ``state.<param index>.<key>``
        rng.safetensors         torch RNG states (CPU, CUDA devices, explicit torch generators)
        state.json              step, resolved config, optimiser groups, LR scheduler state,
                                Python/NumPy RNG states, file list — written last

A checkpoint is written into a hidden ``.checkpoint-<step>.partial-<random>`` folder, every file
flushed to disk, then renamed to ``checkpoint-<step>`` in one step: a crash leaves either the
complete folder or no ``checkpoint-*`` folder at all (the partial one is removed on the next save).
Older checkpoints beyond ``total_limit`` are deleted *after* the new one is in place, so a crash
never leaves fewer than ``total_limit`` complete checkpoints (``diffusers`` prunes first).

Restoring RNG states (Python ``random``, NumPy's global generator, torch CPU/CUDA and any explicit
generators the caller names) makes the draws after a resume identical to those of an
uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

    from madm_train.training.ema import EmaTeacher

    Generator = torch.Generator | np.random.Generator | random.Random

__all__ = [
    "CHECKPOINT_PREFIX",
    "CheckpointInfo",
    "capture_rng_state",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_resume",
    "restore_rng_state",
    "save_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
_NAME = re.compile(r"checkpoint-(\d+)")
_FORMAT = 1


@dataclass(frozen=True)
class CheckpointInfo:
    """What :func:`load_checkpoint` restored: the folder, the step to continue from and the saved config."""

    path: Path
    step: int
    config: dict[str, Any] | None


def list_checkpoints(folder: Path | str) -> list[Path]:
    """Complete ``checkpoint-<step>`` folders in ``folder``, oldest (smallest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _NAME.fullmatch(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


# ----------------------------------------------------------------------------------------------
# RNG states


def capture_rng_state(generators: Mapping[str, Generator] | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON part, tensor part) of the global Python/NumPy/torch RNG states and of ``generators``."""
    import torch

    state: dict[str, Any] = {"python": _jsonable(random.getstate()), "numpy": _jsonable(np.random.get_state()),
                             "generators": {}}
    tensors: dict[str, torch.Tensor] = {"torch.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch.cuda.{index}"] = cuda_state
    for name, generator in (generators or {}).items():
        if isinstance(generator, torch.Generator):
            tensors[f"generator.{name}"] = generator.get_state()
            state["generators"][name] = {"kind": "torch", "device": str(generator.device)}
        elif isinstance(generator, np.random.Generator):
            state["generators"][name] = {"kind": "numpy", "state": _jsonable(generator.bit_generator.state)}
        elif isinstance(generator, random.Random):
            state["generators"][name] = {"kind": "python", "state": _jsonable(generator.getstate())}
        else:
            raise InputError(f"generator {name!r} has unsupported type {type(generator).__name__}")
    return state, tensors


def restore_rng_state(state: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                      generators: Mapping[str, Generator] | None = None) -> None:
    """Put back what :func:`capture_rng_state` captured; ``generators`` are restored in place by name."""
    import torch

    random.setstate(_python_state(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch.cpu"])
    cuda = sorted((k for k in tensors if k.startswith("torch.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])
    saved = state.get("generators", {})
    for name, generator in (generators or {}).items():
        if name not in saved:
            raise InputError(f"the checkpoint holds no state for generator {name!r}; it has {sorted(saved)}")
        if isinstance(generator, torch.Generator):
            generator.set_state(tensors[f"generator.{name}"])
        elif isinstance(generator, np.random.Generator):
            generator.bit_generator.state = saved[name]["state"]
        elif isinstance(generator, random.Random):
            generator.setstate(_python_state(saved[name]["state"]))
        else:
            raise InputError(f"generator {name!r} has unsupported type {type(generator).__name__}")


def _python_state(value: list[Any]) -> tuple[Any, ...]:
    version, internal, gauss = value
    return version, tuple(internal), gauss


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


# ----------------------------------------------------------------------------------------------
# Saving


def save_checkpoint(
    folder: Path | str,
    step: int,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ema: EmaTeacher | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
    config: Mapping[str, Any] | None = None,
    generators: Mapping[str, Generator] | None = None,
    total_limit: int | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` into ``folder`` atomically, then keep only the newest ``total_limit``.

    Args:
        folder: The run's checkpoint folder (created if missing).
        step: Number of completed iterations; training resumes at this iteration.
        model: Module whose ``state_dict`` is saved (all trained and frozen weights it holds).
        optimizer: Its state tensors and parameter groups.
        lr_scheduler: Its ``state_dict`` (must be JSON-serialisable, as ``LambdaLR`` with
            ``schedule.LrMultiplier`` is).
        ema: The EMA teacher.
        grad_scaler: The AMP loss scaler (its scale and growth tracker; needed for an exact fp16 resume).
        config: The resolved configuration (``AdaptConfig.to_dict()``).
        generators: Explicit generators whose states are saved beside the global ones, by name.
        total_limit: Checkpoints to keep (``None``: all).

    Returns:
        The new checkpoint folder.
    """
    from safetensors.torch import save_file, save_model

    if step < 0:
        raise InputError(f"checkpoint step must be ≥ 0, got {step}")
    if total_limit is not None and total_limit < 1:
        raise ConfigError(f"checkpoints_total_limit must be ≥ 1, got {total_limit}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{CHECKPOINT_PREFIX}{step}"
    for stale in folder.glob(f".{CHECKPOINT_PREFIX}*.partial-*"):  # left behind by a crashed save
        shutil.rmtree(stale, ignore_errors=True)
    partial = folder / f".{name}.partial-{secrets.token_hex(4)}"
    partial.mkdir()
    try:
        files = ["model.safetensors"]
        save_model(model, str(partial / "model.safetensors"), force_contiguous=True)
        state: dict[str, Any] = {"format": _FORMAT, "step": step, "config": _jsonable(config) if config is not None else None}
        if ema is not None:
            save_file(_contiguous(ema.state_dict()), str(partial / "ema.safetensors"))
            files.append("ema.safetensors")
        if optimizer is not None:
            tensors, state["optimizer"] = _split_optimizer_state(optimizer.state_dict())
            save_file(_contiguous(tensors), str(partial / "optimizer.safetensors"))
            files.append("optimizer.safetensors")
        if lr_scheduler is not None:
            state["lr_scheduler"] = _jsonable(lr_scheduler.state_dict())
        if grad_scaler is not None:
            state["grad_scaler"] = _jsonable(grad_scaler.state_dict())
        state["rng"], rng_tensors = capture_rng_state(generators)
        save_file(_contiguous(rng_tensors), str(partial / "rng.safetensors"))
        files.append("rng.safetensors")
        state["files"] = files
        for file in files:
            _fsync(partial / file)
        atomic_write_bytes(partial / "state.json", (json.dumps(state, indent=1) + "\n").encode())
        _fsync(partial)
        final = folder / name
        if final.exists():  # the same step saved again: replace it, never leaving no copy at all
            old = folder / f".{name}.partial-old-{secrets.token_hex(4)}"
            final.rename(old)
            partial.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            partial.rename(final)
        _fsync(folder)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if total_limit is not None:
        for old in list_checkpoints(folder)[:-total_limit]:
            logger.info("removing old checkpoint %s (keeping the newest %d)", old, total_limit)
            shutil.rmtree(old)
    return final


def _contiguous(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().contiguous().cpu() for k, v in tensors.items()}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _split_optimizer_state(state_dict: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": _jsonable(state_dict["param_groups"]), "plain_state": _jsonable(plain)}


def _join_optimizer_state(tensors: Mapping[str, Any], saved: Mapping[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = value
    for index, values in saved.get("plain_state", {}).items():
        state.setdefault(int(index), {}).update(values)
    groups = []
    for group in saved["param_groups"]:
        group = dict(group)
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
        groups.append(group)
    return {"state": state, "param_groups": groups}


# ----------------------------------------------------------------------------------------------
# Resuming


def resolve_resume(folder: Path | str, resume: str | None) -> Path | None:
    """The checkpoint to resume from, or ``None`` to start fresh.

    ``None``/empty: start fresh. ``latest``: the newest complete checkpoint in ``folder``, or
    ``None`` (logged) when there is none. Anything else names a checkpoint folder inside
    ``folder`` (``checkpoint-3000``) or a path; a missing one is a :class:`ConfigError` that lists
    the checkpoints there are.
    """
    folder = Path(folder)
    if not resume:
        return None
    available = list_checkpoints(folder)
    if resume == "latest":
        if not available:
            logger.info("resume=latest: no checkpoint in %s, starting fresh", folder)
            return None
        return available[-1]
    candidate = folder / resume
    if not candidate.is_dir():
        candidate = Path(resume)
    if not candidate.is_dir():
        names = ", ".join(p.name for p in available) or "none"
        raise ConfigError(f"checkpoint {resume!r} not found in {folder} (available: {names}); "
                          "use run.resume=latest to continue from the newest or leave it empty to start fresh")
    if not (candidate / "state.json").is_file():
        raise ConfigError(f"{candidate} is not a complete checkpoint (no state.json)")
    return candidate


def load_checkpoint(
    path: Path | str,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    lr_scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ema: EmaTeacher | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
    generators: Mapping[str, Generator] | None = None,
    restore_rng: bool = True,
) -> CheckpointInfo:
    """Restore what :func:`save_checkpoint` wrote into the given objects (in place).

    Objects passed as ``None`` are skipped; an object passed whose state the checkpoint lacks is an
    error. Weights must match exactly (strict loading).
    """
    from safetensors.torch import load_file, load_model

    path = Path(path)
    state_file = path / "state.json"
    if not state_file.is_file():
        raise InputError(f"{path} is not a complete checkpoint (no state.json)")
    state = json.loads(state_file.read_text())
    if state.get("format") != _FORMAT:
        raise InputError(f"{path}: checkpoint format {state.get('format')!r}, this version reads {_FORMAT}")
    missing, unexpected = load_model(model, str(path / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise InputError(f"{path}: model weights do not fit the model: missing {sorted(missing)[:5]}, "
                         f"unexpected {sorted(unexpected)[:5]}")
    if ema is not None:
        if "ema.safetensors" not in state["files"]:
            raise InputError(f"{path} holds no EMA teacher")
        ema.load_state_dict(load_file(str(path / "ema.safetensors")))
    if optimizer is not None:
        if "optimizer" not in state:
            raise InputError(f"{path} holds no optimiser state")
        tensors = load_file(str(path / "optimizer.safetensors"))
        optimizer.load_state_dict(_join_optimizer_state(tensors, state["optimizer"]))
    if grad_scaler is not None and state.get("grad_scaler"):
        grad_scaler.load_state_dict(state["grad_scaler"])
    if lr_scheduler is not None:
        if "lr_scheduler" not in state:
            raise InputError(f"{path} holds no learning-rate scheduler state")
        lr_scheduler.load_state_dict(state["lr_scheduler"])
    if restore_rng:
        restore_rng_state(state["rng"], load_file(str(path / "rng.safetensors")), generators)
    return CheckpointInfo(path, int(state["step"]), state.get("config"))
