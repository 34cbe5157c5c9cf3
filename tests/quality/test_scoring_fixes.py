"""Scoring on nuclei-sized data: hundreds of instances per image must not break areas or mask AP."""

from __future__ import annotations

import numpy as np
import pytest

from mal.masks import encode_masks, rle_area
from mal.metrics import coco_mask_ap


def test_rle_area_of_more_than_255_masks():
    masks = np.zeros((32, 32, 600), dtype=np.uint8)
    for index in range(600):
        masks[: index % 30 + 1, :2, index] = 1
    areas = rle_area(encode_masks(masks))
    assert areas.shape == (600,)
    assert np.array_equal(areas, masks.sum(axis=(0, 1)))


def test_mask_ap_with_more_than_100_instances_in_one_image():
    count = 150
    masks = np.zeros((64, 640, count), dtype=np.uint8)
    for index in range(count):
        masks[10:20, 4 * index : 4 * index + 3, index] = 1
    rles = encode_masks(masks)
    gt = {
        "images": [{"id": 1, "height": 64, "width": 640}],
        "categories": [{"id": 1, "name": "nucleus"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": rle, "bbox": [4 * i, 10, 3, 10]}
            for i, rle in enumerate(rles)
        ],
    }
    perfect = [{"image_id": 1, "category_id": 1, "segmentation": rle, "score": 1.0} for rle in rles]
    ap = coco_mask_ap(gt, perfect)
    assert ap["AP"] == pytest.approx(1.0)
    assert ap["AP50"] == pytest.approx(1.0)
