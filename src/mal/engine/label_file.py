"""`mal evaluate evaluate.label_file=...`: read a COCO label file from any tool and pair its masks with the ground
truth's boxes, so it is scored exactly as a checkpoint's masks are, without a model.

Pairing: by annotation id when every ground-truth annotation id is in the label file on the same image (a file
made from the ground truth, e.g. by `mal inference` on it); otherwise by image id + box: within each image and
category, boxes pair one to one in order of box IoU, when it is at least MATCH_BOX_IOU (a tool may round the
boxes or recompute them from its masks). Images pair by id and must have the same size and file name. Anything
left unpaired on the ground-truth side is one DataError (exit 2) before anything is written; annotations of the
label file that pair with no ground-truth box (labels of more images than the ground truth holds) are not scored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from mal.data.coco import check_coco
from mal.data.coco_boxes import CocoBoxes
from mal.engine.labeling import BoxLabel
from mal.errors import DataError
from mal.masks import encode_masks, rle_area, segmentation_to_rle

KEY = "evaluate.label_file"

MATCH_BOX_IOU = 0.9
"""Boxes pair by image id + box when their IoU is at least this: integer rounding of a box of 10 px or more
keeps it above 0.9, while two different objects' boxes rarely overlap that much."""


@dataclass
class LabelFile:
    """The label file's masks as one BoxLabel per ground-truth box (ground-truth ids, order and classes)."""

    path: str
    labels: list[BoxLabel]
    paired_by: str
    """"annotation id" or "image id + box"."""
    unscored: int
    """Annotations of the label file that pair with no ground-truth box."""
    without_mask: int
    """Paired annotations with no segmentation, scored as empty masks."""


def read_label_file(path: str, gt: CocoBoxes, cache_dir: Path | None = None) -> LabelFile:
    """The masks of the COCO file `path` for every box of `gt`; DataError naming the file and what does not match."""
    labels = _load(path, gt, cache_dir)
    _check_images(path, labels, gt)
    rows, paired_by = _pair_by_id(path, labels, gt)
    if rows is None:
        rows = _pair_by_box(path, labels, gt)
    return LabelFile(path=path, labels=_box_labels(labels, gt, rows), paired_by=paired_by,
                     unscored=len(labels) - len(set(rows.tolist())),
                     without_mask=int((~labels.has_segmentation[rows]).sum()))


def _mismatch(path: str, gt: CocoBoxes, what: str) -> DataError:
    return DataError(
        f"{KEY} = {path} does not match the ground truth {gt.ann_path}: {what}; score labels of the same images "
        "(e.g. mal inference with inference.ann_path set to dataset.val_ann_path), or point dataset.val_ann_path to "
        "the ground truth of these labels."
    )


def _load(path: str, gt: CocoBoxes, cache_dir: Path | None) -> CocoBoxes:
    # The same validation as every input COCO file (ids, boxes, masks that fit their images); its images are not
    # opened: scoring needs only their sizes, and those must be the ground truth's.
    labels, report = check_coco(path, gt.img_dir, load_mask=True, check_images=False, cache_dir=cache_dir)
    if labels is None:
        first = report.errors[0]
        if first.code == "missing_file":
            raise DataError(f"{KEY} = {path} does not exist; give the COCO label file to score (masks as RLE or "
                            "polygons), e.g. the inference.label_dump_path of mal inference.")
        raise DataError(f"{KEY}: {report.summary()}")
    if not labels.has_segmentation.any():
        raise DataError(
            f"{KEY} = {path} has no mask (segmentation) on any annotation, so there is nothing to score; give a "
            "label file with masks (RLE or polygons), e.g. the output of mal inference."
        )
    return labels


def _check_images(path: str, labels: CocoBoxes, gt: CocoBoxes) -> None:
    wanted = sorted(gt.boxes_by_image)
    missing = [image_id for image_id in wanted if image_id not in labels.images]
    if missing:
        image = gt.images[missing[0]]
        raise _mismatch(path, gt, f"{len(missing)} of the {len(wanted)} ground-truth images with boxes are not in "
                                  f"the label file (first: image id {image.id}, {image.file_name})")
    for image_id in wanted:
        ours, theirs = gt.images[image_id], labels.images[image_id]
        if (ours.width, ours.height) != (theirs.width, theirs.height):
            raise _mismatch(path, gt, f"image id {image_id} is {theirs.width}x{theirs.height} in the label file but "
                                      f"{ours.width}x{ours.height} ({ours.file_name}) in the ground truth")
        # Tools may prefix a folder to file_name; the name itself must agree.
        if PurePosixPath(theirs.file_name).name != PurePosixPath(ours.file_name).name:
            raise _mismatch(path, gt, f"image id {image_id} is {theirs.file_name} in the label file but "
                                      f"{ours.file_name} in the ground truth")


