"""The review gallery, checked in a real headless Chromium (Debian package `chromium`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mal.errors import DataError
from mal.gallery.command import gallery_main
from mal.gallery.write import write_gallery
from mal.masks import encode_masks

COCO128 = Path("/work/shared/data/coco128_dev")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def run_chromium(page: Path, fragment: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """Load the page headless; --enable-logging=stderr prints every console message as a CONSOLE line."""
    browser = find_chromium()
    if browser is None:
        pytest.skip("chromium not found on PATH; install it with `apt-get install -y chromium` to test the page")
    command = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={profile}",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=4000",
        *extra,
        f"{page.resolve().as_uri()}#{fragment}",
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=90, check=True)


def card_ids(dom: str) -> list[int]:
    return [int(found) for found in re.findall(r'class="instance-card" data-ann-id="(\d+)"', dom)]


@pytest.fixture()
def labelled_images(tmp_path: Path):
    """Three synthetic images with rectangle and disc masks, scores and IoUs; ann 5 has the worst IoU."""
    rng = np.random.default_rng(0)
    images, annotations, paths = [], [], {}
    ann_id = 1
    for image_id, (height, width) in enumerate([(120, 160), (90, 90), (200, 100)], start=1):
        path = tmp_path / "images" / f"img_{image_id}.png"
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path)
        paths[image_id] = path
        images.append({"id": image_id, "file_name": path.name, "height": height, "width": width})
        rows, cols = np.mgrid[0:height, 0:width]
        shapes = [
            ((rows >= 10) & (rows < 40) & (cols >= 5) & (cols < 50), [5, 10, 45, 30]),
            ((cols - 60) ** 2 + (rows - 60) ** 2 < 20**2, [40, 40, 40, 40]),
        ]
        for mask, bbox in shapes:
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": image_id,
                    "category_id": 1 + ann_id % 2,
                    "bbox": bbox,
                    "segmentation": encode_masks(mask.astype(np.uint8))[0],
                    "area": int(mask.sum()),
                    "score": round(0.2 + 0.1 * ann_id, 2) if ann_id != 4 else 0.05,
                }
            )
            ann_id += 1
    labels = {
        "images": images,
        "annotations": annotations,
        "categories": [{"id": 1, "name": "<b>box</b>"}, {"id": 2, "name": "disc"}],
    }
    ious = {a["id"]: 0.9 - 0.05 * a["id"] for a in annotations}
    ious[5] = 0.1
    return labels, paths, ious


def test_gallery_renders_in_chromium_and_sorts_doubtful_instances_first(tmp_path, labelled_images):
    labels, paths, ious = labelled_images
    page = write_gallery(labels, paths, tmp_path / "gallery", ious=ious, thumb_size=64)
    assert page == tmp_path / "gallery" / "index.html"
    html = page.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained: no CDN, no remote asset
    thumbs = sorted((tmp_path / "gallery" / "thumbs").glob("*.jpg"))
    assert len(thumbs) == 3 and all(max(Image.open(t).size) <= 64 for t in thumbs)

    profile = tmp_path / "chromium-profile"
    by_iou = run_chromium(page, "sort=iou", profile, "--dump-dom")
    assert "CONSOLE" not in by_iou.stderr, by_iou.stderr
    assert re.search(r'<div id="errors"></div>', by_iou.stdout), "the page reported a script error"
    ids = card_ids(by_iou.stdout)
    assert sorted(ids) == [a["id"] for a in labels["annotations"]]
    assert ids[0] == 5  # worst IoU first
    assert [ious[i] for i in ids] == sorted(ious.values())
    assert "&lt;b&gt;box&lt;/b&gt;" in by_iou.stdout  # category names are shown as text, never as markup

    by_score = run_chromium(page, "sort=score", profile, "--dump-dom")
    assert card_ids(by_score.stdout)[0] == 4  # smallest score first
    by_image = card_ids(run_chromium(page, "sort=image", profile, "--dump-dom").stdout)
    assert by_image[:2] == [1, 2] and by_image[-2:] == [5, 6]

    shot = tmp_path / "shot.png"
    run_chromium(page, "sort=iou", profile, f"--screenshot={shot}", "--window-size=1000,700", "--hide-scrollbars")
    with Image.open(shot) as image:
        assert image.format == "PNG" and image.size == (1000, 700)
        assert np.asarray(image.convert("L")).std() > 5  # not a blank page


def test_max_images_keeps_the_most_doubtful_images(tmp_path, labelled_images):
    labels, paths, ious = labelled_images
    page = write_gallery(labels, lambda image_id: paths[image_id], tmp_path / "out", ious=ious, max_images=1)
    data = json.loads(re.search(r'id="gallery-data">(.*?)</script>', page.read_text(), re.S).group(1))
    assert {entry["image_id"] for entry in data["entries"]} == {3}  # image 3 holds ann 5, the worst IoU
    assert len(list((tmp_path / "out" / "thumbs").glob("*.jpg"))) == 1


def test_missing_image_is_a_data_error_naming_the_file(tmp_path, labelled_images):
    labels, paths, _ = labelled_images
    paths[2] = tmp_path / "nowhere.png"
    with pytest.raises(DataError, match="nowhere.png"):
        write_gallery(labels, paths, tmp_path / "out")
    with pytest.raises(DataError, match="does not exist"):
        gallery_main(tmp_path / "missing.json", tmp_path, tmp_path / "out")


def test_gallery_main_on_coco128_with_ground_truth_ious(tmp_path):
    if not (COCO128 / "annotations.json").exists():
        pytest.skip(f"{COCO128} is absent; the shared dev data set is needed for this test")
    labels_path = COCO128 / "annotations.json"
    page = gallery_main(labels_path, COCO128 / "images", tmp_path / "gallery", gt_path=labels_path, max_images=2)
    data = json.loads(re.search(r'id="gallery-data">(.*?)</script>', page.read_text(), re.S).group(1))
    assert data["num_images"] == 2 and data["entries"]
    # The ground truth against itself: every polygon instance has IoU 1.
    assert all(entry["iou"] == pytest.approx(1.0) for entry in data["entries"] if entry["has_mask"])
