"""The gallery's card pictures: masks read from RLE inside a window, the window around the object, the drawing."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mal.errors import DataError
from mal.gallery.crop_jobs import POOL_MIN_CARDS, ImageJob, render_all
from mal.gallery.crops import FILL_ALPHA, LABEL_BGR, MIN_SIDE, TRUTH_BGR, CropItem, render_card, square_window
from mal.gallery.rle_window import decode_masks
from mal.masks import encode_masks
from mal.metrics import instance_ious


def _random_masks(rng: np.random.Generator, height: int, width: int) -> list[np.ndarray]:
    masks = [np.zeros((height, width), np.uint8), np.ones((height, width), np.uint8)]
    one = np.zeros((height, width), np.uint8)
    one[height - 1, width - 1] = 1
    masks.append(one)
    # Touching the top and bottom rows: runs that go on from one column into the next.
    wrap = np.zeros((height, width), np.uint8)
    wrap[height // 2 :, 2] = 1
    wrap[:, 3] = 1
    wrap[: height // 3, 4] = 1
    masks.append(wrap)
    for _ in range(12):
        blob = (rng.random((height // 4 + 1, width // 4 + 1)) > 0.6).astype(np.uint8)
        masks.append(np.kron(blob, np.ones((4, 4), np.uint8))[:height, :width].copy())
    return masks


@pytest.mark.parametrize(("height", "width"), [(37, 53), (64, 20), (1, 9)])
def test_masks_read_from_rle_match_pycocotools(height, width):
    masks = _random_masks(np.random.default_rng(height), height, width)
    strings = [rle["counts"] for rle in encode_masks(np.stack(masks, axis=-1))]
    decoded = decode_masks(strings, height)
    for number, mask in enumerate(masks):
        assert decoded.areas[number] == mask.sum()
        rows, cols = np.nonzero(mask)
        if not len(rows):
            assert decoded.extent(number) is None
            continue
        x0, y0, x1, y1 = decoded.extent(number)
        assert (x0, y0, x1, y1) == (cols.min(), rows.min(), cols.max() + 1, rows.max() + 1)
        # A window reaching outside the image on every side; what lies outside is background.
        side = max(x1 - x0, y1 - y0) + 6
        padded = np.zeros((height + 2 * side, width + 2 * side), np.uint8)
        padded[side : side + height, side : side + width] = mask
        left, top = x0 - 3, y0 - 3
        window = decoded.window(number, left, top, side)
        assert np.array_equal(window, padded[top + side : top + 2 * side, left + side : left + 2 * side])


def test_an_empty_string_is_an_empty_mask_among_others():
    mask = np.zeros((10, 10), np.uint8)
    mask[2:5, 3:4] = 1
    decoded = decode_masks(["", encode_masks(mask)[0]["counts"], ""], 10)
    assert decoded.extent(0) is None and decoded.extent(2) is None
    assert decoded.extent(1) == (3, 2, 4, 5) and list(decoded.areas) == [0, 3, 0]


def test_the_window_keeps_context_inside_the_image():
    # A 10-pixel object: at least MIN_SIDE pixels around it, moved inside the image at a corner.
    assert square_window((0, 0, 10, 10), 256, 256) == (0, 0, MIN_SIDE)
    left, top, side = square_window((100, 100, 110, 104), 256, 256)
    assert side == MIN_SIDE and left <= 100 and left + side >= 110 and top <= 100 and top + side >= 104
    # A big object: a quarter of its size on each side.
    assert square_window((40, 40, 140, 100), 256, 256)[2] == 150
    # Larger than the image: centred on it, padded.
    left, top, side = square_window((0, 0, 200, 50), 60, 200)
    assert side == 300 and left == -50 and top == -120


def _card(truth: np.ndarray | None):
    image = np.full((200, 200, 3), 100, np.uint8)
    mask = np.zeros((200, 200), np.uint8)
    mask[95:105, 95:105] = 1
    strings = [encode_masks(mask)[0]["counts"]]
    truths = [encode_masks(truth)[0]["counts"]] if truth is not None else [""]
    item = CropItem(0, strings[0], (95, 95, 10, 10), truths[0] if truth is not None else None)
    return render_card(image, item, decode_masks(strings, 200), decode_masks(truths, 200), 0, 160), mask


def test_a_small_object_is_upscaled_filled_and_outlined():
    (card, iou), _ = _card(None)
    assert card.shape == (160, 160, 3) and iou is None
    # The window is 32 px for a 10-px object: 5x, the mask covers the middle 50 x 50 pixels of the card.
    tinted = np.round(100 * (1 - FILL_ALPHA) + np.array(LABEL_BGR) * FILL_ALPHA)
    assert np.abs(card[80, 80].astype(int) - tinted).max() <= 2
    assert np.abs(card[10, 10].astype(int) - 100).max() <= 2  # context, untouched
    outline = np.all(card == LABEL_BGR, axis=-1)
    assert outline[56:104, 55:58].any() and not outline[70:90, 70:90].any()  # on the edge, not inside
    assert not np.any(np.all(np.abs(card.astype(int) - TRUTH_BGR) < 40, axis=-1))


def test_the_ground_truth_is_outlined_and_the_iou_measured():
    truth = np.zeros((200, 200), np.uint8)
    truth[98:108, 95:105] = 1
    (card, iou), mask = _card(truth)
    expected = instance_ious(encode_masks(mask), encode_masks(truth))[0]
    assert iou == pytest.approx(expected)
    cyan = np.all(np.abs(card.astype(int) - TRUTH_BGR) < 60, axis=-1)
    assert cyan.sum() > 50 and cyan[100:110].any()  # drawn below the label, where the truth reaches


def test_no_mask_shows_the_box_and_counts_iou_like_the_metrics():
    image = np.full((50, 50, 3), 100, np.uint8)
    item = CropItem(0, None, (10, 10, 20, 20), "")
    empty = decode_masks([""], 50)
    card, iou = render_card(image, item, empty, empty, 0, 64)
    assert iou == 1.0  # both empty: agreement, as instance_ious says
    assert np.all(card == LABEL_BGR, axis=-1).any()  # the box


def _jobs(folder, names: list[str]) -> list[ImageJob]:
    """Enough cards on each image for the process pool, each with a mask of its own."""
    per_image = POOL_MIN_CARDS // len(names) + 1
    jobs, index, sheet = [], 0, 0
    (folder / "cards" / "0").mkdir(parents=True)
    for image_id, name in enumerate(names):
        if not (folder / name).exists():
            Image.fromarray(np.random.default_rng(image_id).integers(0, 255, (40, 40, 3), np.uint8)).save(folder / name)
        sheets = []
        for _ in range(per_image // 8 + 1):
            items = []
            for _ in range(8):
                mask = np.zeros((40, 40), np.uint8)
                mask[index % 30 : index % 30 + 5, 3:9] = 1
                items.append(CropItem(index, encode_masks(mask)[0]["counts"], None))
                index += 1
            sheets.append((sheet, tuple(items)))
            sheet += 1
        jobs.append(ImageJob(str(folder / name), image_id, "labels.json", str(folder / "cards"), 16, tuple(sheets)))
    return jobs


@pytest.mark.slow  # a pool of processes
def test_the_process_pool_draws_what_one_process_draws_and_reports_a_broken_image(tmp_path):
    one, pool = tmp_path / "one", tmp_path / "pool"
    one.mkdir()
    pool.mkdir()
    facts = render_all(_jobs(one, ["a.png", "b.png"]), workers=1)
    assert render_all(_jobs(pool, ["a.png", "b.png"]), workers=2) == facts
    assert len(facts) > POOL_MIN_CARDS and all(fact.area == 30 for fact in facts.values())
    for card in (one / "cards" / "0").iterdir():
        assert card.read_bytes() == (pool / "cards" / "0" / card.name).read_bytes()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "b.png").write_bytes((one / "b.png").read_bytes()[:100])  # the header reads, the pixels do not
    with pytest.raises(DataError, match="b.png"):
        render_all(_jobs(broken, ["a.png", "b.png"]), workers=2)
