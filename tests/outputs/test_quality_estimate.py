"""`mal.quality_estimate`: the per-mask quality ranks good masks above bad ones, stays in [0, 1], and every label
the labeling path makes carries it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mal.data.coco import load_coco
from mal.data.crops import box_masks, crop_and_resize, expand_boxes
from mal.data.datasets import LabelBoxDataset
from mal.engine.labeling import label_batch
from mal.quality_estimate import (
    FEATURES,
    batch_box_overlap,
    estimate_quality,
    image_box_overlap,
    instance_features,
    largest_overlap,
)

CROP = 64
OUT = CROP // 4
THRESHOLD = 0.4


def _scene(shape: str, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A 3 x 160 x 160 image (textured grey background, one bright object), the object's box (1 x 4 xyxy) and its
    true mask (1 x 160 x 160)."""
    size = 160
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    if shape == "disc":
        mask = (xs - 80) ** 2 + (ys - 80) ** 2 <= 36**2
    else:  # a thin diagonal bar, like a fork or a bat: a small part of its box
        mask = (np.abs((xs - 40) - (ys - 40)) <= 5) & (xs >= 40) & (xs <= 120) & (ys >= 40) & (ys <= 120)
    background = 0.25 + 0.05 * rng.standard_normal((3, size, size))
    colour = np.array([0.9, 0.6, 0.2])[:, None, None]
    image = np.where(mask[None], colour + 0.03 * rng.standard_normal((3, size, size)), background)
    rows, cols = np.nonzero(mask)
    box = torch.tensor([[cols.min(), rows.min(), cols.max() + 1, rows.max() + 1]], dtype=torch.float32)
    return torch.from_numpy(image.clip(0, 1)).float(), box, torch.from_numpy(mask[None]).float()


def _crop_inputs(image: torch.Tensor, box: torch.Tensor, mask: torch.Tensor):
    crop_box = expand_boxes(box, (0.6, 0.6))
    crop = crop_and_resize(image, crop_box, CROP)
    box_mask = box_masks(box, crop_box, CROP)
    true_probs = crop_and_resize(mask, crop_box, OUT)[:, 0].clamp(0, 1)
    return crop, box_mask, crop_box, true_probs


def _quality(crop, box_mask, crop_box, box, probs, overlap=0.0) -> float:
    return float(estimate_quality(crop, box_mask, probs, crop_box, box, np.array([THRESHOLD]), np.array([overlap]))[0])


@pytest.mark.parametrize("shape", ["disc", "bar"])
def test_a_mask_that_follows_its_object_ranks_above_the_filled_box_and_a_noisy_mask(shape):
    image, box, mask = _scene(shape)
    crop, box_mask, crop_box, true_probs = _crop_inputs(image, box, mask)
    box_probs = 0.9 * torch.nn.functional.interpolate(box_mask, size=(OUT, OUT), mode="area")[:, 0]
    noise = torch.from_numpy(np.random.default_rng(1).uniform(0, 1, (1, OUT, OUT))).float()
    noisy_probs = (0.5 * true_probs + 0.5 * noise) * (box_probs > 0)
    clean = _quality(crop, box_mask, crop_box, box, true_probs)
    boxed = _quality(crop, box_mask, crop_box, box, box_probs)
    noisy = _quality(crop, box_mask, crop_box, box, noisy_probs)
    assert clean > boxed and clean > noisy, (clean, boxed, noisy)


def test_an_occluded_box_gets_a_lower_estimate_than_the_same_mask_alone():
    image, box, mask = _scene("disc")
    crop, box_mask, crop_box, true_probs = _crop_inputs(image, box, mask)
    alone = _quality(crop, box_mask, crop_box, box, true_probs, overlap=0.0)
    occluded = _quality(crop, box_mask, crop_box, box, true_probs, overlap=0.6)
    assert occluded < alone


