"""`mal.box_likeness`: the IoU of each mask with its own filled box, the share of box-like masks and the warning."""

from __future__ import annotations

import io

import numpy as np
import pytest

from mal.box_likeness import BOX_LIKE_IOU, WARN_SHARE, BoxLikeness, box_ious, box_pixel_rects, measure, warn_if_box_like
from mal.masks import box_fill_rle, decode_rle, encode_masks


def _brute_force_iou(mask: np.ndarray, box: np.ndarray) -> float:
    filled = decode_rle(box_fill_rle(box[None], mask.shape)[0]).astype(bool)
    if not filled.any():
        return float("nan")
    mask = mask.astype(bool)
    return float((mask & filled).sum() / (mask | filled).sum())


def _clipped(box: np.ndarray, height: int, width: int) -> np.ndarray:
    """Clipped to the image, as `CocoBoxes.boxes_xyxy` holds every box (a box wholly outside is refused earlier)."""
    return np.clip(box, 0, [width, height, width, height])


def _circle(height: int, width: int, box: np.ndarray) -> np.ndarray:
    """The disc inscribed in `box` (IoU with the box ~ pi/4)."""
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    radius = min(box[2] - box[0], box[3] - box[1]) / 2
    return ((xs - cx) ** 2 + (ys - cy) ** 2 <= radius**2).astype(np.uint8)


def test_box_ious_match_a_numpy_computation_on_decoded_masks():
    rng = np.random.default_rng(0)
    height, width = 37, 53
    masks, boxes = [], []
    for _ in range(200):
        x0, y0 = rng.uniform(-8, width - 1), rng.uniform(-8, height - 1)
        box = _clipped(np.array([x0, y0, x0 + rng.uniform(8.2, 30), y0 + rng.uniform(8.2, 30)]), height, width)
        kind = rng.integers(4)
        if kind == 0:  # random blob anywhere: spills past its box
            mask = (rng.random((height, width)) < 0.2).astype(np.uint8)
        elif kind == 1:  # the filled box itself
            mask = decode_rle(box_fill_rle(box[None], (height, width))[0])
        elif kind == 2:  # an empty mask
            mask = np.zeros((height, width), np.uint8)
        else:  # part of the box
            mask = decode_rle(box_fill_rle(box[None], (height, width))[0]) * (rng.random((height, width)) < 0.7)
        masks.append(mask.astype(np.uint8))
        boxes.append(box)
    rles = encode_masks(np.stack(masks, axis=2))
    ious = box_ious(rles, np.asarray(boxes))
    expected = np.asarray([_brute_force_iou(m, b) for m, b in zip(masks, boxes)])
    np.testing.assert_array_equal(np.isnan(ious), np.isnan(expected))
    np.testing.assert_allclose(ious[~np.isnan(ious)], expected[~np.isnan(expected)], atol=1e-12)


def test_box_pixel_rects_follow_the_box_fill_rule():
    rng = np.random.default_rng(1)
    height, width = 29, 31
    corners = rng.uniform(-5, 28, size=(300, 2))
    boxes = np.concatenate([corners, corners + rng.uniform(5.1, 12, size=(300, 2))], axis=1)
    boxes = np.stack([_clipped(box, height, width) for box in boxes])
    rects = box_pixel_rects(boxes, np.full(300, height), np.full(300, width))
    for box, (r0, r1, c0, c1) in zip(boxes, rects.tolist()):
        filled = decode_rle(box_fill_rle(box[None], (height, width))[0])
        mine = np.zeros((height, width), np.uint8)
        mine[r0:max(r1, r0), c0:max(c1, c0)] = 1
        np.testing.assert_array_equal(mine, filled)


def test_filled_boxes_warn_once_and_circles_do_not():
    height, width = 64, 80
    boxes = np.array([[4.0, 5.0, 30.0, 40.0], [35.5, 10.2, 70.0, 60.0], [10.0, 45.0, 28.0, 62.0]])
    filled = [box_fill_rle(box[None], (height, width))[0] for box in boxes]
    boxy = measure(filled, boxes)
    assert boxy == BoxLikeness(box_like=3, measured=3) and boxy.share == 1.0
    stream = io.StringIO()
    assert warn_if_box_like(boxy, "inference", stream)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mal inference: warning: 3 of 3 masks (100%)")
    for remedy in ("train longer", "cpu-natural", "cpu-nuclei", "train.pretrained_model_path"):
        assert remedy in lines[0]

    circles = encode_masks(np.stack([_circle(height, width, box) for box in boxes], axis=2))
    ious = box_ious(circles, boxes)
    assert (ious < BOX_LIKE_IOU).all() and (ious > 0.5).all()
    round_masks = measure(circles, boxes)
    assert round_masks.share == 0.0 and round_masks.warning("evaluate") is None
    stream = io.StringIO()
    assert not warn_if_box_like(round_masks, "evaluate", stream) and stream.getvalue() == ""


def test_threshold_boundaries_and_nothing_measured():
    assert BoxLikeness(box_like=5, measured=10).warning("train") is None  # exactly WARN_SHARE: no warning
    assert WARN_SHARE == 0.5 and BoxLikeness(box_like=6, measured=10).warning("train") is not None
    nothing = measure([], np.zeros((0, 4)))
    assert nothing.share is None and nothing.warning("evaluate") is None
    # A box wholly outside its image covers no pixel: left out of the share, not counted as box-like.
    outside = measure(encode_masks(np.zeros((10, 10), np.uint8)), np.array([[20.0, 20.0, 30.0, 30.0]]))
    assert outside == BoxLikeness(box_like=0, measured=0)


@pytest.mark.parametrize("iou_above", [True, False])
def test_a_mask_just_inside_or_outside_the_iou_bound(iou_above):
    """A 20 x 20 box with k pixels dropped has IoU (400 - k) / 400: 19 dropped is > 0.95, 21 is not."""
    mask = np.zeros((30, 30), np.uint8)
    mask[5:25, 5:25] = 1
    mask.reshape(-1)[np.flatnonzero(mask)[: 19 if iou_above else 21]] = 0
    result = measure(encode_masks(mask), np.array([[5.0, 5.0, 25.0, 25.0]]))
    assert result.box_like == int(iou_above)
