"""mal.data: COCO boxes in (validated), image sources, crops, augmentation, datasets and synthetic data.

Names are imported lazily so `mal dataset check` does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainAugment": "augment",
    "dataset_check": "check",
    "print_report": "check",
    "check_coco": "coco",
    "load_coco": "coco",
    "CocoBoxes": "coco_boxes",
    "ImageRecord": "coco_boxes",
    "Problem": "coco_report",
    "ValidationReport": "coco_report",
    "box_masks": "crops",
    "crop_and_resize": "crops",
    "expand_boxes": "crops",
    "ImageGroupedBatchSampler": "datasets",
    "LabelBoxDataset": "datasets",
    "PackedBatchSampler": "datasets",
    "TrainBoxDataset": "datasets",
    "build_label_loader": "datasets",
    "build_train_loader": "datasets",
    "read_image": "images",
    "extract_archive": "archives",
    "resolve_source": "sources",
    "stage_source": "sources",
    "make_synthetic_coco": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mal.data' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mal.data.{module}"), name)


def __dir__() -> list[str]:
    return __all__
