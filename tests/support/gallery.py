"""Label sets for the review gallery's tests, and reading back what the gallery wrote.

`many_labels` builds tens of thousands of masks in about a second: a few small images, each with thousands of
rectangles written straight as run lengths (no mask is ever drawn), converted to compressed RLE by pycocotools in
one call. Every annotation has a score and (optionally) a quality; the ground truth is each rectangle moved by a
few pixels, so IoUs spread over (0, 1].
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# Names that must reach the page as text: markup, quotes and the end of a script element.
CATEGORIES = [
    {"id": 1, "name": "<b>box</b>"},
    {"id": 2, "name": 'disc "2"'},
    {"id": 3, "name": "</script>cell"},
]


@dataclass
class LabelSet:
    labels: dict[str, Any]
    paths: dict[int, Path]
    truth: dict[int, dict[str, Any]]  # annotation id -> ground-truth segmentation (compressed RLE)
    labels_path: Path


def rectangle_counts(x: int, y: int, w: int, h: int, height: int, width: int) -> list[int]:
    """Uncompressed COCO RLE counts (column-major, background first) of a w x h rectangle at (x, y)."""
    counts = [x * height + y]
    for column in range(w):
        counts.append(h)
        if column < w - 1:
            counts.append(height - h)
    counts.append(height * width - sum(counts))
    return counts


def _compressed(counts: list[list[int]], height: int, width: int) -> list[dict[str, Any]]:
    rles = mask_utils.frPyObjects([{"size": [height, width], "counts": c} for c in counts], height, width)
    return [{"size": [height, width], "counts": rle["counts"].decode("ascii")} for rle in rles]


def many_labels(
    folder: Path,
    *,
    num_images: int = 8,
    per_image: int = 2560,
    size: int = 256,
    seed: int = 0,
    quality: bool = True,
) -> LabelSet:
    """num_images PNGs of size x size under folder/images, per_image rectangles on each (small, medium and large
    by COCO's rule), written to folder/labels.json."""
    rng = np.random.default_rng(seed)
    images, annotations, paths, truth = [], [], {}, {}
    (folder / "images").mkdir(parents=True, exist_ok=True)
    ann_id = 1
    for image_id in range(1, num_images + 1):
        path = folder / "images" / f"img_{image_id}.png"
        # A smooth colour ramp with a little noise: JPEG cards stay small and every crop differs.
        ramp = np.linspace(0, 200, size, dtype=np.float32)
        pixels = np.stack([ramp[None, :].repeat(size, 0), ramp[:, None].repeat(size, 1),
                           np.full((size, size), 40 * image_id % 255, np.float32)], axis=-1)
        pixels += rng.normal(0, 8, pixels.shape)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
        paths[image_id] = path
        images.append({"id": image_id, "file_name": path.name, "height": size, "width": size})
        # Sides: mostly small objects (as in nuclei), some medium, a few large.
        sides = rng.choice([8, 16, 24, 48, 80, 120], p=[0.3, 0.3, 0.2, 0.1, 0.06, 0.04], size=(per_image, 2))
        sides = sides + rng.integers(0, 8, size=(per_image, 2))
        corners = rng.integers(0, size - sides)
        shifts = rng.integers(-3, 4, size=(per_image, 2))
        moved = np.clip(corners + shifts, 0, size - sides)
        label_counts = [rectangle_counts(*c, *s, size, size) for c, s in zip(corners.tolist(), sides.tolist())]
        truth_counts = [rectangle_counts(*c, *s, size, size) for c, s in zip(moved.tolist(), sides.tolist())]
        for (x, y), (w, h), rle, true in zip(corners.tolist(), sides.tolist(), _compressed(label_counts, size, size),
                                             _compressed(truth_counts, size, size)):
            annotation = {
                "id": ann_id,
                "image_id": image_id,
                "category_id": int(rng.integers(1, len(CATEGORIES) + 1)),
                "bbox": [x, y, w, h],
                "area": w * h,
                "segmentation": rle,
                "score": round(float(rng.random()), 4),
                "iscrowd": 0,
            }
            if quality:
                annotation["quality"] = round(float(rng.random()), 4)
            annotations.append(annotation)
            truth[ann_id] = true
            ann_id += 1
    labels = {"info": {"description": "gallery test set"}, "images": images, "annotations": annotations,
              "categories": CATEGORIES}
    labels_path = folder / "labels.json"
    labels_path.write_text(json.dumps(labels))
    return LabelSet(labels, paths, truth, labels_path)


def read_page_data(out: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(MAL_GALLERY, the parsed MAL_GALLERY_RECORDS) from out/data.js."""
    text = (out / "data.js").read_text()
    data = json.loads(re.search(r"^window\.MAL_GALLERY = (.*);$", text, re.M).group(1))
    records = json.loads(json.loads(re.search(r"^window\.MAL_GALLERY_RECORDS = (.*);$", text, re.M).group(1)))
    return data, records


def size_name(area: float) -> str:
    """COCO's size bucket of a mask area (pixels)."""
    return "small" if area < 32**2 else "medium" if area < 96**2 else "large"
