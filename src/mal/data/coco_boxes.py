"""The boxes of a validated COCO file as numpy arrays, with its image records, and ground-truth masks on demand."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from mal.errors import DataError


@dataclass(frozen=True)
class ImageRecord:
    id: int
    file_name: str
    width: int
    height: int
    path: Path


class CocoBoxes:
    """The boxes of a validated COCO file as arrays (one row per annotation, in file order).

    `bbox_xywh` holds the boxes as given; `boxes_xyxy` the same boxes clipped to their image; `box_areas` the
    clipped box areas. `raw` is the parsed file, so an output can keep every key the input had.
    """

    def __init__(
        self,
        *,
        ann_path: Path,
        img_dir: Path,
        raw: dict[str, Any],
        images: dict[int, ImageRecord],
        categories: dict[int, str],
        annotations: list[dict[str, Any]],
        ann_ids: np.ndarray,
        image_ids: np.ndarray,
        category_ids: np.ndarray,
        bbox_xywh: np.ndarray,
        boxes_xyxy: np.ndarray,
        iscrowd: np.ndarray,
        has_segmentation: np.ndarray,
        load_mask: bool,
    ) -> None:
        self.ann_path = ann_path
        self.img_dir = img_dir
        self.raw = raw
        self.images = images
        self.categories = categories
        self.annotations = annotations
        self.ann_ids = ann_ids
        self.image_ids = image_ids
        self.category_ids = category_ids
        self.bbox_xywh = bbox_xywh
        self.boxes_xyxy = boxes_xyxy
        self.box_areas = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
        self.iscrowd = iscrowd
        self.has_segmentation = has_segmentation
        self.load_mask = load_mask

    def __len__(self) -> int:
        return len(self.ann_ids)

    def __repr__(self) -> str:
        return (
            f"CocoBoxes({self.ann_path.name}: {len(self.images)} images, {len(self)} boxes, "
            f"{len(self.categories)} classes)"
        )

    @property
    def has_masks(self) -> bool:
        """True when masks were requested and every box has a ground-truth segmentation."""
        return self.load_mask and len(self) > 0 and bool(self.has_segmentation.all())

    @cached_property
    def row_of_ann(self) -> dict[int, int]:
        return {int(ann_id): row for row, ann_id in enumerate(self.ann_ids.tolist())}

    @cached_property
    def boxes_by_image(self) -> dict[int, np.ndarray]:
        """Image id -> rows of its boxes (file order); images without boxes are absent."""
        order = np.argsort(self.image_ids, kind="stable")
        ids, starts = np.unique(self.image_ids[order], return_index=True)
        return {int(i): rows for i, rows in zip(ids.tolist(), np.split(order, starts[1:]), strict=True)}

    def size_filter(self, min_obj_size: float = 0.0, max_obj_size: float = math.inf) -> np.ndarray:
        """Rows whose clipped box area lies in (min_obj_size, max_obj_size]."""
        return (self.box_areas > min_obj_size) & (self.box_areas <= max_obj_size)

    def gt_mask(self, ann_id: int) -> np.ndarray:
        """The ground-truth mask of one annotation as uint8 H x W (1 = object)."""
        return self.gt_masks([ann_id])[0]

    def gt_masks(self, ann_ids: list[int] | np.ndarray) -> np.ndarray:
        """Masks of annotations of ONE image as uint8 N x H x W, decoded in one pycocotools call."""
        from pycocotools import mask as mask_utils

        if not self.load_mask:
            raise DataError(f"{self.ann_path}: masks were not loaded; set dataset.load_mask=true to read them.")
        rows = [self.row_of_ann[int(ann_id)] for ann_id in ann_ids]
        image_ids = {int(self.image_ids[row]) for row in rows}
        if len(image_ids) > 1:
            raise ValueError("gt_masks takes annotations of one image; call it once per image")
        if not rows:
            return np.zeros((0, 0, 0), dtype=np.uint8)
        image = self.images[image_ids.pop()]
        rles = []
        for row in rows:
            if not self.has_segmentation[row]:
                raise DataError(
                    f"{self.ann_path} (annotation {self.ann_ids[row]}): no segmentation; add one or set "
                    "dataset.load_mask=false."
                )
            rles.append(_to_rle(self.annotations[row]["segmentation"], image.height, image.width, mask_utils))
        with warnings.catch_warnings():
            # pycocotools' Cython decode trips numpy 2's copy-keyword deprecation; harmless.
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = mask_utils.decode(rles)  # H x W x N, Fortran order
        return np.ascontiguousarray(decoded.transpose(2, 0, 1))


def _to_rle(segmentation: Any, height: int, width: int, mask_utils: Any) -> dict[str, Any]:
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}
