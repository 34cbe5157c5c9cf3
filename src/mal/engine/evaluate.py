"""`mal evaluate`: masks of a checkpoint (or of a label file, `evaluate.label_file`) against ground truth - mIoU
overall, by size, per class, mask AP, the box-fill baseline and how many masks are just their box."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import numpy as np

from mal.box_likeness import measure as measure_box_likeness
from mal.box_likeness import warn_if_box_like
from mal.data.coco_boxes import CocoBoxes
from mal.engine.datamodule import load_val_coco
from mal.engine.label_file import read_label_file
from mal.engine.labeling import BoxLabel, ground_truth
from mal.engine.predict import build_labeler
from mal.engine.ranks import RankStopped, Spawn, World, joined, launched_rank, plan_launch, spawn_local
from mal.engine.run_lock import hold_run_lock
from mal.engine.sharding import label_boxes, remove_shards
from mal.engine.status import StatusFile
from mal.errors import DataError
from mal.fileio import atomic_write_json
from mal.masks import box_fill_rle
from mal.metrics import coco_mask_ap, format_metrics_table, instance_ious, miou_summary
from mal.spec.schema import ExperimentSpec


def score_labels(coco: CocoBoxes, labels: list[BoxLabel]) -> dict[str, Any]:
    """mIoU summary, mask AP and the box-fill baseline's mIoU for labels of every box of `coco`."""
    ann_ids = [label.ann_id for label in labels]
    gt_rles, gt_areas = ground_truth(coco, ann_ids)
    ious = instance_ious([label.segmentation for label in labels], gt_rles)
    categories = np.asarray([label.category_id for label in labels])
    metrics = miou_summary(ious, categories, gt_areas, coco.categories)
    box_rles: list[Any] = [None] * len(labels)
    for image_id, file_rows, positions in _by_image(coco, [coco.row_of_ann[ann_id] for ann_id in ann_ids]):
        for position, rle in zip(positions, box_fill_rle(coco.boxes_xyxy[file_rows], _hw(coco, image_id))):
            box_rles[position] = rle
    box_fill = miou_summary(instance_ious(box_rles, gt_rles), categories, gt_areas, coco.categories)
    metrics["box_fill_mIoU"] = box_fill["mIoU"]
    predictions = [{"image_id": label.image_id, "category_id": label.category_id,
                    "segmentation": label.segmentation, "score": label.score} for label in labels]
    metrics.update(coco_mask_ap(_gt_dict(coco), predictions))
    return metrics


def _hw(coco: CocoBoxes, image_id: int) -> tuple[int, int]:
    image = coco.images[image_id]
    return image.height, image.width


