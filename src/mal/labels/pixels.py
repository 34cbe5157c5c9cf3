"""The masks of one image as the writers need them: compressed RLE, decoded pixels one mask at a time, pixel
extents and row-major runs.

pycocotools is called directly rather than through mal.masks, which imports torch (3 s and about 0.9 GB before
the first mask). The segmentations were checked by mal.data's validation (sizes that fit the image, safe RLE
strings) before they get here.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from mal.labels.label_set import LabelledImage

Extent = tuple[int, int, int, int]  # x0, y0, x1, y1 of the mask's pixels, x1 and y1 exclusive


def segmentation_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """A COCO segmentation (polygons, uncompressed or compressed RLE) as pycocotools' compressed RLE."""
    if isinstance(segmentation, list):
        polygons = [polygon for polygon in segmentation if len(polygon) >= 6]
        if not polygons:  # a degenerate polygon covers nothing
            return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
        return mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    counts = segmentation["counts"]
    return {"size": list(segmentation["size"]), "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def image_rles(image: LabelledImage) -> list[dict[str, Any]]:
    return [segmentation_rle(ann["segmentation"], image.height, image.width) for ann in image.annotations]


def image_masks(image: LabelledImage) -> Iterator[np.ndarray]:
    """Each annotation's mask as an H x W uint8 array of 0/1, in annotation order, decoded one at a time (an
    image of nuclei holds hundreds: a stack of them all would take gigabytes)."""
    for rle in image_rles(image):
        with warnings.catch_warnings():
            # pycocotools' decoder trips a numpy 2 copy-keyword DeprecationWarning that users can do nothing about.
            warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
            yield mask_utils.decode(rle)


def rle_extents(rles: list[dict[str, Any]]) -> list[Extent | None]:
    """The pixel extent of each RLE without decoding it; None for an empty mask."""
    if not rles:
        return []
    boxes = np.asarray(mask_utils.toBbox(rles), dtype=np.int64).reshape(-1, 4)
    return [(x, y, x + w, y + h) if w > 0 and h > 0 else None for x, y, w, h in boxes.tolist()]


def mask_extent(mask: np.ndarray) -> Extent | None:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    columns = np.flatnonzero(mask.any(axis=0))
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def row_major_runs(mask: np.ndarray) -> list[int]:
    """Alternating run lengths of 0s and 1s over the mask read row by row, starting with a (maybe empty) run of 0s:
    the run-length code of a CVAT mask shape."""
    flat = np.ascontiguousarray(mask, dtype=np.uint8).reshape(-1)
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size])))
    if flat.size and flat[0]:
        runs = np.concatenate(([0], runs))
    return [int(run) for run in runs]
