"""`mal inference` and `mal evaluate` outputs: a COCO file with a mask on every box, and metrics that are right."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from mal.data.coco import load_coco
from mal.engine.evaluate import score_labels
from mal.engine.labeling import BoxLabel, ground_truth
from mal.masks import box_fill_rle, decode_rle
from mal.metrics import instance_ious
from support.engine import run_mal, status_events

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def decorated_input(synthetic, tmp_path_factory) -> Path:
    """The synthetic file with extra keys users keep in their files, and without the GT masks."""
    data = json.loads((synthetic / "annotations.json").read_text())
    data["info"] = {"description": "kept", "version": "7"}
    for ann in data["annotations"]:
        ann["attributes"] = {"occluded": ann["id"] % 2 == 0}
        ann.pop("segmentation")
        ann["area"] = -1.0
    path = tmp_path_factory.mktemp("input") / "boxes only.json"
    path.write_text(json.dumps(data))
    return path


def test_inference_round_trip(trained, tiny_spec, synthetic, decorated_input, tmp_path):
    out = tmp_path / "labels.coco"  # written exactly where asked, even without a .json suffix
    result = run_mal("inference", "-e", str(tiny_spec), f"results_dir={trained}",
                     f"inference.ann_path={decorated_input}", f"inference.img_dir={synthetic / 'images'}",
                     f"inference.label_dump_path={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    source = json.loads(decorated_input.read_text())
    labels = json.loads(out.read_text())
    assert labels["info"] == source["info"] and labels["categories"] == source["categories"]
    assert [a["id"] for a in labels["annotations"]] == [a["id"] for a in source["annotations"]]

    coco = COCO()
    coco.dataset = labels
    coco.createIndex()
    images = {image["id"]: image for image in labels["images"]}
    for before, after in zip(source["annotations"], labels["annotations"]):
        assert after["bbox"] == before["bbox"] and after["attributes"] == before["attributes"]
        image = images[after["image_id"]]
        mask = coco.annToMask(after)
        assert mask.shape == (image["height"], image["width"])
        assert after["area"] == int(mask.sum())  # the mask's area, not the box's
        assert 0.0 <= after["score"] <= 1.0
        assert 0.0 <= after["quality"] <= 1.0  # the estimated IoU, on every annotation (mal.quality_estimate)
        x, y, w, h = after["bbox"]
        outside = mask.copy()
        outside[int(np.floor(y)) : int(np.ceil(y + h)), int(np.floor(x)) : int(np.ceil(x + w))] = 0
        assert outside.sum() == 0  # masks lie inside their boxes
    assert sum(a["area"] > 0 for a in labels["annotations"]) >= 0.9 * len(labels["annotations"])
    assert status_events(trained, "inference")[-1]["kpi"]["boxes"] == len(labels["annotations"])
    assert not list(tmp_path.glob(".*.tmp"))


def test_inference_gallery(trained, tiny_spec, tmp_path):
    result = run_mal("inference", "-e", str(tiny_spec), f"results_dir={trained}", "inference.gallery=true",
                     "inference.load_mask=true", f"inference.label_dump_path={tmp_path / 'labels.json'}")
    assert result.returncode == 0, result.stderr[-3000:]
    # Under results_dir with the action's other outputs, wherever label_dump_path puts the labels.
    gallery = trained / "inference" / "gallery"
    assert not (tmp_path / "gallery").exists() and str(gallery / "index.html") in result.stdout
    page = (gallery / "index.html").read_text()
    assert page.count("IoU") > 0 and (gallery / "thumbs").is_dir()


def test_scores_of_perfect_and_box_filled_masks(synthetic):
    coco = load_coco(synthetic / "annotations.json", synthetic / "images", load_mask=True)
    ann_ids = coco.ann_ids.tolist()
    gt_rles, _ = ground_truth(coco, ann_ids)

    def labels_from(rles):
        return [BoxLabel(ann_id=int(a), image_id=int(coco.image_ids[i]), category_id=int(coco.category_ids[i]),
                         segmentation=r, area=0, score=1.0) for i, (a, r) in enumerate(zip(ann_ids, rles))]

    perfect = score_labels(coco, labels_from(gt_rles))
    assert perfect["mIoU"] == pytest.approx(1.0) and perfect["AP"] == pytest.approx(1.0)

    box_rles = [box_fill_rle(coco.boxes_xyxy[i : i + 1], (coco.images[int(coco.image_ids[i])].height,
                                                           coco.images[int(coco.image_ids[i])].width))[0]
                for i in range(len(coco))]
    boxed = score_labels(coco, labels_from(box_rles))
    # An independent computation: numpy IoU of decoded masks, averaged per class, then over classes.
    ious = []
    for box, gt in zip(box_rles, gt_rles):
        a, b = decode_rle(box).astype(bool), decode_rle(gt).astype(bool)
        ious.append((a & b).sum() / (a | b).sum())
    ious = np.asarray(ious)
    per_class = [ious[coco.category_ids == c].mean() for c in np.unique(coco.category_ids)]
    assert boxed["mIoU"] == pytest.approx(float(np.mean(per_class)), abs=1e-9)
    assert boxed["box_fill_mIoU"] == pytest.approx(boxed["mIoU"], abs=1e-9)
    assert boxed["AP"] < 0.9
    assert instance_ious(box_rles, gt_rles).mean() == pytest.approx(ious.mean())


def test_evaluate_without_ground_truth_is_a_user_error(trained, tiny_spec, decorated_input, synthetic):
    result = run_mal("evaluate", "-e", str(tiny_spec), f"results_dir={trained}",
                     f"dataset.val_ann_path={decorated_input}", f"dataset.val_img_dir={synthetic / 'images'}")
    assert result.returncode == 2
    assert "no ground-truth mask" in result.stderr.strip().splitlines()[-1]


def test_inference_without_checkpoint_is_a_user_error(tiny_spec, tmp_path):
    result = run_mal("inference", "-e", str(tiny_spec), f"results_dir={tmp_path}")
    assert result.returncode == 2
    assert "no checkpoint found" in result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("refine_iter", [0, 10])
def test_onnxruntime_backend_labels_like_pytorch(trained, tiny_spec, tmp_path, refine_iter):
    onnx_file = tmp_path / "model.onnx"
    result = run_mal("export", "-e", str(tiny_spec), f"results_dir={trained}", f"export.onnx_file={onnx_file}")
    assert result.returncode == 0, result.stderr[-3000:]
    outputs = {}
    for backend in ("torch", "onnxruntime"):
        out = tmp_path / f"{backend}.json"
        result = run_mal("inference", "-e", str(tiny_spec), f"results_dir={trained}",
                         f"inference.backend={backend}", f"export.onnx_file={onnx_file}",
                         f"inference.label_dump_path={out}", f"inference.crf_refine_iter={refine_iter}")
        assert result.returncode == 0, result.stderr[-3000:]
        outputs[backend] = json.loads(out.read_text())["annotations"]
    torch_rles = [a["segmentation"] for a in outputs["torch"]]
    onnx_rles = [a["segmentation"] for a in outputs["onnxruntime"]]
    agreement = instance_ious(onnx_rles, torch_rles)
    assert agreement.min() > 0.97, agreement.min()


def test_test_time_crf_refinement_changes_the_masks_and_the_scores(trained, tiny_spec, synthetic, tmp_path):
    """`crf_refine_iter` reaches evaluate (its mIoU moves) and inference (masks differ, still inside the boxes)."""
    scores, labels = {}, {}
    for refine_iter in (0, 10):
        result = run_mal("evaluate", "-e", str(tiny_spec), f"results_dir={trained}",
                         f"dataset.val_ann_path={synthetic / 'annotations.json'}",
                         f"dataset.val_img_dir={synthetic / 'images'}", f"evaluate.crf_refine_iter={refine_iter}")
        assert result.returncode == 0, result.stderr[-3000:]
        scores[refine_iter] = status_events(trained, "evaluate")[-1]["kpi"]["mIoU"]
        out = tmp_path / f"labels_{refine_iter}.json"
        result = run_mal("inference", "-e", str(tiny_spec), f"results_dir={trained}",
                         f"inference.label_dump_path={out}", f"inference.crf_refine_iter={refine_iter}")
        assert result.returncode == 0, result.stderr[-3000:]
        labels[refine_iter] = json.loads(out.read_text())["annotations"]
    assert scores[0] != scores[10]
    plain = [a["segmentation"] for a in labels[0]]
    refined = [a["segmentation"] for a in labels[10]]
    assert instance_ious(plain, refined).mean() < 0.999
    for ann, mask in zip(labels[10], refined):
        x, y, w, h = ann["bbox"]
        box = decode_rle(box_fill_rle([[x, y, x + w, y + h]], tuple(mask["size"]))[0]).astype(bool)
        assert not (decode_rle(mask).astype(bool) & ~box).any(), ann["id"]


def test_even_refinement_window_is_a_spec_error(tiny_spec):
    result = run_mal("inference", "-e", str(tiny_spec), "inference.crf_refine_kernel_size=4")
    assert result.returncode == 2
    assert "inference.crf_refine_kernel_size" in result.stderr and "odd" in result.stderr


def test_gallery_command_on_a_label_file(trained, tiny_spec, synthetic, tmp_path):
    labels = tmp_path / "labels.json"
    assert run_mal("inference", "-e", str(tiny_spec), f"results_dir={trained}",
                   f"inference.label_dump_path={labels}").returncode == 0
    result = run_mal("gallery", str(labels), str(synthetic / "images"), "--gt", str(synthetic / "annotations.json"))
    assert result.returncode == 0, result.stderr[-2000:]
    page = tmp_path / "gallery" / "index.html"
    assert result.stdout.strip().splitlines()[-1] == str(page)
    assert "IoU" in page.read_text()
