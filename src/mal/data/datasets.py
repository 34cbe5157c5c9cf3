"""Datasets and loaders that turn COCO boxes into batches of crops.

Training: one item is one box. Batches are fetched with `__getitems__` so every distinct image of a batch is
decoded once and all its boxes are cropped with one `roi_align`; the batch sampler keeps the boxes of an image
together. Labeling/evaluation: every box, the fixed test margin, no augmentation, packed into batches of at
most `batch_size` boxes taken image by image.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mal.data.augment import TrainAugment
from mal.data.coco_boxes import CocoBoxes
from mal.data.crops import box_masks, crop_and_resize, expand_boxes
from mal.data.images import read_image
from mal.errors import DataError
from mal.quality_estimate import image_box_overlap


class BatchIndices(list):
    """Dataset indices of one batch, plus the seed that makes its random crops and augmentation repeatable."""

    def __init__(self, indices: Sequence[int], seed: int) -> None:
        super().__init__(indices)
        self.seed = seed


def batch_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(1, dtype=np.uint32)[0])


class LoaderDataError(DataError):
    """A DataError raised while a loader reads a batch, e.g. an image that cannot be decoded.

    In a DataLoader worker process torch catches it and re-raises it in the main process as
    `LoaderDataError("Caught LoaderDataError in DataLoader worker process 0.\nOriginal Traceback ...")`, a
    30-line message. Constructed from that text, it keeps only the original message, so the CLI still prints
    one line.
    """

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:
            prefix = f"{type(self).__module__}.{type(self).__qualname__}: "
            originals = [line[len(prefix) :] for line in message.splitlines() if line.startswith(prefix)]
            if originals:
                message = originals[-1]
        super().__init__(message)


def _crop_rows(coco: CocoBoxes, rows: np.ndarray, crop_boxes: torch.Tensor, crop_size: int) -> torch.Tensor:
    """Crops for annotation `rows`, decoding each distinct image once and cropping its boxes in one call."""
    crops = torch.empty((len(rows), 3, crop_size, crop_size), dtype=torch.float32)
    image_ids = coco.image_ids[rows]
    for image_id in dict.fromkeys(image_ids.tolist()):
        positions = torch.from_numpy(np.flatnonzero(image_ids == image_id))
        try:
            image = read_image(coco.images[image_id].path)
        except DataError as exc:
            raise LoaderDataError(str(exc)) from None
        crops[positions] = crop_and_resize(image, crop_boxes[positions], crop_size)
    return crops


def _box_fields(coco: CocoBoxes, rows: np.ndarray) -> dict[str, torch.Tensor]:
    return {
        "box": torch.from_numpy(coco.boxes_xyxy[rows]).float(),
        "ann_id": torch.from_numpy(coco.ann_ids[rows]),
        "image_id": torch.from_numpy(coco.image_ids[rows]),
        "category_id": torch.from_numpy(coco.category_ids[rows]),
    }


def annotation_confidence(annotation: dict[str, Any]) -> float:
    """How much a label file trusts its own mask: `quality`, else `score`, else 1 (a mask drawn by a person). A key
    that holds no finite number (NaN, text) counts as 0: such a mask is used only when every mask is."""
    for key in ("quality", "score"):
        if key in annotation:
            value = annotation[key]
            ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            return float(value) if ok else 0.0
    return 1.0


def mask_confidences(coco: CocoBoxes) -> np.ndarray:
    """Per annotation row, how much the file trusts its mask (`annotation_confidence`); -inf without a mask."""
    pairs = zip(coco.annotations, coco.has_segmentation, strict=True)
    return np.array([annotation_confidence(annotation) if has_mask else -math.inf for annotation, has_mask in pairs])


def _mask_targets(
    coco: CocoBoxes, rows: np.ndarray, crop_boxes: torch.Tensor, crop_size: int, used: np.ndarray
) -> torch.Tensor:
    """The file's own masks of annotation `rows`, cropped like the images (N x 1 x S x S in [0, 1]), where `used`
    (one flag per row) says the row's mask counts; zeros elsewhere."""
    targets = torch.zeros((len(rows), 1, crop_size, crop_size), dtype=torch.float32)
    image_ids = coco.image_ids[rows]
    for image_id in dict.fromkeys(image_ids[used].tolist()):
        positions = np.flatnonzero((image_ids == image_id) & used)
        decoded = torch.from_numpy(coco.gt_masks(coco.ann_ids[rows[positions]])).float()  # K x H x W
        targets[torch.from_numpy(positions)] = crop_and_resize(
            list(decoded[:, None]), list(crop_boxes[torch.from_numpy(positions)][:, None]), crop_size
        )
    return targets


