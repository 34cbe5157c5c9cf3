"""The data side of training: COCO files from the spec -> training and validation loaders, one shard per process."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
from torch.utils.data import DataLoader

from mal.data.coco import load_coco
from mal.data.coco_boxes import CocoBoxes
from mal.data.datasets import build_label_loader, build_train_loader, mask_confidences
from mal.errors import SpecError
from mal.spec.schema import ExperimentSpec


def require(value: str | None, key: str, action: str) -> str:
    if not value:
        raise SpecError(f"{key} is required for mal {action}; set it in the spec or as {key}=PATH.")
    return value


def load_train_coco(spec: ExperimentSpec) -> CocoBoxes:
    dataset = spec.dataset
    with_masks = spec.train.loss_mask_weight > 0
    coco = load_coco(require(dataset.train_ann_path, "dataset.train_ann_path", "train"),
                     require(dataset.train_img_dir, "dataset.train_img_dir", "train"),
                     load_mask=with_masks, cache_dir=_cache(spec))
    if with_masks and not coco.has_segmentation.any():
        raise SpecError(
            f"train.loss_mask_weight is {spec.train.loss_mask_weight:g} but {coco.ann_path} has no segmentation to "
            "learn from; train on a label file with masks (e.g. one `mal inference` wrote) or set "
            "train.loss_mask_weight=0."
        )
    if with_masks and (best := float(mask_confidences(coco).max())) < (bar := spec.train.loss_mask_min_quality):
        raise SpecError(
            f"train.loss_mask_min_quality is {bar:g} but no mask of {coco.ann_path} reaches it (the highest "
            f"quality is {best:.3g}); lower train.loss_mask_min_quality."
        )
    return coco


def load_val_coco(spec: ExperimentSpec, action: str = "train") -> CocoBoxes:
    """The validation file (default: the training file), with masks when dataset.load_mask is set."""
    dataset = spec.dataset
    ann = dataset.val_ann_path or dataset.train_ann_path
    images = dataset.val_img_dir or dataset.train_img_dir
    return load_coco(require(ann, "dataset.val_ann_path", action), require(images, "dataset.val_img_dir", action),
                     load_mask=dataset.load_mask, cache_dir=_cache(spec))


def _cache(spec: ExperimentSpec) -> Path | None:
    return Path(spec.dataset.cache_dir) if spec.dataset.cache_dir else None


class MALDataModule(L.LightningDataModule):
    """Training boxes (size-filtered, augmented) and, when ground-truth masks exist, validation boxes."""

    def __init__(self, spec: ExperimentSpec, train_coco: CocoBoxes, val_coco: CocoBoxes | None) -> None:
        super().__init__()
        self.spec = spec
        self.train_coco = train_coco
        self.val_coco = val_coco

    def _shard(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        world_size, rank = self._shard()
        spec = self.spec
        return build_train_loader(
            self.train_coco, spec.dataset.crop_size, spec.train.batch_size, spec.dataset.num_workers_per_gpu,
            spec.train.seed, spec.train.margin_rate, spec.dataset.min_obj_size,
            spec.dataset.max_obj_size if spec.dataset.max_obj_size < 1e10 else math.inf,
            num_replicas=world_size, rank=rank,
            mask_min_confidence=spec.train.loss_mask_min_quality if spec.train.loss_mask_weight > 0 else None,
            boxes_per_epoch=spec.train.boxes_per_epoch,
        )

    def val_dataloader(self) -> DataLoader:
        assert self.val_coco is not None
        world_size, rank = self._shard()
        image_ids = sorted(self.val_coco.boxes_by_image)[rank::world_size]
        return build_label_loader(self.val_coco, self.spec.dataset.crop_size, self.spec.evaluate.batch_size,
                                  self.spec.dataset.num_workers_per_gpu, self.spec.train.test_margin_rate,
                                  image_ids=image_ids)
