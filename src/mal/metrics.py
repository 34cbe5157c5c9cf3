"""Mask quality against ground truth: per-instance IoU, mIoU by category and size, COCO mask AP.

mIoU follows the MAL evaluation: the IoU of each predicted image-size mask with the ground truth of the same
box, averaged within each category, then over the categories present. Size buckets use the ground-truth mask
area and the same two-stage mean. A bucket without instances is reported as None (absent), never NaN.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rich import box
from rich.console import Console
from rich.table import Table

from mal.masks import BUCKET_NAMES, RLE, as_pycocotools_rle, rle_area, segmentation_to_rle, size_bucket

AP_KEYS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")


def instance_ious(pred_rles: Sequence[RLE], gt_rles: Sequence[RLE]) -> np.ndarray:
    """IoU of each predicted mask with the ground truth at the same index (pairs, not all N x M).

    Both masks empty counts as agreement (IoU 1.0); pycocotools alone would say 0.
    """
    if len(pred_rles) != len(gt_rles):
        raise ValueError(
            f"instance_ious needs one ground truth per prediction, got {len(pred_rles)} and {len(gt_rles)}."
        )
    ious = np.zeros(len(pred_rles), dtype=np.float64)
    for index, (pred, gt) in enumerate(zip(pred_rles, gt_rles)):
        if list(pred["size"]) != list(gt["size"]):
            raise ValueError(
                f"instance {index}: predicted mask size {pred['size']} differs from the ground truth's {gt['size']}."
            )
        pred_c, gt_c = as_pycocotools_rle(pred), as_pycocotools_rle(gt)
        if mask_utils.area(pred_c) == 0 and mask_utils.area(gt_c) == 0:
            ious[index] = 1.0
        else:
            ious[index] = float(mask_utils.iou([pred_c], [gt_c], [0])[0, 0])
    return ious


def _two_stage_mean(ious: np.ndarray, categories: np.ndarray) -> float | None:
    """Mean within each category, then over the categories present; None when there is nothing to average."""
    if ious.size == 0:
        return None
    _, inverse = np.unique(categories, return_inverse=True)
    per_category = np.bincount(inverse, weights=ious) / np.bincount(inverse)
    return float(per_category.mean())


def miou_summary(
    ious: Sequence[float] | np.ndarray,
    category_ids: Sequence[int] | np.ndarray,
    gt_areas: Sequence[float] | np.ndarray,
    category_names: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """mIoU overall, by ground-truth size bucket and per class, plus instance counts.

    Returns {"mIoU", "mIoU_small", "mIoU_medium", "mIoU_large", "per_class": {name: mIoU},
    "num_instances", "num_categories", "num_small", "num_medium", "num_large"}; empty means are None.
    """
    values = np.asarray(ious, dtype=np.float64).reshape(-1)
    categories = np.asarray(category_ids).reshape(-1)
    buckets = size_bucket(gt_areas)
    if not (values.size == categories.size == buckets.size):
        raise ValueError(
            f"miou_summary needs one category and one area per IoU, got {values.size} IoUs, "
            f"{categories.size} categories and {buckets.size} areas."
        )
    if not np.isfinite(values).all():
        raise ValueError("miou_summary got a non-finite IoU; every IoU must lie in [0, 1].")
    names = category_names or {}
    summary: dict[str, Any] = {"mIoU": _two_stage_mean(values, categories)}
    for bucket, name in enumerate(BUCKET_NAMES):
        chosen = buckets == bucket
        summary[f"mIoU_{name}"] = _two_stage_mean(values[chosen], categories[chosen])
    per_class: dict[str, float] = {}
    for category in np.unique(categories).tolist():
        per_class[str(names.get(category, category))] = float(values[categories == category].mean())
    summary["per_class"] = per_class
    summary["num_instances"] = int(values.size)
    summary["num_categories"] = len(per_class)
    for bucket, name in enumerate(BUCKET_NAMES):
        summary[f"num_{name}"] = int((buckets == bucket).sum())
    return summary


def _ground_truth_for_eval(gt_coco_dict: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the GT dict with the fields COCOeval relies on (id, iscrowd, mask area) filled in."""
    dataset = copy.deepcopy(dict(gt_coco_dict))
    dataset.setdefault("categories", [])
    images = {image["id"]: image for image in dataset.get("images", [])}
    for index, ann in enumerate(dataset.setdefault("annotations", []), start=1):
        ann.setdefault("id", index)
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            image = images[ann["image_id"]]
            rle = segmentation_to_rle(ann["segmentation"], (image["height"], image["width"]))
            ann["area"] = float(rle_area(rle))
    return dataset


def coco_mask_ap(gt_coco_dict: Mapping[str, Any], predictions: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """COCO mask AP (iouType "segm") of predicted masks scored as detections.

    predictions: dicts with image_id, category_id, segmentation (RLE) and score (1.0 when missing).
    maxDets is raised above 100 when an image holds more instances (nuclei images do), so no mask is cut off.
    Values COCOeval reports as -1 (no ground truth in that range) come back as None.
    """
    dataset = _ground_truth_for_eval(gt_coco_dict)
    detections = [
        {
            "image_id": pred["image_id"],
            "category_id": pred["category_id"],
            "segmentation": as_pycocotools_rle(pred["segmentation"]),
            "score": float(pred.get("score", 1.0)),
        }
        for pred in predictions
    ]
    if not dataset["annotations"]:
        return dict.fromkeys(AP_KEYS)
    if not detections:  # loadRes cannot take an empty list; nothing predicted means nothing found
        return dict.fromkeys(AP_KEYS, 0.0)
    known_images = {image["id"] for image in dataset.get("images", [])}
    unknown = sorted({det["image_id"] for det in detections} - known_images)
    if unknown:
        raise ValueError(f"predictions refer to image ids {unknown[:5]} that the ground truth does not list.")

    most_per_image = max(
        np.bincount(np.unique([a["image_id"] for a in dataset["annotations"]], return_inverse=True)[1]).max(),
        np.bincount(np.unique([d["image_id"] for d in detections], return_inverse=True)[1]).max(),
    )
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = dataset
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iouType="segm")
        evaluator.params.maxDets = [1, 10, max(100, int(most_per_image))]
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = list(evaluator.stats[:6])
    # summarize() reads the overall AP at maxDets=100 whatever params.maxDets holds, so with more than 100
    # instances in an image it reports -1; take it from the last maxDets column instead.
    precision = evaluator.eval["precision"][:, :, :, 0, -1]
    valid = precision[precision > -1]
    stats[0] = float(valid.mean()) if valid.size else -1.0
    return {key: (None if value < 0 else float(value)) for key, value in zip(AP_KEYS, stats)}


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def format_metrics_table(metrics: Mapping[str, Any], title: str = "Mask quality") -> str:
    """Metrics (flat values and nested dicts such as per_class) as a plain-text table, without None rows."""
    table = Table(title=title, box=box.SIMPLE_HEAVY, show_header=True)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    nested: dict[str, Mapping[str, Any]] = {}
    for key, value in metrics.items():
        if isinstance(value, Mapping):
            nested[key] = value
        elif value is not None and not (isinstance(value, float) and math.isnan(value)):
            table.add_row(key, _format_value(value))
    for group, values in nested.items():
        if not values:
            continue
        table.add_section()
        for key, value in values.items():
            if value is not None:
                table.add_row(f"{group}/{key}", _format_value(value))
    buffer = io.StringIO()
    Console(file=buffer, width=100, color_system=None, force_terminal=False).print(table)
    return buffer.getvalue()
