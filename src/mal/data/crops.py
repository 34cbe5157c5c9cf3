"""Box expansion, crop-and-resize of many boxes at once, and the box mask that tells the network which box.

Coordinates are continuous pixel coordinates: pixel (i, j) covers [j, j+1) x [i, i+1), so a box xyxy of
[0, 0, W, H] is the whole image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align


def expand_boxes(
    boxes_xyxy: torch.Tensor,
    margin_rate: Sequence[float] = (0.0, 1.2),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Grow each box by a margin m ~ U(lo, hi) of its half-extent per axis, split between the sides by g ~ U(0, 1).

    The crop is (1 + m / 2) times the box per axis: [0, 1.2] gives 1.0-1.6x, [0.6, 0.6] gives exactly 1.3x.
    When lo == hi nothing is random and the margin is split evenly, so the box stays centred.
    """
    boxes = boxes_xyxy.float()
    low, high = float(margin_rate[0]), float(margin_rate[1])
    count = boxes.shape[0]
    if low == high:
        margin = torch.full((count, 2), low)
        gate = torch.full((count, 2), 0.5)
    else:
        margin = low + (high - low) * torch.rand((count, 2), generator=generator)
        gate = torch.rand((count, 2), generator=generator)
    margin, gate = margin.to(boxes.device), gate.to(boxes.device)
    grow = margin * (boxes[:, 2:] - boxes[:, :2]) / 2
    return torch.cat([boxes[:, :2] - gate * grow, boxes[:, 2:] + (1 - gate) * grow], dim=1)


def crop_and_resize(
    images: torch.Tensor | Sequence[torch.Tensor],
    crop_boxes: torch.Tensor | Sequence[torch.Tensor],
    size: int,
) -> torch.Tensor:
    """Crop every box and resize it to size x size (aspect ratio not kept) with one `roi_align` call.

    `images`: one 3 x H x W image with `crop_boxes` N x 4, or a B x 3 x H x W batch / list of same-size images
    with `crop_boxes` a list of per-image N_i x 4 tensors (or K x 5 rows of [batch index, x0, y0, x1, y1]).
    Integer images are scaled to [0, 1]. Parts of a crop outside the image are zero.
    """
    if isinstance(images, torch.Tensor) and images.dim() == 3:
        batch = images.unsqueeze(0)
        boxes: torch.Tensor | list[torch.Tensor] = [torch.as_tensor(crop_boxes).reshape(-1, 4)]
    else:
        batch = images if isinstance(images, torch.Tensor) else torch.stack(list(images))
        boxes = crop_boxes if isinstance(crop_boxes, torch.Tensor) else list(crop_boxes)
    # One pixel of zeros around the image: roi_align clamps samples within a pixel of the border to the edge
    # value, so the pad makes everything outside the image read as zero. Padding before the float conversion
    # saves one full-image float copy.
    padded = F.pad(batch, (1, 1, 1, 1))
    if not padded.is_floating_point():
        padded = padded.float().div_(255.0)
    if isinstance(boxes, torch.Tensor):
        shifted = boxes.to(padded).clone()
        shifted[:, 1:] += 1
    else:
        shifted = [b.to(padded) + 1 for b in boxes]
    return roi_align(padded, shifted, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)


def box_masks(boxes_xyxy: torch.Tensor, crop_boxes: torch.Tensor, size: int) -> torch.Tensor:
    """N x 1 x size x size masks: 1 where a crop pixel's centre lies inside its box, else 0."""
    boxes = boxes_xyxy.float()
    crops = crop_boxes.float().to(boxes.device)
    scale = size / (crops[:, 2:] - crops[:, :2]).clamp_min(1e-6)
    inner = torch.cat([(boxes[:, :2] - crops[:, :2]) * scale, (boxes[:, 2:] - crops[:, :2]) * scale], dim=1)
    centres = torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5
    inside_x = (centres >= inner[:, 0:1]) & (centres < inner[:, 2:3])
    inside_y = (centres >= inner[:, 1:2]) & (centres < inner[:, 3:4])
    return (inside_y[:, :, None] & inside_x[:, None, :]).unsqueeze(1).float()
