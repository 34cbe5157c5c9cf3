"""COCO validation: every problem in one pass, with where it is and how to fix it."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from mal.data.check import dataset_check, print_report
from mal.data.coco import check_coco, load_coco
from mal.errors import DataError, UserError


def codes(report) -> set[str]:
    return {problem.code for problem in report.problems}


def test_valid_file_loads_with_counts(synthetic_dir, synthetic_raw):
    coco = load_coco(synthetic_dir / "annotations.json", synthetic_dir / "images")
    assert len(coco) == len(synthetic_raw["annotations"])
    assert set(coco.images) == {image["id"] for image in synthetic_raw["images"]}
    first = synthetic_raw["annotations"][0]
    row = coco.row_of_ann[first["id"]]
    np.testing.assert_allclose(coco.bbox_xywh[row], first["bbox"])
    x, y, w, h = first["bbox"]
    np.testing.assert_allclose(coco.boxes_xyxy[row], [x, y, x + w, y + h])
    assert coco.raw is not None and coco.raw["info"]["seed"] == 7
    grouped = np.concatenate(list(coco.boxes_by_image.values()))
    assert sorted(grouped.tolist()) == list(range(len(coco)))


def test_category_ids_are_taken_from_the_file(write_coco, synthetic_raw):
    mapping = {1: 7, 2: 42, 3: 1000}
    for category in synthetic_raw["categories"]:
        category["id"] = mapping[category["id"]]
    for annotation in synthetic_raw["annotations"]:
        annotation["category_id"] = mapping[annotation["category_id"]]
    coco = load_coco(*write_coco(synthetic_raw))
    assert set(coco.categories) == {7, 42, 1000}
    assert set(coco.category_ids.tolist()) <= {7, 42, 1000}


def test_malformed_json_names_line_and_column(write_coco):
    path, images = write_coco('{"images": [],\n  "annotations": [,]}')
    coco, report = check_coco(path, images)
    assert coco is None
    assert codes(report) == {"malformed_json"}
    assert "line 2, column" in report.errors[0].message


def test_every_problem_is_collected_in_one_pass(write_coco, synthetic_raw):
    raw = synthetic_raw
    images, annotations = raw["images"], raw["annotations"]
    image = images[0]
    w, _h = image["width"], image["height"]
    own = [a for a in annotations if a["image_id"] == image["id"]]
    own[0]["bbox"] = [1, 2, 3]  # wrong length
    own[1]["bbox"] = [10, 10, 0, 5]  # zero width
    extra = dict(own[1], bbox=[10, 10, -4, 5])
    broken = [
        dict(extra, id=90_001),  # negative width
        dict(extra, id=90_002, bbox=[10, 10, float("nan"), 5]),
        dict(extra, id=90_003, bbox=[10, 10, float("inf"), 5]),
        dict(extra, id=90_004, bbox=[w + 5, 10, 10, 10]),  # wholly outside
        dict(extra, id=90_005, bbox=[w - 10, 10, 20, 10]),  # slightly outside: clipped, a warning
        dict(extra, id=90_006, image_id=123_456, bbox=[1, 1, 5, 5]),  # unknown image
        dict(extra, id=90_007, category_id=99, bbox=[1, 1, 5, 5]),  # unknown category
        dict(extra, id=90_008, bbox=["a", 1, 5, 5]),  # not a number
        {"id": 90_009, "image_id": image["id"], "bbox": [1, 1, 5, 5]},  # misses category_id
        dict(extra, id=annotations[-1]["id"], bbox=[1, 1, 5, 5]),  # duplicate annotation id
    ]
    annotations.extend(broken)
    images.append(dict(images[1]))  # duplicate image id
    images.append({"id": 777, "file_name": "nowhere.png", "width": 96, "height": 96})  # missing file
    images.append({"id": 778, "file_name": "garbage.png", "width": 96, "height": 96})  # unreadable
    images.append({"id": 779, "file_name": images[2]["file_name"], "width": 50, "height": 96})  # size mismatch
    images.append({"id": 780, "width": 96, "height": 96})  # misses file_name
    raw["categories"].append(dict(raw["categories"][0]))  # duplicate category id
    path, image_dir = write_coco(raw)
    (image_dir / "garbage.png").write_bytes(b"this is not a png")

    coco, report = check_coco(path, image_dir)

    assert coco is None
    expected = {
        "bad_bbox",
        "bbox_empty",
        "bbox_not_finite",
        "bbox_outside",
        "bbox_clipped",
        "unknown_image",
        "unknown_category",
        "missing_key",
        "duplicate_id",
        "missing_image",
        "unreadable_image",
        "image_size_mismatch",
    }
    assert expected <= codes(report)
    by_ann = {problem.ann_id: problem for problem in report.problems if problem.ann_id is not None}
    assert by_ann[90_001].code == "bbox_empty"
    assert by_ann[90_002].code == by_ann[90_003].code == "bbox_not_finite"
    assert by_ann[90_004].code == "bbox_outside" and by_ann[90_004].severity == "error"
    assert by_ann[90_005].code == "bbox_clipped" and by_ann[90_005].severity == "warning"
    assert by_ann[90_006].code == "unknown_image"
    assert by_ann[90_007].code == "unknown_category"
    assert by_ann[90_008].code == "bad_bbox"
    assert by_ann[own[0]["id"]].code == "bad_bbox" and by_ann[own[0]["id"]].image_id == image["id"]
    duplicated = [p for p in report.problems if p.code == "duplicate_id"]
    assert len(duplicated) == 3  # image, annotation and category
    for problem in report.problems:
        assert problem.fix and problem.file == str(path)
    assert report.counts["clipped"] == 1
    text = report.render()
    assert "bbox_outside" in text and "errors" in text


def test_load_raises_one_sentence_with_the_report(write_coco, synthetic_raw):
    synthetic_raw["annotations"][0]["bbox"] = [0, 0, 0, 0]
    synthetic_raw["annotations"][1]["bbox"] = [0, 0, 0, 0]
    path, images = write_coco(synthetic_raw)
    with pytest.raises(DataError) as caught:
        load_coco(path, images)
    message = str(caught.value)
    assert isinstance(caught.value, UserError)
    assert message.count("\n") == 0 and str(path) in message and "1 more errors" in message
    assert f"annotation {synthetic_raw['annotations'][0]['id']}" in message
    assert len(caught.value.report.errors) == 2


def test_clipped_boxes_load_with_a_warning(write_coco, synthetic_raw):
    image = synthetic_raw["images"][0]
    annotation = next(a for a in synthetic_raw["annotations"] if a["image_id"] == image["id"])
    annotation["bbox"] = [-5.0, 2.0, 20.0, image["height"] + 10.0]
    coco, report = check_coco(*write_coco(synthetic_raw))
    assert coco is not None and report.ok and len(report.warnings) == 1
    row = coco.row_of_ann[annotation["id"]]
    np.testing.assert_allclose(coco.boxes_xyxy[row], [0, 2, 15, image["height"]])
    assert coco.bbox_xywh[row].tolist() == [-5.0, 2.0, 20.0, image["height"] + 10.0]


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda raw: raw.pop("annotations"), "missing_key"),
        (lambda raw: raw.update(images="x"), "wrong_type"),
        (lambda raw: raw.update(images=[], annotations=[]), "empty_dataset"),
        (lambda raw: raw.update(annotations=[]), "empty_dataset"),
    ],
)
def test_structural_problems(write_coco, synthetic_raw, change, code):
    change(synthetic_raw)
    coco, report = check_coco(*write_coco(synthetic_raw))
    assert coco is None and code in codes(report)


def test_missing_annotation_file_and_folder(tmp_path, synthetic_dir):
    _, report = check_coco(tmp_path / "absent.json", synthetic_dir / "images")
    assert codes(report) == {"missing_file"}
    _, report = check_coco(synthetic_dir / "annotations.json", tmp_path / "no_images")
    assert "missing_folder" in codes(report)


def test_size_filter_counts(synthetic_dir):
    coco, report = check_coco(synthetic_dir / "annotations.json", synthetic_dir / "images", min_obj_size=2000)
    areas = coco.box_areas
    assert report.counts["filtered_small"] == int((areas <= 2000).sum()) > 0
    assert report.counts["trainable"] == int((areas > 2000).sum())
    assert report.counts["small"] + report.counts["medium"] + report.counts["large"] == len(coco)
    assert report.counts["small"] == int((areas < 32**2).sum())
    _, capped = check_coco(synthetic_dir / "annotations.json", synthetic_dir / "images", max_obj_size=1500)
    assert capped.counts["filtered_large"] == int((areas > 1500).sum())
    assert math.isclose(coco.size_filter(2000).sum(), report.counts["trainable"])


def test_images_are_not_checked_on_request(write_coco, synthetic_raw):
    synthetic_raw["images"][0]["file_name"] = "gone.png"
    path, images = write_coco(synthetic_raw)
    assert check_coco(path, images, check_images=False)[0] is not None
    assert "missing_image" in codes(check_coco(path, images)[1])


def test_dataset_check_exit_codes(write_coco, synthetic_raw):
    from rich.console import Console

    path, images = write_coco(synthetic_raw)
    console = Console(record=True, width=120)
    assert print_report(dataset_check(path, images, min_obj_size=2048), console) == 0
    assert "boxes used for training" in console.export_text()
    synthetic_raw["annotations"][0]["image_id"] = 31337
    path, images = write_coco(synthetic_raw, "bad.json")
    report = dataset_check(path, images)
    assert not report.ok and print_report(report, Console(record=True)) == 2
    assert json.loads(json.dumps(report.to_dict()))["problems"][0]["code"] == "unknown_image"
