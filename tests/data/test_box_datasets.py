"""Training and labeling datasets: one box per training item, images decoded once per batch, seeded order."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import mal.data.datasets as datasets_module
from mal.data.coco import load_coco
from mal.data.crops import crop_and_resize
from mal.data.datasets import (
    ImageGroupedBatchSampler,
    TrainBoxDataset,
    build_label_loader,
    build_train_loader,
)
from mal.errors import DataError


@pytest.fixture(scope="module")
def coco(synthetic_dir):
    return load_coco(synthetic_dir / "annotations.json", synthetic_dir / "images")


@pytest.fixture
def decode_counter(monkeypatch):
    """Counts calls to the real image decoder (it still decodes)."""
    calls: list[str] = []
    real = datasets_module.read_image

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(datasets_module, "read_image", counting)
    return calls


def test_train_batches_have_the_documented_fields(coco, decode_counter):
    loader = build_train_loader(coco, 32, 6, 0, seed=0, min_obj_size=500)
    batch = next(iter(loader))
    size = len(batch["ann_id"])
    assert 1 <= size <= 6
    assert batch["image"].shape == batch["image_aug"].shape == (size, 3, 32, 32)
    assert batch["box_mask"].shape == (size, 1, 32, 32)
    assert batch["crop_box"].shape == batch["box"].shape == (size, 4)
    for key in ("ann_id", "image_id", "category_id"):
        assert batch[key].dtype == torch.int64
    assert batch["image"].dtype == torch.float32 and batch["image"].min() >= 0 and batch["image"].max() <= 1
    assert set(torch.unique(batch["box_mask"]).tolist()) <= {0.0, 1.0}
    rows = [coco.row_of_ann[i] for i in batch["ann_id"].tolist()]
    np.testing.assert_allclose(batch["box"].numpy(), coco.boxes_xyxy[rows], rtol=1e-6)
    ratio = (batch["crop_box"][:, 2:] - batch["crop_box"][:, :2]) / (batch["box"][:, 2:] - batch["box"][:, :2])
    assert ratio.min() >= 1 - 1e-5 and ratio.max() <= 1.6 + 1e-5
    assert len(decode_counter) == len(set(batch["image_id"].tolist()))  # each image decoded once


def test_training_uses_boxes_above_min_obj_size_only(coco):
    threshold = float(np.median(coco.box_areas))
    dataset = TrainBoxDataset(coco, crop_size=16, min_obj_size=threshold, augment=False)
    assert 0 < len(dataset) == int((coco.box_areas > threshold).sum()) < len(coco)
    assert (coco.box_areas[dataset.rows] > threshold).all()
    with pytest.raises(DataError, match="min_obj_size"):
        TrainBoxDataset(coco, crop_size=16, min_obj_size=1e9)


def test_crops_show_the_box_content(coco):
    dataset = TrainBoxDataset(coco, crop_size=16, margin_rate=(0.0, 0.0), min_obj_size=0, augment=False)
    item = dataset[0]
    torch.testing.assert_close(item["crop_box"], item["box"])
    assert item["box_mask"].min() == 1  # no margin: the box fills the crop
    # Synthetic objects are bright and backgrounds dark: a tight crop is mostly bright.
    assert item["image"].max(dim=0).values.mean() > 0.5


def test_sampler_covers_every_box_once_keeping_images_together(coco):
    dataset = TrainBoxDataset(coco, crop_size=16, min_obj_size=0)
    groups = dataset.image_groups()
    sampler = ImageGroupedBatchSampler(groups, batch_size=5, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler)
    flat = [index for batch in batches for index in batch]
    assert sorted(flat) == list(range(len(dataset)))
    assert all(len(batch) == 5 for batch in batches[:-1])
    image_of = coco.image_ids[dataset.rows]
    runs = [image_of[i] for i in flat]
    changes = [a for a, b in itertools.pairwise(runs) if a != b]
    assert len(changes) == len(groups) - 1  # each image's boxes form one contiguous run

    assert [list(b) for b in ImageGroupedBatchSampler(groups, 5, seed=3)] == [list(b) for b in batches]
    sampler.set_epoch(1)
    assert [list(b) for b in sampler] != [list(b) for b in batches]
    assert [b.seed for b in batches] != [b.seed for b in sampler]


def test_boxes_per_epoch_fixes_the_epoch_length_for_any_file(coco):
    groups = TrainBoxDataset(coco, crop_size=16, min_obj_size=0).image_groups()
    total = sum(len(group) for group in groups)
    every = [index for batch in ImageGroupedBatchSampler(groups, 4, seed=2) for index in batch]
    # Fewer than the file holds: the start of the same shuffled order, so a fresh random part each epoch.
    part = ImageGroupedBatchSampler(groups, 4, seed=2, boxes_per_epoch=total - 3)
    assert [index for batch in part for index in batch] == every[: total - 3]
    assert len(part) == len(list(part)) == math.ceil((total - 3) / 4)
    # More: every box in each pass, the passes shuffled differently, cut at the number asked for.
    many = ImageGroupedBatchSampler(groups, 4, seed=2, boxes_per_epoch=2 * total + 5)
    flat = [index for batch in many for index in batch]
    assert len(flat) == 2 * total + 5 and len(many) == len(list(many)) == math.ceil((2 * total + 5) / 4)
    assert flat[:total] == every and sorted(flat[total : 2 * total]) == list(range(total))
    assert flat[total : 2 * total] != every
    many.set_epoch(1)
    assert [index for batch in many for index in batch][:total] != every
    # Sharded, each rank takes its share of the same fixed-length epoch.
    shards = [list(ImageGroupedBatchSampler(groups, 4, seed=2, num_replicas=2, rank=r, boxes_per_epoch=3 * total))
              for r in range(2)]  # fmt: skip
    assert len(shards[0]) == len(shards[1]) == math.ceil(math.ceil(3 * total / 4) / 2)
    with pytest.raises(ValueError, match="boxes_per_epoch"):
        ImageGroupedBatchSampler(groups, 4, boxes_per_epoch=-1)


def test_sampler_shards_for_several_devices(coco):
    groups = TrainBoxDataset(coco, crop_size=16, min_obj_size=0).image_groups()
    shards = [list(ImageGroupedBatchSampler(groups, 4, seed=1, num_replicas=3, rank=r)) for r in range(3)]
    assert len({len(shard) for shard in shards}) == 1
    assert len(shards[0]) == len(ImageGroupedBatchSampler(groups, 4, seed=1, num_replicas=3, rank=0))
    seen = {index for shard in shards for batch in shard for index in batch}
    assert seen == set(range(sum(len(g) for g in groups)))


def test_train_loader_is_deterministic_across_workers(coco):
    def epoch(num_workers: int) -> list[dict[str, torch.Tensor]]:
        return list(build_train_loader(coco, 16, 4, num_workers, seed=5, min_obj_size=0))

    serial, parallel = epoch(0), epoch(2)
    assert len(serial) == len(parallel)
    for one, two in zip(serial, parallel):
        for key in ("image", "image_aug", "box_mask", "crop_box", "ann_id"):
            torch.testing.assert_close(one[key], two[key])


def test_label_loader_covers_every_box_with_the_test_margin(coco, decode_counter):
    loader = build_label_loader(coco, 24, 5, 0)
    batches = list(loader)
    ann_ids = torch.cat([batch["ann_id"] for batch in batches]).tolist()
    assert sorted(ann_ids) == sorted(coco.ann_ids.tolist())
    assert all(len(batch["ann_id"]) <= 5 for batch in batches)
    for batch in batches:
        extent = batch["box"][:, 2:] - batch["box"][:, :2]
        torch.testing.assert_close(batch["crop_box"][:, 2:] - batch["crop_box"][:, :2], 1.3 * extent)
        assert batch["image"].shape[1:] == (3, 24, 24) and batch["box_mask"].shape[1:] == (1, 24, 24)
        heights = [coco.images[i].height for i in batch["image_id"].tolist()]
        assert batch["image_size"][:, 0].tolist() == heights
    per_batch_images = sum(len(set(b["image_id"].tolist())) for b in batches)
    assert len(decode_counter) == per_batch_images


def test_label_loader_splits_crowded_images(coco):
    loader = build_label_loader(coco, 16, 1, 0, image_ids=[int(coco.image_ids[0])])
    sizes = [len(batch["ann_id"]) for batch in loader]
    assert sizes == [1] * len(coco.boxes_by_image[int(coco.image_ids[0])])


def test_a_label_files_own_masks_come_as_targets_cropped_and_flipped_like_the_images(write_coco, synthetic_raw):
    """A second round trains on a first round's labels: each item carries its annotation's mask, cropped with the
    same crop box and flipped with the same flip as the image, unless its quality is below the bar (or, without a
    quality, its score) or it has no segmentation; a mask drawn by a person (neither key) always counts."""
    raw = synthetic_raw
    for index, annotation in enumerate(raw["annotations"]):
        if index % 3 == 0:
            annotation["quality"] = 0.2
        elif index % 3 == 1:
            annotation["score"] = 0.9
    del raw["annotations"][2]["segmentation"]
    ann_path, image_dir = write_coco(raw)
    coco = load_coco(ann_path, image_dir, load_mask=True)
    dataset = TrainBoxDataset(coco, crop_size=32, min_obj_size=0, seed=3, mask_min_confidence=0.5)
    batch = dataset.__getitems__(list(range(len(dataset))))
    assert batch["mask_target"].shape == batch["box_mask"].shape == (len(dataset), 1, 32, 32)
    flipped_some = False
    for i, ann_id in enumerate(batch["ann_id"].tolist()):
        row = coco.row_of_ann[ann_id]
        annotation = coco.annotations[row]
        expected_used = "segmentation" in annotation and annotation.get("quality", 1.0) >= 0.5
        assert bool(batch["mask_target_used"][i]) == expected_used, annotation
        if not expected_used:
            assert batch["mask_target"][i].sum() == 0
            continue
        mask = torch.from_numpy(coco.gt_mask(ann_id)).float()[None]
        expected = crop_and_resize(mask, batch["crop_box"][i : i + 1], 32)[0]
        if batch["flipped"][i]:
            expected, flipped_some = expected.flip(-1), True
        torch.testing.assert_close(batch["mask_target"][i], expected)
        assert (batch["mask_target"][i] > 0.5).sum() > 0
    assert flipped_some  # the flip was exercised
    assert bool(batch["mask_target_used"].any()) and not bool(batch["mask_target_used"].all())
    assert datasets_module.annotation_confidence({"quality": float("nan"), "score": 0.9}) == 0.0  # not trusted
    assert datasets_module.annotation_confidence({"score": "high"}) == 0.0
    plain = TrainBoxDataset(coco, crop_size=32, min_obj_size=0, seed=3).__getitems__([0])
    assert "mask_target" not in plain  # boxes only unless asked
