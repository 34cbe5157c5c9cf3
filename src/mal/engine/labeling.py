"""Masks for boxes: run the network on batches of crops and paste the results back into their images.

Validation, `mal evaluate` and `mal inference` all label through `label_batch`, so they agree by construction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from mal.data.coco_boxes import CocoBoxes
from mal.masks import RLE, paste_masks, rle_area, segmentation_to_rle, thresholds_for
from mal.model.refine import CrfRefiner
from mal.quality_estimate import batch_box_overlap, instance_features, quality_from_features

MaskPredictor = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class BoxLabel:
    """The mask predicted for one input box."""

    ann_id: int
    image_id: int
    category_id: int
    segmentation: RLE
    area: int
    score: float
    quality: float | None = None
    """Estimated IoU with the true mask in [0, 1] (mal.quality_estimate); None for masks `mal` did not make (a
    label file of another tool)."""
    quality_cues: np.ndarray | None = field(default=None, repr=False, compare=False)
    """The cues `quality` was computed from (mal.quality_estimate.FEATURES, in order); kept in memory only, for
    refitting the estimate (benchmarks/quality_estimate_fit.py), never written to a label file."""

    def record(self) -> dict[str, Any]:
        """The fields a file keeps (a labeling shard): everything but the in-memory cues."""
        return {item.name: getattr(self, item.name) for item in fields(self) if item.name != "quality_cues"}


def label_batch(predict: MaskPredictor, batch: dict[str, torch.Tensor], mask_thres: Sequence[float],
                device: torch.device | str = "cpu", refine: CrfRefiner | None = None) -> list[BoxLabel]:
    """Predict (and optionally CRF-refine) and paste the masks of one label-loader batch (boxes of one or more
    images)."""
    boxes = batch["box"].numpy().astype(np.float64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    thresholds = thresholds_for(areas, list(mask_thres) if len(mask_thres) > 1 else mask_thres[0])
    image_ids = batch["image_id"].numpy()
    # The label loader gives each box's overlap with every box of its image; a batch built otherwise has only its own.
    overlap = batch.get("box_overlap")
    overlap = batch_box_overlap(boxes, image_ids) if overlap is None else overlap.cpu().numpy()
    with torch.inference_mode():
        crops = batch["image"].to(device, non_blocking=True)
        box_masks = batch["box_mask"].to(device, non_blocking=True)
        probs = torch.sigmoid(predict(crops).float())
        if refine is not None:
            probs = refine(probs, crops, box_masks)
        probs = probs.squeeze(1)
        cues = instance_features(crops, box_masks, probs, batch["crop_box"], batch["box"], thresholds, overlap)
        cues = cues.cpu().numpy().astype(np.float64)
        quality = quality_from_features(cues)
        probs = probs.cpu()
    labels: list[BoxLabel | None] = [None] * len(image_ids)
    for image_id in np.unique(image_ids):
        rows = np.flatnonzero(image_ids == image_id)
        height, width = (int(v) for v in batch["image_size"][rows[0]].tolist())
        pasted = paste_masks(probs[rows], batch["box_mask"][rows].squeeze(1), batch["crop_box"][rows],
                             (height, width), thresholds[rows], boxes=batch["box"][rows])
        for row, result in zip(rows.tolist(), pasted):
            labels[row] = BoxLabel(
                ann_id=int(batch["ann_id"][row]), image_id=int(image_id),
                category_id=int(batch["category_id"][row]), segmentation=result["segmentation"],
                area=int(result["area"]), score=float(result["score"]), quality=float(quality[row]),
                quality_cues=cues[row],
            )
    return [label for label in labels if label is not None]


def ground_truth(coco: CocoBoxes, ann_ids: Sequence[int]) -> tuple[list[RLE], np.ndarray]:
    """Ground-truth RLEs and mask areas of the given annotations."""
    rles = []
    for ann_id in ann_ids:
        row = coco.row_of_ann[int(ann_id)]
        image = coco.images[int(coco.image_ids[row])]
        rles.append(segmentation_to_rle(coco.annotations[row]["segmentation"], (image.height, image.width)))
    areas = np.asarray(rle_area(rles), dtype=np.float64).reshape(-1) if rles else np.zeros(0)
    return rles, areas


def labels_to_annotations(labels: Iterable[BoxLabel]) -> dict[int, dict[str, Any]]:
    return {label.ann_id: {"segmentation": label.segmentation, "area": label.area, "score": label.score}
            for label in labels}