def _pair_by_id(path: str, labels: CocoBoxes, gt: CocoBoxes) -> tuple[np.ndarray | None, str]:
    """Label rows of the ground truth's annotations by id, or None unless every id is there on the same image."""
    index = labels.row_of_ann
    rows = np.fromiter((index.get(int(ann_id), -1) for ann_id in gt.ann_ids.tolist()), dtype=np.int64,
                       count=len(gt))
    if (rows < 0).any() or (labels.image_ids[rows] != gt.image_ids).any():
        return None, "image id + box"
    different = np.flatnonzero(labels.category_ids[rows] != gt.category_ids)
    if different.size:
        row = int(different[0])
        raise _mismatch(path, gt, (
            f"{different.size} annotations have another category_id than the ground truth's annotation of the same "
            f"id (first: annotation {gt.ann_ids[row]}, category_id {labels.category_ids[rows[row]]} in the label "
            f"file, {gt.category_ids[row]} in the ground truth)"))
    return rows, "annotation id"


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes, len(a) x len(b)."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def _pair_by_box(path: str, labels: CocoBoxes, gt: CocoBoxes) -> np.ndarray:
    """For each ground-truth row the label row on the same image, of the same category, whose box overlaps it most
    (one to one, greedily by IoU, at least MATCH_BOX_IOU)."""
    rows = np.full(len(gt), -1, dtype=np.int64)
    label_rows_of = labels.boxes_by_image
    for image_id, gt_rows in gt.boxes_by_image.items():
        candidates = label_rows_of.get(image_id)
        if candidates is None:
            continue
        ious = _box_iou(gt.boxes_xyxy[gt_rows], labels.boxes_xyxy[candidates])
        ious[gt.category_ids[gt_rows][:, None] != labels.category_ids[candidates][None, :]] = 0.0
        used_gt, used_label = np.zeros(len(gt_rows), bool), np.zeros(len(candidates), bool)
        for flat in np.argsort(-ious, axis=None, kind="stable").tolist():
            i, j = divmod(flat, len(candidates))
            if ious[i, j] < MATCH_BOX_IOU:
                break
            if not (used_gt[i] or used_label[j]):
                used_gt[i] = used_label[j] = True
                rows[gt_rows[i]] = candidates[j]
    unpaired = np.flatnonzero(rows < 0)
    if unpaired.size:
        row = int(unpaired[0])
        raise _mismatch(path, gt, (
            f"{unpaired.size} of the {len(gt)} ground-truth boxes have no annotation in the label file, neither by "
            f"annotation id nor by image id + box (box IoU >= {MATCH_BOX_IOU}, same category_id); first: "
            f"annotation {gt.ann_ids[row]} in image {gt.image_ids[row]}, bbox {gt.bbox_xywh[row].tolist()}"))
    return rows


def _score(value: Any) -> float:
    """The annotation's own score when it has a usable one (mask AP ranks by it), else 1.0."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    return float(value) if is_number and math.isfinite(value) else 1.0


def _box_labels(labels: CocoBoxes, gt: CocoBoxes, rows: np.ndarray) -> list[BoxLabel]:
    result = []
    empty: dict[tuple[int, int], Any] = {}
    for gt_row, row in enumerate(rows.tolist()):
        image = gt.images[int(gt.image_ids[gt_row])]
        hw = (image.height, image.width)
        ann = labels.annotations[row]
        if labels.has_segmentation[row]:
            rle = segmentation_to_rle(ann["segmentation"], hw)
        else:  # a box the tool gave no mask: an empty mask, scored as such
            if hw not in empty:
                empty[hw] = encode_masks(np.zeros(hw, dtype=np.uint8))[0]
            rle = empty[hw]
        result.append(BoxLabel(ann_id=int(gt.ann_ids[gt_row]), image_id=image.id,
                               category_id=int(gt.category_ids[gt_row]), segmentation=rle,
                               area=int(rle_area(rle)), score=_score(ann.get("score"))))
    return result
