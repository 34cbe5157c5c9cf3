"""Auto-label quality on real data: train on a dataset's own boxes, label them, score against the hidden masks.

One command per dataset, e.g.

    .venv/bin/python benchmarks/quality.py ../shared/data/dsb2018_dev --spec cpu-nuclei
    .venv/bin/python benchmarks/quality.py ../shared/data/coco128_dev --spec cpu-natural

The protocol:
1. The ground-truth masks are hidden: `mal train` and `mal inference` only see `boxes.json`, a copy of the
   annotation file with every `segmentation` removed (and validation off, so no checkpoint is chosen by GT).
2. Optional: `mal pretrain` (MAE on the same images) when the spec has a `pretrain` section.
3. `mal train` on those boxes, then `mal inference` labels the same boxes; both are timed (the budget).
4. The label file is scored against the hidden masks with the engine's own scorer (mIoU overall and by size,
   mask AP), next to two peers computed here on the same boxes: the box filled as the mask, and OpenCV GrabCut
   (5 iterations, initialised with the box, on the box grown by `--grabcut-context` of its size per side).
5. How well each label's `score` and `quality` rank the masks: Spearman correlation with the true IoU, and the
   share of bad masks (IoU < 0.5) among the 10 % ranked lowest, against the share overall.
6. Optional, `--second-round [KEY=VALUE ...]`: MAL's second stage. A fresh model trains on the first round's
   labels (the same boxes with their masks and quality), learning from those masks through
   train.loss_mask_weight (1 unless given), and its labels are the ones scored; the budget counts both rounds.
Results: benchmarks/results/<name>.json and .md (numbers, timings, the command, the spec text).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO_ROOT, write_results

from mal.data.coco import load_coco
from mal.data.coco_boxes import CocoBoxes
from mal.engine.evaluate import score_labels
from mal.engine.labeling import BoxLabel, ground_truth
from mal.fileio import atomic_write_json
from mal.masks import box_fill_rle, encode_masks
from mal.metrics import instance_ious
from mal.spec.load import resolve_spec_file

METRIC_KEYS = ("mIoU", "mIoU_small", "mIoU_medium", "mIoU_large", "AP", "AP50", "AP75")
RANK_KEYS = ("spearman_score", "spearman_quality")
BAD_IOU = 0.5
LOWEST_SHARE = 0.1
BUDGET_S = 30 * 60


# ------------------------------------------------------------------------------------------------ data setup
def prepare_files(
    data_dir: Path, work_dir: Path, max_images: int | None, fold: int | None = None
) -> tuple[Path, Path, Path]:
    """gt.json (the chosen images, masks kept) and boxes.json (the same without any mask) in work_dir.

    `fold` 1 or 2 keeps the first or the second half of the images sorted by id (the 2-fold check of settings:
    choose them on one half, score them on the other)."""
    source = json.loads((data_dir / "annotations.json").read_text())
    images = sorted(source["images"], key=lambda image: image["id"])
    if fold is not None:
        half = (len(images) + 1) // 2
        images = images[:half] if fold == 1 else images[half:]
    if max_images and max_images < len(images):
        # Every k-th image by id keeps the mix of image kinds a random subset would have, deterministically.
        picks = np.linspace(0, len(images) - 1, max_images).round().astype(int)
        images = [images[i] for i in sorted(set(picks.tolist()))]
    keep = {image["id"] for image in images}
    annotations = [ann for ann in source["annotations"] if ann["image_id"] in keep]
    gt = {**source, "images": images, "annotations": annotations}
    hidden = {**gt, "annotations": [{k: v for k, v in ann.items() if k != "segmentation"} for ann in annotations]}
    gt_path, boxes_path = work_dir / "gt.json", work_dir / "boxes.json"
    atomic_write_json(gt_path, gt, indent=None)
    atomic_write_json(boxes_path, hidden, indent=None)
    return gt_path, boxes_path, data_dir / "images"


# ------------------------------------------------------------------------------------------------ mal runs
def fresh_train_folder(results_dir: Path) -> None:
    """A benchmark run trains from scratch in its own work folder: an earlier run's checkpoints there go first (mal
    train refuses to start a new run beside them)."""
    shutil.rmtree(results_dir / "train", ignore_errors=True)


def run_mal(action: str, spec: Path, overrides: list[str], log_path: Path) -> float:
    """Run `mal <action>` as a user would; return its wall time in seconds (raise on a non-zero exit)."""
    command = [sys.executable, "-m", "mal", action, "-e", str(spec), *overrides]
    env = {**os.environ, "MAL_NO_PROGRESS": "1"}
    started = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(" ".join(command) + "\n")
        log.flush()
        result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT)
    seconds = time.perf_counter() - started
    if result.returncode != 0:
        tail = log_path.read_text().splitlines()[-5:]
        raise SystemExit(f"mal {action} failed with exit {result.returncode}; see {log_path}:\n" + "\n".join(tail))
    return seconds


def second_round(spec_path: Path, common: list[str], first_labels: Path, boxes_path: Path, image_dir: Path,
                 work_dir: Path, label_path: Path, overrides: list[str]) -> tuple[float, float]:
    """Train a fresh model on the first round's labels (boxes plus their masks, which the mask loss learns from
    where they are sure) and label the hidden-mask boxes again; returns (train, label) seconds. The mask loss's
    weight is the spec's, or 1 when neither the spec nor `overrides` sets one."""
    import yaml

    in_spec = ((yaml.safe_load(spec_path.read_text()) or {}).get("train") or {}).get("loss_mask_weight", 0)
    given = in_spec > 0 or any(pair.startswith("train.loss_mask_weight=") for pair in overrides)
    weight = [] if given else ["train.loss_mask_weight=1"]
    kept = [pair for pair in common if not pair.startswith(("results_dir=", "dataset.train_ann_path="))]
    round2 = [*kept, f"results_dir={work_dir / 'run2'}", f"dataset.train_ann_path={first_labels}", *weight,
              *overrides]  # fmt: skip
    fresh_train_folder(work_dir / "run2")
    train_s = run_mal("train", spec_path, round2, work_dir / "train2.log")
    label_s = run_mal("inference", spec_path,
                      [*round2, f"inference.ann_path={boxes_path}", f"inference.img_dir={image_dir}",
                       f"inference.label_dump_path={label_path}"], work_dir / "inference2.log")  # fmt: skip
    return train_s, label_s


