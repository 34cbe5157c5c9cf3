"""Counts on the shared development datasets (skipped where they are absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mal.data.coco import check_coco
from support.datasets import SHARED_DATA


def dataset(name: str) -> tuple[Path, Path]:
    root = SHARED_DATA / name
    if not (root / "annotations.json").is_file():
        pytest.skip(f"{root} is absent: the shared development data is not on this machine")
    return root / "annotations.json", root / "images"


def test_coco128_dev_counts():
    coco, report = check_coco(*dataset("coco128_dev"), load_mask=True, min_obj_size=2048)
    assert report.ok, report.summary()
    assert report.counts["images"] == 64 and report.counts["boxes"] == 423 and report.counts["classes"] == 80
    assert len(set(coco.category_ids.tolist())) <= 80 and max(coco.categories) == 90  # COCO's sparse ids
    assert report.counts["small"] + report.counts["medium"] + report.counts["large"] == 423
    assert report.counts["trainable"] == int((coco.box_areas > 2048).sum())
    row = int(coco.boxes_by_image[9][0])
    mask = coco.gt_mask(int(coco.ann_ids[row]))
    assert mask.shape == (480, 640) and mask.sum() > 0


def test_dsb2018_dev_counts():
    coco, report = check_coco(*dataset("dsb2018_dev"), load_mask=True)
    assert report.ok, report.summary()
    assert report.counts["images"] == 498 and report.counts["boxes"] == 21_405 and report.counts["classes"] == 1
    assert report.counts["small"] > report.counts["medium"] > report.counts["large"]
    assert coco.has_masks
