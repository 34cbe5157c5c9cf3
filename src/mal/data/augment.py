"""Training augmentation of crop batches: a shared flip, and colour changes for the student view only.

The teacher sees the same crop and flip as the student, without colour jitter, grayscale or blur.
Randomness comes from one integer seed per batch so a batch is the same whichever worker builds it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

# sigma <= 2 px needs a +-3 sigma window; a fixed kernel keeps the cost independent of the crop size.
BLUR_KERNEL = 13


class TrainAugment:
    """Flip p=0.5 on both views and the box mask; student only: jitter p=0.5, grayscale p=0.2, blur p=0.5."""

    def __init__(
        self,
        flip_p: float = 0.5,
        jitter: Sequence[float] = (0.4, 0.4, 0.2, 0.1),
        jitter_p: float = 0.5,
        grayscale_p: float = 0.2,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        blur_p: float = 0.5,
    ) -> None:
        self.flip_p = flip_p
        self.jitter_p = jitter_p
        self.blur_sigma = (float(blur_sigma[0]), float(blur_sigma[1]))
        self.blur_p = blur_p
        brightness, contrast, saturation, hue = jitter
        self.colour = v2.ColorJitter(brightness, contrast, saturation, hue)
        self.grayscale = v2.RandomGrayscale(grayscale_p)

    def __call__(self, crops: torch.Tensor, masks: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
        """crops B x 3 x S x S in [0, 1], masks B x 1 x S x S -> image, image_aug, box_mask, flipped."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            count = crops.shape[0]
            # Random draws happen on the CPU generator, so results match on any device.
            flipped = torch.rand(count) < self.flip_p
            flip = flipped.to(crops.device)[:, None, None, None]
            teacher = torch.where(flip, crops.flip(-1), crops)
            masks = torch.where(flip, masks.flip(-1), masks)
            student = teacher.clone()
            jittered = torch.rand(count) < self.jitter_p
            # ColorJitter draws one set of factors per call, so call it per selected crop.
            for index in jittered.nonzero().flatten().tolist():
                student[index] = self.colour(student[index])
            student = self.grayscale_each(student)
            blurred = (torch.rand(count) < self.blur_p).nonzero().flatten().to(crops.device)
            if len(blurred):
                sigma = torch.empty(len(blurred)).uniform_(*self.blur_sigma)
                student[blurred] = gaussian_blur_each(student[blurred], sigma)
        return {"image": teacher, "image_aug": student.clamp_(0, 1), "box_mask": masks, "flipped": flipped}

    def grayscale_each(self, crops: torch.Tensor) -> torch.Tensor:
        chosen = (torch.rand(crops.shape[0]) < self.grayscale.p).to(crops.device)
        if not chosen.any():
            return crops
        gray = v2.functional.rgb_to_grayscale(crops[chosen], num_output_channels=3)
        crops[chosen] = gray
        return crops


def gaussian_blur_each(crops: torch.Tensor, sigma: torch.Tensor, kernel_size: int = BLUR_KERNEL) -> torch.Tensor:
    """Blur each crop with its own sigma: one separable grouped convolution for the whole batch."""
    count, channels, height, width = crops.shape
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, dtype=crops.dtype, device=crops.device)
    weights = torch.exp(-(offsets[None, :] ** 2) / (2 * sigma.to(crops)[:, None] ** 2))
    weights = (weights / weights.sum(dim=1, keepdim=True)).repeat_interleave(channels, dim=0)
    flat = crops.reshape(1, count * channels, height, width)
    pad_mode = "reflect" if min(height, width) > radius else "replicate"
    flat = F.pad(flat, (radius, radius, 0, 0), mode=pad_mode)
    flat = F.conv2d(flat, weights[:, None, None, :], groups=count * channels)
    flat = F.pad(flat, (0, 0, radius, radius), mode=pad_mode)
    flat = F.conv2d(flat, weights[:, None, :, None], groups=count * channels)
    return flat.reshape(count, channels, height, width)