class TrainBoxDataset(Dataset):
    """One item per training box (area in (min_obj_size, max_obj_size], crowd boxes left out)."""

    def __init__(
        self,
        coco: CocoBoxes,
        *,
        crop_size: int,
        margin_rate: Sequence[float] = (0.0, 1.2),
        min_obj_size: float = 2048.0,
        max_obj_size: float = math.inf,
        seed: int = 0,
        augment: TrainAugment | bool | None = True,
        mask_min_confidence: float | None = None,
    ) -> None:
        self.coco = coco
        # None: boxes only; else items carry the file's own masks as targets (train.loss_mask_weight)
        self.mask_min_confidence = mask_min_confidence
        self.mask_trusted = None if mask_min_confidence is None else mask_confidences(coco) >= mask_min_confidence
        self.crop_size = int(crop_size)
        self.margin_rate = (float(margin_rate[0]), float(margin_rate[1]))
        self.seed = int(seed)
        self.augment = TrainAugment() if augment is True else (augment or None)
        self.rows = np.flatnonzero(coco.size_filter(min_obj_size, max_obj_size) & ~coco.iscrowd)
        if len(self.rows) == 0:
            raise DataError(
                f"{coco.ann_path}: none of its {len(coco)} boxes has an area in ({min_obj_size:g}, "
                f"{max_obj_size:g}] px²; lower dataset.min_obj_size or raise dataset.max_obj_size."
            )

    def __len__(self) -> int:
        return len(self.rows)

    def image_groups(self) -> list[np.ndarray]:
        """Dataset indices grouped by image, images in id order."""
        image_ids = self.coco.image_ids[self.rows]
        order = np.argsort(image_ids, kind="stable")
        _, starts = np.unique(image_ids[order], return_index=True)
        return np.split(order, starts[1:])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: value[0] for key, value in self.__getitems__([index]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        seed = getattr(indices, "seed", None)
        if seed is None:
            seed = batch_seed(self.seed, *indices)
        generator = torch.Generator().manual_seed(seed)
        rows = self.rows[np.asarray(indices, dtype=np.int64)]
        fields = _box_fields(self.coco, rows)
        crop_boxes = expand_boxes(fields["box"], self.margin_rate, generator=generator)
        crops = _crop_rows(self.coco, rows, crop_boxes, self.crop_size)
        masks = box_masks(fields["box"], crop_boxes, self.crop_size)
        extra: dict[str, torch.Tensor] = {}
        if self.mask_trusted is not None:
            used = self.mask_trusted[rows]
            targets = _mask_targets(self.coco, rows, crop_boxes, self.crop_size, used)
            extra["mask_target_used"] = torch.from_numpy(used)
            masks = torch.cat([masks, targets], dim=1)  # one flip for both
        if self.augment is not None:
            views = self.augment(crops, masks, seed)
        else:
            views = {
                "image": crops,
                "image_aug": crops.clone(),
                "box_mask": masks,
                "flipped": torch.zeros(len(rows), dtype=torch.bool),
            }
        if self.mask_trusted is not None:
            views["box_mask"], extra["mask_target"] = views["box_mask"][:, :1], views["box_mask"][:, 1:]
        return {**views, **extra, "crop_box": crop_boxes, **fields}


class ImageGroupedBatchSampler(Sampler[list[int]]):
    """Shuffles images (seeded by seed and epoch) and cuts their boxes, kept together, into batches.

    `boxes_per_epoch` (0: every box once) fixes an epoch's length: a smaller number takes the first boxes of the
    shuffled order, a larger one adds further shuffled passes. An epoch is then the same number of steps for any
    file, and with it the warm-up, the loss ramps and the teacher's averaging.

    With `num_replicas` > 1 each rank takes every num_replicas-th batch; the batch list is padded by cycling so
    all ranks run the same number of steps. Call `set_epoch` (Lightning does) for a new order each epoch.
    """

    def __init__(
        self,
        groups: Sequence[np.ndarray],
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = False,
        num_replicas: int = 1,
        rank: int = 0,
        boxes_per_epoch: int = 0,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if boxes_per_epoch < 0:
            raise ValueError(f"boxes_per_epoch must be >= 0, got {boxes_per_epoch}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.groups = [np.asarray(group, dtype=np.int64) for group in groups]
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.num_replicas = num_replicas
        self.rank = rank
        self.boxes_per_epoch = boxes_per_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _one_pass(self, rng: np.random.Generator) -> np.ndarray:
        order = rng.permutation(len(self.groups)) if self.shuffle else np.arange(len(self.groups))
        parts = [rng.permutation(self.groups[i]) if self.shuffle else self.groups[i] for i in order]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _epoch_order(self) -> np.ndarray:
        """Every box once; with boxes_per_epoch, the first that many of as many fresh passes as it takes."""
        flat = self._one_pass(np.random.default_rng([self.seed, self.epoch]))
        if not self.boxes_per_epoch or len(flat) == 0:
            return flat
        passes = [flat]
        while sum(len(part) for part in passes) < self.boxes_per_epoch:
            passes.append(self._one_pass(np.random.default_rng([self.seed, self.epoch, len(passes)])))
        return np.concatenate(passes)[: self.boxes_per_epoch]

    def _all_batches(self) -> list[np.ndarray]:
        flat = self._epoch_order()
        batches = [flat[start : start + self.batch_size] for start in range(0, len(flat), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        if self.num_replicas > 1 and batches:
            missing = -len(batches) % self.num_replicas
            batches += [batches[i % len(batches)] for i in range(missing)]
        return batches

    def __iter__(self) -> Iterator[BatchIndices]:
        batches = self._all_batches()
        for number in range(self.rank, len(batches), self.num_replicas):
            yield BatchIndices(batches[number].tolist(), batch_seed(self.seed, self.epoch, number))

    def __len__(self) -> int:
        total = sum(len(group) for group in self.groups)
        if self.boxes_per_epoch and total:
            total = self.boxes_per_epoch
        count = total // self.batch_size if self.drop_last else math.ceil(total / self.batch_size)
        return math.ceil(count / self.num_replicas)


class LabelBoxDataset(Dataset):
    """Every box of the file, test margin, no augmentation. One item = one chunk (<= chunk_size boxes) of one image.

    Use `__getitems__` with several chunk indices (what `build_label_loader` does) to get one batch.
    """

    def __init__(
        self,
        coco: CocoBoxes,
        *,
        crop_size: int,
        margin_rate: Sequence[float] = (0.6, 0.6),
        chunk_size: int = 64,
        image_ids: Sequence[int] | None = None,
    ) -> None:
        self.coco = coco
        self.crop_size = int(crop_size)
        self.margin_rate = (float(margin_rate[0]), float(margin_rate[1]))
        by_image = coco.boxes_by_image
        chosen = sorted(by_image) if image_ids is None else [i for i in image_ids if i in by_image]
        self.chunks: list[tuple[int, np.ndarray]] = [
            (image_id, by_image[image_id][start : start + chunk_size])
            for image_id in chosen
            for start in range(0, len(by_image[image_id]), chunk_size)
        ]

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])

    def __getitems__(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        rows = np.concatenate([self.chunks[index][1] for index in indices])
        fields = _box_fields(self.coco, rows)
        # A random test margin (lo < hi) is unusual; seed it by the boxes so labels are reproducible.
        generator = torch.Generator().manual_seed(batch_seed(*self.coco.ann_ids[rows][:16].tolist()))
        crop_boxes = expand_boxes(fields["box"], self.margin_rate, generator=generator)
        sizes = [(self.coco.images[i].height, self.coco.images[i].width) for i in fields["image_id"].tolist()]
        return {
            "image": _crop_rows(self.coco, rows, crop_boxes, self.crop_size),
            "box_mask": box_masks(fields["box"], crop_boxes, self.crop_size),
            "crop_box": crop_boxes,
            "image_size": torch.tensor(sizes, dtype=torch.int64).reshape(-1, 2),
            # Against all of the image's boxes, wherever the batches cut the image: the quality estimate's cue.
            "box_overlap": torch.from_numpy(image_box_overlap(self.coco, rows)).float(),
            **fields,
        }


class PackedBatchSampler(Sampler[list[int]]):
    """Packs consecutive chunks (in order) into batches holding at most `max_boxes` boxes."""

    def __init__(self, chunk_lengths: Sequence[int], max_boxes: int) -> None:
        self.batches: list[list[int]] = []
        current: list[int] = []
        filled = 0
        for index, length in enumerate(chunk_lengths):
            if current and filled + length > max_boxes:
                self.batches.append(current)
                current, filled = [], 0
            current.append(index)
            filled += length
        if current:
            self.batches.append(current)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _as_is(batch: Any) -> Any:
    """The dataset's `__getitems__` already returns a collated batch."""
    return batch


def build_train_loader(
    coco: CocoBoxes,
    crop_size: int,
    batch_size: int,
    num_workers: int,
    seed: int,
    margin_rate: Sequence[float] = (0.0, 1.2),
    min_obj_size: float = 2048.0,
    max_obj_size: float = math.inf,
    *,
    num_replicas: int = 1,
    rank: int = 0,
    augment: bool = True,
    drop_last: bool = False,
    pin_memory: bool = False,
    mask_min_confidence: float | None = None,
    boxes_per_epoch: int = 0,
) -> DataLoader:
    """Shuffled batches of `batch_size` training boxes; deterministic for a seed and epoch. With
    `mask_min_confidence`, batches also carry the file's own masks (`mask_target`, `mask_target_used`). With
    `boxes_per_epoch`, an epoch is that many boxes, whatever the file holds (see ImageGroupedBatchSampler)."""
    dataset = TrainBoxDataset(
        coco,
        crop_size=crop_size,
        margin_rate=margin_rate,
        min_obj_size=min_obj_size,
        max_obj_size=max_obj_size,
        seed=seed,
        augment=augment,
        mask_min_confidence=mask_min_confidence,
    )
    sampler = ImageGroupedBatchSampler(
        dataset.image_groups(),
        batch_size,
        seed=seed,
        drop_last=drop_last,
        num_replicas=num_replicas,
        rank=rank,
        boxes_per_epoch=boxes_per_epoch,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=_as_is,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
    )


def build_label_loader(
    coco: CocoBoxes,
    crop_size: int,
    batch_size: int,
    num_workers: int,
    margin_rate: Sequence[float] = (0.6, 0.6),
    *,
    image_ids: Sequence[int] | None = None,
    pin_memory: bool = False,
) -> DataLoader:
    """Every box in image-id order, in batches of at most `batch_size` boxes (each image decoded once per batch)."""
    dataset = LabelBoxDataset(
        coco, crop_size=crop_size, margin_rate=margin_rate, chunk_size=batch_size, image_ids=image_ids
    )
    sampler = PackedBatchSampler([len(rows) for _, rows in dataset.chunks], batch_size)
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=_as_is, pin_memory=pin_memory)
