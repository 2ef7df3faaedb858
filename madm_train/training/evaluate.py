"""Evaluation as MADM's protocol does it: one forward per image at the network size, dataset-level mIoU.

``evaluate`` takes any ``predict(images) -> logits`` callable (the MADM teacher or student, a
distilled student, an ONNX session wrapped in a function), so every model is scored by the same
code. Images and labels come from a ``madm_train.data.datasets`` data set without augmentation, i.e.
both resized to the network size (MADM evaluates at 512×512). It writes, atomically, into
``out_dir``: ``metrics.json`` (``miou``, ``pixel_accuracy``, ``per_class_iou``, ``confusion_matrix``,
``class_names``, ``images``), ``metrics.md`` (the per-class table) and qualitative PNGs (input |
ground truth | prediction) for the first few images.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from madm_ros.atomic_io import atomic_write_bytes
from madm_ros.errors import InputError
from madm_ros.metrics import ConfusionMatrix
from madm_ros.palettes import LabelSet, colorize

__all__ = ["evaluate", "qualitative_panel"]


def qualitative_panel(image: np.ndarray, label: np.ndarray, prediction: np.ndarray, label_set: LabelSet) -> np.ndarray:
    """Input | ground truth | prediction side by side, H×3W×3 uint8 RGB (unlabelled pixels black)."""
    rgb = np.rint(np.clip(image, 0, 1).transpose(1, 2, 0) * 255).astype(np.uint8)
    return np.concatenate([rgb, colorize(label, label_set), colorize(prediction, label_set)], axis=1)


def evaluate(
    predict: Callable[[Any], Any],
    dataset: Sequence[Any],
    label_set: LabelSet,
    out_dir: Path | str | None = None,
    *,
    batch_size: int = 1,
    qualitative: int = 4,
    progress: bool = False,
    eval_classes: str | Sequence[str] = "all",
) -> dict[str, Any]:
    """Score ``predict`` on every labelled sample of ``dataset``; return (and write) the metrics.

    Args:
        predict: Maps a float32 tensor B×3×H×W (torch) to logits B×K×H'×W'; logits are resized to
            the label size bilinearly before the arg-max, as MADM's evaluator does. A predictor
            without logits may return integer class ids B×H'×W' instead (resized with nearest
            neighbour; 255 = no prediction, counted as a miss of the labelled class), e.g.
            ``madm_train.training.layout_baseline``.
        dataset: Samples with ``image`` (3×H×W float32) and ``label`` (H×W uint8); unlabelled
            samples are skipped.
        label_set: The classes of the labels and logits.
        out_dir: Where to write ``metrics.json``, ``metrics.md`` and ``qualitative/*.png``; None = nowhere.
        batch_size: Images per forward pass.
        qualitative: How many panels to write.
        progress: Show a tqdm bar.
        eval_classes: ``all``, or a class subset the protocol also reports (``synthia16``,
            ``synthia13``), or a list of them: each one's mean IoU is added as ``miou_<subset>``
            (``madm_ros.palettes``).
    """
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    matrix = ConfusionMatrix(label_set.num_classes)
    panels: list[tuple[str, np.ndarray]] = []
    images_scored = 0
    batch: list[Any] = []

    def flush() -> None:
        nonlocal images_scored
        images = torch.from_numpy(np.stack([s.image for s in batch]))
        with torch.no_grad():
            logits = predict(images)
        labels = np.stack([s.label for s in batch])
        if not torch.is_floating_point(logits):  # class ids (ConfusionMatrix checks their range)
            if logits.dim() != 3:
                raise InputError(f"a predictor of class ids must return B×H×W, got shape {tuple(logits.shape)}")
            if logits.numel() and not 0 <= int(logits.min()) <= int(logits.max()) <= 255:
                raise InputError(f"predicted class ids must be in 0..255, got {int(logits.min())}..{int(logits.max())}")
            ids = F.interpolate(logits[:, None].float(), size=labels.shape[-2:], mode="nearest")[:, 0]
            predictions = ids.numpy().astype(np.uint8)
        else:
            if logits.shape[1] != label_set.num_classes:
                raise InputError(f"the model predicts {logits.shape[1]} classes but {label_set.name} has "
                                 f"{label_set.num_classes}")
            logits = F.interpolate(logits.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False)
            predictions = logits.argmax(1).numpy().astype(np.uint8)
        matrix.update(predictions, labels)
        for sample, prediction in zip(batch, predictions):
            if len(panels) < qualitative:
                name = str(sample.meta.get("name", len(panels)))
                panels.append((name, qualitative_panel(sample.image, sample.label, prediction, label_set)))
        images_scored += len(batch)
        batch.clear()

    for index in tqdm(range(len(dataset)), desc="evaluate", unit="image", disable=not progress):
        sample = dataset[index]
        if sample.label is None:
            continue
        batch.append(sample)
        if len(batch) == batch_size:
            flush()
    if batch:
        flush()
    if images_scored == 0:
        raise InputError("the evaluation split has no labelled images; give a data set with labels")

    metrics = {**matrix.as_dict(label_set.class_names), "class_names": list(label_set.class_names),
               "label_set": label_set.name, "images": images_scored}
    from madm_ros.palettes import eval_class_names, subset_miou

    for subset in [eval_classes] if isinstance(eval_classes, str) else eval_classes:
        if subset != "all":
            metrics[f"miou_{subset}"] = subset_miou(metrics["per_class_iou"], eval_class_names(label_set.name, subset))
    if out_dir is not None:
        _write(Path(out_dir), metrics, matrix.table(label_set.class_names), panels)
    return metrics


def _write(out_dir: Path, metrics: dict[str, Any], table: str, panels: list[tuple[str, np.ndarray]]) -> None:
    import cv2

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "qualitative").mkdir(exist_ok=True)
    for name, panel in panels:
        ok, data = cv2.imencode(".png", np.ascontiguousarray(panel[:, :, ::-1]))
        if ok:
            atomic_write_bytes(out_dir / "qualitative" / f"{name.replace('/', '_')}.png", data.tobytes())
    atomic_write_bytes(out_dir / "metrics.md", (table + "\n").encode())
    atomic_write_bytes(out_dir / "metrics.json", (json.dumps(metrics, indent=1) + "\n").encode())
