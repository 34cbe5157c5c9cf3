"""The review gallery's files and checks, and its page on a few masks in a real headless Chromium.

The review itself on 20,000 masks (paging, filters, keyboard, export) is tests/outputs/test_gallery_review.py.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mal.errors import DataError
from mal.gallery.command import gallery_main
from mal.gallery.write import write_gallery
from mal.masks import encode_masks
from support.datasets import SHARED_DATA
from support.gallery import read_page_data
from support.gallery_browser import card_indices, chromium, open_page

COCO128 = SHARED_DATA / "coco128_dev"


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
        "categories": [{"id": 1, "name": "<b>box</b>"}, {"id": 2, "name": "disc</script><script>x()"}],
    }
    ious = {a["id"]: 0.9 - 0.05 * a["id"] for a in annotations}
    ious[5] = 0.1
    return labels, paths, ious


def test_gallery_is_a_static_folder_of_three_files(tmp_path, labelled_images):
    labels, paths, ious = labelled_images
    out = tmp_path / "gallery"
    page = write_gallery(labels, paths, out, ious=ious)
    assert page == out / "index.html"
    assert sorted(p.name for p in out.iterdir()) == ["data.js", "index.html", "thumbs"]
    for name in ("index.html", "data.js"):
        text = (out / name).read_text()
        assert "http://" not in text and "https://" not in text  # nothing from the network
    assert '<script src="data.js"></script>' in page.read_text() and page.stat().st_size < 60_000
    # Label text cannot end a script: every "<" of the data is escaped.
    assert "<" not in (out / "data.js").read_text()
    data, records = read_page_data(out)
    assert data["categories"] == ["<b>box</b>", "disc</script><script>x()"]
    assert records["annotations"] == labels["annotations"] and records["base"]["images"] == labels["images"]
    assert data["columns"]["iou"] == [pytest.approx(ious[a["id"]]) for a in labels["annotations"]]
    # One strip per image here (2 cards each), cards of the default 160 px.
    strips = sorted((out / "thumbs").rglob("*.jpg"))
    assert len(strips) == 3 and all(Image.open(s).size == (320, 160) for s in strips)


def test_max_images_keeps_the_most_doubtful_images(tmp_path, labelled_images):
    labels, paths, ious = labelled_images
    write_gallery(labels, lambda image_id: paths[image_id], tmp_path / "out", ious=ious, max_images=1)
    data, records = read_page_data(tmp_path / "out")
    assert data["image_ids"] == [3]  # image 3 holds ann 5, the worst IoU
    assert [a["id"] for a in records["annotations"]] == [5, 6]
    assert len(records["base"]["images"]) == 3  # the export keeps the label file's images


def test_missing_image_is_a_data_error_naming_the_file_and_nothing_is_written(tmp_path, labelled_images):
    labels, paths, _ = labelled_images
    paths[2] = tmp_path / "nowhere.png"
    with pytest.raises(DataError, match="nowhere.png"):
        write_gallery(labels, paths, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(DataError, match="does not exist"):
        gallery_main(tmp_path / "missing.json", tmp_path, tmp_path / "out")


def test_masks_are_checked_before_anything_is_written(tmp_path, labelled_images):
    labels, paths, _ = labelled_images
    labels["annotations"][3]["segmentation"] = {"size": [90, 90], "counts": "not an rle \x7f"}
    with pytest.raises(DataError, match="annotation 4"):
        write_gallery(labels, paths, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_failed_rerun_leaves_no_page_and_a_good_one_rewrites_the_cards_in_place(tmp_path, labelled_images):
    labels, paths, _ = labelled_images
    out = tmp_path / "out"
    write_gallery(labels, paths, out)
    strip = next((out / "thumbs").rglob("*.jpg"))
    inode = strip.stat().st_ino
    # A header that reads but pixels that do not: found only while the cards are drawn.
    paths[3].write_bytes(paths[3].read_bytes()[:200])
    with pytest.raises(DataError, match="img_3.png"):
        write_gallery(labels, paths, out)
    assert not (out / "index.html").exists()  # no page pointing at half-written cards
    labels["images"] = labels["images"][:2]
    write_gallery(labels, paths, out)
    assert (out / "index.html").is_file() and strip.stat().st_ino == inode
    assert len(list((out / "thumbs").rglob("*.jpg"))) == 2  # the third image's strip is gone


def test_a_thumbs_folder_the_gallery_did_not_write_is_refused(tmp_path, labelled_images):
    labels, paths, _ = labelled_images
    (tmp_path / "out" / "thumbs").mkdir(parents=True)
    (tmp_path / "out" / "thumbs" / "holiday.jpg").write_bytes(b"mine")
    with pytest.raises(DataError, match="not written by mal gallery"):
        write_gallery(labels, paths, tmp_path / "out")
    assert (tmp_path / "out" / "thumbs" / "holiday.jpg").read_bytes() == b"mine"


def test_an_output_that_is_a_file_is_refused(tmp_path, labelled_images):
    labels, paths, _ = labelled_images
    (tmp_path / "out").write_text("not a folder")
    with pytest.raises(DataError, match="is a file; give a folder"):
        write_gallery(labels, paths, tmp_path / "out")


def test_quality_must_be_a_number(tmp_path, labelled_images):
    labels, _, _ = labelled_images
    labels["annotations"][0]["quality"] = "high"
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(labels))
    with pytest.raises(DataError, match="quality 'high' is not a finite number"):
        gallery_main(path, tmp_path / "images", tmp_path / "out")


@pytest.mark.slow  # Chromium
def test_page_in_chromium_sorts_by_fragment_and_shows_names_as_text(tmp_path, labelled_images):
    labels, paths, ious = labelled_images
    page_path = write_gallery(labels, paths, tmp_path / "gallery", ious=ious)
    with chromium() as browser:
        page = open_page(browser, page_path, "sort=iou")
        order = card_indices(page)
        assert [labels["annotations"][i]["id"] for i in order] == sorted(ious, key=ious.get)  # worst IoU first
        # Names are text, never markup: the script-closing name did not break the page.
        assert "disc</script><script>x()" in page.inner_text("#cards")
        assert page.locator("#cards b").count() == 0
        page.goto(page_path.resolve().as_uri() + "#sort=score")
        page.reload()
        page.wait_for_selector("html[data-ready=true]")
        assert labels["annotations"][card_indices(page)[0]]["id"] == 4  # smallest score first
        page.goto(page_path.resolve().as_uri() + "#sort=image&dir=desc")
        page.reload()
        page.wait_for_selector("html[data-ready=true]")
        assert card_indices(page) == [5, 4, 3, 2, 1, 0]
        image = Image.open(io.BytesIO(page.screenshot()))
        assert np.asarray(image.convert("L")).std() > 5  # not a blank page


@pytest.mark.slow  # Chromium
def test_page_without_quality_or_iou_defaults_to_score_and_hides_them(tmp_path, labelled_images):
    labels, paths, _ = labelled_images
    page_path = write_gallery(labels, paths, tmp_path / "gallery")
    with chromium() as browser:
        page = open_page(browser, page_path)
        assert page.input_value("#sort") == "score"
        assert page.locator("#sort option[value=quality]").count() == 0
        assert not page.is_visible("#iou-filter")
        scores = [labels["annotations"][i]["score"] for i in card_indices(page)]
        assert scores == sorted(scores)


def test_gallery_main_on_coco128_with_ground_truth_ious(tmp_path):
    if not (COCO128 / "annotations.json").exists():
        pytest.skip(f"{COCO128} is absent; the shared dev data set is needed for this test")
    labels_path = COCO128 / "annotations.json"
    gallery_main(labels_path, COCO128 / "images", tmp_path / "gallery", gt_path=labels_path, max_images=2)
    data, _ = read_page_data(tmp_path / "gallery")
    assert len(data["image_ids"]) == 2 and data["columns"]["ann"]
    # The ground truth against itself: every instance with a mask has IoU 1, and is outlined.
    assert data["has_truth"]
    assert all(iou == pytest.approx(1.0) for iou, mask in zip(data["columns"]["iou"], data["columns"]["mask"]) if mask)


@pytest.mark.slow  # Chromium
def test_a_page_without_its_data_says_so_in_the_page(tmp_path, labelled_images):
    labels, paths, _ = labelled_images
    page_path = write_gallery(labels, paths, tmp_path / "gallery")
    (tmp_path / "gallery" / "data.js").unlink()
    with chromium() as browser:
        page = browser.new_page()
        page.goto(page_path.resolve().as_uri())
        page.wait_for_selector("#errors .error")
        assert "data.js did not load" in page.inner_text("#errors")
