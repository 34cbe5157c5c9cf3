"""The synthetic dataset: deterministic, valid, masks consistent with boxes, shapes far from their boxes."""

from __future__ import annotations

import hashlib
import json

import numpy as np
from pycocotools import mask as mask_utils

from mal.data.coco import check_coco
from mal.data.synthetic import make_synthetic_coco


def digest(folder) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_files_other_seed_other_files(tmp_path):
    make_synthetic_coco(tmp_path / "a", num_images=3, seed=4)
    make_synthetic_coco(tmp_path / "b", num_images=3, seed=4)
    make_synthetic_coco(tmp_path / "c", num_images=3, seed=5)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_dataset_is_valid_and_masks_match_boxes(tmp_path):
    ann_path = make_synthetic_coco(tmp_path, num_images=6, image_size=(120, 150), num_categories=4, seed=1)
    coco, report = check_coco(ann_path, tmp_path / "images", load_mask=True)
    assert report.ok and not report.problems, report.render()
    raw = json.loads(ann_path.read_text())
    assert [c["id"] for c in raw["categories"]] == [1, 2, 3, 4]
    assert all(image["width"] == 150 and image["height"] == 120 for image in raw["images"])
    counts = np.bincount(coco.image_ids)[1:]
    assert counts.min() >= 1 and counts.max() <= 5
    fills = []
    for image_id, rows in coco.boxes_by_image.items():
        masks = coco.gt_masks(coco.ann_ids[rows])
        assert masks.sum(axis=0).max() == 1  # objects never overlap
        for row, mask in zip(rows, masks):
            annotation = raw["annotations"][row]
            rle = mask_utils.encode(np.asfortranarray(mask))
            assert mask_utils.toBbox(rle).tolist() == annotation["bbox"]
            assert annotation["area"] == mask.sum()
            fills.append(mask.sum() / coco.box_areas[row])
        assert image_id in coco.images
    assert 0.55 < np.mean(fills) < 0.8  # filling the box is clearly not the answer
    assert min(fills) < 0.6


def test_objects_are_large_and_contrasting(tmp_path):
    ann_path = make_synthetic_coco(tmp_path, num_images=4, seed=2)
    coco, _ = check_coco(ann_path, tmp_path / "images", load_mask=True)
    assert np.median(coco.box_areas) > 2048  # most boxes pass the default min_obj_size at 160 px
    from PIL import Image

    for image_id, rows in coco.boxes_by_image.items():
        pixels = np.asarray(Image.open(coco.images[image_id].path), dtype=np.float32).max(axis=2)
        objects = coco.gt_masks(coco.ann_ids[rows]).any(axis=0)
        assert pixels[objects].mean() - pixels[~objects].mean() > 60
