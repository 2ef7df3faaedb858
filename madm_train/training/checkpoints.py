"""Training checkpoints: accelerate's ``save_state``/``load_state`` plus what it does not cover, atomic and numbered.

Layout (``diffusers``-style numbered folders inside a run's ``checkpoints/``)::

    checkpoint-<step>/
        model.safetensors            accelerate: the prepared network (every trained and frozen weight)
        optimizer.bin, scheduler.bin accelerate: optimiser and learning-rate schedule states
        scaler.pt                    accelerate: the fp16 loss scaler (only with fp16 AMP)
        random_states_<rank>.pkl     accelerate: Python, NumPy, torch CPU/CUDA RNG states per process
        ema.safetensors              the EMA teacher's parameters and buffers (if the method has one)
        generators_<rank>.json       the explicit generators of data draws and of the method's step,
        generators_<rank>.safetensors    per process (JSON for NumPy/Python states, tensors for torch)
        state.json                   format, step, resolved config, file list — written last

accelerate writes its pickled files with ``torch.save`` and reads them back with
``weights_only=True`` (no code from a checkpoint runs; tested). What it does not cover — atomic
folders, retention after (not before) a save, the EMA teacher, per-process generators and a check
of every file before anything is restored — is done here.

Atomicity: the state is written into ``.checkpoint-<step>.partial``, every file flushed, then the
folder is renamed to ``checkpoint-<step>`` in one step: a crash leaves either a complete folder or
no ``checkpoint-*`` folder at all. Older checkpoints beyond ``total_limit`` are removed *after* the
new one is in place (``diffusers`` prunes first).

Resuming restores every RNG state and generator, so the draws after a resume are the ones an
uninterrupted run makes; with run-to-run deterministic kernels (on a CPU: Intel MKL's
``MKL_CBWR=AUTO,STRICT`` and ``MKL_DYNAMIC=FALSE``, as the tests set) the weights are identical bit
for bit (``tests/madm_train/test_self_training.py`` says what it promises).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError, InputError

if TYPE_CHECKING:
    import torch
    from accelerate import Accelerator

    from madm_train.training.ema import EmaTeacher

    Generator = torch.Generator | np.random.Generator | random.Random

__all__ = [
    "CHECKPOINT_PREFIX",
    "CheckpointError",
    "CheckpointInfo",
    "list_checkpoints",
    "load_checkpoint",
    "resolve_resume",
    "save_checkpoint",
    "validate_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
_NAME = re.compile(r"checkpoint-(\d+)")
_FORMAT = 2  # 2: accelerate save_state + EMA + per-process generators


class CheckpointError(ConfigError):
    """A checkpoint cannot be resumed from; the message names the bad file and what to use instead."""


@dataclass(frozen=True)
class CheckpointInfo:
    """A checkpoint that passed :func:`validate_checkpoint`: its folder, step, saved config and files."""

    path: Path
    step: int
    config: dict[str, Any] | None
    files: tuple[str, ...]


def list_checkpoints(folder: Path | str) -> list[Path]:
    """Complete ``checkpoint-<step>`` folders in ``folder``, oldest (smallest step) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and _NAME.fullmatch(p.name) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX):]))


# ----------------------------------------------------------------------------------------------
# Explicit generators (data draws, mixing, k₀): accelerate restores only the global RNGs


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


