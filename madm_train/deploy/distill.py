"""``python -m madm_train distill``: train the real-time student on target frames labelled by the adapted MADM teacher.

Recipe (reference/edge.md §7), in execution order:

1. Target frames at the student's size, without augmentation (the teacher's view must be the
   student's view).
2. One teacher pass over every frame; logits cached on disk (:class:`~madm_train.deploy.teacher_cache.TeacherCache`),
   then the teacher is freed: it never runs again, however long the student trains.
3. Student (:class:`~madm_train.models.student.DDRNetStudent`, random init) trained with AdamW and a poly
   schedule on: pixel-wise KL(teacher ‖ student) at temperature τ (× τ²) + cross-entropy on the
   teacher's arg-max weighted by the fraction of confident pixels (DAFormer's pseudo-label
   weight, threshold 0.968) + the same on the auxiliary head (× 0.4) + optionally cross-entropy
   on labelled source frames. Horizontal flips are applied to frame and cached logits together.
4. Agreement with the teacher (pixel arg-max and mean KL) before and after, the target test split's
   mIoU if it has labels, the student folder, ``log.jsonl`` and ``distill.json``.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import ConfigError, InputError
from madm_ros.palettes import IGNORE_INDEX, get_label_set
from madm_ros.preprocessing import InputSpec

__all__ = ["DISTILL_OUTPUTS", "DistillOptions", "at_size", "distill"]

DISTILL_OUTPUTS = frozenset({"teacher_cache", "student", "eval", "log.jsonl", "distill.json"})
"""What distill writes into ``--out``: a folder holding anything else is refused (it would be overwritten)."""


@dataclass(frozen=True)
class DistillOptions:
    """Everything ``distill`` needs besides the data.

    Attributes:
        teacher: Saved MADM model folder (``adapt``'s ``model/``).
        out_dir: Run folder (student, logs, report).
        label_set: Label set of teacher and student.
        input_spec: Modality and network size (height, width) of the student.
        channels: Student base width (32 = DDRNet-23-slim; the default 24 fits the 2-core CPU budget, see bench/inference.py).
        iterations: Optimiser steps.
        batch_size: Frames per step.
        lr: AdamW peak learning rate (poly decay, power 0.9).
        weight_decay: AdamW weight decay.
        temperature: τ of the pixel KL.
        kd_weight: Weight of the pixel KL.
        ce_weight: Weight of the pseudo-label cross-entropy.
        aux_weight: Weight of the auxiliary head's pseudo-label cross-entropy.
        confidence: Teacher probability above which a pixel counts as confident (DAFormer: 0.968).
        source_weight: Weight of cross-entropy on labelled source frames (0: unused).
        cache_dir: Teacher-logit cache (default ``<out_dir>/teacher_cache``; share it between runs).
        cache_stride: Teacher logits are cached at 1/cache_stride of the network size.
        device: ``cpu`` or ``cuda``.
        seed: Seed of weights, batch order and flips.
        log_every: Iterations between ``log.jsonl`` lines.
    """

    teacher: Path
    out_dir: Path
    label_set: str
    input_spec: InputSpec
    channels: int = 24
    iterations: int = 4000
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 2.0
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    aux_weight: float = 0.4
    confidence: float = 0.968
    source_weight: float = 0.0
    cache_dir: Path | None = None
    cache_stride: int = 4
    device: str = "cpu"
    seed: int = 0
    log_every: int = 50

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.batch_size < 1 or self.lr <= 0 or self.temperature <= 0:
            raise ConfigError(f"iterations, batch_size, lr and temperature must be positive, got {self.iterations}, "
                              f"{self.batch_size}, {self.lr}, {self.temperature}")
        if not 0 <= self.confidence < 1 or min(self.kd_weight, self.ce_weight, self.aux_weight, self.source_weight) < 0:
            raise ConfigError("confidence must be in [0, 1) and loss weights ≥ 0")
        if self.kd_weight == self.ce_weight == 0:
            raise ConfigError("kd_weight and ce_weight are both 0: the teacher would teach nothing")
        if not (Path(self.teacher) / "config.json").is_file():
            raise ConfigError(f"teacher {self.teacher} is not a saved model folder (no config.json); "
                              "give adapt's <run>/model")


def at_size(dataset: Any, size: tuple[int, int]) -> Any:
    """A copy of a ``madm_train.data.datasets`` data set without augmentation whose frames come at ``size`` (H, W).

    Distillation needs the same, un-augmented view of each frame every time (its teacher output is
    cached); the training configs' target sets crop randomly.
    """
    copied = copy.copy(dataset)
    copied.augmentation = None
    copied.spec = InputSpec(**{**dataset.spec.to_dict(), "height": size[0], "width": size[1]})
    return copied


def _teacher_pass(options: DistillOptions, frames: Sequence[Any], num_classes: int, progress: bool) -> list[np.ndarray]:
    """Cached teacher logits of every frame (runs the teacher only on frames missing from the cache)."""
    import torch
    from tqdm import tqdm

    from madm_train.deploy.teacher_cache import TeacherCache
    from madm_train.models.saved import LOGITS_METHOD, load_saved

    cache = TeacherCache(options.cache_dir or options.out_dir / "teacher_cache", options.teacher, num_classes,
                         options.cache_stride, method=LOGITS_METHOD)
    outputs: list[np.ndarray | None] = [cache.get(frames[i].image) for i in range(len(frames))]
    missing = [i for i, o in enumerate(outputs) if o is None]
    print(f"distill: teacher logits for {len(frames)} frames: {len(frames) - len(missing)} cached, {len(missing)} to "
          f"compute -> {cache.folder}", file=sys.stderr)
    if missing:
        teacher = load_saved(options.teacher)
        teacher.network.to(options.device)
        with torch.inference_mode():
            for i in tqdm(missing, desc="teacher", unit="frame", disable=not progress):
                image = frames[i].image
                logits = teacher.logits(torch.from_numpy(image[None]).to(options.device))[0].float().cpu()
                if logits.shape[0] != num_classes:
                    raise InputError(f"the teacher predicts {logits.shape[0]} classes, {options.label_set} has {num_classes}")
                outputs[i] = cache.put(image, logits)
        del teacher
    return outputs  # type: ignore[return-value]


def _losses(student: Any, images: Any, teacher_logits: Any, options: DistillOptions) -> dict[str, Any]:
    """Pixel KL at τ, confidence-weighted pseudo-label CE (main and auxiliary head), all at the input size."""
    import torch.nn.functional as F

    size = images.shape[-2:]
    logits, aux = (F.interpolate(t, size=size, mode="bilinear", align_corners=False)
                   for t in student(images, with_aux=True))
    teacher = F.interpolate(teacher_logits, size=size, mode="bilinear", align_corners=False)
    tau = options.temperature
    kd = F.kl_div(F.log_softmax(logits / tau, 1), F.log_softmax(teacher / tau, 1), log_target=True,
                  reduction="none").sum(1).mean() * tau * tau
    confidence, pseudo = F.softmax(teacher, 1).max(1)
    weight = (confidence > options.confidence).float().mean(dim=(1, 2))  # one weight per image, as DAFormer
    ce = (F.cross_entropy(logits, pseudo, reduction="none").mean(dim=(1, 2)) * weight).mean()
    aux_ce = (F.cross_entropy(aux, pseudo, reduction="none").mean(dim=(1, 2)) * weight).mean()
    return {"kd": kd, "ce": ce, "aux_ce": aux_ce, "pl_weight": weight.mean()}


def _agreement(student: Any, frames: Sequence[Any], teacher_logits: list[np.ndarray], device: Any,
               tau: float) -> dict[str, float]:
    """Pixel arg-max agreement and mean KL (τ) between student and teacher, at the cached resolution."""
    import torch
    import torch.nn.functional as F

    student.eval()
    agree, pixels, kl = 0, 0, 0.0
    with torch.inference_mode():
        for sample, cached in zip(frames, teacher_logits):
            teacher = torch.from_numpy(cached[None]).float().to(device)
            logits = F.interpolate(student(torch.from_numpy(sample.image[None]).to(device)), size=teacher.shape[-2:],
                                   mode="bilinear", align_corners=False)
            agree += int((logits.argmax(1) == teacher.argmax(1)).sum())
            pixels += teacher[0, 0].numel()
            kl += float(F.kl_div(F.log_softmax(logits / tau, 1), F.log_softmax(teacher / tau, 1), log_target=True,
                                 reduction="none").sum(1).mean())
    student.train()
    return {"teacher_agreement": agree / pixels, "teacher_kl": kl / len(frames)}


def distill(options: DistillOptions, frames: Sequence[Any], *, source: Sequence[Any] | None = None,
            test: Sequence[Any] | None = None, progress: bool = False) -> dict[str, Any]:
    """Distil the teacher into a new student on ``frames``; returns the report (also ``<out_dir>/distill.json``).

    Args:
        options: Teacher, student and recipe.
        frames: Target-modality samples (``madm_train.data.datasets`` ``Sample``s) at the student's size, un-augmented.
        source: Labelled source samples at the same size (used when ``options.source_weight`` > 0).
        test: Labelled target samples to report mIoU on (optional).
        progress: Show progress bars.
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    from madm_train.models.student import DDRNetStudent, save_student
    from madm_train.training.evaluate import evaluate

    if len(frames) == 0:
        raise InputError("no target frames to distil on")
    if options.source_weight > 0 and not source:
        raise ConfigError("source_weight > 0 needs labelled source frames")
    if options.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {options.device!r} requested but no CUDA device is available; use --device cpu")
    label_set = get_label_set(options.label_set)
    out = Path(options.out_dir)
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DISTILL_OUTPUTS) if out.is_dir() else []
    if foreign:
        raise ConfigError(f"--out {out} holds files distill does not write ({', '.join(foreign[:5])}"
                          f"{', …' if len(foreign) > 5 else ''}); give a new or empty folder, or an earlier distill's "
                          "(its teacher cache is reused), so that nothing there is overwritten (an adapt run's "
                          "log.jsonl would be)")
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device(options.device)
    teacher_logits = _teacher_pass(options, frames, label_set.num_classes, progress)

    torch.manual_seed(options.seed)
    rng = np.random.default_rng(options.seed)
    student = DDRNetStudent(label_set.num_classes, channels=options.channels).to(device).train()
    probe = list(range(min(len(frames), 16)))
    initial = _agreement(student, [frames[i] for i in probe], [teacher_logits[i] for i in probe], device,
                         options.temperature)
    optimizer = torch.optim.AdamW(student.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: (1 - step / options.iterations) ** 0.9)
    print(f"distill: {len(frames)} frames of {options.input_spec.height}x{options.input_spec.width}, student "
          f"DDRNet c={options.channels} ({sum(p.numel() for p in student.parameters()) / 1e6:.2f} M parameters), "
          f"{options.iterations} iterations of batch {options.batch_size} on {device}", file=sys.stderr)
    log_lines: list[bytes] = []
    started = time.perf_counter()
    bar = tqdm(range(1, options.iterations + 1), desc="distill", unit="it", disable=not progress)
    for iteration in bar:
        picks = rng.integers(0, len(frames), options.batch_size)
        flips = rng.random(options.batch_size) < 0.5
        images = torch.from_numpy(np.stack([frames[i].image for i in picks])).to(device)
        cached = torch.from_numpy(np.stack([teacher_logits[i] for i in picks])).float().to(device)
        flip = torch.from_numpy(flips).to(device)[:, None, None, None]
        images, cached = torch.where(flip, images.flip(-1), images), torch.where(flip, cached.flip(-1), cached)
        parts = _losses(student, images, cached, options)
        loss = options.kd_weight * parts["kd"] + options.ce_weight * parts["ce"] + options.aux_weight * parts["aux_ce"]
        if options.source_weight > 0 and source:
            chosen = [source[int(i)] for i in rng.integers(0, len(source), options.batch_size)]
            src = torch.from_numpy(np.stack([s.image for s in chosen])).to(device)
            labels = torch.from_numpy(np.stack([s.label for s in chosen]).astype(np.int64)).to(device)
            src_logits = F.interpolate(student(src), size=labels.shape[-2:], mode="bilinear", align_corners=False)
            parts["source_ce"] = F.cross_entropy(src_logits, labels, ignore_index=IGNORE_INDEX)
            loss = loss + options.source_weight * parts["source_ce"]
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if iteration % options.log_every == 0 or iteration == options.iterations:
            record = {"iteration": iteration, "loss": loss.item(), **{k: v.item() for k, v in parts.items()},
                      "lr": schedule.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 2)}
            log_lines.append(json.dumps(record).encode() + b"\n")
            atomic_write_bytes(out / "log.jsonl", b"".join(log_lines))
            bar.set_postfix(loss=f"{record['loss']:.3f}", kd=f"{record['kd']:.3f}")

    final = _agreement(student, [frames[i] for i in probe], [teacher_logits[i] for i in probe], device,
                       options.temperature)
    student.eval()
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(options).items() if k != "input_spec"}
    save_student(student.cpu(), out / "student", label_set=options.label_set, input_spec=options.input_spec,
                 extra={"distill": config})
    report: dict[str, Any] = {"student": str(out / "student"), "frames": len(frames), "initial": initial, "final": final,
                              "seconds": round(time.perf_counter() - started, 1)}
    if test is not None and len(test):
        metrics = evaluate(lambda x: student(x), test, label_set, out / "eval", progress=progress)
        report["test_miou"] = metrics["miou"]
    atomic_write_bytes(out / "distill.json", (json.dumps(report, indent=1) + "\n").encode())
    return report
