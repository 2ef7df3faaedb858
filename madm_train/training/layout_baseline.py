"""The layout-only baseline: every pixel predicted as the most frequent class at its position in the training labels.

A model that scores near this baseline has learnt where classes usually are in the frame (sky at
the top, road at the bottom), not what its input shows. The baseline never looks at an image: it
is fitted from the training split's labels alone and then predicts the same class map for every
image, so :func:`madm_train.training.evaluate.evaluate` scores it like any model (on the
evaluation split, with the same metrics).

Fitting: each training label is resized with nearest neighbour to the evaluation grid (the size
the test labels are scored at), its pixels are counted per class and position (255 = ignore), and
each position takes its most frequent class (ties: the lower class id). A position that no
training label covers predicts 255, which the confusion matrix counts as a miss.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from madm_ros.errors import InputError
from madm_ros.palettes import IGNORE_INDEX

if TYPE_CHECKING:
    from madm_train.config import TrainConfig

__all__ = ["LayoutBaseline", "fit_layout_baseline", "score_layout_baseline", "training_labels"]


class LayoutBaseline:
    """A fixed class map predicted for every image.

    Args:
        class_map: H×W uint8 class ids (255 where no training label covered the position).
    """

    def __init__(self, class_map: np.ndarray) -> None:
        if class_map.ndim != 2:
            raise InputError(f"a layout class map is H×W, got shape {class_map.shape}")
        self.class_map = class_map.astype(np.uint8)

    @classmethod
    def fit(cls, labels: Iterable[np.ndarray], size_hw: tuple[int, int], num_classes: int) -> LayoutBaseline:
        """The per-position mode of ``labels`` (H×W class ids, any size) on the ``size_hw`` grid."""
        from madm_train.data.augment import resize_label

        height, width = size_hw
        counts = np.zeros(num_classes * height * width, dtype=np.int64)
        positions = np.arange(height * width, dtype=np.int64)
        fitted = 0
        for label in labels:
            ids = resize_label(np.asarray(label, dtype=np.uint8), (height, width)).reshape(-1).astype(np.int64)
            keep = ids != IGNORE_INDEX
            if (ids[keep] >= num_classes).any():
                bad = sorted(set(ids[keep & (ids >= num_classes)].tolist()))
                raise InputError(f"label ids must be in 0..{num_classes - 1} or {IGNORE_INDEX}, found {bad[:5]}")
            counts += np.bincount(ids[keep] * height * width + positions[keep], minlength=counts.size)
            fitted += 1
        if fitted == 0:
            raise InputError("the layout-only baseline needs at least one training label")
        counts = counts.reshape(num_classes, height, width)
        class_map = np.where(counts.sum(0) > 0, counts.argmax(0), IGNORE_INDEX)
        return cls(class_map)

    def predict(self, images: Any) -> Any:
        """Class ids B×H×W (torch, int64) for a batch B×3×H'×W': the fitted map, whatever the images show."""
        import torch

        return torch.from_numpy(self.class_map.astype(np.int64))[None].expand(len(images), -1, -1)


def training_labels(dataset: Any) -> Iterable[np.ndarray]:
    """The labels of a labelled data set (``madm_train.data.datasets``) at their stored size, without augmentation."""
    return (dataset.read_label(path) for path in dataset.label_paths())


def _fit(config: TrainConfig, source: Any) -> LayoutBaseline:
    from madm_ros.palettes import get_label_set

    grid = config.data.test_resize_hw or config.data.crop_hw
    return LayoutBaseline.fit(training_labels(source), (grid[0], grid[1]), get_label_set(config.data.label_set).num_classes)


def fit_layout_baseline(config: TrainConfig) -> LayoutBaseline:
    """The baseline of ``config``: fitted on its source (training) split's labels, on the evaluation grid.

    The grid is the size the test split is scored at (``data.test_resize_hw``, else ``data.crop_hw``).
    """
    from madm_train.data.build import build_datasets

    source, _, _ = build_datasets(config)
    return _fit(config, source)


def score_layout_baseline(config: TrainConfig, out_dir: Path | str | None = None) -> dict[str, Any]:
    """Fit the baseline as :func:`fit_layout_baseline` and score it on the test split of ``config``.

    Returns :func:`~madm_train.training.evaluate.evaluate`'s metrics, written to ``out_dir`` when given.
    """
    from madm_ros.palettes import get_label_set
    from madm_train.data.build import build_datasets
    from madm_train.training.evaluate import evaluate

    source, _, test = build_datasets(config)
    baseline = _fit(config, source)
    return evaluate(baseline.predict, test, get_label_set(config.data.label_set), out_dir,
                    batch_size=config.data.batch_size)