def _generator_states(generators: Mapping[str, Generator]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    import torch

    plain: dict[str, Any] = {}
    tensors: dict[str, torch.Tensor] = {}
    for name, generator in generators.items():
        if isinstance(generator, torch.Generator):
            tensors[name] = generator.get_state()
            plain[name] = {"kind": "torch", "device": str(generator.device)}
        elif isinstance(generator, np.random.Generator):
            plain[name] = {"kind": "numpy", "state": _jsonable(generator.bit_generator.state)}
        elif isinstance(generator, random.Random):
            plain[name] = {"kind": "python", "state": _jsonable(generator.getstate())}
        else:
            raise InputError(f"generator {name!r} has unsupported type {type(generator).__name__}")
    return plain, tensors


def _restore_generators(plain: Mapping[str, Any], tensors: Mapping[str, torch.Tensor],
                        generators: Mapping[str, Generator], source: Path) -> None:
    import torch

    missing = sorted(set(generators) - set(plain))
    if missing:
        raise CheckpointError(f"{source} holds no state for generator(s) {missing} (it has {sorted(plain)}): it was "
                              "written by another method or version")
    for name, generator in generators.items():
        if isinstance(generator, torch.Generator):
            generator.set_state(tensors[name])
        elif isinstance(generator, np.random.Generator):
            generator.bit_generator.state = plain[name]["state"]
        else:
            version, internal, gauss = plain[name]["state"]
            generator.setstate((version, tuple(internal), gauss))


# ----------------------------------------------------------------------------------------------
# Saving


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    accelerator: Accelerator,
    folder: Path | str,
    step: int,
    *,
    ema: EmaTeacher | None = None,
    generators: Mapping[str, Generator] | None = None,
    config: Mapping[str, Any] | None = None,
    total_limit: int | None = None,
) -> Path:
    """Write ``checkpoint-<step>`` into ``folder`` atomically (every process calls this), then prune.

    Args:
        accelerator: Holds the prepared network, optimiser, schedule and loss scaler.
        folder: The run's checkpoint folder (created if missing).
        step: Number of completed iterations; training resumes at this iteration.
        ema: The EMA teacher.
        generators: This process's explicit generators, by name.
        config: The resolved configuration (``TrainConfig.to_dict()``).
        total_limit: Checkpoints to keep (``None``: all).

    Returns:
        The new checkpoint folder.
    """
    from safetensors.torch import save_file

    if step < 0:
        raise InputError(f"checkpoint step must be ≥ 0, got {step}")
    if total_limit is not None and total_limit < 1:
        raise ConfigError(f"run.checkpoints_total_limit must be ≥ 1, got {total_limit}")
    folder = Path(folder)
    name = f"{CHECKPOINT_PREFIX}{step}"
    partial, final = folder / f".{name}.partial", folder / name
    main = accelerator.is_main_process
    if main:
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(f".{CHECKPOINT_PREFIX}*.partial*"):  # left behind by a crashed save
            shutil.rmtree(stale, ignore_errors=True)
        partial.mkdir()
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(partial), safe_serialization=True)
        rank = accelerator.process_index
        plain, tensors = _generator_states(generators or {})
        atomic_write_bytes(partial / f"generators_{rank}.json", (json.dumps(plain) + "\n").encode())
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(partial / f"generators_{rank}.safetensors"))
        accelerator.wait_for_everyone()
        if main:
            if ema is not None:
                save_file({k: v.detach().contiguous().cpu() for k, v in ema.state_dict().items()},
                          str(partial / "ema.safetensors"))
            files = sorted(p.name for p in partial.iterdir())
            for file in files:
                _fsync(partial / file)
            state = {"format": _FORMAT, "step": step, "processes": accelerator.num_processes,
                     "config": _jsonable(config) if config is not None else None, "files": files}
            atomic_write_bytes(partial / "state.json", (json.dumps(state, indent=1) + "\n").encode())
            _fsync(partial)
            if final.exists():  # the same step saved again: replace it, never leaving no copy at all
                old = folder / f".{name}.partial-old"
                final.rename(old)
                partial.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                partial.rename(final)
            _fsync(folder)
    except BaseException:
        if main:
            shutil.rmtree(partial, ignore_errors=True)
        raise
    if main and total_limit is not None:
        for old_checkpoint in list_checkpoints(folder)[:-total_limit]:
            logger.info("removing old checkpoint %s (keeping the newest %d)", old_checkpoint, total_limit)
            shutil.rmtree(old_checkpoint)
    accelerator.wait_for_everyone()
    return final


# ----------------------------------------------------------------------------------------------
# Checking and resuming


def _instead(path: Path) -> str:
    """What to resume from instead of the bad checkpoint ``path`` (a pasteable option)."""
    earlier = [p for p in list_checkpoints(path.parent) if p != path and
               int(p.name[len(CHECKPOINT_PREFIX):]) < int(path.name[len(CHECKPOINT_PREFIX):])] \
        if _NAME.fullmatch(path.name) else []
    if earlier:
        return (f"resume from the newest earlier one with --resume {earlier[-1].name}, or start fresh in another folder "
                "(--set run.out_dir=DIR)")
    return ("no earlier checkpoint exists: start fresh in another folder (--set run.out_dir=DIR), or after deleting "
            "this run's folder")


