"""FiftyOne's COCO detection dataset layout: `data/` with the images and `labels.json`, which
`fo.Dataset.from_dir(dataset_dir=DIR, dataset_type=fo.types.COCODetectionDataset, label_types=["segmentations"])`
loads. No FiftyOne is needed to write it (FiftyOne itself needs a MongoDB).

The file is the label file with every key kept (score and quality become attributes FiftyOne can sort by), except
each box: FiftyOne keeps an instance mask only inside its box, rounded to whole pixels, so each box is written as
the whole-pixel box that covers both the original box (clipped to the image) and every pixel of the mask. The
masks themselves are written as they were, and nothing of them is lost on import.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mal.labels.label_set import LabelledImage, LabelSet
from mal.labels.pixels import Extent, image_rles, rle_extents


class FiftyOneWriter:
    image_folder = "data"
    skipped = 0  # an empty mask is kept: COCO holds it

    def __init__(self, labels: LabelSet, folder: Path) -> None:
        self.labels = labels
        self.folder = folder
        self.raw_images = {image["id"]: image for image in labels.raw["images"]}
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []

    def add(self, image: LabelledImage) -> int:
        self.images.append(self.raw_images[image.id])
        extents = rle_extents(image_rles(image))
        for annotation, extent in zip(image.annotations, extents, strict=True):
            box = pixel_box(annotation["bbox"], extent, image.width, image.height)
            self.annotations.append({**annotation, "bbox": box})
        return len(extents)

    def finish(self) -> None:
        content = {key: value for key, value in self.labels.raw.items() if key not in ("images", "annotations")}
        content.update(images=self.images, annotations=self.annotations)
        (self.folder / "labels.json").write_text(json.dumps(content) + "\n", encoding="utf-8")

    def import_hint(self, out: Path, with_images: bool) -> str:
        data = "" if with_images else ', data_path="<your images folder>"'
        return (
            f'in Python: fo.Dataset.from_dir(dataset_dir="{out}", dataset_type=fo.types.COCODetectionDataset, '
            f'label_types=["segmentations"]{data})'
        )


def pixel_box(bbox: list[float], extent: Extent | None, width: int, height: int) -> list[int]:
    """[x, y, w, h] in whole pixels covering the box (rounded as FiftyOne rounds it, clipped to the image) and
    the mask's extent."""
    x, y, w, h = bbox
    x0, y0 = max(0, round(x)), max(0, round(y))
    x1, y1 = min(width, round(x + w)), min(height, round(y + h))
    if extent is not None:
        x0, y0, x1, y1 = min(x0, extent[0]), min(y0, extent[1]), max(x1, extent[2]), max(y1, extent[3])
    x0, y0 = min(x0, width), min(y0, height)
    return [x0, y0, max(x1, x0) - x0, max(y1, y0) - y0]
