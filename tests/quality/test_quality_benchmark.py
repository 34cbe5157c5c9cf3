"""benchmarks/quality.py's data split and its shape-prior peer, on the synthetic data the tests share."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import quality_diagnose
import quality_epochs
import quality_thresholds
import torch

import quality
from mal.data.coco import load_coco
from mal.engine.evaluate import score_labels
from mal.engine.labeling import BoxLabel
from mal.masks import decode_rle, encode_masks, segmentation_to_rle
from support.specs import write_tiny_spec


@pytest.fixture
def shapes(synthetic_coco: Callable[..., Path]) -> Path:
    return synthetic_coco(num_images=8, seed=0)


def _image_ids(path: Path) -> list[int]:
    return [image["id"] for image in json.loads(path.read_text())["images"]]


def test_the_two_folds_split_the_images_by_id_and_hide_the_masks(shapes, tmp_path):
    everything = sorted(_image_ids(shapes / "annotations.json"))
    halves = []
    for fold in (1, 2):
        work = tmp_path / f"fold{fold}"
        work.mkdir()
        gt_path, boxes_path, _ = quality.prepare_files(shapes, work, None, fold)
        ids = _image_ids(gt_path)
        assert ids == _image_ids(boxes_path)
        gt, boxes = json.loads(gt_path.read_text()), json.loads(boxes_path.read_text())
        assert {ann["image_id"] for ann in gt["annotations"]} <= set(ids)
        assert all("segmentation" in ann for ann in gt["annotations"])
        assert not any("segmentation" in ann for ann in boxes["annotations"])
        assert len(boxes["annotations"]) == len(gt["annotations"]) > 0
        halves.append(ids)
    assert halves[0] == everything[:4] and halves[1] == everything[4:]


def test_the_ellipse_peer_is_the_inscribed_ellipse(shapes, tmp_path):
    gt_path, _, images = quality.prepare_files(shapes, tmp_path, None)
    gt = load_coco(gt_path, images, load_mask=True)
    labels = quality.ellipse_labels(gt)
    assert len(labels) == len(gt)
    for label in labels[:5]:
        row = int(np.flatnonzero(gt.ann_ids == label.ann_id)[0])
        x0, y0, x1, y1 = gt.boxes_xyxy[row].tolist()
        mask = decode_rle(label.segmentation).astype(bool)
        assert mask.sum() == pytest.approx(np.pi * (x1 - x0) * (y1 - y0) / 4, rel=0.15)
        assert mask[int((y0 + y1) / 2), int((x0 + x1) / 2)]
        assert not mask[int(y0), int(x0)] and not mask[int(y1) - 1, int(x1) - 1]  # the box's corners are out
        ys, xs = np.nonzero(mask)
        assert xs.min() >= int(x0) and xs.max() < x1 and ys.min() >= int(y0) and ys.max() < y1
    scores = score_labels(gt, labels)
    assert 0.0 < scores["mIoU"] < 1.0


def test_the_diagnosis_of_perfect_labels(shapes, tmp_path):
    gt_path, _, images = quality.prepare_files(shapes, tmp_path, None)
    gt = json.loads(gt_path.read_text())
    perfect = [{**ann, "segmentation": segmentation_to_rle(ann["segmentation"], _size(gt, ann))}
               for ann in gt["annotations"]]
    (tmp_path / "labels.json").write_text(json.dumps({**gt, "annotations": perfect}))
    report = quality_diagnose.diagnose(tmp_path, images)
    assert report["masks"] == len(perfect) and report["mean_instance_iou"] == pytest.approx(1.0)
    assert report["median_predicted_fill"] == report["median_true_fill"] < 1.0
    assert report["fill_correlation"] == pytest.approx(1.0)
    assert sum(row["masks"] for row in report["by_true_fill"]) == len(perfect)
    coarse, fine = report["perfect_mask_iou_through_grid"]["24"], report["perfect_mask_iou_through_grid"]["48"]
    assert 0.8 < coarse < fine <= 1.0  # a finer grid loses less of a true mask


def _size(gt: dict, ann: dict) -> tuple[int, int]:
    image = next(image for image in gt["images"] if image["id"] == ann["image_id"])
    return image["height"], image["width"]


def test_a_second_round_trains_on_the_first_rounds_labels_and_scores_its_own(shapes, tmp_path, capsys):
    spec = write_tiny_spec(tmp_path / "spec.yaml", shapes / "annotations.json", shapes / "images",
                           overrides={"train.num_epochs": 1, "dataset.min_obj_size": 0})  # fmt: skip
    work = tmp_path / "work"
    args = [str(shapes), "--spec", str(spec), "--skip-peers", "--no-results", "--work-dir", str(work)]
    assert quality.main([*args, "--second-round", "train.loss_mask_min_quality=0.3"]) == 0
    timings = json.loads(capsys.readouterr().out)["timings"]
    assert {"train_s", "label_s", "train2_s", "label2_s"} <= set(timings)
    first = json.loads((work / "labels_round1.json").read_text())
    assert all("segmentation" in ann and "quality" in ann for ann in first["annotations"])
    command = (work / "train2.log").read_text().splitlines()[0]
    assert f"dataset.train_ann_path={work / 'labels_round1.json'}" in command
    assert "train.loss_mask_weight=1" in command and command.endswith("train.loss_mask_min_quality=0.3")
    assert f"results_dir={work / 'run2'}" in command and f"results_dir={work / 'run'} " not in command
    assert list((work / "run2" / "train").glob("*.pth"))
    second = json.loads((work / "labels.json").read_text())
    assert [a["id"] for a in second["annotations"]] == [a["id"] for a in first["annotations"]]

    # A second-round spec that sets its own weight keeps it (no default of 1 added).
    round2 = write_tiny_spec(tmp_path / "round2.yaml", shapes / "annotations.json", shapes / "images",
                             overrides={"train.num_epochs": 1, "dataset.min_obj_size": 0,
                                        "train.loss_mask_weight": 2.0})  # fmt: skip
    assert quality.main([*args, "--skip-train", "--second-round-spec", str(round2)]) == 0
    command = (work / "train2.log").read_text().splitlines()[0]
    assert f"-e {round2}" in command and "train.loss_mask_weight" not in command


def test_otsu_splits_two_modes_and_short_boxes_keep_the_spec_threshold():
    rng = np.random.default_rng(0)
    values = np.clip(np.concatenate([rng.normal(0.2, 0.03, 500), rng.normal(0.8, 0.03, 300)]), 0, 1)
    threshold = quality_thresholds.otsu_threshold(values)
    assert (values > threshold).sum() == pytest.approx(300, abs=3)  # it splits the two modes
    probs = torch.full((2, 8, 8), 0.9)
    box_masks = torch.zeros(2, 8, 8)
    box_masks[0] = 1.0
    box_masks[1, :2, :2] = 1.0  # 4 pixels: too few to judge
    chosen = quality_thresholds.box_thresholds(probs, box_masks, np.array([0.4, 0.4]), "max_frac", 0.5)
    assert chosen.tolist() == [pytest.approx(0.45), 0.4]


def test_the_fixed_rule_at_the_spec_threshold_reproduces_mal_inference(shapes, tmp_path, capsys):
    spec = write_tiny_spec(tmp_path / "spec.yaml", shapes / "annotations.json", shapes / "images",
                           overrides={"train.num_epochs": 1, "dataset.min_obj_size": 0,
                                      "train.mask_thres": [0.4]})  # fmt: skip
    work = tmp_path / "work"
    assert quality.main([str(shapes), "--spec", str(spec), "--skip-peers", "--no-results", "--work-dir",
                         str(work)]) == 0  # fmt: skip
    capsys.readouterr()
    args = [str(work), str(shapes / "images"), "--spec", str(spec)]
    assert quality_thresholds.main([*args, "--rule", "fixed", "--param", "0.4"]) == 0
    same = json.loads((work / "labels_fixed_0.4.json").read_text())["annotations"]
    shipped = json.loads((work / "labels.json").read_text())["annotations"]
    assert [a["segmentation"] for a in same] == [a["segmentation"] for a in shipped]
    assert quality_thresholds.main([*args, "--rule", "fixed", "--param", "0.95"]) == 0
    strict = json.loads((work / "labels_fixed_0.95.json").read_text())["annotations"]
    assert sum(a["area"] for a in strict) < sum(a["area"] for a in shipped)  # a higher bar keeps less
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["rule"] == "fixed" and 0.0 <= result["mIoU"] <= 1.0
    with pytest.raises(SystemExit):
        quality_thresholds.main([str(tmp_path), str(shapes / "images"), "--rule", "otsu"])


def test_box_only_numbers_of_a_box_fill_and_of_its_left_half(shapes):
    coco = load_coco(shapes / "annotations.json", shapes / "images")
    rows = np.arange(3)
    full, half = [], []
    for row in rows:
        image = coco.images[int(coco.image_ids[row])]
        x0, y0, x1, y1 = (int(np.rint(v)) for v in coco.boxes_xyxy[row])
        mask = np.zeros((image.height, image.width), dtype=np.uint8)
        mask[y0:y1, x0:x1] = 1
        left = mask.copy()
        left[:, x0 + (x1 - x0) // 2 :] = 0
        full.append(mask)
        half.append(left)
    ids = [int(coco.ann_ids[row]) for row in rows]

    def labels(masks: list[np.ndarray]) -> list[BoxLabel]:
        return [BoxLabel(ann_id=ann_id, image_id=int(coco.image_ids[row]), category_id=1,
                         segmentation=encode_masks(mask)[0],
                         area=int(mask.sum()), score=0.8, quality=0.5)
                for ann_id, row, mask in zip(ids, rows, masks)]  # fmt: skip

    whole = quality_epochs.box_only_numbers(coco, labels(full))
    assert whole["fill"] == pytest.approx(1.0, abs=0.08) and whole["tightness"] == pytest.approx(1.0, abs=0.08)
    halves = quality_epochs.box_only_numbers(coco, labels(half))
    assert halves["fill"] == pytest.approx(0.5, abs=0.08) and halves["tightness"] == pytest.approx(0.5, abs=0.08)
    assert halves["score"] == pytest.approx(0.8) and halves["quality"] == pytest.approx(0.5)


def test_every_epoch_is_labeled_and_the_last_one_matches_mal_inference(shapes, tmp_path, capsys):
    spec = write_tiny_spec(tmp_path / "spec.yaml", shapes / "annotations.json", shapes / "images",
                           overrides={"train.num_epochs": 2, "dataset.min_obj_size": 0,
                                      "train.keep_last_checkpoints": 0})  # fmt: skip
    work = tmp_path / "work"
    assert quality.main([str(shapes), "--spec", str(spec), "--skip-peers", "--no-results", "--work-dir",
                         str(work)]) == 0  # fmt: skip
    shipped = quality.ours_metrics(load_coco(work / "gt.json", shapes / "images", load_mask=True),
                                   work / "labels.json")  # fmt: skip
    capsys.readouterr()
    assert quality_epochs.main([str(work), str(shapes / "images"), "--spec", str(spec)]) == 0
    report = json.loads((work / "epochs.json").read_text())
    assert [row["epoch"] for row in report["epochs"]] == [1, 2]
    assert report["epochs"][-1]["mIoU"] == pytest.approx(shipped["mIoU"], abs=1e-6)
    for row in report["epochs"]:
        assert 0.0 <= row["fill"] <= 1.5 and 0.0 <= row["tightness"] <= 1.0
    assert set(report["choices"]) == {*quality_epochs.CRITERIA, "mIoU (needs the true masks)"}
    assert all(choice["epoch"] in (1, 2) for choice in report["choices"].values())
    for stale in sorted((work / "run" / "train").glob("mal_model_epoch_001.pth")):
        stale.unlink()
    with pytest.raises(SystemExit):
        quality_epochs.main([str(work), str(shapes / "images"), "--spec", str(spec)])
