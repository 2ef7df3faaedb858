"""ClassMix, colour jitter and Gaussian blur as pure tensor functions (DACS as DAFormer and MADM use it).

Reference behaviour (madm_spec.md §2.3; DAFormer ``mmseg/models/utils/dacs_transforms.py``, MADM
``mtmadise.py``):

- ClassMix: the candidate classes are the unique values of the **whole batch's** source labels
  (255 included when present); for every image ⌈n/2⌉ of them are chosen at random without
  replacement, and that image's mask holds its source pixels whose label is chosen.
  Mixed image = mask·source + (1 − mask)·target; the mixed label uses the same mask.
- Colour jitter with probability 0.8 and Gaussian blur with probability 0.5; the two apply/skip
  draws are shared by the batch, the jitter factors, order and blur σ are drawn per image (the
  reference transforms one image at a time).

Colour jitter follows kornia 0.5's ``ColorJitter`` (the version DAFormer pins) rather than
torchvision's: brightness *adds* b − 1 with b ~ U(1 − s, 1 + s); contrast *multiplies* by
c ~ U(1 − s, 1 + s) (no blending with the mean); saturation multiplies HSV saturation by
U(1 − s, 1 + s); hue shifts HSV hue by U(−s, s)·2π; the four run in a random order and each
result is clamped to [0, 1]. Differences from kornia itself: the random numbers come from the
given ``torch.Generator`` (so values differ draw for draw), and HSV conversion is re-implemented
here with the same formulas. The blur kernel side is ``ceil(f·side)`` made odd by subtracting one
when even (51 at 512 px), σ ~ U(0.15, 1.15), reflect padding, as kornia's ``GaussianBlur2d``.

Every function takes an explicit ``torch.Generator`` and never touches global random state.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from madm_ros.errors import InputError

if TYPE_CHECKING:
    import torch

__all__ = [
    "blur_kernel_size",
    "classmix_masks",
    "color_jitter",
    "gaussian_blur",
    "mix",
    "strong_augment",
]


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    import torch

    return low + (high - low) * float(torch.rand((), generator=generator, device=generator.device).item())


def classmix_masks(source_labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """ClassMix masks (B×H×W bool): True where the mixed image takes the source pixel.

    Classes come from the whole batch (255 included if present); each image draws its own
    ⌈n/2⌉ = (n + n mod 2)/2 of them without replacement.
    """
    import torch

    if source_labels.ndim != 3:
        raise InputError(f"source labels must be B×H×W, got shape {tuple(source_labels.shape)}")
    classes = torch.unique(source_labels)
    n = classes.numel()
    chosen_count = (n + n % 2) // 2
    masks = []
    for label in source_labels:
        order = torch.randperm(n, generator=generator, device=generator.device).to(classes.device)
        masks.append(torch.isin(label, classes[order[:chosen_count]]))
    return torch.stack(masks)


def mix(mask: torch.Tensor, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """mask·source + (1 − mask)·target for images (B×C×H×W) or labels/weights (B×H×W), by selection."""
    if mask.ndim != 3:
        raise InputError(f"mask must be B×H×W, got shape {tuple(mask.shape)}")
    if source.shape != target.shape:
        raise InputError(f"source {tuple(source.shape)} and target {tuple(target.shape)} differ in shape")
    selector = mask.bool()[:, None] if source.ndim == 4 else mask.bool()
    if source.dtype != target.dtype:  # e.g. uint8 ground truth with long pseudo-labels
        source, target = source.long(), target.long()
    return source.where(selector, target)


# ----------------------------------------------------------------------------------------------
# Colour jitter (kornia 0.5 ColorJitter semantics)


def _rgb_to_hsv(image: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    import torch

    max_rgb, argmax_rgb = image.max(dim=-3)
    min_rgb = image.min(dim=-3).values
    delta = max_rgb - min_rgb
    saturation = delta / (max_rgb + eps)
    delta = torch.where(delta == 0, torch.ones_like(delta), delta)
    rc, gc, bc = torch.unbind(max_rgb.unsqueeze(-3) - image, dim=-3)
    candidates = torch.stack((bc - gc, (rc - bc) + 2.0 * delta, (gc - rc) + 4.0 * delta), dim=-3) / delta.unsqueeze(-3)
    hue = torch.gather(candidates, dim=-3, index=argmax_rgb.unsqueeze(-3)).squeeze(-3)
    hue = 2 * math.pi * ((hue / 6.0) % 1.0)
    return torch.stack((hue, saturation, max_rgb), dim=-3)


def _hsv_to_rgb(image: torch.Tensor) -> torch.Tensor:
    import torch

    h = image[..., 0, :, :] / (2 * math.pi)
    s, v = image[..., 1, :, :], image[..., 2, :, :]
    sector = torch.floor(h * 6) % 6
    f = ((h * 6) % 6) - sector
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    sector = sector.long()
    table = torch.stack((v, q, p, p, t, v, t, v, v, q, p, p, p, p, t, v, v, q), dim=-3)
    return torch.gather(table, -3, torch.stack((sector, sector + 6, sector + 12), dim=-3))


def color_jitter(image: torch.Tensor, generator: torch.Generator, *, strength: float = 0.2) -> torch.Tensor:
    """Jitter one image or a batch (…×3×H×W in [0, 1]) with one draw of factors and order (kornia 0.5 semantics)."""
    import torch

    if image.shape[-3] != 3:
        raise InputError(f"colour jitter needs 3 channels, got shape {tuple(image.shape)}")
    order = torch.randperm(4, generator=generator, device=generator.device).tolist()
    brightness = _uniform(generator, max(0.0, 1 - strength), 1 + strength)
    contrast = _uniform(generator, max(0.0, 1 - strength), 1 + strength)
    saturation = _uniform(generator, max(0.0, 1 - strength), 1 + strength)
    hue = _uniform(generator, -strength, strength)
    out = image
    for step in order:
        if step == 0:
            out = (out + (brightness - 1)).clamp(0, 1)
        elif step == 1:
            out = (out * contrast).clamp(0, 1)
        elif step == 2:
            hsv = _rgb_to_hsv(out)
            hsv = torch.stack((hsv[..., 0, :, :], (hsv[..., 1, :, :] * saturation).clamp(0, 1), hsv[..., 2, :, :]), dim=-3)
            out = _hsv_to_rgb(hsv).clamp(0, 1)
        else:
            hsv = _rgb_to_hsv(out)
            shifted = torch.fmod(hsv[..., 0, :, :] + hue * 2 * math.pi, 2 * math.pi)
            shifted = torch.where(shifted < 0, shifted + 2 * math.pi, shifted)
            out = _hsv_to_rgb(torch.stack((shifted, hsv[..., 1, :, :], hsv[..., 2, :, :]), dim=-3)).clamp(0, 1)
    return out


# ----------------------------------------------------------------------------------------------
# Gaussian blur


def blur_kernel_size(side: int, fraction: float = 0.1) -> int:
    """DACS kernel side: ⌈fraction·side⌉, minus one when even (51 for 512, 9 for 100)."""
    size = math.ceil(fraction * side)
    return max(1, size - 1 if size % 2 == 0 else size)


def gaussian_blur(image: torch.Tensor, sigma: float, kernel_hw: tuple[int, int]) -> torch.Tensor:
    """Separable Gaussian blur of B×C×H×W with reflect padding (kornia ``GaussianBlur2d``)."""
    import torch
    import torch.nn.functional as F

    if image.ndim != 4:
        raise InputError(f"blur expects B×C×H×W, got shape {tuple(image.shape)}")
    channels = image.shape[1]
    out = image
    for axis, size in ((2, kernel_hw[0]), (3, kernel_hw[1])):
        if size <= 1:
            continue
        x = torch.arange(size, dtype=torch.float32, device=image.device) - size // 2
        kernel = torch.exp(-(x**2) / (2 * sigma**2))
        kernel = (kernel / kernel.sum()).to(image.dtype)
        shape = (1, 1, size, 1) if axis == 2 else (1, 1, 1, size)
        pad = (0, 0, size // 2, size // 2) if axis == 2 else (size // 2, size // 2, 0, 0)
        weight = kernel.reshape(shape).expand(channels, -1, -1, -1)
        out = F.conv2d(F.pad(out, pad, mode="reflect"), weight, groups=channels)
    return out


def strong_augment(images: torch.Tensor, generator: torch.Generator, *, jitter_probability: float = 0.8,
                   jitter_strength: float = 0.2, blur_probability: float = 0.5,
                   blur_sigma: tuple[float, float] = (0.15, 1.15), blur_kernel_fraction: float = 0.1) -> torch.Tensor:
    """Colour jitter then blur of mixed images (B×3×H×W in [0, 1]); a new tensor.

    The apply/skip draws (U(0,1) > 1 − p, as the reference's ``> 0.2`` and ``> 0.5``) are shared by
    the batch; jitter factors, order and σ are drawn per image.
    """
    import torch

    if images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"mixed images must be B×3×H×W, got shape {tuple(images.shape)}")
    do_jitter = _uniform(generator) > 1 - jitter_probability
    do_blur = _uniform(generator) > 1 - blur_probability
    kernel_hw = (blur_kernel_size(images.shape[2], blur_kernel_fraction), blur_kernel_size(images.shape[3], blur_kernel_fraction))
    out = []
    for image in images:
        image = image[None]
        if do_jitter:
            image = color_jitter(image, generator, strength=jitter_strength)
        if do_blur:
            image = gaussian_blur(image, _uniform(generator, *blur_sigma), kernel_hw)
        out.append(image)
    return torch.cat(out)
