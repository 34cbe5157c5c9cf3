"""From crop probabilities to image masks: size buckets, thresholds, paste-back and COCO RLE.

The network predicts one mask per box, relative to the box's expanded crop. `paste_masks` maps each crop mask
back into the image: it multiplies by the crop's box mask, resamples the crop onto the image pixels the
expanded box covers (only that region, never a full-image float array), clips at the image border, binarises
at the instance's threshold and encodes all instances of one image as compressed COCO RLE in one call.

Pixel convention: a pixel (row r, column c) covers [c, c+1) x [r, r+1) in image coordinates and belongs to a
box when its centre (c + 0.5, r + 0.5) lies inside the box. A box too small to contain any pixel centre still
owns the one pixel that contains its centre, so every box that touches the image gets at least one pixel.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

# COCO area bucket edges (pixels): small < 32^2 <= medium < 96^2 <= large.
SMALL_AREA_MAX = 32**2
MEDIUM_AREA_MAX = 96**2
BUCKET_NAMES = ("small", "medium", "large")

# Bound the uint8 H x W x N block encoded at once, so images with thousands of boxes stay in memory.
_ENCODE_BLOCK_BYTES = 256 * 1024 * 1024

RLE = dict[str, Any]

# The most RLEs pycocotools' area() takes in one call (its count is a uint8).
_AREA_CHUNK = 255


def size_bucket(areas: Sequence[float] | np.ndarray) -> np.ndarray:
    """COCO size bucket of each area: 0 small (< 32^2), 1 medium (< 96^2), 2 large (half-open intervals)."""
    values = np.asarray(areas, dtype=np.float64).reshape(-1)
    return np.searchsorted(np.array([SMALL_AREA_MAX, MEDIUM_AREA_MAX], dtype=np.float64), values, side="right")


def thresholds_for(areas: Sequence[float] | np.ndarray, mask_thres: float | Sequence[float]) -> np.ndarray:
    """Threshold of each instance: the single `train.mask_thres`, or the one for its area's size bucket."""
    values = np.asarray(areas, dtype=np.float64).reshape(-1)
    if np.ndim(mask_thres) == 0:
        return np.full(values.shape, float(mask_thres), dtype=np.float64)
    per_bucket = [float(t) for t in mask_thres]  # type: ignore[union-attr]
    if len(per_bucket) != len(BUCKET_NAMES):
        raise ValueError(
            f"train.mask_thres must be one number or a list of 3 (small, medium, large), got {list(mask_thres)}."
        )
    return np.asarray(per_bucket, dtype=np.float64)[size_bucket(values)]


# ---------------------------------------------------------------------------------------------------- RLE


def _counts_to_str(rle: dict[str, Any]) -> RLE:
    counts = rle["counts"]
    return {
        "size": [int(s) for s in rle["size"]],
        "counts": counts.decode("ascii") if isinstance(counts, bytes) else counts,
    }


def as_pycocotools_rle(rle: RLE) -> dict[str, Any]:
    """pycocotools wants bytes counts for compressed RLE; JSON gives us str."""
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def encode_masks(masks: np.ndarray) -> list[RLE]:
    """Compressed RLE (JSON ready, `counts` as str) of an H x W mask or each mask of an H x W x N stack."""
    array = np.asarray(masks)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3:
        raise ValueError(f"encode_masks expects an H x W or H x W x N array, got shape {array.shape}.")
    encoded = mask_utils.encode(np.asfortranarray(array.astype(np.uint8, copy=False)))
    return [_counts_to_str(rle) for rle in encoded]


