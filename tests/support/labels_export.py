"""Helpers of the `mal labels export` tests: a label file to export (the three COCO segmentation kinds, scores,
qualities), the reference masks as pycocotools reads them, and the readers of the written sets: Datumaro's CVAT
importer, a plain reading of CVAT's XML as CVAT's format page describes it, and Label Studio's brush decoder."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

COCO128 = Path("/work/shared/data/coco128_dev")


def make_labels(synthetic_dir: Path, folder: Path) -> tuple[Path, Path]:
    """Copy a synthetic dataset into `folder` as a label file as `mal inference` writes it (score, quality), with
    one mask as polygons, one as uncompressed RLE and one image in a subfolder; returns (labels.json, images/)."""
    images = folder / "images"
    shutil.copytree(synthetic_dir / "images", images)
    content = json.loads((synthetic_dir / "annotations.json").read_text())
    for number, annotation in enumerate(content["annotations"]):
        annotation["score"] = round(0.5 + 0.01 * number, 4)
        annotation["quality"] = round(0.9 - 0.01 * number, 4)
    nested = content["images"][-1]  # an image in a subfolder, as COCO's "train2017/..." names are
    (images / "sub").mkdir()
    (images / nested["file_name"]).rename(images / "sub" / nested["file_name"])
    nested["file_name"] = f"sub/{nested['file_name']}"
    first, second = content["annotations"][0], content["annotations"][1]
    size = first["segmentation"]["size"]
    x, y, w, h = first["bbox"]
    first["segmentation"] = [[x, y, x + w, y, x + w / 2, y + h]]  # a triangle inside the box
    mask = mask_utils.decode(dict(second["segmentation"], counts=second["segmentation"]["counts"].encode()))
    flat = mask.ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    second["segmentation"] = {"size": size, "counts": ([0] if flat[0] else []) + counts}
    labels = folder / "labels.json"
    labels.write_text(json.dumps(content))
    return labels, images


def reference_masks(labels: Path) -> dict[str, list[np.ndarray]]:
    """file_name -> each annotation's mask as pycocotools decodes it, in annotation order."""
    coco = COCO(str(labels))
    masks: dict[str, list[np.ndarray]] = {}
    for image_id in coco.getImgIds():
        file_name = coco.imgs[image_id]["file_name"]
        masks[file_name] = [coco.annToMask(a).astype(bool) for a in coco.loadAnns(coco.getAnnIds(imgIds=image_id))]
    return masks


def cvat_masks_by_datumaro(folder: Path) -> tuple[dict[str, list[np.ndarray]], dict[str, list[dict[str, Any]]]]:
    """Datumaro's CVAT importer over the written folder: item id (file name less its extension) -> each mask,
    and -> each annotation's label name and attributes."""
    import datumaro as dm

    dataset = dm.Dataset.import_from(str(folder), "cvat")
    names = dataset.categories()[dm.AnnotationType.label]
    masks: dict[str, list[np.ndarray]] = {}
    details: dict[str, list[dict[str, Any]]] = {}
    for item in dataset:
        shapes = [a for a in item.annotations if a.type == dm.AnnotationType.mask]
        masks[item.id] = [np.asarray(shape.image).astype(bool) for shape in shapes]
        details[item.id] = [{"label": names[shape.label].name, **shape.attributes} for shape in shapes]
    return masks, details


def cvat_masks_by_xml(folder: Path) -> dict[str, list[np.ndarray]]:
    """annotations.xml read as CVAT's XML format page describes a mask: runs of 0s and 1s, row by row, over
    the box left/top/width/height, starting with 0s."""
    masks: dict[str, list[np.ndarray]] = {}
    for image in ET.parse(folder / "annotations.xml").getroot().iter("image"):
        height, width = int(image.get("height")), int(image.get("width"))
        masks[image.get("name")] = []
        for shape in image.iter("mask"):
            runs = [int(value) for value in shape.get("rle").split(",")]
            values = np.arange(len(runs)) % 2
            left, top, box_w, box_h = (int(shape.get(key)) for key in ("left", "top", "width", "height"))
            canvas = np.zeros((height, width), dtype=bool)
            canvas[top : top + box_h, left : left + box_w] = np.repeat(values, runs).reshape(box_h, box_w)
            masks[image.get("name")].append(canvas)
    return masks


def labelstudio_masks(folder: Path) -> tuple[dict[str, list[np.ndarray]], list[dict[str, Any]]]:
    """Every brush region of tasks.json decoded by Label Studio's converter (alpha channel): file name -> masks;
    and the tasks themselves."""
    from label_studio_converter import brush

    tasks = json.loads((folder / "tasks.json").read_text())
    masks: dict[str, list[np.ndarray]] = {}
    for task in tasks:
        regions = [r for prediction in task["predictions"] for r in prediction["result"]]
        masks[task["data"]["file_name"]] = [
            brush.decode_rle(r["value"]["rle"]).reshape(r["original_height"], r["original_width"], 4)[:, :, 3] > 0
            for r in regions
        ]
    return masks, tasks


def assert_same_masks(expected: dict[str, list[np.ndarray]], got: dict[str, list[np.ndarray]]) -> int:
    """Every mask equal, pixel for pixel, in the same order per image; returns how many were compared."""
    assert sorted(got) == sorted(expected)
    compared = 0
    for name, masks in expected.items():
        assert len(got[name]) == len(masks), name
        for index, (want, have) in enumerate(zip(masks, got[name], strict=True)):
            assert have.shape == want.shape and np.array_equal(have, want), f"{name} mask {index} differs"
            compared += 1
    return compared