def test_estimates_stay_in_bounds_on_arbitrary_and_degenerate_inputs():
    rng = np.random.default_rng(2)
    count = 12
    boxes = torch.from_numpy(np.sort(rng.uniform(0, 100, (count, 2, 2)), axis=1).reshape(count, 4)).float()
    boxes = boxes[:, [0, 2, 1, 3]]  # x0 y0 x1 y1 from sorted pairs
    boxes[0, 2:] = boxes[0, :2] + 0.01  # a box thinner than a pixel
    crop_boxes = expand_boxes(boxes, (0.6, 0.6))
    crops = torch.from_numpy(rng.uniform(0, 1, (count, 3, CROP, CROP))).float()
    crops[1] = 0.0  # a flat black crop: no colour contrast anywhere
    probs = torch.from_numpy(rng.uniform(0, 1, (count, OUT, OUT))).float()
    probs[2] = 0.0  # an empty mask
    probs[3] = 1.0  # everything foreground
    overlap = rng.uniform(0, 1, count)
    features = instance_features(crops, box_masks(boxes, crop_boxes, CROP), probs, crop_boxes, boxes,
                                 np.full(count, THRESHOLD), overlap)
    assert features.shape == (count, len(FEATURES)) and bool(torch.isfinite(features).all())
    quality = estimate_quality(crops, box_masks(boxes, crop_boxes, CROP), probs, crop_boxes, boxes,
                               np.full(count, THRESHOLD), overlap)
    assert quality.shape == (count,) and np.isfinite(quality).all()
    assert ((quality >= 0) & (quality <= 1)).all()
    assert estimate_quality(crops[:0], crops[:0, :1], probs[:0], crop_boxes[:0], boxes[:0], np.zeros(0),
                            np.zeros(0)).shape == (0,)


def test_box_overlap_is_the_largest_iou_with_another_box_of_the_same_image():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [50, 50, 60, 60]], dtype=np.float64)
    overlap = batch_box_overlap(boxes, np.array([1, 1, 1]))
    assert overlap == pytest.approx([50 / 150, 50 / 150, 0.0])
    # Boxes of other images never count, and a box alone in its image has no overlap.
    assert batch_box_overlap(boxes, np.array([1, 2, 2])) == pytest.approx([0.0, 0.0, 0.0])
    assert largest_overlap(boxes[:1], boxes[:0]) == pytest.approx([0.0])


def test_image_box_overlap_sees_every_box_of_the_image_whatever_the_batch(synthetic_coco):
    folder = synthetic_coco(num_images=4, seed=3)
    coco = load_coco(folder / "annotations.json", folder / "images")
    rows = np.arange(len(coco))
    whole = image_box_overlap(coco, rows)
    expected = np.zeros(len(coco))
    for row in rows:
        same = np.flatnonzero((coco.image_ids == coco.image_ids[row]) & (rows != row))
        expected[row] = largest_overlap(coco.boxes_xyxy[row : row + 1], coco.boxes_xyxy[same])[0]
    assert whole == pytest.approx(expected)
    assert image_box_overlap(coco, rows[1::2]) == pytest.approx(whole[1::2])  # a batch that cuts images


def test_every_label_of_a_batch_carries_its_quality(synthetic_coco):
    folder = synthetic_coco(num_images=4, seed=3)
    coco = load_coco(folder / "annotations.json", folder / "images")
    dataset = LabelBoxDataset(coco, crop_size=CROP, chunk_size=64)
    batch = dataset.__getitems__(list(range(len(dataset))))
    assert batch["box_overlap"].shape == (len(coco),)

    def predict(crops: torch.Tensor) -> torch.Tensor:
        # Bright pixels are foreground: a stand-in network whose output the estimate only reads.
        brightness = torch.nn.functional.avg_pool2d(crops.mean(1, keepdim=True), 4)
        return (brightness - brightness.mean((2, 3), keepdim=True)) * 20

    labels = label_batch(predict, batch, [THRESHOLD])
    assert len(labels) == len(coco)
    assert all(label.quality is not None and 0.0 <= label.quality <= 1.0 for label in labels)
    # A batch without the loader's overlap (built by hand) still gets an estimate, from its own boxes.
    without = {key: value for key, value in batch.items() if key != "box_overlap"}
    assert all(label.quality is not None for label in label_batch(predict, without, [THRESHOLD]))
