"""Rare-class sampling (DAFormer's RCS, as MADM uses it on the source data set).

Statistics are computed here from the source labels themselves (no external preprocessing
files): the pixel frequency f_c of every class and, per class, the examples holding at least
``min_pixels`` of it. A class is drawn with P(c) = softmax((1 − f_c) / T), then an example that
holds it; the data set's crop is redrawn until the crop shows the class (see
``TrainAugmentation``). MADM computes the statistics in the 19-class Cityscapes space and maps
to 11/9 classes afterwards; computing them in the task's label set, as here, samples the merged
classes (e.g. all vehicles as "car") by their merged frequency.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from madm_ros.errors import InputError

__all__ = ["RareClassSampler", "RareClassStats", "rare_class_stats"]


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
    """Draws (example index, class) pairs with rare classes favoured by temperature ``temperature``."""

    def __init__(self, stats: RareClassStats, *, temperature: float = 0.01, seed: int = 0) -> None:
        if temperature <= 0:
            raise InputError(f"rare-class temperature must be positive, got {temperature}")
        available = np.array([len(e) > 0 for e in stats.examples])
        if not available.any():
            raise InputError(f"no class reaches {stats.min_pixels} pixels in any example; lower min_pixels")
        logits = np.where(available, (1 - stats.frequency) / temperature, -np.inf)
        probabilities = np.exp(logits - logits[available].max())
        self.probabilities = probabilities / probabilities.sum()
        self.stats = stats
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[int, int]:
        """One (example index, class) draw."""
        c = int(self.rng.choice(len(self.probabilities), p=self.probabilities))
        candidates = self.stats.examples[c]
        return int(candidates[self.rng.integers(len(candidates))]), c
