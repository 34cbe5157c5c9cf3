"""Paste-back of crop masks into the image, thresholds per size bucket, and the RLE helpers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mal.masks import (
    box_fill_rle,
    decode_rle,
    encode_masks,
    paste_masks,
    rle_area,
    segmentation_to_rle,
    size_bucket,
    thresholds_for,
)


def expand(box: tuple[float, float, float, float], factor: float = 1.3) -> np.ndarray:
    x0, y0, x1, y1 = box
    cx, cy, half_w, half_h = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * factor / 2, (y1 - y0) * factor / 2
    return np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])


def crop_box_mask(box, crop, size: int) -> np.ndarray:
    """The box drawn into an S x S crop grid: crop pixels whose centres fall inside the box."""
    centres = (np.arange(size) + 0.5) / size
    xs = crop[0] + centres * (crop[2] - crop[0])
    ys = crop[1] + centres * (crop[3] - crop[1])
    inside_x = (xs >= box[0]) & (xs <= box[2])
    inside_y = (ys >= box[1]) & (ys <= box[3])
    return (inside_y[:, None] & inside_x[None, :]).astype(np.float32)


def test_box_mask_pasted_as_prediction_gives_the_box_within_a_pixel():
    box = (12.0, 20.0, 52.0, 70.0)
    crop = expand(box)
    mask = crop_box_mask(box, crop, 64)[None]
    [result] = paste_masks(mask, mask, crop[None], (90, 80), 0.5)
    pasted = decode_rle(result["segmentation"])
    assert pasted.shape == (90, 80)
    rows, cols = np.nonzero(pasted)
    assert abs(cols.min() - 12) <= 1 and abs(cols.max() + 1 - 52) <= 1
    assert abs(rows.min() - 20) <= 1 and abs(rows.max() + 1 - 70) <= 1
    # Only the one-pixel rim may differ from the filled box.
    assert pasted[21:69, 13:51].all()
    assert pasted.sum() == pasted[19:71, 11:53].sum()
    assert result["area"] == int(pasted.sum())
    assert result["score"] == pytest.approx(1.0)


def test_mask_partly_outside_the_image_is_clipped_at_the_border():
    crop = np.array([[-20.0, -10.0, 30.0, 40.0]])
    ones = np.ones((1, 16, 16), dtype=np.float32)
    [result] = paste_masks(ones, ones, crop, (50, 60), 0.5)
    pasted = decode_rle(result["segmentation"])
    assert pasted.shape == (50, 60)
    expected = np.zeros((50, 60), dtype=np.uint8)
    expected[0:40, 0:30] = 1  # pixel centres inside [-20, 30] x [-10, 40], clipped to the image
    np.testing.assert_array_equal(pasted, expected)
    assert result["area"] == 40 * 30


def test_masks_stay_inside_their_expanded_boxes_and_box_masks_may_have_another_size():
    torch.manual_seed(0)
    boxes = [(5.0, 5.0, 25.0, 45.0), (30.0, 2.0, 70.0, 20.0), (40.0, 30.0, 60.0, 58.0)]
    crops = np.stack([expand(b) for b in boxes])
    probs = torch.rand(3, 8, 8)  # network resolution
    box_masks = torch.from_numpy(np.stack([crop_box_mask(b, c, 32) for b, c in zip(boxes, crops)]))  # crop size
    results = paste_masks(probs, box_masks, torch.from_numpy(crops), (60, 80), [0.2, 0.3, 0.4])
    for (x0, y0, x1, y1), box, result in zip(crops, boxes, results):
        rows, cols = np.nonzero(decode_rle(result["segmentation"]))
        assert rows.size > 0
        assert (cols + 0.5 >= x0).all() and (cols + 0.5 <= x1).all()
        assert (rows + 0.5 >= y0).all() and (rows + 0.5 <= y1).all()
        # The box mask zeroes everything outside the box itself (nearest sampling: within a pixel).
        assert (cols >= box[0] - 1).all() and (cols <= box[2]).all()
        assert (rows >= box[1] - 1).all() and (rows <= box[3]).all()


def test_tiny_edge_outside_and_empty_boxes_all_get_a_result():
    height, width = 40, 50
    crops = np.array(
        [
            [10.0, 10.0, 11.0, 11.0],  # one pixel
            [10.2, 10.2, 10.4, 10.4],  # smaller than a pixel
            [width - 1.0, height - 1.0, width + 5.0, height + 5.0],  # corner, mostly outside
            [-30.0, -30.0, -5.0, -5.0],  # wholly outside
            [5.0, 5.0, 20.0, 20.0],  # empty prediction
        ]
    )
    probs = np.ones((5, 4, 4), dtype=np.float32)
    probs[4] = 0.0
    results = paste_masks(probs, np.ones((5, 4, 4), dtype=np.float32), crops, (height, width), 0.5)
    assert len(results) == 5
    areas = [r["area"] for r in results]
    assert areas == [1, 1, 1, 0, 0]
    assert decode_rle(results[0]["segmentation"])[10, 10] == 1
    assert decode_rle(results[1]["segmentation"])[10, 10] == 1
    assert decode_rle(results[2]["segmentation"])[height - 1, width - 1] == 1
    for empty in results[3:]:
        assert empty["score"] == 0.0
        assert decode_rle(empty["segmentation"]).shape == (height, width)
    json.dumps(results)  # JSON ready: str counts, plain ints and floats


def test_score_is_the_mean_probability_inside_the_mask_and_thresholds_are_per_instance():
    probs = np.full((2, 8, 8), 0.3, dtype=np.float32)
    crops = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    results = paste_masks(probs, np.ones_like(probs), crops, (12, 12), np.array([0.2, 0.4]))
    assert results[0]["area"] == 100 and results[0]["score"] == pytest.approx(0.3, abs=1e-6)
    assert results[1]["area"] == 0 and results[1]["score"] == 0.0


def test_paste_masks_rejects_mismatched_inputs_and_accepts_no_boxes():
    with pytest.raises(ValueError, match="one box mask and one crop box per crop"):
        paste_masks(np.ones((2, 4, 4)), np.ones((1, 4, 4)), np.zeros((2, 4)), (8, 8), 0.5)
    with pytest.raises(ValueError, match="one threshold or one per crop"):
        paste_masks(np.ones((2, 4, 4)), np.ones((2, 4, 4)), np.zeros((2, 4)), (8, 8), [0.1, 0.2, 0.3])
    assert paste_masks(np.zeros((0, 4, 4)), np.zeros((0, 4, 4)), np.zeros((0, 4)), (8, 8), 0.5) == []


@settings(max_examples=60, deadline=None)
@given(
    height=st.integers(1, 48),
    width=st.integers(1, 48),
    x0=st.floats(-40, 60),
    y0=st.floats(-40, 60),
    box_w=st.floats(0.05, 80),
    box_h=st.floats(0.05, 80),
    threshold=st.floats(0.0, 0.95),
    seed=st.integers(0, 2**16),
)
def test_paste_masks_property_masks_stay_inside_image_and_box(height, width, x0, y0, box_w, box_h, threshold, seed):
    generator = torch.Generator().manual_seed(seed)
    probs = torch.rand(1, 6, 6, generator=generator)
    crop = np.array([[x0, y0, x0 + box_w, y0 + box_h]])
    [result] = paste_masks(probs, torch.ones(1, 6, 6), crop, (height, width), threshold)
    pasted = decode_rle(result["segmentation"])
    assert pasted.shape == (height, width)
    assert result["area"] == int(pasted.sum())
    assert 0.0 <= result["score"] <= 1.0
    rows, cols = np.nonzero(pasted)
    if rows.size:
        # Pixel centres inside the box, or the single pixel holding the centre of a sub-pixel box:
        # either way the pixel [c, c + 1) overlaps the box.
        assert (cols + 1 > x0).all() and (cols <= x0 + box_w).all()
        assert (rows + 1 > y0).all() and (rows <= y0 + box_h).all()
    if x0 + box_w <= 0 or y0 + box_h <= 0 or x0 >= width or y0 >= height:
        assert result["area"] == 0


def test_size_bucket_and_thresholds_use_half_open_coco_intervals():
    areas = [0, 1023, 1024, 32**2 + 0.5, 9215, 9216, 1e6]
    np.testing.assert_array_equal(size_bucket(areas), [0, 0, 1, 1, 1, 2, 2])
    np.testing.assert_allclose(thresholds_for(areas, [0.1, 0.2, 0.3]), [0.1, 0.1, 0.2, 0.2, 0.2, 0.3, 0.3])
    np.testing.assert_allclose(thresholds_for(areas, 0.25), [0.25] * 7)
    np.testing.assert_allclose(thresholds_for(areas, np.float32(0.5)), [0.5] * 7)
    with pytest.raises(ValueError, match=r"train\.mask_thres"):
        thresholds_for(areas, [0.1, 0.2])


def test_rle_round_trip_and_area():
    rng = np.random.default_rng(0)
    masks = (rng.random((17, 23, 3)) > 0.6).astype(np.uint8)
    rles = encode_masks(masks)
    assert all(isinstance(r["counts"], str) and r["size"] == [17, 23] for r in rles)
    np.testing.assert_array_equal(decode_rle(rles), masks)
    np.testing.assert_array_equal(decode_rle(rles[1]), masks[:, :, 1])
    np.testing.assert_array_equal(rle_area(rles), masks.sum(axis=(0, 1)))
    assert rle_area(rles[2]) == int(masks[:, :, 2].sum())
    # JSON round trip keeps it usable.
    assert rle_area(json.loads(json.dumps(rles[0]))) == int(masks[:, :, 0].sum())


def test_segmentation_to_rle_reads_polygons_and_uncompressed_rle():
    square = segmentation_to_rle([[2, 2, 12, 2, 12, 12, 2, 12]], (20, 20))
    assert 90 <= rle_area(square) <= 121
    uncompressed = {"size": [4, 3], "counts": [1, 2, 9]}  # column-major: 1 off, 2 on, 9 off
    decoded = decode_rle(segmentation_to_rle(uncompressed, (4, 3)))
    assert decoded.sum() == 2 and decoded[1, 0] == 1 and decoded[2, 0] == 1
    assert rle_area(segmentation_to_rle([[1, 1, 2, 2]], (5, 5))) == 0  # degenerate polygon


def test_box_fill_follows_the_pixel_centre_rule():
    rles = box_fill_rle(np.array([[2.0, 3.0, 7.0, 9.0], [-5.0, -5.0, 2.0, 2.0], [4.2, 4.2, 4.4, 4.4]]), (10, 10))
    filled = decode_rle(rles)
    np.testing.assert_array_equal(np.nonzero(filled[:, :, 0].any(axis=0))[0], np.arange(2, 7))
    np.testing.assert_array_equal(np.nonzero(filled[:, :, 0].any(axis=1))[0], np.arange(3, 9))
    assert filled[:, :, 0].sum() == 30
    assert filled[:, :, 1].sum() == 4  # clipped to the image
    assert filled[:, :, 2].sum() == 1  # a sub-pixel box keeps one pixel


def test_exact_boxes_keep_masks_inside_the_box_pixels():
    # A box whose edges fall between the crop's coarse grid cells: the resampled box mask alone can spill over.
    box = np.array([[29.0, 52.0, 99.0, 123.0]])
    crop_box = np.array([[8.0, 30.0, 120.0, 145.0]])
    probs = torch.ones(1, 16, 16)
    size = 64
    masks = torch.zeros(1, size, size)
    scale_x, scale_y = size / (crop_box[0, 2] - crop_box[0, 0]), size / (crop_box[0, 3] - crop_box[0, 1])
    masks[0, int((box[0, 1] - crop_box[0, 1]) * scale_y) : int(np.ceil((box[0, 3] - crop_box[0, 1]) * scale_y)),
          int((box[0, 0] - crop_box[0, 0]) * scale_x) : int(np.ceil((box[0, 2] - crop_box[0, 0]) * scale_x))] = 1
    exact = paste_masks(probs, masks, crop_box, (160, 160), 0.5, boxes=box)[0]
    filled = box_fill_rle(box, (160, 160))[0]
    assert decode_rle(exact["segmentation"]).tolist() == decode_rle(filled).tolist()