def _by_image(coco: CocoBoxes, rows: list[int]) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(image id, file rows, positions in `rows`) per image."""
    rows_array = np.asarray(rows, dtype=np.int64)
    image_ids = coco.image_ids[rows_array]
    groups = []
    for image_id in np.unique(image_ids):
        index = np.flatnonzero(image_ids == image_id)
        groups.append((int(image_id), rows_array[index], index))
    return groups


def _gt_dict(coco: CocoBoxes) -> dict[str, Any]:
    """The ground truth COCOeval needs: images, categories, and annotations with their masks."""
    return {
        "images": [{"id": i.id, "height": i.height, "width": i.width, "file_name": i.file_name}
                   for i in coco.images.values()],
        "categories": [{"id": cid, "name": name} for cid, name in coco.categories.items()],
        "annotations": [{"id": int(ann["id"]), "image_id": int(ann["image_id"]),
                         "category_id": int(ann["category_id"]), "segmentation": ann["segmentation"],
                         "iscrowd": int(ann.get("iscrowd", 0)), "bbox": ann["bbox"]}
                        for ann in coco.annotations],
    }


def run(spec: ExperimentSpec) -> int:
    if spec.evaluate.label_file:
        # A label file is scored without a model, by one process: any other rank of a launcher has nothing to do.
        if launched_rank() != 0:
            return 0
        launch = None
    else:
        launch = plan_launch(spec.evaluate, "evaluate")
        if isinstance(launch, Spawn):
            return spawn_local(spec, "evaluate", launch)
    with joined(launch) as world, contextlib.ExitStack() as held:
        with world.together():  # a failure on any rank is reported once, by rank 0
            # Two evaluations on one results_dir would interleave their status.json events and race on metrics.json.
            held.enter_context(hold_run_lock(Path(spec.results_dir) / "evaluate", "evaluate"))
        return _evaluate(spec, world)


def _evaluate(spec: ExperimentSpec, world: World) -> int:
    label_file = spec.evaluate.label_file
    with world.together():
        spec = spec.model_copy(update={"dataset": spec.dataset.model_copy(update={"load_mask": True})})
        coco = load_val_coco(spec, action="evaluate")
        if not coco.has_masks:
            raise DataError(
                f"{coco.ann_path} has no ground-truth mask (segmentation) on every annotation, so there is nothing "
                "to score against; point dataset.val_ann_path to a file with masks, or use mal inference to label."
            )
        out_dir = Path(spec.results_dir) / "evaluate"
        if label_file:
            # Read and paired before status.json is touched: a label file that does not fit writes nothing.
            scored = read_label_file(label_file, coco,
                                     Path(spec.dataset.cache_dir) if spec.dataset.cache_dir else None)
            source = {"label_file": label_file}
            description = f"scoring {label_file} (paired by {scored.paired_by}) on {len(coco)} boxes"
        else:
            # A label file is scored without a model: only here is a checkpoint (or an export) looked for.
            labeler = build_labeler(spec, spec.evaluate, "evaluate")
            source = {"checkpoint": str(labeler.checkpoint), "precision": labeler.precision}
            description = f"evaluating {labeler.checkpoint} ({labeler.precision}) on {len(coco)} boxes"
    status = StatusFile(out_dir / "status.json")
    if world.is_first:
        status.write("STARTED", message=description)
    started = time.perf_counter()
    try:
        if label_file:
            labels: list[BoxLabel] | None = scored.labels
        else:
            labels = label_boxes(world, labeler, coco, spec, spec.evaluate, "evaluate", "evaluate")
        if labels is None:  # another rank's labels: rank 0 merges and scores them
            return 0
        metrics = score_labels(coco, labels)
        likeness = measure_box_likeness([label.segmentation for label in labels],
                                        coco.boxes_xyxy[[coco.row_of_ann[label.ann_id] for label in labels]])
        metrics["box_like_share"] = likeness.share
        metrics.update(source)
        metrics["seconds"] = round(time.perf_counter() - started, 3)
        atomic_write_json(out_dir / "metrics.json", metrics)
    except (Exception, RankStopped) as exc:
        # A STARTED with no end would read as a job still running; say why it stopped.
        if world.is_first:
            status.write("FAILURE", message=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    remove_shards(spec.results_dir, "evaluate")
    kpi = {key: value for key, value in metrics.items() if isinstance(value, float)}
    status.write("SUCCESS", kpi=kpi, message="evaluation finished", metrics_path=str(out_dir / "metrics.json"))
    print(format_metrics_table(metrics, title=f"mal evaluate: {coco.ann_path.name} ({len(coco)} boxes)"))
    print(baseline_line(metrics))
    if label_file and (scored.unscored or scored.without_mask):
        print(f"mal evaluate: {label_file}: {scored.unscored} annotations pair with no ground-truth box (not "
              f"scored), {scored.without_mask} paired ones have no mask (scored as empty masks)")
    print(f"mal evaluate: metrics written to {out_dir / 'metrics.json'}")
    warn_if_box_like(likeness, "evaluate")
    return 0


def baseline_line(metrics: dict[str, Any]) -> str:
    """The masks' mIoU next to the box-fill baseline's: the first thing to know about auto-labels is whether
    they beat the boxes they came from."""
    miou, box_fill = metrics.get("mIoU"), metrics.get("box_fill_mIoU")
    if miou is None or box_fill is None:
        return "mal evaluate: no mIoU (no instance to score)"
    return (f"mal evaluate: mask mIoU {miou:.4f} vs box-fill baseline {box_fill:.4f} "
            f"({miou - box_fill:+.4f}{', masks beat the boxes' if miou > box_fill else ', no better than the boxes'})")