def label_in_process(work_dir: Path, image_dir: Path, spec_name: str, checkpoint: Path | None = None,
                     description: str = "labeling") -> tuple[CocoBoxes, list[BoxLabel]]:
    """Label a work folder's boxes in this process the way `mal inference` does (its labeling, its spec's test-time
    settings), with the folder's trained checkpoint or `checkpoint`; the labels keep what only memory holds."""
    from mal.engine.predict import build_labeler, label_dataset
    from mal.spec.load import load_spec

    boxes_path = work_dir / "boxes.json"
    overrides = [f"results_dir={work_dir / 'run'}", f"dataset.train_ann_path={boxes_path}",
                 f"dataset.train_img_dir={image_dir}", "dataset.load_mask=false"]  # fmt: skip
    if checkpoint is not None:
        overrides.append(f"inference.checkpoint={checkpoint}")
    spec = load_spec(spec_name, overrides)
    coco = load_coco(boxes_path, image_dir)
    labeler = build_labeler(spec, spec.inference, "inference")
    return coco, label_dataset(labeler, coco, spec, spec.inference.batch_size, description)


def spec_has_pretrain(spec_path: Path) -> bool:
    import yaml

    spec = yaml.safe_load(spec_path.read_text()) or {}
    return "pretrain" in spec


# ------------------------------------------------------------------------------------------------ peers
def _labels_from_masks(coco: CocoBoxes, rows: np.ndarray, rles: list[dict[str, Any]]) -> list[BoxLabel]:
    return [
        BoxLabel(
            ann_id=int(coco.ann_ids[row]),
            image_id=int(coco.image_ids[row]),
            category_id=int(coco.category_ids[row]),
            segmentation=rle,
            area=0,
            score=1.0,
        )
        for row, rle in zip(rows.tolist(), rles)
    ]


def box_fill_labels(coco: CocoBoxes) -> list[BoxLabel]:
    labels = []
    for image_id, rows in coco.boxes_by_image.items():
        image = coco.images[image_id]
        labels += _labels_from_masks(coco, rows, box_fill_rle(coco.boxes_xyxy[rows], (image.height, image.width)))
    return labels


