"""Batch draws of the trainer: source examples (rare-class sampling or uniform) and uniform target examples.

Every draw comes from generators seeded with ``run.seed + rank`` and listed by :meth:`BatchDrawer.generators`,
so checkpoints restore them and a resumed run draws the batches an uninterrupted one would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

    from madm_train.config import TrainConfig
    from madm_train.methods.base import Batch

__all__ = ["BatchDrawer", "stack_samples"]


def stack_samples(samples: list[Any], device: torch.device) -> Batch:
    """Stack data-set samples into a :class:`~madm_train.methods.base.Batch` on ``device``.

    The arrays are copied into torch's own (64-byte aligned) memory rather than wrapped: kernels
    whose reduction order may depend on the alignment of their input then see the same layout
    in every run, which bit-exact resumes rely on.
    """
    import torch

    from madm_train.methods.base import Batch

    images = torch.from_numpy(np.stack([s.image for s in samples])).to(device, copy=True)
    labels = None
    if all(s.label is not None for s in samples):
        labels = torch.from_numpy(np.stack([s.label for s in samples]).astype(np.int64)).to(device, copy=True)
    return Batch(images, labels)


class BatchDrawer:
    """Draws ``data.batch_size`` source and target examples per call.

    Args:
        source: Labelled source data set (with ``load(index, required_class=, min_class_pixels=)``).
        target: Unlabelled target data set.
        config: The training config (batch size, rare-class settings, seed).
        rank: This process's index; its draws are seeded with ``run.seed + rank``.
        device: Where batches go.
    """

    def __init__(self, source: Any, target: Any, config: TrainConfig, *, rank: int, device: torch.device) -> None:
        from madm_train.data.rare_class import rare_class_sampler

        self.source, self.target, self.device = source, target, device
        self.data = config.data
        seed = config.run.seed + rank
        self.index_rng = np.random.default_rng(seed)
        self.sampler = None
        if self.data.rare_class_sampling:
            self.sampler = rare_class_sampler(source, classes=self.data.rare_class_classes,
                                              temperature=self.data.rare_class_temperature,
                                              min_pixels=self.data.rare_class_min_pixels, seed=seed)

    def generators(self) -> dict[str, Any]:
        """Every generator the draws use, by name (data augmentation included)."""
        named = {"index": self.index_rng, "source_aug": self.source._generator(), "target_aug": self.target._generator()}
        if self.sampler is not None:
            named["rare_class"] = self.sampler.rng
        return named

    def source_batch(self) -> Batch:
        """Labelled source examples: a rare class first, then an example holding it, cropped to show it."""
        d, samples = self.data, []
        for _ in range(d.batch_size):
            if self.sampler is None:
                samples.append(self.source.load(int(self.index_rng.integers(len(self.source)))))
            else:
                index, c = self.sampler.sample()
                min_pixels = int(d.rare_class_min_pixels * d.rare_class_min_crop_ratio)
                samples.append(self.source.load(index, required_class=c, min_class_pixels=min_pixels,
                                                classes=self.sampler.classes))
        return stack_samples(samples, self.device)

    def target_batch(self) -> Batch:
        """Uniformly drawn target examples (the reference's infinite shuffled sampler, in effect)."""
        indices = self.index_rng.integers(len(self.target), size=self.data.batch_size)
        return stack_samples([self.target.load(int(i)) for i in indices], self.device)
