"""Geometric training augmentation as MADM applies it in its data sets: resize, random crop, flip.

Image and label move together (image bilinear, label nearest neighbour, crops identical, flips
identical). Source and target data sets each own one :class:`TrainAugmentation` and draw from
their own generator, so their crops are independent as in the reference. Photometric
augmentation (colour jitter, blur) and ClassMix act on network tensors inside the self-training
step, not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from madm_ros.errors import ConfigError

__all__ = ["TrainAugmentation", "resize_label", "resize_pair"]


def resize_label(label: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Resize a label image to ``size_hw`` = (height, width) with nearest neighbour (ids stay ids)."""
    import cv2

    height, width = size_hw
    if label.shape == (height, width):
        return label
    return cv2.resize(label, (width, height), interpolation=cv2.INTER_NEAREST)


def resize_pair(image: np.ndarray, label: np.ndarray | None, size_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize an 8-bit image (bilinear, as ``to_network_input`` does) and its label (nearest)."""
    from madm_ros.preprocessing import resize_image

    return resize_image(image, size_hw), (None if label is None else resize_label(label, size_hw))


@dataclass(frozen=True)
class TrainAugmentation:
    """Resize → random crop → horizontal flip (MADM's ``load_aug_data``).

    Attributes:
        resize_hw: Size (height, width) every sample is resized to first, e.g. (512, 1024) for
            Cityscapes, (712, 712) for DELIVER, (512, 683) for FMB, (512, 768) for DSEC.
        crop_hw: Size of the random crop; must fit inside ``resize_hw`` and equal the network
            input size so that no second resize happens.
        flip_probability: Chance of a horizontal flip.
        crop_tries: With a required class (rare-class sampling), crops are redrawn up to this many
            times until the class covers ``min_class_pixels`` pixels of the crop.
    """

    resize_hw: tuple[int, int]
    crop_hw: tuple[int, int]
    flip_probability: float = 0.5
    crop_tries: int = 10

    def __post_init__(self) -> None:
        if self.crop_hw[0] > self.resize_hw[0] or self.crop_hw[1] > self.resize_hw[1]:
            raise ConfigError(f"crop {self.crop_hw} does not fit inside the resized image {self.resize_hw}")
        if not 0 <= self.flip_probability <= 1:
            raise ConfigError(f"flip_probability must be in [0, 1], got {self.flip_probability}")

    def __call__(
        self,
        image: np.ndarray,
        label: np.ndarray | None,
        rng: np.random.Generator,
        *,
        required_class: int | None = None,
        min_class_pixels: int = 0,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Augment one pair with draws from ``rng``."""
        image, label = resize_pair(image, label, self.resize_hw)
        crop_h, crop_w = self.crop_hw
        max_y, max_x = image.shape[0] - crop_h, image.shape[1] - crop_w
        for _ in range(max(1, self.crop_tries if required_class is not None else 1)):
            y0, x0 = int(rng.integers(0, max_y + 1)), int(rng.integers(0, max_x + 1))
            if label is None or required_class is None:
                break
            if np.count_nonzero(label[y0 : y0 + crop_h, x0 : x0 + crop_w] == required_class) >= min_class_pixels:
                break
        image = image[y0 : y0 + crop_h, x0 : x0 + crop_w]
        label = None if label is None else label[y0 : y0 + crop_h, x0 : x0 + crop_w]
        if rng.random() < self.flip_probability:
            image = image[:, ::-1]
            label = None if label is None else label[:, ::-1]
        image = np.ascontiguousarray(image)
        return image, (None if label is None else np.ascontiguousarray(label))


