"""Set up labeling for evaluate and inference: checkpoint -> network, COCO file -> loader, loop with progress."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mal.data.coco_boxes import CocoBoxes
from mal.data.datasets import build_label_loader
from mal.engine.checkpoint_io import load_trained_model
from mal.engine.common import pick_device, progress
from mal.engine.labeling import BoxLabel, MaskPredictor, label_batch
from mal.engine.module import inference_net, test_time_refiner
from mal.model.refine import CrfRefiner
from mal.spec.schema import ExperimentSpec, TestTimeConfig


@dataclass
class Labeler:
    """A ready network plus the crop settings it was trained with."""

    predict: MaskPredictor
    crop_size: int
    device: torch.device
    checkpoint: Path
    refine: CrfRefiner | None = None


def torch_labeler(checkpoint: Path, options: TestTimeConfig) -> Labeler:
    model, config = load_trained_model(checkpoint)
    device = pick_device()
    net = inference_net(model, options.model_dump()).to(device).eval()
    return Labeler(predict=net, crop_size=int(config["dataset"]["crop_size"]), device=device, checkpoint=checkpoint,
                   refine=test_time_refiner(options.model_dump()))


def label_dataset(labeler: Labeler, coco: CocoBoxes, spec: ExperimentSpec, batch_size: int,
                  description: str) -> list[BoxLabel]:
    """A mask for every box of `coco`, in file order."""
    loader = build_label_loader(coco, labeler.crop_size, batch_size, spec.dataset.num_workers_per_gpu,
                                spec.train.test_margin_rate)
    labels: list[BoxLabel] = []
    batches: Any = progress(loader, total=len(coco), description=description, size=lambda b: len(b["ann_id"]))
    for batch in batches:
        labels.extend(label_batch(labeler.predict, batch, spec.train.mask_thres, labeler.device, labeler.refine))
    order = coco.row_of_ann
    labels.sort(key=lambda label: order[label.ann_id])
    return labels
