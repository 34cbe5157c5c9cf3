"""Per-box thresholds at test time: relabel a benchmarks/quality.py work folder with a threshold chosen from each
box's own probabilities, and score it against the hidden masks.

    .venv/bin/python benchmarks/quality_thresholds.py benchmarks/out/quality_coco128_dev \\
        ../shared/data/coco128_dev/images --rule otsu

Rules (a box's threshold, from its probabilities inside the box at the network's output resolution):
- fixed P: P for every box (P = the spec's train.mask_thres reproduces `mal inference`);
- otsu: Otsu's threshold of the box's probability histogram (64 bins);
- otsu_mix P: (1 - P) x the spec's threshold + P x Otsu's;
- max_frac P: P x the largest probability in the box.
The question it answers (issue 21): do the probabilities rank a box's object pixels well enough that a threshold
per box would fix the masks' fill, which a fixed threshold cannot? The labeling itself is `mal inference`'s, run
in this process; only the threshold handed to the paste-back step changes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import mal.engine.labeling as labeling
import quality
from mal.cli import main as mal_main
from mal.data.coco import load_coco

RULES = ("fixed", "otsu", "otsu_mix", "max_frac")


def otsu_threshold(values: np.ndarray, bins: int = 64) -> float:
    """The threshold in [0, 1] that maximises the between-class variance of `values` (Otsu, 1979)."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    share = hist / max(hist.sum(), 1)
    below = np.cumsum(share)
    centres = (edges[:-1] + edges[1:]) / 2
    mass = np.cumsum(share * centres)
    between = (mass[-1] * below - mass) ** 2 / np.maximum(below * (1 - below), 1e-12)
    return float(edges[1:][np.argmax(between)])


def box_thresholds(probs: torch.Tensor, box_masks: torch.Tensor, given: np.ndarray, rule: str,
                   param: float) -> np.ndarray:  # fmt: skip
    """One threshold per crop: `rule` applied to its probabilities inside its box (N x h x w and N x h' x w')."""
    inside = F.interpolate(box_masks[:, None].float(), size=probs.shape[-2:], mode="nearest")[:, 0] > 0.5
    out = given.astype(np.float64).copy()
    for index in range(probs.shape[0]):
        values = probs[index][inside[index]].cpu().numpy()
        if values.size < 8:
            continue  # too few pixels to judge: keep the spec's threshold
        if rule == "fixed":
            out[index] = param
        elif rule == "otsu":
            out[index] = otsu_threshold(values)
        elif rule == "otsu_mix":
            out[index] = (1 - param) * out[index] + param * otsu_threshold(values)
        elif rule == "max_frac":
            out[index] = param * float(values.max())
    return out


def relabel(work_dir: Path, image_dir: Path, spec: str, rule: str, param: float) -> Path:
    """`mal inference` on the work folder's boxes with its trained checkpoint and per-box thresholds."""
    real_paste = labeling.paste_masks

    def paste_with_box_thresholds(probs: torch.Tensor, box_masks: torch.Tensor, crop_boxes: Any, image_hw: Any,
                                  thresholds: Any, boxes: Any = None) -> list[dict[str, Any]]:  # fmt: skip
        given = np.broadcast_to(np.asarray(thresholds, dtype=np.float64).reshape(-1), (probs.shape[0],))
        chosen = box_thresholds(probs, box_masks, given, rule, param)
        return real_paste(probs, box_masks, crop_boxes, image_hw, chosen, boxes=boxes)

    out = work_dir / f"labels_{rule}_{param:g}.json"
    labeling.paste_masks = paste_with_box_thresholds
    os.environ["MAL_NO_PROGRESS"] = "1"
    try:
        code = mal_main(["inference", "-e", spec, f"results_dir={work_dir / 'run'}",
                         f"dataset.train_ann_path={work_dir / 'boxes.json'}", f"dataset.train_img_dir={image_dir}",
                         "dataset.load_mask=false", f"inference.ann_path={work_dir / 'boxes.json'}",
                         f"inference.img_dir={image_dir}", f"inference.label_dump_path={out}"])  # fmt: skip
    finally:
        labeling.paste_masks = real_paste
    if code != 0:
        raise SystemExit(f"mal inference failed with exit {code}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("work_dir", type=Path, help="a quality.py work folder (gt.json, boxes.json, run/)")
    parser.add_argument("image_dir", type=Path, help="the dataset's image folder")
    parser.add_argument("--rule", choices=RULES, required=True)
    parser.add_argument("--param", type=float, default=0.5, help="the rule's number (see above)")
    parser.add_argument("--spec", default="cpu-natural", help="the spec the work folder was trained with")
    args = parser.parse_args(argv)
    for name in ("gt.json", "boxes.json", "run"):
        if not (args.work_dir / name).exists():
            parser.error(f"{args.work_dir / name} is missing: run benchmarks/quality.py with --work-dir first")
    labels = relabel(args.work_dir, args.image_dir, args.spec, args.rule, args.param)
    gt = load_coco(args.work_dir / "gt.json", args.image_dir, load_mask=True)
    metrics = quality.ours_metrics(gt, labels)
    print(json.dumps({"rule": args.rule, "param": args.param, "labels": str(labels),
                      **{key: round(float(metrics[key]), 4) for key in ("mIoU", "AP")}}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
