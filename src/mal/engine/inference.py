"""`mal inference`: the auto-labels - the input COCO JSON, every key kept, with an RLE mask on every box."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from mal.box_likeness import measure as measure_box_likeness
from mal.box_likeness import warn_if_box_like
from mal.data.coco import load_coco
from mal.data.coco_boxes import CocoBoxes
from mal.engine.common import resolve_checkpoint
from mal.engine.datamodule import require
from mal.engine.labeling import BoxLabel, ground_truth
from mal.engine.module import test_time_refiner
from mal.engine.predict import Labeler, label_dataset, torch_labeler
from mal.engine.run_lock import hold_run_lock
from mal.engine.status import StatusFile
from mal.errors import SpecError
from mal.fileio import atomic_write_json, remove_stale_temp_files
from mal.metrics import instance_ious
from mal.spec.schema import ExperimentSpec, output_file_problem


def labeled_coco(coco: CocoBoxes, labels: list[BoxLabel]) -> dict[str, Any]:
    """A copy of the input file with `segmentation` (RLE), mask `area` and `score` on every annotation."""
    output = copy.deepcopy(coco.raw)
    by_id = {label.ann_id: label for label in labels}
    for ann in output["annotations"]:
        label = by_id[int(ann["id"])]
        ann["segmentation"] = label.segmentation
        ann["area"] = label.area
        ann["score"] = round(label.score, 6)
    return output


def _labeler(spec: ExperimentSpec) -> Labeler:
    if spec.inference.backend == "onnxruntime":
        from mal.engine.export import onnx_file_for
        from mal.engine.onnx_backend import OnnxMaskNet

        onnx_path = onnx_file_for(spec)
        net = OnnxMaskNet(onnx_path, num_threads=spec.train.num_threads)
        return Labeler(predict=net, crop_size=net.crop_size, device=net.device, checkpoint=onnx_path,
                       refine=test_time_refiner(spec.inference.model_dump()))
    checkpoint = resolve_checkpoint(spec, spec.inference.checkpoint, "inference.checkpoint")
    return torch_labeler(checkpoint, spec.inference)


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
    inference = spec.inference
    ann_path = require(inference.ann_path or spec.dataset.val_ann_path or spec.dataset.train_ann_path,
                       "inference.ann_path", "inference")
    img_dir = require(inference.img_dir or spec.dataset.val_img_dir or spec.dataset.train_img_dir,
                      "inference.img_dir", "inference")
    out_path = Path(inference.label_dump_path or Path(spec.results_dir) / "inference" / "labels.json")
    check_output_path(spec, out_path)
    # Two inference runs on one results_dir would interleave their status.json events.
    with hold_run_lock(Path(spec.results_dir) / "inference", "inference"):
        return _label(spec, ann_path, img_dir, out_path)


def _label(spec: ExperimentSpec, ann_path: str, img_dir: str, out_path: Path) -> int:
    inference = spec.inference
    coco = load_coco(ann_path, img_dir, load_mask=inference.load_mask,
                     cache_dir=Path(spec.dataset.cache_dir) if spec.dataset.cache_dir else None)
    labeler = _labeler(spec)
    status = StatusFile(Path(spec.results_dir) / "inference" / "status.json")
    remove_stale_temp_files(out_path.parent, out_path.name)  # left by a killed earlier run of this output
    status.write("STARTED", message=f"labeling {len(coco)} boxes with {labeler.checkpoint}")
    started = time.perf_counter()
    try:
        labels = label_dataset(labeler, coco, spec, inference.batch_size, "labeling")
        output = labeled_coco(coco, labels)
        atomic_write_json(out_path, output, indent=None)
    except Exception as exc:
        # A STARTED with no end would read as a job still running; say why it stopped (no label file was written).
        status.write("FAILURE", message=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        raise
    seconds = time.perf_counter() - started
    kpi = {"boxes": float(len(labels)), "boxes_per_second": len(labels) / max(seconds, 1e-9)}
    # Labels that are only their boxes must not pass silently: measured on every label (cheap: see box_likeness).
    likeness = measure_box_likeness([label.segmentation for label in labels],
                                    coco.boxes_xyxy[[coco.row_of_ann[label.ann_id] for label in labels]])
    if likeness.share is not None:
        kpi["box_like_share"] = likeness.share
    message = f"{len(labels)} boxes labeled in {seconds:.1f} s ({kpi['boxes_per_second']:.1f} boxes/s)"
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

    ious = None
    if coco.has_masks:
        gt_rles, _ = ground_truth(coco, [label.ann_id for label in labels])
        values = instance_ious([label.segmentation for label in labels], gt_rles)
        ious = {label.ann_id: float(value) for label, value in zip(labels, values)}
    image_paths = {image_id: image.path for image_id, image in coco.images.items()}
    return write_gallery(output, image_paths, folder, ious=ious)
