"""One card's picture: the instance cut from the full-resolution image, its own mask filled and outlined, and the
ground-truth outline in another colour.

The window is a square around the mask (and the ground truth, and the box) with a quarter of its size as context
on every side, at least MIN_SIDE pixels so a 10-pixel nucleus still shows its neighbourhood. It is scaled to a
`size` x `size` card: small windows are upscaled (bicubic) so nothing looks pixelated, and the mask is upscaled
bilinearly and cut at one half, so its outline follows the pixel edges smoothly instead of in steps.
OpenCV does the image work (about 0.15 ms a card; the same in Pillow took ten times that, mostly in its rank
filters); this module imports neither torch nor the rest of mal, so process-pool workers start fast.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mal.gallery.rle_window import Extent, MaskSet

MIN_SIDE = 32
CONTEXT = 0.25  # of the object's larger side, on each side
FILL_ALPHA = 0.35
JPEG_QUALITY = 80
# BGR (OpenCV's order). Orange for the label (Okabe-Ito), cyan for the ground truth: both stand out on dark
# fluorescence and on pink/purple stains.
LABEL_BGR = (0, 159, 230)
TRUTH_BGR = (255, 255, 0)
LABEL_HEX = "#e69f00"
TRUTH_HEX = "#00ffff"


@dataclass(frozen=True)
class CropItem:
    """What one card needs: its number, the label's compressed RLE string (None: no mask), its box, and the ground
    truth's RLE string (None: no ground truth; "" an empty one)."""

    index: int
    counts: str | None
    bbox: tuple[float, float, float, float] | None
    truth_counts: str | None = None


def square_window(extent: Extent, height: int, width: int) -> tuple[int, int, int]:
    """(left, top, side) of the square shown for an object with this extent. The square is moved inside the image
    where it fits, so context fills it rather than padding; where it does not fit it is centred on the image."""
    x0, y0, x1, y1 = extent
    side = max(math.ceil(max(x1 - x0, y1 - y0) * (1 + 2 * CONTEXT)), MIN_SIDE)
    return _place(x0, x1, side, width), _place(y0, y1, side, height), side


def _place(low: int, high: int, side: int, size: int) -> int:
    start = round((low + high - side) / 2)
    if side >= size:
        return -((side - size) // 2)
    return min(max(start, 0), size - side)


def _union(extents: Sequence[Extent | None]) -> Extent | None:
    present = [e for e in extents if e is not None]
    if not present:
        return None
    return (min(e[0] for e in present), min(e[1] for e in present),
            max(e[2] for e in present), max(e[3] for e in present))


def _box_extent(bbox: tuple[float, float, float, float] | None, height: int, width: int) -> Extent | None:
    if bbox is None:
        return None
    x, y, w, h = bbox
    x0, y0 = min(max(math.floor(x), 0), width - 1), min(max(math.floor(y), 0), height - 1)
    return x0, y0, max(min(math.ceil(x + w), width), x0 + 1), max(min(math.ceil(y + h), height), y0 + 1)


def _patch(image: np.ndarray, left: int, top: int, side: int) -> np.ndarray:
    height, width = image.shape[:2]
    if left >= 0 and top >= 0 and left + side <= width and top + side <= height:
        return image[top : top + side, left : left + side]
    inside = image[max(top, 0) : min(top + side, height), max(left, 0) : min(left + side, width)]
    pads = (max(-top, 0), max(top + side - height, 0), max(-left, 0), max(left + side - width, 0))
    return cv2.copyMakeBorder(inside, *pads, cv2.BORDER_CONSTANT, value=(40, 40, 40))


_RING = np.ones((5, 5), dtype=np.uint8)
_SUBPIXEL_BITS = 4
_SUBPIXEL = 1 << _SUBPIXEL_BITS


@functools.cache
def _solid(size: int) -> np.ndarray:
    card = np.empty((size, size, 3), dtype=np.uint8)
    card[:] = LABEL_BGR
    return card


def _scaled(mask: np.ndarray, size: int) -> np.ndarray:
    """The 0/1 window mask at card size as 0/1: bilinear, cut at one half."""
    scaled = cv2.resize(mask * np.uint8(255), (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.threshold(scaled, 127, 1, cv2.THRESH_BINARY)[1]


def _outline(card: np.ndarray, mask: np.ndarray, scale: float) -> None:
    """Draw the mask's outline, traced at window resolution and drawn with sub-pixel precision on the card: as
    smooth as tracing the upscaled mask, at a tenth of the cost. It runs through the edge pixels' centres."""
    contours, _ = cv2.findContours(mask, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    points = [np.round(((contour + 0.5) * scale - 0.5) * _SUBPIXEL).astype(np.int32) for contour in contours]
    cv2.polylines(card, points, True, TRUTH_BGR, 1, cv2.LINE_AA, _SUBPIXEL_BITS)


def render_card(
    image: np.ndarray, item: CropItem, masks: MaskSet, truths: MaskSet, number: int, size: int
) -> tuple[np.ndarray, float | None]:
    """The card picture (size x size BGR) for one instance of a BGR image, and its mask's IoU with the ground
    truth (None without one; 1 when both are empty, as `mal.metrics.instance_ious` counts it).

    masks and truths hold the image's label and ground-truth masks; the card's are number `number` of each. The
    window holds both masks whole, so the IoU over the window is the IoU over the image.
    """
    height, width = image.shape[:2]
    mask_box, truth_box = masks.extent(number), truths.extent(number)
    box = None if mask_box else _box_extent(item.bbox, height, width)
    left, top, side = square_window(_union([mask_box, truth_box, box]) or (0, 0, width, height), height, width)
    card = cv2.resize(_patch(image, left, top, side), (size, size),
                      interpolation=cv2.INTER_CUBIC if side < size else cv2.INTER_AREA)
    label = masks.window(number, left, top, side) if mask_box else None
    if label is not None:
        binary = _scaled(label, size)
        solid = _solid(size)
        cv2.copyTo(cv2.addWeighted(card, 1 - FILL_ALPHA, solid, FILL_ALPHA, 0), binary, card)
        # The outline is the mask's inner two pixels: an erosion is 10x cheaper than anti-aliased contours.
        cv2.copyTo(solid, cv2.subtract(binary, cv2.erode(binary, _RING)), card)
    elif item.bbox is not None:
        # No mask (or an empty one): the box alone, so the reviewer sees what was asked for.
        x, y, w, h = item.bbox
        scale = size / side
        corners = [(round((x - left) * scale), round((y - top) * scale)),
                   (round((x + w - left) * scale), round((y + h - top) * scale))]
        cv2.rectangle(card, corners[0], corners[1], LABEL_BGR, 2, cv2.LINE_AA)
    iou = None
    if item.truth_counts is not None:
        iou = 1.0 if label is None and truth_box is None else 0.0
    if truth_box is not None:
        reference = truths.window(number, left, top, side)
        if label is not None:
            iou = int(np.count_nonzero(label & reference)) / int(np.count_nonzero(label | reference))
        _outline(card, reference, size / side)
    return card, iou


def encode_jpeg(card: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(".jpg", card, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:  # OpenCV returns False rather than raising; a plain array of uint8 never gets here
        raise RuntimeError("OpenCV could not encode a gallery card as JPEG")
    return buffer.tobytes()
