"""The review page's screenshots for docs/REVIEW.md, taken in headless Chromium during a review.

They go to the folder named by MAL_DOCS_SCREENSHOTS (default: a temporary folder), as review_*.png quantized to
a small palette so each stays small enough to commit. On nuclei of the shared dsb2018_dev set where it exists
(its ground truth, with masks grown, shrunk, moved or filled to their box as the labels to review), else on
synthetic rectangles.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mal.gallery.command import gallery_main
from mal.masks import decode_rle, encode_masks
from support.datasets import SHARED_DATA
from support.gallery import many_labels
from support.gallery_browser import card_indices, chromium, open_page

DSB = SHARED_DATA / "dsb2018_dev"
MAX_BYTES = 150_000


def _nuclei_to_review(folder: Path, num_images: int = 6) -> tuple[Path, Path, Path]:
    """(labels, images folder, ground truth): a few dsb2018_dev images, each nucleus mask degraded as a weak
    labeller would, with a score that only loosely follows how good it is."""
    truth = json.loads((DSB / "annotations.json").read_text())
    rng = np.random.default_rng(3)
    images = truth["images"][:: max(len(truth["images"]) // num_images, 1)][:num_images]
    chosen = {image["id"] for image in images}
    kernel = np.ones((3, 3), np.uint8)
    annotations = []
    for ann in truth["annotations"]:
        if ann["image_id"] not in chosen:
            continue
        mask = decode_rle(ann["segmentation"])
        damage = rng.choice(["none", "grow", "shrink", "move", "box"], p=[0.45, 0.2, 0.15, 0.1, 0.1])
        if damage == "grow":
            mask = cv2.dilate(mask, kernel, iterations=int(rng.integers(1, 4)))
        elif damage == "shrink":
            mask = cv2.erode(mask, kernel)
        elif damage == "move":
            dy, dx = (int(v) for v in rng.integers(-4, 5, 2))
            mask = cv2.warpAffine(mask, np.float32([[1, 0, dx], [0, 1, dy]]), mask.shape[::-1])
        elif damage == "box":
            x, y, w, h = (int(v) for v in ann["bbox"])
            mask = np.zeros_like(mask)
            mask[y : y + h, x : x + w] = 1
        score = float(np.clip((0.9 if damage == "none" else 0.6) + rng.normal(0, 0.15), 0, 1))
        annotations.append({**ann, "segmentation": encode_masks(mask)[0], "score": round(score, 3)})
    labels = {**truth, "images": images, "annotations": annotations}
    path = folder / "labels.json"
    path.write_text(json.dumps(labels))
    return path, DSB / "images", DSB / "annotations.json"


def _save_small(png: bytes, path: Path) -> None:
    image = Image.open(io.BytesIO(png)).convert("RGB").quantize(colors=96, method=Image.Quantize.MEDIANCUT)
    image.save(path, optimize=True)


@pytest.mark.slow
def test_review_screenshots(tmp_path):
    folder = Path(os.environ.get("MAL_DOCS_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    if (DSB / "annotations.json").exists():
        labels, images, truth = _nuclei_to_review(tmp_path)
        index = gallery_main(labels, images, tmp_path / "gallery", gt_path=truth)
    else:
        synthetic = many_labels(tmp_path, num_images=2, per_image=60, quality=False)
        index = gallery_main(synthetic.labels_path, tmp_path / "images", tmp_path / "gallery")
    with chromium() as browser:
        page = open_page(browser, index, "sort=iou", viewport={"width": 1240, "height": 780})
        for key in ("r", "r", "a", "j", "r", "a", "a"):
            page.keyboard.press(key)
        assert len(card_indices(page)) > 8
        _save_small(page.screenshot(), folder / "review_grid.png")
        # Confident and wrong: the highest scores first among masks that miss the ground truth.
        page.select_option("#sort", "score")
        page.click("#direction")
        page.fill("#iou-max", "0.7")
        page.dispatch_event("#iou-max", "change")
        assert "iou=-0.7" in page.url and "dir=desc" in page.url
        page.keyboard.press("Escape")
        page.keyboard.press("r")
        _save_small(page.screenshot(), folder / "review_filtered.png")
    for name in ("review_grid.png", "review_filtered.png"):
        path = folder / name
        assert path.stat().st_size < MAX_BYTES, f"{path} is {path.stat().st_size} bytes"
        assert np.asarray(Image.open(path).convert("L")).std() > 10  # not a blank page
