"""Where a label file's error comes from: how much of its box each mask fills against the truth, and how much IoU
the network's output grid alone would cost a perfect mask (docs/QUALITY.md, issue 21's section).

    .venv/bin/python benchmarks/quality_diagnose.py benchmarks/out/quality_coco128_dev

reads `gt.json` and `labels.json` from a `benchmarks/quality.py` work folder and prints a JSON report.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torchvision.ops import roi_align

from mal.masks import as_pycocotools_rle, segmentation_to_rle

FILL_BINS = ((0.0, 0.4), (0.4, 0.6), (0.6, 0.8), (0.8, 1.01))


def grid_round_trip_iou(mask: np.ndarray, box_xywh: list[float], grid: int, test_expansion: float = 1.3) -> float:
    """IoU of a true mask with itself after sampling onto a grid² crop of its box (grown as at test time) and
    pasting back bilinearly at threshold 0.5: the most any network with that output grid could score."""
    x, y, width, height = box_xywh
    grow = (test_expansion - 1.0) / 2
    x0, y0, x1, y1 = x - grow * width, y - grow * height, x + (1 + grow) * width, y + (1 + grow) * height
    image = torch.from_numpy(mask.astype(np.float32))[None, None]
    crop = roi_align(image, torch.tensor([[0.0, x0, y0, x1, y1]]), (grid, grid), 1.0, -1, True)
    rows, cols = mask.shape
    r0, c0 = int(max(np.floor(y0), 0)), int(max(np.floor(x0), 0))
    r1, c1 = int(min(np.ceil(y1), rows)), int(min(np.ceil(x1), cols))
    ys = (torch.arange(r0, r1) + 0.5 - y0) / (y1 - y0) * 2 - 1
    xs = (torch.arange(c0, c1) + 0.5 - x0) / (x1 - x0) * 2 - 1
    sample_at = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None].float()
    back = torch.zeros(rows, cols, dtype=torch.bool)
    back[r0:r1, c0:c1] = F.grid_sample(crop, sample_at, align_corners=False)[0, 0] > 0.5
    truth = torch.from_numpy(mask.astype(bool))
    return float((back & truth).sum() / max(int((back | truth).sum()), 1))


def diagnose(work_dir: Path, grids: tuple[int, ...] = (24, 48)) -> dict[str, Any]:
    gt = json.loads((work_dir / "gt.json").read_text())
    labels = {ann["id"]: ann for ann in json.loads((work_dir / "labels.json").read_text())["annotations"]}
    images = {image["id"]: image for image in gt["images"]}
    rows: list[tuple[float, float, float]] = []
    round_trips: dict[int, list[float]] = {grid: [] for grid in grids}
    for ann in gt["annotations"]:
        if ann["id"] not in labels:
            continue
        image = images[ann["image_id"]]
        size = (image["height"], image["width"])
        truth_rle = as_pycocotools_rle(segmentation_to_rle(ann["segmentation"], size))
        ours_rle = as_pycocotools_rle(labels[ann["id"]]["segmentation"])
        box_area = max(ann["bbox"][2] * ann["bbox"][3], 1.0)
        iou = float(mask_utils.iou([ours_rle], [truth_rle], [0])[0, 0])
        rows.append((iou, float(mask_utils.area(ours_rle)) / box_area, float(mask_utils.area(truth_rle)) / box_area))
        truth = mask_utils.decode(truth_rle)
        for grid in grids:
            round_trips[grid].append(grid_round_trip_iou(truth, ann["bbox"], grid))
    table = np.asarray(rows)
    by_true_fill = []
    for low, high in FILL_BINS:
        chosen = (table[:, 2] >= low) & (table[:, 2] < high)
        by_true_fill.append({"true_fill": f"{low:g}-{min(high, 1.0):g}", "masks": int(chosen.sum()),
                             "mean_iou": round(float(table[chosen, 0].mean()), 3) if chosen.any() else None,
                             "mean_predicted_fill": round(float(table[chosen, 1].mean()), 3) if chosen.any() else None})
    return {
        "masks": len(rows),
        "mean_instance_iou": round(float(table[:, 0].mean()), 3),
        "median_predicted_fill": round(float(np.median(table[:, 1])), 3),
        "median_true_fill": round(float(np.median(table[:, 2])), 3),
        "fill_correlation": round(float(np.corrcoef(table[:, 1], table[:, 2])[0, 1]), 3),
        "by_true_fill": by_true_fill,
        "perfect_mask_iou_through_grid": {str(grid): round(float(np.mean(values)), 3)
                                          for grid, values in round_trips.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", type=Path, help="a benchmarks/quality.py work folder (gt.json, labels.json)")
    args = parser.parse_args(argv)
    work_dir = args.work_dir.resolve()
    missing = [name for name in ("gt.json", "labels.json") if not (work_dir / name).is_file()]
    if missing:
        parser.error(f"{work_dir} has no {' or '.join(missing)}; give the work folder of a finished "
                     "benchmarks/quality.py run (default benchmarks/out/quality_<dataset>)")
    print(json.dumps(diagnose(work_dir), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
