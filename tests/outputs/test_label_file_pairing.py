"""`mal.engine.label_file`: a label file's annotations paired with the ground truth by id, else by image + box,
and every mismatch refused with one DataError naming the file."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mal.data.coco import load_coco
from mal.data.coco_boxes import CocoBoxes
from mal.engine.label_file import read_label_file
from mal.engine.labeling import ground_truth
from mal.errors import DataError
from mal.masks import rle_area


@pytest.fixture(scope="module")
def data(synthetic_coco: Callable[..., Path]) -> Path:
    return synthetic_coco(num_images=6, seed=1)


@pytest.fixture(scope="module")
def gt(data: Path) -> CocoBoxes:
    return load_coco(data / "annotations.json", data / "images", load_mask=True)


@pytest.fixture
def source(data: Path) -> dict[str, Any]:
    return json.loads((data / "annotations.json").read_text())


def _write(tmp_path: Path, content: dict[str, Any], name: str = "labels.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(content))
    return str(path)


def _gt_masks_by_id(gt: CocoBoxes) -> dict[int, dict]:
    rles, _ = ground_truth(gt, gt.ann_ids.tolist())
    return dict(zip(gt.ann_ids.tolist(), rles))


def test_the_ground_truth_itself_pairs_by_annotation_id(gt, source, tmp_path):
    for ann in source["annotations"]:
        ann["score"] = 0.25
    scored = read_label_file(_write(tmp_path, source), gt)
    assert scored.paired_by == "annotation id" and scored.unscored == 0 and scored.without_mask == 0
    assert [label.ann_id for label in scored.labels] == gt.ann_ids.tolist()
    masks = _gt_masks_by_id(gt)
    for label in scored.labels:
        assert label.segmentation == masks[label.ann_id] and label.score == 0.25
        assert label.area == rle_area(label.segmentation)


def test_renumbered_shuffled_rounded_boxes_pair_by_image_and_box(gt, source, tmp_path):
    labels = copy.deepcopy(source)
    originals = {}
    for ann in labels["annotations"]:
        originals[ann["id"] + 1000] = ann["id"]
        ann["id"] += 1000
        ann["bbox"] = [round(value) for value in ann["bbox"]]
    labels["annotations"].reverse()
    # One label more than the ground truth has, far from every box: not scored.
    extra = copy.deepcopy(labels["annotations"][0])
    extra["id"], extra["bbox"] = 99999, [0, 0, 3, 3]
    labels["annotations"].append(extra)
    # A paired annotation without a mask is scored as an empty mask.
    no_mask_id = labels["annotations"][1]["id"]
    del labels["annotations"][1]["segmentation"]

    scored = read_label_file(_write(tmp_path, labels), gt)
    assert scored.paired_by == "image id + box" and scored.unscored == 1 and scored.without_mask == 1
    masks = _gt_masks_by_id(gt)
    for label in scored.labels:
        if label.ann_id == originals[no_mask_id]:
            assert label.area == 0
        else:
            assert label.segmentation == masks[label.ann_id]


def _drop_first_image(content: dict[str, Any]) -> None:
    first = content["images"].pop(0)["id"]
    content["annotations"] = [ann for ann in content["annotations"] if ann["image_id"] != first]


def _resize_image(content: dict[str, Any]) -> None:
    image = content["images"][0]
    image["width"] += 8
    for ann in content["annotations"]:
        if ann["image_id"] == image["id"]:  # its RLEs no longer fit the image: the file's own check would say so
            del ann["segmentation"]


def _rename_image(content: dict[str, Any]) -> None:
    content["images"][0]["file_name"] = "another.png"


def _drop_annotation(content: dict[str, Any]) -> None:
    content["annotations"].pop()


def _change_category(content: dict[str, Any]) -> None:
    ann = content["annotations"][0]
    ann["category_id"] = next(c["id"] for c in content["categories"] if c["id"] != ann["category_id"])


@pytest.mark.parametrize(("change", "fragment"), [
    (_drop_first_image, "ground-truth images with boxes are not in the label file"),
    (_resize_image, "in the label file but"),
    (_rename_image, "another.png in the label file"),
    (_drop_annotation, "ground-truth boxes have no annotation in the label file"),
    (_change_category, "another category_id"),
])
def test_a_label_file_that_does_not_match_is_one_data_error(gt, source, tmp_path, change, fragment):
    change(source)
    path = _write(tmp_path, source)
    with pytest.raises(DataError) as error:
        read_label_file(path, gt)
    message = str(error.value)
    assert message.startswith(f"evaluate.label_file = {path} does not match the ground truth")
    assert fragment in message and "\n" not in message


def test_missing_unreadable_and_maskless_label_files_say_what_to_do(gt, source, tmp_path):
    with pytest.raises(DataError, match="does not exist; give the COCO label file"):
        read_label_file(str(tmp_path / "nowhere.json"), gt)
    broken = tmp_path / "broken.json"
    broken.write_text('{"images": [')
    with pytest.raises(DataError, match=r"^evaluate\.label_file: .*broken\.json.*malformed JSON"):
        read_label_file(str(broken), gt)
    for ann in source["annotations"]:
        del ann["segmentation"]
    with pytest.raises(DataError, match="has no mask"):
        read_label_file(_write(tmp_path, source), gt)
