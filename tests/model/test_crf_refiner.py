"""Test-time CRF refinement: it snaps a blurred mask to the colour edge, and never leaves the box."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mal.model.refine import CrfRefiner


def _disk_crop(size: int = 64, radius: float = 14.0) -> tuple[torch.Tensor, torch.Tensor]:
    """A bright disk on a dark crop (B x 3 x S x S in [0, 1]) and its exact mask (B x 1 x S x S)."""
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    disk = (((ys - size / 2 + 0.5) ** 2 + (xs - size / 2 + 0.5) ** 2) <= radius**2).float()
    crop = (0.15 + 0.7 * disk).expand(1, 3, size, size).clone()
    return crop, disk.view(1, 1, size, size)


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / (a | b).sum())


def test_refinement_moves_a_blurred_mask_onto_the_colour_edge() -> None:
    crop, disk = _disk_crop()
    box = torch.zeros_like(disk)
    box[..., 16:48, 16:48] = 1.0  # the disk's bounding box (radius 14 around the centre, plus a pixel)
    # What a coarse network gives: the disk at crop/4, over-smoothed and spilling towards the box corners.
    coarse = F.avg_pool2d(F.interpolate(disk, size=(16, 16), mode="area"), 5, stride=1, padding=2)
    probs = (0.25 + 0.6 * coarse / coarse.max()) * F.interpolate(box, size=(16, 16), mode="area")
    refined = CrfRefiner(num_iter=10)(probs, crop, box)
    assert refined.shape == probs.shape
    target = F.interpolate(disk, size=(16, 16), mode="area")
    before, after = _iou(probs, target), _iou(refined, target)
    assert after > before + 0.1, (before, after)
    assert after > 0.85


def test_refinement_keeps_the_foreground_inside_the_box() -> None:
    crop, _ = _disk_crop()
    box = torch.zeros(1, 1, 64, 64)
    box[..., 20:44, 8:40] = 1.0
    probs = torch.full((1, 1, 16, 16), 0.95)
    refined = CrfRefiner(num_iter=5, size_ratio=4.0)(probs, crop, box)
    outside = F.interpolate(box, size=(16, 16), mode="area") == 0
    assert float(refined[outside].max()) < 0.05
    assert float(refined[~outside].min()) >= 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_iter": 0}, "crf_refine_iter 0"),
        ({"kernel_size": 4}, "crf_refine_kernel_size 4"),
        ({"size_ratio": 0.0}, "crf_refine_size_ratio 0.0"),
    ],
)
def test_bad_settings_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CrfRefiner(**kwargs)
