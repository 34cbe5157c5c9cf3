"""Early stopping without ground truth: label with every epoch's checkpoint and see whether a box-only number
picks the epoch whose masks are best.

    .venv/bin/python benchmarks/quality.py ../shared/data/coco128_dev --spec cpu-natural --skip-peers \\
        --no-results --work-dir benchmarks/out/q_epochs24 train.num_epochs=24 train.keep_last_checkpoints=0
    .venv/bin/python benchmarks/quality_epochs.py benchmarks/out/q_epochs24 ../shared/data/coco128_dev/images

The work folder must keep every epoch's checkpoint (`train.keep_last_checkpoints=0`). Each checkpoint labels the
folder's boxes in this process, through `mal inference`'s labeling, and is scored against the hidden masks (mIoU,
mask AP). Beside the scores, the numbers a run has without any true mask, each averaged over the boxes:
- `quality`: the review estimate (mal.quality_estimate);
- `score`: the mean probability inside each mask;
- `fill`: the mask's area over its box's (the masks' known bias is to fill too much of their box);
- `tightness`: the IoU of the mask's own bounding box with the input box (the MIL rule: an object touches all
  four sides of its box).
For each number the report says which epoch it would choose (its best value) and that epoch's mIoU, and how it
ranks the epochs against mIoU (Spearman, with the sign that makes "better" positive).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality
from mal.data.coco import load_coco
from mal.data.coco_boxes import CocoBoxes
from mal.engine.evaluate import score_labels
from mal.engine.labeling import BoxLabel
from mal.fileio import atomic_write_json
from mal.masks import as_pycocotools_rle

CRITERIA = {"quality": 1, "score": 1, "fill": -1, "tightness": 1}
"""Box-only numbers and their direction: +1 when higher should mean better masks, -1 when lower should."""

EPOCH_FILE = re.compile(r"mal_model_epoch_(\d+)\.pth$")


def epoch_checkpoints(train_dir: Path) -> list[tuple[int, Path]]:
    found = [(int(match.group(1)), path) for path in train_dir.iterdir() if (match := EPOCH_FILE.search(path.name))]
    return sorted(found)


def box_only_numbers(coco: CocoBoxes, labels: list[BoxLabel]) -> dict[str, float]:
    """The mean of each box-only criterion over the labeled boxes."""
    boxes = coco.boxes_xyxy[[coco.row_of_ann[label.ann_id] for label in labels]].astype(np.float64)
    box_areas = np.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-6)
    areas = np.asarray([label.area for label in labels], dtype=np.float64)
    mask_boxes = np.asarray([mask_utils.toBbox(as_pycocotools_rle(label.segmentation)) for label in labels])
    mask_xyxy = np.hstack([mask_boxes[:, :2], mask_boxes[:, :2] + mask_boxes[:, 2:]])
    width = np.minimum(boxes[:, 2], mask_xyxy[:, 2]) - np.maximum(boxes[:, 0], mask_xyxy[:, 0])
    height = np.minimum(boxes[:, 3], mask_xyxy[:, 3]) - np.maximum(boxes[:, 1], mask_xyxy[:, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    union = box_areas + mask_boxes[:, 2] * mask_boxes[:, 3] - inter
    return {
        "quality": float(np.mean([label.quality or 0.0 for label in labels])),
        "score": float(np.mean([label.score for label in labels])),
        "fill": float(np.mean(areas / box_areas)),
        "tightness": float(np.mean(inter / np.maximum(union, 1e-6))),
    }


def choices(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per criterion: the epoch it picks, that epoch's mIoU, and its rank correlation with mIoU over the epochs."""
    miou = np.asarray([row["mIoU"] for row in rows])
    result = {}
    for name, direction in CRITERIA.items():
        values = direction * np.asarray([row[name] for row in rows])
        picked = int(np.argmax(values))
        result[name] = {"epoch": rows[picked]["epoch"], "mIoU": rows[picked]["mIoU"],
                        "spearman_with_mIoU": quality.spearman(values, miou)}  # fmt: skip
    best = int(np.argmax(miou))
    result["mIoU (needs the true masks)"] = {"epoch": rows[best]["epoch"], "mIoU": rows[best]["mIoU"],
                                             "spearman_with_mIoU": 1.0}  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", type=Path, help="a quality.py work folder trained with keep_last_checkpoints=0")
    parser.add_argument("image_dir", type=Path, help="the dataset's image folder")
    parser.add_argument("--spec", default="cpu-natural", help="the spec the work folder was trained with")
    args = parser.parse_args(argv)
    work_dir, image_dir = args.work_dir.resolve(), args.image_dir.resolve()
    train_dir = work_dir / "run" / "train"
    if not (work_dir / "gt.json").is_file() or not train_dir.is_dir():
        parser.error(f"{work_dir} has no gt.json or run/train: run benchmarks/quality.py with --work-dir first")
    checkpoints = epoch_checkpoints(train_dir)
    if len(checkpoints) < 2:
        parser.error(f"{train_dir} holds {len(checkpoints)} epoch checkpoint(s): train with "
                     "train.keep_last_checkpoints=0 to keep every epoch")  # fmt: skip
    os.environ.setdefault("MAL_NO_PROGRESS", "1")
    gt = load_coco(work_dir / "gt.json", image_dir, load_mask=True)
    rows = []
    for epoch, checkpoint in checkpoints:
        coco, labels = quality.label_in_process(work_dir, image_dir, args.spec, checkpoint, checkpoint.name)
        scores = score_labels(gt, labels)
        row = {"epoch": epoch, "mIoU": float(scores["mIoU"]), "AP": float(scores["AP"]),
               **box_only_numbers(coco, labels)}  # fmt: skip
        rows.append(row)
        print(" ".join(f"{key} {value:.4f}" if isinstance(value, float) else f"{key} {value}"
                       for key, value in row.items()), flush=True)  # fmt: skip
    picks = choices(rows)
    print("\n| chosen by | epoch | its mIoU | Spearman with mIoU over the epochs |\n|---|---|---|---|")
    for name, pick in picks.items():
        rho = pick["spearman_with_mIoU"]
        print(f"| {name} | {pick['epoch']} | {pick['mIoU']:.4f} | {'–' if rho is None else f'{rho:+.2f}'} |")
    atomic_write_json(work_dir / "epochs.json", {"epochs": rows, "choices": picks})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
