"""Segmentation and latency metrics, shared by training evaluation, bag replay and benchmarks.

mIoU follows the reference evaluator of MADM (detectron2's semantic-segmentation evaluator as
MADM uses it): one confusion matrix over the whole data set, pixels whose label is the ignore
index are left out entirely, IoU_c = TP / (GT_c + Pred_c − TP), and the mean runs over the
classes present in the ground truth or the prediction (classes absent from both are excluded,
a class predicted but never present counts with IoU 0).

A prediction may itself be "unlabelled" (255, e.g. a node's low-confidence pixels): such pixels
count as misses of their ground-truth class but as no class's false positive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from madm_ros.errors import InputError
from madm_ros.palettes import IGNORE_INDEX

__all__ = ["ConfusionMatrix", "json_ready", "latency_summary"]


class ConfusionMatrix:
    """Data-set-level confusion matrix; rows are ground truth, columns prediction.

    The extra last column counts pixels predicted as unlabelled.
    """

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX) -> None:
        if num_classes < 1 or num_classes >= ignore_index:
            raise InputError(f"num_classes must be in 1..{ignore_index - 1}, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)

    def update(self, prediction: np.ndarray, label: np.ndarray) -> None:
        """Add one image (or a batch): integer arrays of equal shape with class ids."""
        if prediction.shape != label.shape:
            raise InputError(f"prediction shape {prediction.shape} differs from label shape {label.shape}")
        k = self.num_classes
        label = label.reshape(-1).astype(np.int64)
        prediction = prediction.reshape(-1).astype(np.int64)
        keep = label != self.ignore_index
        label, prediction = label[keep], prediction[keep]
        if label.size and (label.min() < 0 or label.max() >= k):
            bad = [int(v) for v in np.unique(label) if not 0 <= v < k]
            raise InputError(f"label ids must be in 0..{k - 1} or {self.ignore_index}, found {bad[:5]}")
        unlabelled = prediction == self.ignore_index
        if prediction.size and (prediction.min() < 0 or prediction[~unlabelled].max(initial=0) >= k):
            bad = [int(v) for v in np.unique(prediction) if not 0 <= v < k and v != self.ignore_index]
            raise InputError(f"predicted ids must be in 0..{k - 1} or {self.ignore_index}, found {bad[:5]}")
        prediction = np.where(unlabelled, k, prediction)
        self.matrix += np.bincount(label * (k + 1) + prediction, minlength=k * (k + 1)).reshape(k, k + 1)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another matrix of the same classes (e.g. from another worker)."""
        if other.matrix.shape != self.matrix.shape:
            raise InputError(f"cannot merge confusion matrices of shapes {other.matrix.shape} and {self.matrix.shape}")
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for classes absent from both ground truth and prediction."""
        tp = np.diag(self.matrix[:, : self.num_classes]).astype(np.float64)
        gt = self.matrix.sum(axis=1).astype(np.float64)
        pred = self.matrix[:, : self.num_classes].sum(axis=0).astype(np.float64)
        union = gt + pred - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def miou(self) -> float:
        """Mean IoU over classes present in ground truth or prediction (NaN for an empty matrix)."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")

    def pixel_accuracy(self) -> float:
        """Correct pixels / labelled pixels."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix[:, : self.num_classes]) / total) if total else float("nan")

    def as_dict(self, class_names: Sequence[str]) -> dict[str, object]:
        """JSON-ready summary: mIoU, pixel accuracy, per-class IoU by name (None where undefined), matrix."""
        if len(class_names) != self.num_classes:
            raise InputError(f"{len(class_names)} class names for {self.num_classes} classes")
        miou, accuracy = self.miou(), self.pixel_accuracy()
        return {  # None, not NaN, where undefined: NaN is not valid JSON
            "miou": None if np.isnan(miou) else miou,
            "pixel_accuracy": None if np.isnan(accuracy) else accuracy,
            "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(class_names, self.iou())},
            "confusion_matrix": self.matrix.tolist(),
        }

    def table(self, class_names: Sequence[str]) -> str:
        """Markdown table of per-class IoU (percent) with the mean as the last row."""
        if len(class_names) != self.num_classes:
            raise InputError(f"{len(class_names)} class names for {self.num_classes} classes")
        rows = ["| class | IoU (%) |", "| --- | ---: |"]
        for name, value in zip(class_names, self.iou()):
            rows.append(f"| {name} | {'–' if np.isnan(value) else f'{100 * value:.2f}'} |")
        rows.append(f"| **mean** | **{100 * self.miou():.2f}** |")
        return "\n".join(rows)


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float]:
    """Count, mean, p50, p90, p99 and max of latencies in milliseconds (NaN-free input expected)."""
    values = np.asarray(latencies_ms, dtype=np.float64)
    if values.size == 0:
        return {"count": 0, "mean": float("nan"), "p50": float("nan"), "p90": float("nan"),
                "p99": float("nan"), "max": float("nan")}
    p50, p90, p99 = np.percentile(values, (50, 90, 99))
    return {"count": int(values.size), "mean": float(values.mean()), "p50": float(p50), "p90": float(p90),
            "p99": float(p99), "max": float(values.max())}


def json_ready(value: Any) -> Any:
    """``value`` with NaN/inf → None and numpy scalars → Python (JSON has neither; ``json.dumps`` would write bare NaN)."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.generic):
        return json_ready(value.item())
    return value
