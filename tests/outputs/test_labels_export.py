"""`mal labels export`: each written set is read back by a real reader (pycocotools for FiftyOne's COCO layout,
Datumaro's CVAT importer, Label Studio's brush decoder) and every mask compared with the label file's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from mal.labels.export import export_labels
from support.labels_export import (
    COCO128,
    assert_same_masks,
    cvat_masks_by_datumaro,
    cvat_masks_by_xml,
    labelstudio_masks,
    make_labels,
    reference_masks,
)
from support.terminal import run_on_terminal


@pytest.fixture(scope="module")
def labelled(synthetic_coco, tmp_path_factory) -> tuple[Path, Path]:
    """(labels.json, images/) of 6 synthetic images: RLE, uncompressed RLE and polygon masks with scores."""
    return make_labels(synthetic_coco(num_images=6, seed=3), tmp_path_factory.mktemp("labelled"))


def by_stem(masks: dict[str, list[np.ndarray]]) -> dict[str, list[np.ndarray]]:
    return {str(Path(name).with_suffix("")): value for name, value in masks.items()}


def test_fiftyone_layout_reads_back_with_pycocotools(labelled, tmp_path):
    labels, images = labelled
    summary = export_labels(labels, "fiftyone", tmp_path / "fo", images_dir=images)
    out = tmp_path / "fo"
    assert sorted(p.name for p in out.iterdir()) == ["data", "labels.json"]
    written_images = [p for p in (out / "data").rglob("*") if not p.is_dir()]
    assert len(written_images) == summary.linked + summary.copied == summary.images == 6
    for image in written_images:
        name = image.relative_to(out / "data")
        assert not image.is_symlink() and image.read_bytes() == (images / name).read_bytes()
    written = COCO(str(out / "labels.json"))
    compared = assert_same_masks(reference_masks(labels), reference_masks(out / "labels.json"))
    assert compared == summary.masks == len(written.anns)
    source = {a["id"]: a for a in json.loads(labels.read_text())["annotations"]}
    for ann in written.anns.values():
        assert (ann["score"], ann["quality"]) == (source[ann["id"]]["score"], source[ann["id"]]["quality"])
        # FiftyOne keeps the mask inside the box, rounded to whole pixels: the written box loses no mask pixel.
        mask = written.annToMask(ann)
        x, y, w, h = ann["bbox"]
        assert all(isinstance(v, int) for v in ann["bbox"])
        assert mask[round(y) : round(y + h), round(x) : round(x + w)].sum() == mask.sum()
        old_x, _, old_w, _ = source[ann["id"]]["bbox"]
        assert x <= round(old_x) and x + w >= min(round(old_x + old_w), written.imgs[ann["image_id"]]["width"])


def test_cvat_xml_reads_back_with_datumaro_mask_for_mask(labelled, tmp_path):
    pytest.importorskip(
        "datumaro",
        reason="Datumaro pins Pillow 12 and OpenCV 4, older than mal's; install it beside them with "
        "`pip install --no-deps datumaro==1.13.12 orjson json-stream json-stream-rs-tokenizer shapely imagesize`",
    )
    labels, images = labelled
    summary = export_labels(labels, "cvat", tmp_path / "cvat", images_dir=images)
    masks, details = cvat_masks_by_datumaro(tmp_path / "cvat")
    assert assert_same_masks(by_stem(reference_masks(labels)), masks) == summary.masks  # lossless: exact
    content = json.loads(labels.read_text())
    names = {c["id"]: c["name"] for c in content["categories"]}
    files = {i["id"]: str(Path(i["file_name"]).with_suffix("")) for i in content["images"]}
    expected = {}
    for ann in content["annotations"]:
        entry = {"label": names[ann["category_id"]], "score": repr(ann["score"]), "quality": repr(ann["quality"])}
        expected.setdefault(files[ann["image_id"]], []).append(entry)
    assert {key: [{k: d[k] for k in ("label", "score", "quality")} for d in value] for key, value in details.items()} \
        == expected


def test_cvat_xml_holds_every_mask_as_cvat_describes_its_run_length_code(labelled, tmp_path):
    labels, _ = labelled
    export_labels(labels, "cvat", tmp_path / "cvat")
    out = tmp_path / "cvat"
    assert sorted(p.name for p in out.iterdir()) == ["annotations.xml", "cvat_labels.json"]  # no --images
    assert_same_masks(reference_masks(labels), cvat_masks_by_xml(out))
    raw_labels = json.loads((out / "cvat_labels.json").read_text())
    assert [label["name"] for label in raw_labels] == ["ellipse", "triangle", "blob"]
    assert [a["name"] for a in raw_labels[0]["attributes"]] == ["score", "quality"]


def test_labelstudio_tasks_decode_with_the_converter_exactly(labelled, tmp_path):
    pytest.importorskip("label_studio_converter")
    labels, images = labelled
    summary = export_labels(labels, "labelstudio", tmp_path / "ls", images_dir=images)
    out = tmp_path / "ls"
    masks, tasks = labelstudio_masks(out)
    assert assert_same_masks(reference_masks(labels), masks) == summary.masks
    config = ET.parse(out / "labeling_config.xml").getroot()
    assert [label.get("value") for label in config.iter("Label")] == ["ellipse", "triangle", "blob"]
    quality = {a["id"]: a["quality"] for a in json.loads(labels.read_text())["annotations"]}
    for task in tasks:
        assert task["data"]["image"] == "/data/local-files/?d=images/" + task["data"]["file_name"]
        assert (out / "images" / task["data"]["file_name"]).is_file()
        (prediction,) = task["predictions"]
        scores = [region["score"] for region in prediction["result"]]
        assert scores == [quality[int(region["id"].removeprefix("mal-"))] for region in prediction["result"]]
        assert prediction["score"] == min(scores)


@pytest.mark.skipif(not COCO128.is_dir(), reason="needs /work/shared/data/coco128_dev")
def test_coco128_ground_truth_polygons_survive_every_format(tmp_path):
    labels, images = COCO128 / "annotations.json", COCO128 / "images"
    expected = reference_masks(labels)
    fiftyone = export_labels(labels, "fiftyone", tmp_path / "fo", images_dir=images)
    assert assert_same_masks(expected, reference_masks(tmp_path / "fo" / "labels.json")) == fiftyone.masks == 423
    export_labels(labels, "cvat", tmp_path / "cvat", images_dir=images)
    assert_same_masks(expected, cvat_masks_by_xml(tmp_path / "cvat"))
    try:
        import datumaro  # noqa: F401
    except ImportError:
        pass
    else:
        assert_same_masks(by_stem(expected), cvat_masks_by_datumaro(tmp_path / "cvat")[0])
    pytest.importorskip("label_studio_converter")
    export_labels(labels, "labelstudio", tmp_path / "ls", images_dir=images)
    assert_same_masks(expected, labelstudio_masks(tmp_path / "ls")[0])


def test_the_command_shows_progress_and_says_what_it_wrote(labelled, tmp_path):
    labels, images = labelled
    out = tmp_path / "cvat"
    code, shown = run_on_terminal("-m", "mal", "labels", "export", str(labels), "--format", "cvat", "--out",
                                  str(out), "--images", str(images))
    assert code == 0, shown
    assert "export cvat" in shown  # the rich bar on the terminal
    assert f"wrote 6 images and {len(json.loads(labels.read_text())['annotations'])} masks for CVAT to {out}" in shown
    assert "to import: in CVAT" in shown
    assert sorted(p.name for p in out.iterdir()) == ["annotations.xml", "cvat_labels.json", "images"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_a_missing_extra_is_one_sentence_and_exit_2(labelled, tmp_path):
    # Shadow Label Studio's packages with ones that fail to import, as on an install without the extra.
    for name in ("label_studio_converter", "label_studio_sdk"):
        (tmp_path / "shadow" / name).mkdir(parents=True)
        (tmp_path / "shadow" / name / "__init__.py").write_text("raise ImportError('not installed')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "shadow"))
    result = subprocess.run([sys.executable, "-m", "mal", "labels", "export", str(labelled[0]), "--format",
                             "labelstudio", "--out", str(tmp_path / "ls")], capture_output=True, text=True, env=env)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "mal labels: error: --format labelstudio needs the export extra: pip install 'mal[export]'."
    )
    assert not (tmp_path / "ls").exists()
