"""Ground-truth masks: polygons, uncompressed and compressed RLE decode to the same pixels."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mal.data.coco import check_coco, load_coco
from mal.errors import DataError


def uncompressed_rle(mask: np.ndarray) -> dict:
    """Column-major run lengths starting with a background run, as COCO writes them."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], changes])).tolist()
    return {"size": list(mask.shape), "counts": counts}


def test_three_encodings_give_the_same_mask(write_coco, synthetic_raw):
    image = synthetic_raw["images"][0]
    h, w = image["height"], image["width"]
    annotations = [a for a in synthetic_raw["annotations"] if a["image_id"] == image["id"]][:1]
    expected = np.zeros((h, w), dtype=np.uint8)
    expected[10:30, 20:50] = 1
    compressed = mask_utils.encode(np.asfortranarray(expected))
    polygon = [[20, 10, 50, 10, 50, 30, 20, 30]]
    base = annotations[0]
    synthetic_raw["annotations"] = [
        dict(base, id=1, bbox=[20, 10, 30, 20], segmentation={"size": [h, w], "counts": compressed["counts"].decode()}),
        dict(base, id=2, bbox=[20, 10, 30, 20], segmentation=uncompressed_rle(expected)),
        dict(base, id=3, bbox=[20, 10, 30, 20], segmentation=polygon),
    ]
    coco = load_coco(*write_coco(synthetic_raw), load_mask=True)
    assert coco.has_masks
    np.testing.assert_array_equal(coco.gt_mask(1), expected)
    np.testing.assert_array_equal(coco.gt_mask(2), expected)
    polygon_mask = coco.gt_mask(3)
    assert polygon_mask.dtype == np.uint8 and polygon_mask.shape == (h, w)
    assert (polygon_mask != expected).sum() <= 2 * (20 + 30)  # polygon rasterisation differs only at edges
    stacked = coco.gt_masks([1, 2])
    assert stacked.shape == (2, h, w)


def test_synthetic_masks_match_their_boxes(synthetic_dir):
    coco = load_coco(synthetic_dir / "annotations.json", synthetic_dir / "images", load_mask=True)
    for ann_id in coco.ann_ids[:6].tolist():
        mask = coco.gt_mask(ann_id)
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = coco.boxes_xyxy[coco.row_of_ann[ann_id]]
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (x0, y0, x1, y1)


def test_masks_need_load_mask(synthetic_dir):
    coco = load_coco(synthetic_dir / "annotations.json", synthetic_dir / "images")
    assert not coco.has_masks
    with pytest.raises(DataError, match="load_mask"):
        coco.gt_mask(int(coco.ann_ids[0]))


def test_bad_segmentations_are_reported(write_coco, synthetic_raw):
    first, second, third = synthetic_raw["annotations"][:3]
    first["segmentation"] = [[1, 2, 3]]
    second["segmentation"] = {"size": [5, 5], "counts": "abc"}
    third.pop("segmentation")
    coco, report = check_coco(*write_coco(synthetic_raw), load_mask=True)
    assert coco is None
    problems = {p.ann_id: (p.code, p.severity) for p in report.problems}
    assert problems[first["id"]] == ("bad_mask", "error")
    assert problems[second["id"]] == ("bad_mask", "error")
    assert problems[third["id"]] == ("no_mask", "warning")
