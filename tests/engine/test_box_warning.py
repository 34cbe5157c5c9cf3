"""Issue 20: masks that are only their boxes never pass silently (train, evaluate, inference), evaluate shows the
box-fill baseline, and `evaluate.label_file` scores a label file from any tool without a model."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from mal.box_likeness import WARN_SHARE
from mal.data.coco import load_coco
from mal.masks import box_fill_rle, encode_masks
from support.engine import run_mal, status_events
from support.specs import write_tiny_spec

pytestmark = pytest.mark.slow


def _box_warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "warning:" in line and "filled box" in line]


def test_one_tao_default_epoch_warns_in_train_inference_and_evaluate(synthetic: Path, tmp_path: Path):
    """TAO's defaults for one epoch (lr 1e-6, mask_thres 0.1, ...) return the filled box as every mask. Only the
    crop (32 px), the epoch count and the backbone differ from the spec defaults: vit-tiny/16 instead of ViT-Base
    keeps each checkpoint at megabytes instead of 1.4 GB; the boxes come from the learning rate, not the arch."""
    spec = tmp_path / "tao.yaml"
    spec.write_text(yaml.safe_dump({
        "dataset": {"train_ann_path": str(synthetic / "annotations.json"), "train_img_dir": str(synthetic / "images"),
                    "crop_size": 32},
        "model": {"arch": "vit-tiny/16"},
        "train": {"num_epochs": 1},
    }))
    results = tmp_path / "results"
    trained = run_mal("train", "-e", str(spec), f"results_dir={results}")
    assert trained.returncode == 0, trained.stderr[-3000:]
    warnings = _box_warnings(trained.stderr)
    assert len(warnings) == 1 and warnings[0].startswith("mal train: warning:"), trained.stderr[-3000:]
    final = status_events(results)[-1]
    assert final["status"] == "SUCCESS" and final["kpi"]["val/box_like_share"] > WARN_SHARE, final

    labeled = run_mal("inference", "-e", str(spec), f"results_dir={results}")
    assert labeled.returncode == 0, labeled.stderr[-3000:]
    warnings = _box_warnings(labeled.stderr)
    assert len(warnings) == 1 and warnings[0].startswith("mal inference: warning:"), labeled.stderr[-3000:]
    assert status_events(results, "inference")[-1]["kpi"]["box_like_share"] > WARN_SHARE

    scored = run_mal("evaluate", "-e", str(spec), f"results_dir={results}")
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert len(_box_warnings(scored.stderr)) == 1
    metrics = json.loads((results / "evaluate" / "metrics.json").read_text())
    assert metrics["box_like_share"] > WARN_SHARE
    assert status_events(results, "evaluate")[-1]["kpi"]["box_like_share"] == metrics["box_like_share"]
    line = next(line for line in scored.stdout.splitlines() if "box-fill baseline" in line)
    assert f"mask mIoU {metrics['mIoU']:.4f} vs box-fill baseline {metrics['box_fill_mIoU']:.4f}" in line
    assert f"({metrics['mIoU'] - metrics['box_fill_mIoU']:+.4f}" in line


@pytest.fixture(scope="module")
def label_spec(synthetic: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spec whose ground truth (the training file, with masks) is scored; its results_dirs hold no checkpoint."""
    path = tmp_path_factory.mktemp("label_spec") / "spec.yaml"
    return write_tiny_spec(path, synthetic / "annotations.json", synthetic / "images")


def _label_file(synthetic: Path, tmp_path: Path, masks: Callable[[np.ndarray, int, int], Any] | None,
                renumber: bool = False) -> Path:
    """The ground-truth file with each mask replaced by masks(box_xyxy, height, width) (kept when None)."""
    content = json.loads((synthetic / "annotations.json").read_text())
    coco = load_coco(synthetic / "annotations.json", synthetic / "images")
    images = {image["id"]: image for image in content["images"]}
    for ann in content["annotations"]:
        image = images[ann["image_id"]]
        if masks is not None:
            ann["segmentation"] = masks(coco.boxes_xyxy[coco.row_of_ann[ann["id"]]], image["height"], image["width"])
        if renumber:  # another tool's ids: paired by image id + box
            ann["id"] += 10_000
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(content))
    return path


