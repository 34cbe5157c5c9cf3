"""Label Studio: `tasks.json` (one task per image, the masks as brush-label predictions in Label Studio's brush
RLE), `labeling_config.xml` (an Image with BrushLabels, one Label per category) and `images/`.

The brush RLE is encoded by Label Studio's own converter (`label_studio_converter.brush`, or the same module in
`label_studio_sdk.converter`), installed with the `export` extra; it is lossless. Each task's image is addressed
as Label Studio serves local files (`/data/local-files/?d=images/NAME`, relative to
LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, which is to be the export folder). A region's score is the annotation's
quality where there is one, else its score; a task's prediction score is its lowest, so sorting tasks by it puts
the images with the most doubtful mask first.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import quote

import numpy as np

from mal.errors import UserError
from mal.labels.label_set import LabelledImage, LabelSet
from mal.labels.pixels import image_masks

BRUSH_TAG = "label"  # from_name: the BrushLabels control
IMAGE_TAG = "image"  # to_name: the Image object, whose value is the task's data["image"]
MODEL_VERSION = "mal"
LOCAL_FILES_URL = "/data/local-files/?d="


def brush_module() -> ModuleType:
    """Label Studio's brush RLE codec; UserError (exit 2) naming the extra when it is not installed."""
    try:
        from label_studio_converter import brush
    except ImportError:
        try:
            from label_studio_sdk.converter import brush  # type: ignore[no-redef]
        except ImportError:
            raise UserError(
                "--format labelstudio needs the export extra: pip install 'mal[export]'."
            ) from None
    return brush


class LabelStudioWriter:
    image_folder = "images"
    check_dependencies = staticmethod(brush_module)

    def __init__(self, labels: LabelSet, folder: Path) -> None:
        self.brush = brush_module()
        self.labels = labels
        self.folder = folder
        self.tasks: list[dict[str, Any]] = []
        self.skipped = 0

    def add(self, image: LabelledImage) -> int:
        regions = []
        for annotation, mask in zip(image.annotations, image_masks(image), strict=True):
            if not mask.any():  # a brush region needs at least one pixel
                self.skipped += 1
                continue
            region: dict[str, Any] = {
                "id": f"mal-{annotation['id']}",
                "type": "brushlabels",
                "from_name": BRUSH_TAG,
                "to_name": IMAGE_TAG,
                "original_width": image.width,
                "original_height": image.height,
                "image_rotation": 0,
                "value": {
                    "format": "rle",
                    "rle": self.brush.mask2rle(np.where(mask > 0, 255, 0).astype(np.uint8)),
                    "brushlabels": [self.labels.categories[annotation["category_id"]]],
                },
            }
            score = annotation.get("quality", annotation.get("score"))
            if score is not None:
                region["score"] = float(score)
            regions.append(region)
        task: dict[str, Any] = {
            "data": {IMAGE_TAG: LOCAL_FILES_URL + quote(f"{self.image_folder}/{image.file_name}", safe="/"),
                     "coco_image_id": image.id, "file_name": image.file_name},
            "predictions": [],
        }
        if regions:
            prediction: dict[str, Any] = {"model_version": MODEL_VERSION, "result": regions}
            scores = [region["score"] for region in regions if "score" in region]
            if scores:
                prediction["score"] = min(scores)
            task["predictions"].append(prediction)
        self.tasks.append(task)
        return len(regions)

    def finish(self) -> None:
        (self.folder / "tasks.json").write_text(json.dumps(self.tasks) + "\n", encoding="utf-8")
        (self.folder / "labeling_config.xml").write_text(labeling_config(self.labels.categories.values()) + "\n",
                                                         encoding="utf-8")

    def import_hint(self, out: Path, with_images: bool) -> str:
        served = "" if with_images else f" (put the images in {out / self.image_folder} first)"
        return (
            f"start Label Studio with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true "
            f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={out}{served}, create a project with the labeling interface "
            f"of {out / 'labeling_config.xml'}, add Local Files storage {out / self.image_folder}, import "
            f"{out / 'tasks.json'}"
        )


def labeling_config(names: Any) -> str:
    """The labeling interface: the image, and a brush label per category."""
    view = ET.Element("View")
    ET.SubElement(view, "Image", name=IMAGE_TAG, value=f"${IMAGE_TAG}", zoom="true")
    brushes = ET.SubElement(view, "BrushLabels", name=BRUSH_TAG, toName=IMAGE_TAG)
    for name in names:
        ET.SubElement(brushes, "Label", value=name)
    ET.indent(view)
    return ET.tostring(view, encoding="unicode")
