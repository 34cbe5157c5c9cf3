"""Per-instance IoU, mIoU by category and size, COCO mask AP and the metrics table."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mal.masks import box_fill_rle, encode_masks
from mal.metrics import coco_mask_ap, format_metrics_table, instance_ious, miou_summary


def disc(height: int, width: int, cx: float, cy: float, radius: float) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    return ((cols + 0.5 - cx) ** 2 + (rows + 0.5 - cy) ** 2 <= radius**2).astype(np.uint8)


def triangle(height: int, width: int, x0: int, y0: int, size: int) -> np.ndarray:
    rows, cols = np.mgrid[0:height, 0:width]
    inside = (rows >= y0) & (cols >= x0) & ((cols - x0) <= (rows - y0)) & (rows < y0 + size)
    return inside.astype(np.uint8)


def test_instance_ious_match_an_independent_numpy_computation():
    rng = np.random.default_rng(1)
    preds = (rng.random((30, 40, 6)) > 0.5).astype(np.uint8)
    gts = (rng.random((30, 40, 6)) > 0.4).astype(np.uint8)
    expected = (preds & gts).sum(axis=(0, 1)) / (preds | gts).sum(axis=(0, 1))
    ious = instance_ious(encode_masks(preds), encode_masks(gts))
    np.testing.assert_allclose(ious, expected, rtol=1e-9)


def test_instance_ious_edge_cases():
    empty = encode_masks(np.zeros((5, 5), np.uint8))[0]
    full = encode_masks(np.ones((5, 5), np.uint8))[0]
    np.testing.assert_array_equal(instance_ious([empty, empty, full], [empty, full, full]), [1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match="size"):
        instance_ious([full], [encode_masks(np.ones((5, 6), np.uint8))[0]])
    with pytest.raises(ValueError, match="one ground truth per prediction"):
        instance_ious([full], [])


def test_miou_averages_within_each_category_then_over_categories():
    summary = miou_summary(
        [0.2, 0.4, 0.9, 0.5],
        category_ids=[1, 1, 2, 3],
        gt_areas=[100, 32**2, 96**2, 96**2 - 1],
        category_names={1: "cat", 2: "dog"},
    )
    assert summary["mIoU"] == pytest.approx(((0.2 + 0.4) / 2 + 0.9 + 0.5) / 3)
    assert summary["mIoU_small"] == pytest.approx(0.2)
    # medium: category 1 (0.4) and category 3 (0.5), exactly 32^2 counts as medium, 96^2 - 1 too
    assert summary["mIoU_medium"] == pytest.approx((0.4 + 0.5) / 2)
    assert summary["mIoU_large"] == pytest.approx(0.9)
    assert summary["per_class"] == {"cat": pytest.approx(0.3), "dog": pytest.approx(0.9), "3": pytest.approx(0.5)}
    assert (summary["num_instances"], summary["num_categories"]) == (4, 3)
    assert (summary["num_small"], summary["num_medium"], summary["num_large"]) == (1, 2, 1)


def test_empty_buckets_are_none_never_nan_and_left_out_of_the_table():
    summary = miou_summary([0.5, 0.7], category_ids=[4, 4], gt_areas=[50, 60])
    assert summary["mIoU_small"] == pytest.approx(0.6)
    assert summary["mIoU_medium"] is None and summary["mIoU_large"] is None
    assert not any(isinstance(v, float) and math.isnan(v) for v in summary.values())
    table = format_metrics_table(summary)
    assert "mIoU_small" in table and "0.6000" in table
    assert "mIoU_medium" not in table and "mIoU_large" not in table and "None" not in table
    assert "per_class/4" in table
    nothing = miou_summary([], category_ids=[], gt_areas=[])
    assert nothing["mIoU"] is None and nothing["per_class"] == {} and nothing["num_instances"] == 0


def test_miou_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one category and one area per IoU"):
        miou_summary([0.5], category_ids=[1, 2], gt_areas=[10])


def _shapes_dataset():
    """Two images with non-box shapes: discs and triangles (small, medium and large)."""
    size = (120, 160)
    masks = {
        1: [disc(*size, 40, 40, 25), triangle(*size, 90, 20, 60)],
        2: [disc(*size, 100, 70, 40), disc(*size, 20, 100, 5)],
    }
    images, annotations, boxes = [], [], {}
    ann_id = 1
    for image_id, shapes in masks.items():
        images.append({"id": image_id, "file_name": f"{image_id}.png", "height": size[0], "width": size[1]})
        for category, mask in zip((1, 2), shapes):
            rows, cols = np.nonzero(mask)
            bbox = [float(cols.min()), float(rows.min()), float(cols.max() + 1 - cols.min()), 0.0]
            bbox[3] = float(rows.max() + 1 - rows.min())
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": category,
                    "bbox": bbox,
                    "segmentation": encode_masks(mask)[0],
                    "iscrowd": 0,
                }
            )
            boxes[ann_id] = [bbox[0], bbox[1], bbox[0] + bbox[2], bbox[1] + bbox[3]]
            ann_id += 1
    categories = [{"id": 1, "name": "disc"}, {"id": 2, "name": "shape"}]
    return {"images": images, "annotations": annotations, "categories": categories}, boxes


def test_coco_mask_ap_is_one_when_predictions_equal_ground_truth():
    gt, _ = _shapes_dataset()
    predictions = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"], "score": 0.9}
        for a in gt["annotations"]
    ]
    ap = coco_mask_ap(gt, predictions)
    assert set(ap) == {"AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"}
    assert ap["AP"] == pytest.approx(1.0) and ap["AP50"] == pytest.approx(1.0) and ap["AP75"] == pytest.approx(1.0)
    assert "area" not in gt["annotations"][0]  # the caller's dict is left untouched


def test_coco_mask_ap_is_lower_for_box_fill_and_handles_missing_predictions():
    gt, boxes = _shapes_dataset()
    box_fill = []
    for ann in gt["annotations"]:
        [rle] = box_fill_rle([boxes[ann["id"]]], (120, 160))
        box_fill.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "segmentation": rle})
    assert coco_mask_ap(gt, box_fill)["AP"] < 0.9

    only_first_image = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "segmentation": a["segmentation"], "score": 1.0}
        for a in gt["annotations"]
        if a["image_id"] == 1
    ]
    partial = coco_mask_ap(gt, only_first_image)
    assert 0.0 < partial["AP"] < 1.0
    assert coco_mask_ap(gt, []) == dict.fromkeys(partial, 0.0)
    with pytest.raises(ValueError, match="image ids"):
        coco_mask_ap(gt, [{**only_first_image[0], "image_id": 99}])


def test_coco_mask_ap_reports_absent_size_ranges_as_none():
    size = (200, 200)
    mask = disc(*size, 100, 100, 80)  # one large object only
    gt = {
        "images": [{"id": 1, "height": size[0], "width": size[1]}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": encode_masks(mask)[0]}],
        "categories": [{"id": 1, "name": "disc"}],
    }
    ap = coco_mask_ap(gt, [{"image_id": 1, "category_id": 1, "segmentation": encode_masks(mask)[0], "score": 1.0}])
    assert ap["AP"] == pytest.approx(1.0) and ap["AP_large"] == pytest.approx(1.0)
    assert ap["AP_small"] is None and ap["AP_medium"] is None
    assert "AP_small" not in format_metrics_table(ap)
