"""Where a label file's error comes from: how much of its box each mask fills against the truth, and how much IoU
the network's output grid alone would cost a perfect mask (docs/QUALITY.md, issue 21's section).

    .venv/bin/python benchmarks/quality_diagnose.py benchmarks/out/quality_coco128_dev ../shared/data/coco128_dev/images

reads `gt.json` and `labels.json` from a `benchmarks/quality.py` work folder (and the images they name) and prints
a JSON report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mal.data.coco import load_coco
from mal.data.crops import box_masks, crop_and_resize, expand_boxes
from mal.engine.labeling import ground_truth
from mal.masks import decode_rle, encode_masks, paste_masks, rle_area
from mal.metrics import instance_ious
from mal.spec.schema import TrainConfig

FILL_BINS = ((0.0, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01))
TEST_MARGIN = TrainConfig.model_fields["test_margin_rate"].default_factory()  # type: ignore[misc]
CHUNK = 32  # masks decoded at once (a nuclei image holds hundreds of boxes)


def grid_round_trip_ious(
    truth: np.ndarray, boxes_xyxy: np.ndarray, image_hw: tuple[int, int], grid: int
) -> np.ndarray:
    """IoU of each true mask (truth: H x W x N) with itself after the labeling path: cropped at the test margin
    onto a grid² output, pasted back by `mal.masks.paste_masks` at threshold 0.5. The most any network with that
    output grid could score."""
    boxes = torch.from_numpy(boxes_xyxy).float()
    crop_boxes = expand_boxes(boxes, TEST_MARGIN)
    planes = torch.from_numpy(np.ascontiguousarray(truth.transpose(2, 0, 1))).float()[:, None]
    rows = torch.cat([torch.arange(len(boxes), dtype=torch.float32)[:, None], crop_boxes], dim=1)
    crops = crop_and_resize(planes, rows, grid)[:, 0]
    pasted = paste_masks(crops, box_masks(boxes, crop_boxes, grid)[:, 0], crop_boxes, image_hw, 0.5, boxes=boxes)
    return instance_ious([mask["segmentation"] for mask in pasted], encode_masks(truth))


def _mean(values: np.ndarray, chosen: np.ndarray) -> float | None:
    return round(float(values[chosen].mean()), 3) if chosen.any() else None


def diagnose(work_dir: Path, image_dir: Path, grids: tuple[int, ...] = (24, 48)) -> dict[str, Any]:
    gt = load_coco(work_dir / "gt.json", image_dir, load_mask=True)
    labels = {ann["id"]: ann for ann in json.loads((work_dir / "labels.json").read_text())["annotations"]}
    ann_ids = [int(ann_id) for ann_id in gt.ann_ids if int(ann_id) in labels]
    truth_rles, _ = ground_truth(gt, ann_ids)
    ours = [labels[ann_id]["segmentation"] for ann_id in ann_ids]
    rows = np.asarray([gt.row_of_ann[ann_id] for ann_id in ann_ids], dtype=np.int64)
    boxes = gt.boxes_xyxy[rows]
    box_area = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1.0)
    ious = instance_ious(ours, truth_rles)
    predicted_fill = np.asarray(rle_area(ours), dtype=np.float64) / box_area
    true_fill = np.asarray(rle_area(truth_rles), dtype=np.float64) / box_area
    round_trips: dict[int, list[float]] = {grid: [] for grid in grids}
    images = gt.image_ids[rows]
    for image_id in dict.fromkeys(images.tolist()):
        size = (gt.images[image_id].height, gt.images[image_id].width)
        positions = np.flatnonzero(images == image_id)
        for chunk in np.array_split(positions, max(1, len(positions) // CHUNK)):
            truth = decode_rle([truth_rles[index] for index in chunk]).reshape(*size, -1)
            for grid in grids:
                round_trips[grid] += grid_round_trip_ious(truth, boxes[chunk], size, grid).tolist()
    by_true_fill = []
    for low, high in FILL_BINS:
        chosen = (true_fill >= low) & (true_fill < high)
        by_true_fill.append({"true_fill": f"{low:g}-{min(high, 1.0):g}", "masks": int(chosen.sum()),
                             "mean_iou": _mean(ious, chosen), "mean_predicted_fill": _mean(predicted_fill, chosen)})
    return {
        "masks": len(ann_ids),
        "mean_instance_iou": round(float(ious.mean()), 3),
        "median_predicted_fill": round(float(np.median(predicted_fill)), 3),
        "median_true_fill": round(float(np.median(true_fill)), 3),
        "fill_correlation": round(float(np.corrcoef(predicted_fill, true_fill)[0, 1]), 3),
        "by_true_fill": by_true_fill,
        "perfect_mask_iou_through_grid": {str(grid): round(float(np.mean(values)), 3)
                                          for grid, values in round_trips.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", type=Path, help="a benchmarks/quality.py work folder (gt.json, labels.json)")
    parser.add_argument("image_dir", type=Path, help="the dataset's images/ folder")
    args = parser.parse_args(argv)
    work_dir = args.work_dir.resolve()
    missing = [name for name in ("gt.json", "labels.json") if not (work_dir / name).is_file()]
    if missing:
        parser.error(f"{work_dir} has no {' or '.join(missing)}; give the work folder of a finished "
                     "benchmarks/quality.py run (default benchmarks/out/quality_<dataset>)")
    print(json.dumps(diagnose(work_dir, args.image_dir.resolve()), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
