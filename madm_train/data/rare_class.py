"""Rare-class sampling (DAFormer's RCS, as MADM uses it on the source data set).

Statistics are computed here from the source labels themselves (no external preprocessing
files): the pixel frequency f_c of every class and, per class, the examples holding at least
``min_pixels`` of it. A class is drawn with P(c) = softmax((1 − f_c) / T), then an example that
holds it; the data set's crop is redrawn until the crop shows the class (see
``TrainAugmentation``).

Which classes are counted matters. MADM takes DAFormer's statistics of Cityscapes in its 19 train
ids, draws one of those, redraws crops until the 19-class label shows it and maps the label to
the task's 11/9 classes only then (madm_spec.md §2.4): a bus or terrain pixel is rare although
"car" and "vegetation" are common. :func:`rare_class_sampler` with ``classes="source"`` does the
same; ``classes="merged"`` counts in the task's label set instead, so merged classes are drawn by
their merged frequency. Source data annotated in the task's classes directly (the folder layout)
has one class space only, and both choices count in it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from madm_ros.errors import InputError
from madm_train.data.datasets import ClassSpace, ModalityDataset

__all__ = ["RareClassSampler", "RareClassStats", "rare_class_sampler", "rare_class_stats"]


@dataclass(frozen=True)
class RareClassStats:
    """Pixel frequency per class and, per class, the indices of examples with enough of it."""

    frequency: np.ndarray  # float64 (num_classes,), sums to 1 over labelled pixels
    examples: tuple[tuple[int, ...], ...]  # per class: example indices holding ≥ min_pixels of it
    min_pixels: int


def rare_class_stats(labels: Iterable[np.ndarray], num_classes: int, *, min_pixels: int = 3000) -> RareClassStats:
    """Count classes over ``labels`` (uint8 id images, 255 ignored), in order of the data set."""
    totals = np.zeros(num_classes, dtype=np.int64)
    examples: list[list[int]] = [[] for _ in range(num_classes)]
    for index, label in enumerate(labels):
        counts = np.bincount(label.reshape(-1), minlength=256)[:num_classes]
        totals += counts
        for c in np.flatnonzero(counts >= min_pixels):
            examples[c].append(index)
    if totals.sum() == 0:
        raise InputError("rare-class sampling needs labelled pixels; every label was empty or ignored")
    return RareClassStats(totals / totals.sum(), tuple(tuple(e) for e in examples), min_pixels)


class RareClassSampler:
    """Draws (example index, class) pairs with rare classes favoured by temperature ``temperature``.

    ``classes`` records the space the statistics were counted in, so that the data set checks its
    crops in the same one: ``dataset.load(index, required_class=c, classes=sampler.classes, …)``.
    """

    def __init__(self, stats: RareClassStats, *, temperature: float = 0.01, seed: int = 0,
                 classes: ClassSpace = "merged") -> None:
        if temperature <= 0:
            raise InputError(f"rare-class temperature must be positive, got {temperature}")
        available = np.array([len(e) > 0 for e in stats.examples])
        if not available.any():
            raise InputError(f"no class reaches {stats.min_pixels} pixels in any example; lower min_pixels")
        logits = np.where(available, (1 - stats.frequency) / temperature, -np.inf)
        probabilities = np.exp(logits - logits[available].max())
        self.probabilities = probabilities / probabilities.sum()
        self.stats = stats
        self.classes = classes
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[int, int]:
        """One (example index, class) draw."""
        c = int(self.rng.choice(len(self.probabilities), p=self.probabilities))
        candidates = self.stats.examples[c]
        return int(candidates[self.rng.integers(len(candidates))]), c


def rare_class_sampler(source: ModalityDataset, *, classes: ClassSpace, temperature: float, min_pixels: int,
                       seed: int) -> RareClassSampler:
    """Rare-class sampling over the labelled data set ``source``, counted in ``classes``.

    Args:
        source: The source data set; every example needs a label.
        classes: ``source`` counts in the classes the labels are annotated in (Cityscapes' 19
            train ids, as MADM does), ``merged`` in the task's label set.
        temperature: T in P(c) = softmax((1 − f_c) / T).
        min_pixels: An example counts for a class when it holds this many of its pixels.
        seed: Seed of the sampler's own generator.
    """
    label_set = source.label_classes(classes)
    unlabelled = [r.name for r in source.records if r.label_path is None]
    if unlabelled:
        raise InputError(f"rare-class sampling needs a label for every source example, but {len(unlabelled)} have "
                         f"none (first: {unlabelled[0]}); add their labels or set data.rare_class_sampling false")
    labels = (source.read_label(r.label_path, classes) for r in source.records if r.label_path is not None)
    stats = rare_class_stats(labels, label_set.num_classes, min_pixels=min_pixels)
    return RareClassSampler(stats, temperature=temperature, seed=seed, classes=classes)