def _check_safetensors(file: Path) -> str | None:
    """Why ``file`` is not a complete safetensors file, or None (reads the header and the size only)."""
    try:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError, UnicodeDecodeError) as error:
        return f"its header is unreadable ({error})"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    size = file.stat().st_size
    return None if size == expected else f"it is truncated or padded ({size} bytes, its header says {expected})"


def _check_zip(file: Path) -> str | None:
    """Why ``file`` is not a complete ``torch.save`` archive, or None (reads the central directory only)."""
    try:
        with zipfile.ZipFile(file) as archive:
            archive.infolist()
    except (OSError, zipfile.BadZipFile) as error:
        return f"it is not a complete torch.save archive ({error})"
    return None


def validate_checkpoint(path: Path | str, *, processes: int = 1) -> CheckpointInfo:
    """Check ``state.json`` and every file it lists without restoring anything.

    Raises:
        CheckpointError: naming the bad file, what is wrong with it and which checkpoint to use instead.
    """
    path = Path(path)
    state_file = path / "state.json"
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
        step, files = int(state["step"]), tuple(state["files"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(f"{state_file} is unreadable ({error}): {_instead(path)}") from None
    if state.get("format") != _FORMAT:
        raise CheckpointError(f"{state_file}: checkpoint format {state.get('format')!r}, this version reads {_FORMAT} "
                              f"(written by another version of madm): {_instead(path)}")
    if state.get("processes", 1) != processes:
        raise CheckpointError(f"{path} was written by {state.get('processes')} process(es), this run has {processes}: "
                              "each process resumes its own random streams, so resume with the same number of "
                              "processes, or start fresh in another folder (--set run.out_dir=DIR)")
    for name in files:
        file = path / name
        if not file.is_file():
            problem = "it is missing"
        elif name.endswith(".safetensors"):
            problem = _check_safetensors(file)
        elif name.endswith((".bin", ".pt", ".pkl")):
            problem = _check_zip(file)
        elif name.endswith(".json"):
            try:
                json.loads(file.read_text(encoding="utf-8"))
                problem = None
            except (OSError, ValueError) as error:
                problem = f"it is unreadable ({error})"
        else:
            problem = None
        if problem is not None:
            raise CheckpointError(f"cannot resume from {path}: {file} is bad — {problem}; {_instead(path)}")
    return CheckpointInfo(path, step, state.get("config"), files)


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
                          "use --resume latest to continue from the newest, or leave --resume out to start fresh")
    if not (candidate / "state.json").is_file():
        raise CheckpointError(f"{candidate} is not a complete checkpoint (no state.json); {_instead(candidate)}")
    return candidate


def load_checkpoint(accelerator: Accelerator, checkpoint: CheckpointInfo, *, ema: EmaTeacher | None = None,
                    generators: Mapping[str, Generator] | None = None) -> int:
    """Restore a validated checkpoint into the prepared objects, the EMA teacher and this process's generators.

    Returns:
        The step to continue from.

    Raises:
        CheckpointError: a file that passed validation still fails to load (e.g. weights of another
            network); nothing in the run folder has been changed at that point.
    """
    from safetensors.torch import load_file

    path = checkpoint.path
    try:
        accelerator.load_state(str(path))
        if ema is not None:
            if "ema.safetensors" not in checkpoint.files:
                raise CheckpointError(f"{path} holds no EMA teacher (ema.safetensors); it was written by a method "
                                      f"without one: {_instead(path)}")
            ema.load_state_dict(load_file(str(path / "ema.safetensors")))
        rank = accelerator.process_index
        plain = json.loads((path / f"generators_{rank}.json").read_text(encoding="utf-8"))
        tensors = load_file(str(path / f"generators_{rank}.safetensors"))
        _restore_generators(plain, tensors, generators or {}, path)
    except CheckpointError:
        raise
    except Exception as error:  # accelerate, safetensors and torch raise many unrelated types for a bad file
        raise CheckpointError(f"cannot resume from {path}: {type(error).__name__}: {error}; {_instead(path)}") from None
    return checkpoint.step
