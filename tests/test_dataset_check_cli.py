"""`mal dataset check` through the real CLI, on the shared dev sets and on a broken file."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def check(tmp_path: Path, ann: Path, images: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"dataset:\n  train_ann_path: {ann}\n  train_img_dir: {images}\n")
    return subprocess.run([sys.executable, "-m", "mal", "dataset", "check", "-e", str(spec), *extra],
                          capture_output=True, text=True, timeout=300)


def count(output: str, label: str) -> int:
    match = re.search(rf"│ {re.escape(label)}\s+│\s+([\d,]+) │", output)
    assert match, f"no '{label}' row in:\n{output}"
    return int(match.group(1).replace(",", ""))


@pytest.mark.parametrize(
    ("name", "images", "boxes", "classes"),
    [("coco128_dev", 64, 423, 80), ("dsb2018_dev", 498, 21405, 1)],
)
def test_counts_on_shared_data(tmp_path, name, images, boxes, classes):
    root = SHARED / name
    if not (root / "annotations.json").exists():
        pytest.skip(f"{root} is not available on this machine")
    result = check(tmp_path, root / "annotations.json", root / "images")
    assert result.returncode == 0, result.stderr
    assert count(result.stdout, "images") == images
    assert count(result.stdout, "boxes") == boxes
    assert count(result.stdout, "classes") == classes


def test_broken_file_exits_2_with_every_problem(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    data = {
        "images": [{"id": 1, "file_name": "missing.png", "width": 10, "height": 10}],
        "categories": [{"id": 1, "name": "a"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, -3, 4]},
            {"id": 1, "image_id": 7, "category_id": 9, "bbox": [0, 0, 3, 4]},
        ],
    }
    ann = tmp_path / "bad.json"
    ann.write_text(json.dumps(data))
    result = check(tmp_path, ann, images)
    assert result.returncode == 2
    for kind in ("missing_image", "duplicate_id", "unknown_image", "bbox_empty"):
        assert kind in result.stdout, kind


def _spec_check(tmp_path: Path, spec_text: str) -> subprocess.CompletedProcess[str]:
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    return subprocess.run([sys.executable, "-m", "mal", "dataset", "check", "-e", str(spec)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip


def test_train_val_and_inference_files_are_each_checked_with_their_own_image_folder(tmp_path):
    from mal.data.synthetic import make_synthetic_coco

    train = make_synthetic_coco(tmp_path / "a", num_images=3, seed=1)
    val = make_synthetic_coco(tmp_path / "b", num_images=2, seed=2)
    unlabeled = make_synthetic_coco(tmp_path / "c", num_images=4, seed=3)
    result = _spec_check(tmp_path, f"dataset:\n  train_ann_path: {train}\n  train_img_dir: {train.parent / 'images'}\n"
                                   f"  val_ann_path: {val}\n  val_img_dir: {val.parent / 'images'}\n"
                                   f"inference:\n  ann_path: {unlabeled}\n  img_dir: {unlabeled.parent / 'images'}\n")
    assert result.returncode == 0, result.stderr[-2000:]
    sections = re.findall(r"^== (\w+): (.+)$", result.stdout, flags=re.MULTILINE)
    assert sections == [("train", str(train)), ("val", str(val)), ("inference", str(unlabeled))]
    assert [count(part, "images") for part in result.stdout.split("== ")[1:]] == [3, 2, 4]


def test_a_spec_without_annotations_or_image_folder_exits_2_naming_the_key(tmp_path):
    from mal.data.synthetic import make_synthetic_coco

    nothing = _spec_check(tmp_path, "train:\n  num_epochs: 1\n")
    assert nothing.returncode == 2
    assert nothing.stderr.strip().splitlines()[-1].endswith(
        "mal dataset check needs dataset.train_ann_path (and dataset.train_img_dir) in the spec."
    )
    unlabeled = make_synthetic_coco(tmp_path / "c", num_images=1)
    no_images = _spec_check(tmp_path, f"inference:\n  ann_path: {unlabeled}\n")
    assert no_images.returncode == 2
    assert no_images.stderr.strip().splitlines()[-1].endswith(
        f"the inference annotations {unlabeled} need an image folder; set inference.img_dir."
    )
