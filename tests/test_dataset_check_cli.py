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