def _filled_box(box: np.ndarray, height: int, width: int) -> dict:
    return box_fill_rle(box[None], (height, width))[0]


def _disc(box: np.ndarray, height: int, width: int) -> dict:
    """The disc inscribed in the box, as an RLE: round masks, far from their boxes."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    radius = min(box[2] - box[0], box[3] - box[1]) / 2
    disc = (xs - (box[0] + box[2]) / 2) ** 2 + (ys - (box[1] + box[3]) / 2) ** 2 <= radius**2
    return encode_masks(disc.astype(np.uint8))[0]


def _evaluate(spec: Path, results: Path, labels: Path) -> tuple[Any, dict[str, Any]]:
    result = run_mal("evaluate", "-e", str(spec), f"results_dir={results}", f"evaluate.label_file={labels}")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, json.loads((results / "evaluate" / "metrics.json").read_text())


def test_label_file_of_the_ground_truth_scores_one_without_a_model(label_spec, synthetic, tmp_path):
    labels = _label_file(synthetic, tmp_path, masks=None)
    result, metrics = _evaluate(label_spec, tmp_path / "results", labels)
    assert metrics["mIoU"] == pytest.approx(1.0) and metrics["AP"] == pytest.approx(1.0)
    assert metrics["label_file"] == str(labels) and "checkpoint" not in metrics
    assert metrics["box_like_share"] < WARN_SHARE and not _box_warnings(result.stderr)
    assert "box-fill baseline" in result.stdout
    assert not (tmp_path / "results" / "train").exists()  # no model was looked for


def test_label_file_of_filled_boxes_scores_the_baseline_and_warns(label_spec, synthetic, tmp_path):
    labels = _label_file(synthetic, tmp_path, masks=_filled_box, renumber=True)
    result, metrics = _evaluate(label_spec, tmp_path / "results", labels)
    assert metrics["mIoU"] == pytest.approx(metrics["box_fill_mIoU"], abs=1e-12)
    assert metrics["box_like_share"] == 1.0
    warnings = _box_warnings(result.stderr)
    assert len(warnings) == 1 and warnings[0].startswith("mal evaluate: warning:")
    assert "(+0.0000" in next(line for line in result.stdout.splitlines() if "box-fill baseline" in line)
    assert status_events(tmp_path / "results", "evaluate")[-1]["kpi"]["box_like_share"] == 1.0


def test_round_masks_are_not_boxes_and_give_no_warning(label_spec, synthetic, tmp_path):
    labels = _label_file(synthetic, tmp_path, masks=_disc)
    result, metrics = _evaluate(label_spec, tmp_path / "results", labels)
    assert metrics["box_like_share"] == 0.0
    assert not _box_warnings(result.stderr), result.stderr


def test_a_label_file_of_other_images_is_refused_and_nothing_is_written(label_spec, synthetic, tmp_path):
    content = json.loads((synthetic / "annotations.json").read_text())
    dropped = content["images"].pop(0)
    content["annotations"] = [ann for ann in content["annotations"] if ann["image_id"] != dropped["id"]]
    labels = tmp_path / "other.json"
    labels.write_text(json.dumps(content))
    results = tmp_path / "results"
    result = run_mal("evaluate", "-e", str(label_spec), f"results_dir={results}", f"evaluate.label_file={labels}")
    assert result.returncode == 2, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert str(labels) in last and "does not match the ground truth" in last and dropped["file_name"] in last
    assert not (results / "evaluate" / "metrics.json").exists()
    assert not (results / "evaluate" / "status.json").exists()