def ellipse_labels(coco: CocoBoxes) -> list[BoxLabel]:
    """The ellipse inscribed in each box (pixel centres inside it): the shape prior any method must beat."""
    labels = []
    for image_id, rows in coco.boxes_by_image.items():
        image = coco.images[image_id]
        for chunk in np.array_split(rows, max(1, len(rows) // 32)):  # a nuclei image holds hundreds of boxes
            masks = np.zeros((image.height, image.width, len(chunk)), dtype=np.uint8, order="F")
            for slot, (x0, y0, x1, y1) in enumerate(coco.boxes_xyxy[chunk].tolist()):
                # Only the box's own pixels can be inside its ellipse.
                r0, r1 = max(int(np.floor(y0)), 0), min(int(np.ceil(y1)), image.height)
                c0, c1 = max(int(np.floor(x0)), 0), min(int(np.ceil(x1)), image.width)
                ys = np.arange(r0, r1, dtype=np.float64)[:, None] + 0.5
                xs = np.arange(c0, c1, dtype=np.float64)[None, :] + 0.5
                across = ((xs - (x0 + x1) / 2) / max((x1 - x0) / 2, 1e-6)) ** 2
                down = ((ys - (y0 + y1) / 2) / max((y1 - y0) / 2, 1e-6)) ** 2
                masks[r0:r1, c0:c1, slot] = across + down <= 1
            labels += _labels_from_masks(coco, chunk, encode_masks(masks))
    return labels


def grabcut_mask(image: np.ndarray, box_xyxy: np.ndarray, context: float, iterations: int = 5) -> np.ndarray:
    """GrabCut of one box on the box grown by `context` x its size per side (clipped); image-size bool mask."""
    import cv2

    height, width = image.shape[:2]
    x0, y0, x1, y1 = box_xyxy.tolist()
    bw, bh = x1 - x0, y1 - y0
    rx0, ry0 = max(int(np.floor(x0 - context * bw)), 0), max(int(np.floor(y0 - context * bh)), 0)
    rx1, ry1 = min(int(np.ceil(x1 + context * bw)), width), min(int(np.ceil(y1 + context * bh)), height)
    bx0, by0 = round(x0), round(y0)
    bx1, by1 = max(round(x1), bx0 + 1), max(round(y1), by0 + 1)
    full = np.zeros((height, width), dtype=bool)
    region = np.ascontiguousarray(image[ry0:ry1, rx0:rx1])
    rect = (bx0 - rx0, by0 - ry0, min(bx1, rx1) - bx0, min(by1, ry1) - by0)
    try:
        mask = np.zeros(region.shape[:2], dtype=np.uint8)
        background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(region, mask, rect, background, foreground, iterations, cv2.GC_INIT_WITH_RECT)
        full[ry0:ry1, rx0:rx1] = (mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)
    except cv2.error:
        pass
    if not full.any():
        # GrabCut could not run (no background sample, degenerate box) or gave up on the object (an empty
        # mask, common among dense small nuclei): a user of the tool would keep the box, and so does the peer.
        full[by0:by1, bx0:bx1] = True
    return full


def grabcut_labels(coco: CocoBoxes, context: float) -> list[BoxLabel]:
    import cv2

    cv2.setNumThreads(1)
    labels = []
    for image_id, rows in coco.boxes_by_image.items():
        image = cv2.imread(str(coco.images[image_id].path), cv2.IMREAD_COLOR)
        masks = np.stack([grabcut_mask(image, coco.boxes_xyxy[row], context) for row in rows], axis=-1)
        labels += _labels_from_masks(coco, rows, encode_masks(masks))
    return labels


def peer_metrics(gt: CocoBoxes, work_dir: Path, context: float) -> dict[str, dict[str, Any]]:
    """Box fill, ellipse and GrabCut scores, cached per work folder (they depend only on the boxes and images)."""
    cache = work_dir / f"peers_ellipse_context{context:g}.json"  # the name changes when the peers do
    if cache.exists():
        return json.loads(cache.read_text())
    peers: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()
    peers["box fill"] = score_labels(gt, box_fill_labels(gt))
    peers["box fill"]["seconds"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    peers["ellipse in the box"] = score_labels(gt, ellipse_labels(gt))
    peers["ellipse in the box"]["seconds"] = round(time.perf_counter() - started, 1)
    started = time.perf_counter()
    peers["GrabCut"] = score_labels(gt, grabcut_labels(gt, context))
    peers["GrabCut"]["seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_json(cache, peers)
    return peers


def ours_metrics(gt: CocoBoxes, label_path: Path) -> dict[str, Any]:
    dump = json.loads(label_path.read_text())
    labels = [
        BoxLabel(
            ann_id=int(ann["id"]),
            image_id=int(ann["image_id"]),
            category_id=int(ann["category_id"]),
            segmentation=ann["segmentation"],
            area=int(ann["area"]),
            score=float(ann.get("score", 1.0)),
            quality=float(ann["quality"]) if "quality" in ann else None,
        )
        for ann in dump["annotations"]
    ]
    return {**score_labels(gt, labels), **ranking_metrics(gt, labels)}


# ------------------------------------------------------------------------------------------------ ranking
def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of `values`, ties sharing their mean rank (scipy is not a dependency)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_values) != 0) + 1]
    ends = np.r_[starts[1:], len(values)]
    mean_rank = np.repeat((starts + ends - 1) / 2.0, ends - starts)
    result = np.empty(len(values))
    result[order] = mean_rank
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation; None when either side is constant."""
    rank_a, rank_b = ranks(a), ranks(b)
    if len(rank_a) < 2 or rank_a.std() == 0 or rank_b.std() == 0:
        return None
    return float(np.corrcoef(rank_a, rank_b)[0, 1])


def bad_share_lowest(values: np.ndarray, ious: np.ndarray) -> float:
    """Share of bad masks (IoU < BAD_IOU) among the LOWEST_SHARE of masks ranked lowest by `values`."""
    count = max(1, round(LOWEST_SHARE * len(values)))
    lowest = np.argsort(np.asarray(values, dtype=np.float64), kind="stable")[:count]
    return float((ious[lowest] < BAD_IOU).mean())


def ranking_metrics(gt: CocoBoxes, labels: list[BoxLabel]) -> dict[str, Any]:
    """How well `score` and `quality` find the bad masks: Spearman with the true IoU, and the share of bad masks
    among the lowest-ranked tenth against the share overall."""
    gt_rles, _ = ground_truth(gt, [label.ann_id for label in labels])
    ious = instance_ious([label.segmentation for label in labels], gt_rles)
    scores = np.asarray([label.score for label in labels], dtype=np.float64)
    result: dict[str, Any] = {
        "spearman_score": spearman(scores, ious),
        "bad_share": float((ious < BAD_IOU).mean()) if len(ious) else None,
        "bad_share_lowest_score": bad_share_lowest(scores, ious) if len(ious) else None,
        "spearman_quality": None,
        "bad_share_lowest_quality": None,
    }
    if labels and all(label.quality is not None for label in labels):
        quality = np.asarray([label.quality for label in labels], dtype=np.float64)
        result["spearman_quality"] = spearman(quality, ious)
        result["bad_share_lowest_quality"] = bad_share_lowest(quality, ious)
    return result


# ------------------------------------------------------------------------------------------------ main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", type=Path, help="dataset folder with annotations.json (GT masks) and images/")
    parser.add_argument("--spec", required=True, help="the mal spec: a preset's name (e.g. cpu-nuclei) or a file")
    parser.add_argument("--name", help="results name (default: quality_<data folder name>)")
    parser.add_argument("--work-dir", type=Path, help="scratch folder (default: benchmarks/out/<name>)")
    parser.add_argument("--max-images", type=int, help="use only this many images, spread over the ids")
    parser.add_argument("--fold", type=int, choices=(1, 2),
                        help="only the first (1) or second (2) half of the images by id, for the 2-fold check")
    parser.add_argument(
        "--grabcut-context",
        type=float,
        default=1.0,
        help="GrabCut region: the box grown by this fraction of its size on each side",
    )
    parser.add_argument("--skip-peers", action="store_true", help="score only our labels")
    parser.add_argument("--skip-train", action="store_true", help="reuse the trained checkpoint in the work folder")
    parser.add_argument("--no-results", action="store_true", help="print, but write nothing to benchmarks/results")
    parser.add_argument("--second-round", action="append", default=None, metavar="KEY=VALUE", nargs="*",
                        help="train again on the first round's labels (their masks teach through "
                             "train.loss_mask_weight, 1 unless given here) and score that second round's labels; "
                             "KEY=VALUE pairs apply to the second round only")
    parser.add_argument("--second-round-spec",
                        help="the second round's spec (default: --spec), e.g. cpu-natural-round2")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="spec overrides passed to every mal command (key=value)")
    return parser.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = args.data_dir.resolve()
    name = args.name or f"quality_{data_dir.name}"
    work_dir = (args.work_dir or REPO_ROOT / "benchmarks" / "out" / name).resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    gt_path, boxes_path, image_dir = prepare_files(data_dir, work_dir, args.max_images, args.fold)
    spec_path = resolve_spec_file(args.spec)[0].resolve()  # a shipped preset is a file inside the package
    run_dir = work_dir / "run"
    label_path = work_dir / "labels.json"
    common = [
        f"results_dir={run_dir}",
        f"dataset.train_ann_path={boxes_path}",
        f"dataset.train_img_dir={image_dir}",
        "dataset.load_mask=false",
        *args.overrides,
    ]

    second = None if args.second_round is None else [pair for group in args.second_round for pair in group]
    if second is None and args.second_round_spec:
        second = []  # naming the second round's spec asks for one
    final_label_path = label_path
    if second is not None:
        label_path = work_dir / "labels_round1.json"
    timings: dict[str, float] = {}
    if not args.skip_train:
        if spec_has_pretrain(spec_path):
            timings["pretrain_s"] = run_mal("pretrain", spec_path, common, work_dir / "pretrain.log")
            common.append(f"train.pretrained_model_path={run_dir / 'pretrain' / 'mae_backbone.pth'}")
        fresh_train_folder(run_dir)
        timings["train_s"] = run_mal("train", spec_path, common, work_dir / "train.log")
    timings["label_s"] = run_mal(
        "inference",
        spec_path,
        [
            *common,
            f"inference.ann_path={boxes_path}",
            f"inference.img_dir={image_dir}",
            f"inference.label_dump_path={label_path}",
        ],
        work_dir / "inference.log",
    )
    if second is not None:
        second_spec = resolve_spec_file(args.second_round_spec)[0].resolve() if args.second_round_spec else spec_path
        timings["train2_s"], timings["label2_s"] = second_round(
            second_spec, common, label_path, boxes_path, image_dir, work_dir, final_label_path, second
        )
        label_path = final_label_path
    timings["total_s"] = sum(timings.values())

    gt = load_coco(gt_path, image_dir, load_mask=True)
    methods = {"MAL (ours)": ours_metrics(gt, label_path)}
    if not args.skip_peers:
        methods.update(peer_metrics(gt, work_dir, args.grabcut_context))

    table_keys = (*METRIC_KEYS, *RANK_KEYS)
    rows = [{"method": method, **{key: metrics.get(key) for key in table_keys}} for method, metrics in methods.items()]
    for row in rows:
        for key in table_keys:
            row[key] = None if row[key] is None else round(float(row[key]), 4)
    ours = methods["MAL (ours)"]
    review_rows = [
        {"ranked by": key, "spearman_with_IoU": ours[f"spearman_{key}"],
         "bad_in_lowest_10%": ours[f"bad_share_lowest_{key}"], "bad_overall": ours["bad_share"]}
        for key in ("score", "quality")
    ]
    for row in review_rows:
        for key in ("spearman_with_IoU", "bad_in_lowest_10%", "bad_overall"):
            row[key] = None if row[key] is None else round(float(row[key]), 3)
    timing_rows = [{"stage": key.removesuffix("_s"), "seconds": round(value, 1)} for key, value in timings.items()]
    within = timings["total_s"] <= BUDGET_S if not args.skip_train else None
    print(json.dumps({"name": name, "rows": rows, "review": review_rows, "timings": timings}, indent=1))
    if args.no_results:
        return 0
    payload = {
        "dataset": str(data_dir),
        "images": len(gt.images),
        "boxes": len(gt),
        "spec_path": str(spec_path.relative_to(REPO_ROOT)) if spec_path.is_relative_to(REPO_ROOT) else str(spec_path),
        "spec": spec_path.read_text(),
        "overrides": args.overrides,
        "fold": args.fold,
        "second_round": second,
        "second_round_spec": args.second_round_spec,
        "grabcut_context": args.grabcut_context,
        "timings_s": timings,
        "budget_s": BUDGET_S,
        "within_budget": within,
        "methods": methods,
    }
    notes = [
        f"{len(gt)} boxes in {len(gt.images)} images of {data_dir.name}"
        + (f" (fold {args.fold}: half of the images by id)" if args.fold else "")
        + "; training and labeling saw only the boxes (ground-truth masks hidden, no validation during training); "
        "scores against the hidden masks.",
        f"Spec: {payload['spec_path']}" + (f" with overrides {' '.join(args.overrides)}" if args.overrides else "")
        + ("" if second is None else "; a second round trained on the first round's labels"
           + (f" with {args.second_round_spec}" if args.second_round_spec else "")
           + (f" ({' '.join(second)})" if second else "")),
        f"Peers on the same boxes: box filled as the mask; the ellipse inscribed in the box; OpenCV GrabCut, "
        "5 iterations, initialised with the box, "
        f"on the box grown by {args.grabcut_context:g} of its width/height per side (clipped to the image).",
        f"Budget: pretrain + train + label <= {BUDGET_S // 60} min wall time on this CPU: "
        f"{timings['total_s'] / 60:.1f} min" + ("" if within is None else (" (within)" if within else " (OVER)")),
    ]
    write_results(
        name,
        payload,
        [
            ("Mask quality against the hidden ground truth", ["method", *table_keys], rows),
            ("Which masks to check first (bad: IoU < 0.5)",
             ["ranked by", "spearman_with_IoU", "bad_in_lowest_10%", "bad_overall"], review_rows),
            ("Wall time", ["stage", "seconds"], timing_rows),
        ],
        notes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