def segmentation_to_rle(segmentation: Any, image_hw: tuple[int, int]) -> RLE:
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) as compressed RLE with str counts."""
    height, width = int(image_hw[0]), int(image_hw[1])
    if isinstance(segmentation, list):
        polygons = [poly for poly in segmentation if len(poly) >= 6]
        if not polygons:  # a degenerate polygon covers nothing
            return encode_masks(np.zeros((height, width), dtype=np.uint8))[0]
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, *segmentation["size"])
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        rle = segmentation
    else:
        raise ValueError(f"unsupported COCO segmentation of type {type(segmentation).__name__}.")
    return _counts_to_str(rle)


def decode_rle(rle: RLE | Sequence[RLE]) -> np.ndarray:
    """Binary uint8 mask H x W of one RLE, or H x W x N of a list of RLEs of the same image."""
    with warnings.catch_warnings():
        # pycocotools' decoder trips a numpy 2 copy-keyword DeprecationWarning that users can do nothing about.
        warnings.filterwarnings("ignore", message=r"__array__ implementation", category=DeprecationWarning)
        if isinstance(rle, dict):
            return mask_utils.decode(as_pycocotools_rle(rle))
        return mask_utils.decode([as_pycocotools_rle(r) for r in rle])


def rle_area(rle: RLE | Sequence[RLE]) -> int | np.ndarray:
    """Foreground pixel count of one RLE (int) or of each RLE of a list (int64 array)."""
    if isinstance(rle, dict):
        return int(mask_utils.area(as_pycocotools_rle(rle)))
    if len(rle) == 0:
        return np.zeros(0, dtype=np.int64)
    # pycocotools' list area() counts the list in a uint8 and overflows past 255 RLEs: go in chunks.
    chunks = [rle[start : start + _AREA_CHUNK] for start in range(0, len(rle), _AREA_CHUNK)]
    return np.concatenate(
        [np.asarray(mask_utils.area([as_pycocotools_rle(r) for r in chunk]), dtype=np.int64) for chunk in chunks]
    )


# ---------------------------------------------------------------------------------------------- paste-back


def _pixel_span(low: float, high: float, size: int) -> tuple[int, int]:
    """Half-open pixel index range [first, stop) whose centres lie in [low, high], clipped to [0, size).

    A span too thin to hold a pixel centre keeps the pixel holding its midpoint, so tiny boxes are not lost;
    a span wholly outside the image gives an empty range.
    """
    first = math.ceil(low - 0.5)
    stop = math.floor(high - 0.5) + 1
    if stop <= first:
        first = math.floor((low + high) / 2)
        stop = first + 1
    return max(first, 0), min(stop, size)


def _as_float_tensor(values: Any, name: str) -> torch.Tensor:
    tensor = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))
    if tensor.ndim != 3:
        raise ValueError(f"{name} must be N x h x w, got shape {tuple(tensor.shape)}.")
    return tensor.detach().float()


def _sample_region(
    crop: torch.Tensor, crop_box: Sequence[float], rows: tuple[int, int], cols: tuple[int, int], mode: str
) -> torch.Tensor:
    """Resample one h x w crop onto the image pixels rows x cols of its expanded box (align_corners=False)."""
    x0, y0, x1, y1 = crop_box
    device = crop.device
    # Pixel centre -> position in the crop in [-1, 1]; same mapping as F.interpolate(align_corners=False).
    xs = (torch.arange(cols[0], cols[1], device=device, dtype=torch.float32) + 0.5 - x0) / max(x1 - x0, 1e-6)
    ys = (torch.arange(rows[0], rows[1], device=device, dtype=torch.float32) + 0.5 - y0) / max(y1 - y0, 1e-6)
    grid = torch.stack(torch.meshgrid(ys * 2 - 1, xs * 2 - 1, indexing="ij")[::-1], dim=-1)
    sampled = F.grid_sample(crop[None, None], grid[None], mode=mode, padding_mode="border", align_corners=False)
    return sampled[0, 0]


def _box_region(
    box: np.ndarray, rows: tuple[int, int], cols: tuple[int, int], image_hw: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """1 on the pixels of rows x cols whose centres lie in `box` (the rule of `box_fill_rle`), else 0."""
    box_rows = _pixel_span(box[1], box[3], image_hw[0])
    box_cols = _pixel_span(box[0], box[2], image_hw[1])
    region = torch.zeros(rows[1] - rows[0], cols[1] - cols[0], device=device)
    r0, r1 = max(box_rows[0], rows[0]) - rows[0], min(box_rows[1], rows[1]) - rows[0]
    c0, c1 = max(box_cols[0], cols[0]) - cols[0], min(box_cols[1], cols[1]) - cols[0]
    if r1 > r0 and c1 > c0:
        region[r0:r1, c0:c1] = 1.0
    return region


def paste_masks(
    crop_probs: torch.Tensor | np.ndarray,
    box_masks: torch.Tensor | np.ndarray,
    crop_boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    image_hw: tuple[int, int],
    thresholds: float | Sequence[float] | np.ndarray,
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]] | None = None,
) -> list[dict[str, Any]]:
    """Paste crop-relative mask probabilities into one image and encode them.

    crop_probs: N x h x w sigmoid probabilities at the network's output resolution.
    box_masks: N x h' x w' (any size, e.g. the crop size) with 1 inside the box, 0 outside.
    crop_boxes: N x 4 expanded crop regions, xyxy in image pixels; they may extend past the image.
    thresholds: one value or one per instance (see `thresholds_for`); a pixel is foreground when prob > thr.
    boxes: the original boxes (N x 4 xyxy, image pixels). When given, the box test is exact in image pixels (the
        same pixel rule as `box_fill_rle`) instead of the resampled box mask, whose coarser grid can let a mask
        spill one image row or column past its box.
    Returns one dict per input box, in order: {"segmentation": RLE (str counts), "area": int, "score": float},
    where score is the mean probability inside the binary mask (0.0 for an empty mask).
    """
    height, width = int(image_hw[0]), int(image_hw[1])
    probs = _as_float_tensor(crop_probs, "crop_probs")
    boxes_in = _as_float_tensor(box_masks, "box_masks").to(probs.device)
    regions = np.asarray(
        crop_boxes.detach().cpu() if isinstance(crop_boxes, torch.Tensor) else crop_boxes, dtype=np.float64
    ).reshape(-1, 4)
    count = probs.shape[0]
    if boxes_in.shape[0] != count or regions.shape[0] != count:
        raise ValueError(
            f"paste_masks needs one box mask and one crop box per crop, got {count} crops, "
            f"{boxes_in.shape[0]} box masks and {regions.shape[0]} crop boxes."
        )
    thres = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    if thres.size not in (1, count):
        raise ValueError(f"paste_masks needs one threshold or one per crop, got {thres.size} for {count} crops.")
    thres = np.broadcast_to(thres, (count,))
    exact_boxes = None
    if boxes is not None:
        exact_boxes = np.asarray(
            boxes.detach().cpu() if isinstance(boxes, torch.Tensor) else boxes, dtype=np.float64
        ).reshape(-1, 4)
        if exact_boxes.shape[0] != count:
            raise ValueError(f"paste_masks got {exact_boxes.shape[0]} boxes for {count} crops.")

    results: list[dict[str, Any]] = []
    block = max(1, min(count, _ENCODE_BLOCK_BYTES // max(height * width, 1)))
    for start in range(0, count, block):
        stop = min(start + block, count)
        canvas = np.zeros((height, width, stop - start), dtype=np.uint8, order="F")
        scores = np.zeros(stop - start, dtype=np.float64)
        for slot, index in enumerate(range(start, stop)):
            x0, y0, x1, y1 = regions[index].tolist()
            rows = _pixel_span(y0, y1, height)
            cols = _pixel_span(x0, x1, width)
            if rows[1] <= rows[0] or cols[1] <= cols[0]:
                continue  # the expanded box lies outside the image: an empty mask, still reported
            prob = _sample_region(probs[index], (x0, y0, x1, y1), rows, cols, mode="bilinear")
            if exact_boxes is None:
                inside = _sample_region(boxes_in[index], (x0, y0, x1, y1), rows, cols, mode="nearest")
            else:
                inside = _box_region(exact_boxes[index], rows, cols, (height, width), prob.device)
            prob = prob * inside
            binary = prob > float(thres[index])
            if bool(binary.any()):
                scores[slot] = float(prob[binary].mean())
            canvas[rows[0] : rows[1], cols[0] : cols[1], slot] = binary.to(torch.uint8).cpu().numpy()
        rles = encode_masks(canvas)
        areas = rle_area(rles)
        for slot, rle in enumerate(rles):
            results.append({"segmentation": rle, "area": int(areas[slot]), "score": float(scores[slot])})
    return results


def box_fill_rle(
    boxes_xyxy: torch.Tensor | np.ndarray | Sequence[Sequence[float]], image_hw: tuple[int, int]
) -> list[RLE]:
    """The baseline mask: each box filled, with the same pixel rule as `paste_masks`, as compressed RLE."""
    height, width = int(image_hw[0]), int(image_hw[1])
    boxes = np.asarray(
        boxes_xyxy.detach().cpu() if isinstance(boxes_xyxy, torch.Tensor) else boxes_xyxy, dtype=np.float64
    ).reshape(-1, 4)
    rles: list[RLE] = []
    block = max(1, min(len(boxes), _ENCODE_BLOCK_BYTES // max(height * width, 1)))
    for start in range(0, len(boxes), block):
        chunk = boxes[start : start + block]
        canvas = np.zeros((height, width, len(chunk)), dtype=np.uint8, order="F")
        for slot, (x0, y0, x1, y1) in enumerate(chunk.tolist()):
            rows = _pixel_span(y0, y1, height)
            cols = _pixel_span(x0, x1, width)
            canvas[rows[0] : rows[1], cols[0] : cols[1], slot] = 1
        rles.extend(encode_masks(canvas))
    return rles
