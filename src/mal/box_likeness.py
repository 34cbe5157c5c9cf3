"""Box-likeness: how many masks are (almost) their own filled box, and the one warning when most of them are.

A box-supervised model that has not learned shapes yet (too few steps, TAO's GPU defaults on a CPU, no pretrained
weights) returns the filled box as every mask: the label file looks complete and holds nothing the boxes did not.
`mal train` (on validation predictions), `mal evaluate` and `mal inference` all measure it here, so a user is never
handed boxes silently.

The measure is cheap: each mask's bounding box comes from its RLE (pycocotools' `toBbox`, one C call for all), and
a mask inside its box (every mask `mal` pastes) has intersection = its area, so only masks from other tools that
spill past their box are decoded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import numpy as np
from pycocotools import mask as mask_utils

from mal.masks import RLE, as_pycocotools_rle, decode_rle, rle_area

BOX_LIKE_IOU = 0.95
"""A mask whose IoU with its own filled box exceeds this is "the box". Real object masks rarely do: 0.9% (4 of
423) of the ground-truth masks of coco128_dev (natural images), 0.2% (52 of 21,405) of dsb2018_dev (nuclei: an
ellipse fills pi/4 of its box)."""

WARN_SHARE = 0.5
"""Warn when more than this share of the masks are box-like. Measured on a 2-core CPU: one epoch with
TAO's defaults gives 1.00 (216 of 216 validation masks of coco128_dev at crop 64, val/mIoU = box-fill mIoU 0.593;
24 of 24 on synthetic shapes); trained presets give 0.009 (preset cpu-natural on coco128_dev, mIoU 0.667; 0.014
for its 12-epoch form) and 0.0005 (preset cpu-nuclei on dsb2018_dev, mIoU 0.858); ground truth 0.002-0.009. 0.5
sits far from both sides, so neither a good model on boxy objects (books, screens) nor a half-trained one that still
returns some boxes trips it by chance, while the failure this guards against (nearly all boxes) always does."""


@dataclass(frozen=True)
class BoxLikeness:
    """How many of the measured masks are their filled box (IoU > BOX_LIKE_IOU)."""

    box_like: int
    measured: int

    @property
    def share(self) -> float | None:
        """box_like / measured; None when no mask could be measured (no box covers a pixel)."""
        return self.box_like / self.measured if self.measured else None

    @property
    def too_box_like(self) -> bool:
        share = self.share
        return share is not None and share > WARN_SHARE

    def warning(self, action: str) -> str | None:
        """The one-line warning for `mal <action>` when most masks are boxes, else None."""
        if not self.too_box_like:
            return None
        return (
            f"mal {action}: warning: {self.box_like} of {self.measured} masks ({self.share:.0%}) are just their "
            f"filled box (IoU > {BOX_LIKE_IOU} with it): the model that made them has not learned object shapes, "
            "so they add nothing to the boxes; train longer, start from a preset (-e cpu-natural "
            "for natural images, -e cpu-nuclei for microscopy; `mal presets` lists them), "
            "or give pretrained weights with train.pretrained_model_path."
        )


def box_pixel_rects(boxes_xyxy: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """N x 4 half-open pixel rectangles (row0, row1, col0, col1) of the filled boxes, clipped to their images.

    The pixel rule of `mal.masks.box_fill_rle` / `paste_masks` (a pixel is in when its centre is; a box too thin to
    hold a centre keeps the pixel of its midpoint), vectorised: a mask `mal` pasted into a box never leaves it.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)

    def span(low: np.ndarray, high: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        first = np.ceil(low - 0.5)
        stop = np.floor(high - 0.5) + 1
        thin = stop <= first
        middle = np.floor((low + high) / 2)
        first = np.where(thin, middle, first)
        stop = np.where(thin, middle + 1, stop)
        return np.maximum(first, 0).astype(np.int64), np.minimum(stop, size).astype(np.int64)

    rows = span(boxes[:, 1], boxes[:, 3], np.asarray(heights, dtype=np.int64))
    cols = span(boxes[:, 0], boxes[:, 2], np.asarray(widths, dtype=np.int64))
    return np.stack([rows[0], rows[1], cols[0], cols[1]], axis=1)


def box_ious(rles: Sequence[RLE], boxes_xyxy: np.ndarray) -> np.ndarray:
    """IoU of each mask with its own filled box (the box in image pixels, the image size from the RLE).

    NaN where the box covers no pixel of the image (nothing to compare); an empty mask has IoU 0.
    """
    count = len(rles)
    if count == 0:
        return np.zeros(0, dtype=np.float64)
    sizes = np.asarray([rle["size"] for rle in rles], dtype=np.int64).reshape(count, 2)
    rects = box_pixel_rects(boxes_xyxy, sizes[:, 0], sizes[:, 1])
    box_area = np.clip(rects[:, 1] - rects[:, 0], 0, None) * np.clip(rects[:, 3] - rects[:, 2], 0, None)
    mask_area = np.asarray(rle_area(list(rles)), dtype=np.int64)
    # The mask's own bounding box (x, y, w, h); inside the box rectangle means intersection == mask area.
    bbox = np.asarray(mask_utils.toBbox([as_pycocotools_rle(rle) for rle in rles]), dtype=np.float64)
    inside = ((bbox[:, 1] >= rects[:, 0]) & (bbox[:, 1] + bbox[:, 3] <= rects[:, 1])
              & (bbox[:, 0] >= rects[:, 2]) & (bbox[:, 0] + bbox[:, 2] <= rects[:, 3]))
    intersection = np.where(inside | (mask_area == 0), mask_area, 0)
    for index in np.flatnonzero(~inside & (mask_area > 0) & (box_area > 0)).tolist():
        r0, r1, c0, c1 = rects[index].tolist()
        intersection[index] = int(decode_rle(rles[index])[r0:r1, c0:c1].sum())
    union = mask_area + box_area - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        ious = np.where(box_area > 0, intersection / np.maximum(union, 1), np.nan)
    return ious.astype(np.float64)


def measure(rles: Sequence[RLE], boxes_xyxy: np.ndarray) -> BoxLikeness:
    """How many masks are their filled box; boxes that cover no image pixel are left out."""
    ious = box_ious(rles, boxes_xyxy)
    measured = np.isfinite(ious)
    return BoxLikeness(box_like=int((ious[measured] > BOX_LIKE_IOU).sum()), measured=int(measured.sum()))


def warn_if_box_like(result: BoxLikeness, action: str, stream: TextIO | None = None) -> bool:
    """Print the one-line warning to stderr when most masks are boxes; True when it did."""
    message = result.warning(action)
    if message is None:
        return False
    print(message, file=stream or sys.stderr, flush=True)
    return True
