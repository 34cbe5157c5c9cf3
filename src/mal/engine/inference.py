"""`mal inference`: the auto-labels - the input COCO JSON, every key kept, with an RLE mask on every box."""

from __future__ import annotations

import contextlib
import copy
import time
from pathlib import Path
from typing import Any

from mal.box_likeness import measure as measure_box_likeness
from mal.box_likeness import warn_if_box_like
from mal.data.coco import load_coco
from mal.data.coco_boxes import CocoBoxes
from mal.engine.datamodule import require
from mal.engine.labeling import BoxLabel, ground_truth
from mal.engine.predict import Labeler, build_labeler
from mal.engine.ranks import RankStopped, Spawn, World, joined, plan_launch, spawn_local
from mal.engine.run_lock import hold_run_lock
from mal.engine.sharding import label_boxes, remove_shards
from mal.engine.status import StatusFile
from mal.errors import SpecError
from mal.fileio import atomic_write_json, remove_stale_temp_files
from mal.metrics import instance_ious
from mal.spec.schema import ExperimentSpec, output_file_problem


def labeled_coco(coco: CocoBoxes, labels: list[BoxLabel]) -> dict[str, Any]:
    """A copy of the input file with `segmentation` (RLE), mask `area`, `score` (mean probability inside the mask,
    as TAO writes it) and `quality` (the estimated IoU, mal.quality_estimate: sort by it to review) on every
    annotation."""
    output = copy.deepcopy(coco.raw)
    by_id = {label.ann_id: label for label in labels}
    for ann in output["annotations"]:
        label = by_id[int(ann["id"])]
        ann["segmentation"] = label.segmentation
        ann["area"] = label.area
        ann["score"] = round(label.score, 6)
        if label.quality is not None:
            ann["quality"] = round(label.quality, 6)
    return output


def _labeler(spec: ExperimentSpec) -> Labeler:
    return build_labeler(spec, spec.inference, "inference")


def check_output_path(spec: ExperimentSpec, out_path: Path) -> None:
    """The label file must not replace an input annotation file (its ground truth would be lost) nor be a folder
    (found only after labeling every box, before). The spec checked an explicit label_dump_path when it was read;
    this covers the default results_dir/inference/labels.json too."""
    problem = output_file_problem(out_path, spec.annotation_inputs())
    if problem:
        shown = f"inference.label_dump_path = {spec.inference.label_dump_path}" if spec.inference.label_dump_path \
            else f"the default output {out_path} (results_dir/inference/labels.json)"
        raise SpecError(f"{shown} {problem}.")


def run(spec: ExperimentSpec) -> int:
    launch = plan_launch(spec.inference, "inference")
    if isinstance(launch, Spawn):
        return spawn_local(spec, "inference", launch)
    with joined(launch) as world, contextlib.ExitStack() as held:
        with world.together():  # a failure on any rank is reported once, by rank 0
            ann_path, img_dir, out_path = _paths(spec)
            # Two inference runs on one results_dir would interleave their status.json events (rank 0 holds it).
            held.enter_context(hold_run_lock(Path(spec.results_dir) / "inference", "inference"))
        return _label(spec, ann_path, img_dir, out_path, world)


def _paths(spec: ExperimentSpec) -> tuple[str, str, Path]:
    inference = spec.inference
    ann_path = require(inference.ann_path or spec.dataset.val_ann_path or spec.dataset.train_ann_path,
                       "inference.ann_path", "inference")
    img_dir = require(inference.img_dir or spec.dataset.val_img_dir or spec.dataset.train_img_dir,
                      "inference.img_dir", "inference")
    out_path = Path(inference.label_dump_path or Path(spec.results_dir) / "inference" / "labels.json")
    check_output_path(spec, out_path)
    return ann_path, img_dir, out_path


def _label(spec: ExperimentSpec, ann_path: str, img_dir: str, out_path: Path, world: World) -> int:
    inference = spec.inference
    with world.together():
        coco = load_coco(ann_path, img_dir, load_mask=inference.load_mask,
                         cache_dir=Path(spec.dataset.cache_dir) if spec.dataset.cache_dir else None)
        labeler = _labeler(spec)
    status = StatusFile(Path(spec.results_dir) / "inference" / "status.json")
    if world.is_first:
        remove_stale_temp_files(out_path.parent, out_path.name)  # left by a killed earlier run of this output
        status.write("STARTED", message=f"labeling {len(coco)} boxes with {labeler.checkpoint}")
    started = time.perf_counter()
    try:
        labels = label_boxes(world, labeler, coco, spec, inference, "inference", "labeling")
        if labels is None:  # another rank's labels: rank 0 merges and writes them
            return 0
        output = labeled_coco(coco, labels)
        atomic_write_json(out_path, output, indent=None)
    except (Exception, RankStopped) as exc:
        # A STARTED with no end would read as a job still running; say why it stopped (no label file was written).
        if world.is_first:
            status.write("FAILURE", message=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    remove_shards(spec.results_dir, "inference")
    seconds = time.perf_counter() - started
    kpi = {"boxes": float(len(labels)), "boxes_per_second": len(labels) / max(seconds, 1e-9)}
    # Labels that are only their boxes must not pass silently: measured on every label (cheap: see box_likeness).
    likeness = measure_box_likeness([label.segmentation for label in labels],
                                    coco.boxes_xyxy[[coco.row_of_ann[label.ann_id] for label in labels]])
    if likeness.share is not None:
        kpi["box_like_share"] = likeness.share
    processes = f" by {world.size} processes" if world.size > 1 else ""
    message = f"{len(labels)} boxes labeled{processes} in {seconds:.1f} s ({kpi['boxes_per_second']:.1f} boxes/s)"
    print(f"mal inference: {message}; labels written to {out_path}")
    extra: dict[str, Any] = {"label_dump_path": str(out_path)}
    if inference.gallery:
        extra["gallery"] = str(_write_gallery(coco, output, labels, gallery_dir(spec)))
        print(f"mal inference: review page {extra['gallery']}")
    status.write("SUCCESS", kpi=kpi, message=message, **extra)
    warn_if_box_like(likeness, "inference")
    return 0


def gallery_dir(spec: ExperimentSpec) -> Path:
    """Where `inference.gallery=true` writes the review page: results_dir/inference/gallery, with the action's other
    outputs, wherever label_dump_path puts the labels (`mal gallery LABELS IMAGES --out DIR` writes one elsewhere)."""
    return Path(spec.results_dir) / "inference" / "gallery"


def _write_gallery(coco: CocoBoxes, output: dict[str, Any], labels: list[BoxLabel], folder: Path) -> Path:
    from mal.gallery.write import write_gallery

    ious = truth = None
    if coco.has_masks:
        gt_rles, _ = ground_truth(coco, [label.ann_id for label in labels])
        values = instance_ious([label.segmentation for label in labels], gt_rles)
        ious = {label.ann_id: float(value) for label, value in zip(labels, values)}
        truth = {label.ann_id: rle for label, rle in zip(labels, gt_rles)}  # drawn as an outline on each card
    image_paths = {image_id: image.path for image_id, image in coco.images.items()}
    return write_gallery(output, image_paths, folder, ious=ious, ground_truth=truth)
