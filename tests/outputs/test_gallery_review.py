"""Reviewing 20,480 masks in a real headless Chromium: paging, filters, sorting, the keyboard, storage, export.

One gallery is written for the module (cards of 48 px, to keep the test fast: the page does not care), and one
browser serves every test; each test opens the page in a fresh profile (empty localStorage).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from mal.gallery.write import write_gallery
from support.gallery import LabelSet, many_labels, read_page_data, size_name
from support.gallery_browser import card_indices, chromium, decisions, focused_index, load, open_page

MASKS = 20_480
# Chromium and the card workers are processes of their own.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def review_set(tmp_path_factory: pytest.TempPathFactory) -> tuple[LabelSet, Path, dict[str, Any], dict[str, Any]]:
    root = tmp_path_factory.mktemp("review")
    labels = many_labels(root, num_images=8, per_image=MASKS // 8)
    page = write_gallery(labels.labels, labels.paths, root / "gallery", ground_truth=labels.truth, crop_size=48,
                         source=labels.labels_path)
    data, records = read_page_data(page.parent)
    return labels, page, data, records


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


def _walk_pages(page: Page) -> tuple[list[int], int]:
    """Every card number in display order over all pages (turned with the 'n' key), and the most cards the DOM
    ever held. Runs inside the page: 100 round trips to the browser would cost seconds."""
    return page.evaluate("""() => {
        const seen = [], cards = () => Array.from(document.querySelectorAll('.card'));
        const label = () => document.getElementById('page-label').textContent;
        let most = 0;
        for (;;) {
            most = Math.max(most, document.querySelectorAll('.card').length);
            cards().forEach(c => seen.push(Number(c.dataset.index)));
            const before = label();
            document.dispatchEvent(new KeyboardEvent('keydown', {key: 'n', bubbles: true}));
            if (label() === before) { return [seen, most]; }
        }
    }""")


def _expected(data: dict[str, Any], keep) -> list[int]:
    return [i for i in range(len(data["columns"]["ann"])) if keep(i)]


def test_the_page_is_ready_fast_and_paging_keeps_the_dom_small(review_set, browser: Browser):
    _, index, data, _ = review_set
    assert len(data["columns"]["ann"]) == MASKS
    page = open_page(browser, index, "per=200")
    assert page.evaluate("window.__malReadyAt") < 2000  # ms from navigation: data.js parsed, first page drawn
    assert page.inner_text("#page-label") == f"page 1 of {math.ceil(MASKS / 200)}"
    for _ in range(3):  # the real keyboard for a few pages
        page.keyboard.press("n")
    assert page.inner_text("#page-label").startswith("page 4 ") and "page=4" in page.url
    page.keyboard.press("PageUp")
    assert page.inner_text("#page-label").startswith("page 3 ")
    page = open_page(browser, index, "per=200")
    seen, most = _walk_pages(page)
    assert most == 200 and most < 500
    assert sorted(seen) == list(range(MASKS))  # every card once, none twice


def test_filters_select_exactly_the_matching_masks(review_set, browser: Browser):
    labels, index, data, _ = review_set
    col = data["columns"]
    box = data["categories"].index("<b>box</b>")
    fragment = "class=%3Cb%3Ebox%3C%2Fb%3E&score=0.2-0.6&size=small,large&iou=0.3-0.9&per=200&sort=image"
    page = open_page(browser, index, fragment)
    wanted = _expected(data, lambda i: col["category"][i] == box and 0.2 <= col["score"][i] <= 0.6
                       and size_name(col["area"][i]) in ("small", "large") and 0.3 <= col["iou"][i] <= 0.9)
    assert 100 < len(wanted) < MASKS / 4
    assert page.inner_text("#counts").startswith(f"{len(wanted):,} match")
    seen, _ = _walk_pages(page)
    assert seen == wanted  # image order: the card numbers ascending
    # Areas are the masks' pixels (the rectangles' w x h), the buckets COCO's.
    areas = {a["id"]: a["area"] for a in labels.labels["annotations"]}
    assert all(col["area"][i] == areas[col["ann"][i]] for i in range(0, MASKS, 97))

    # The controls change the view and the fragment; the review keys work again after a select.
    page.select_option("#class", "disc \"2\"")
    assert "class=disc" in page.url and page.inner_text("#page-label").startswith("page 1 ")
    disc = data["categories"].index('disc "2"')
    assert all(col["category"][i] == disc for i in card_indices(page))
    for field in ("#score-min", "#score-max", "#iou-min", "#iou-max"):
        page.fill(field, "")
        page.dispatch_event(field, "change")
    page.uncheck("#sizes input[value=small]")
    shown = card_indices(page)
    assert len(shown) > 1 and all(size_name(col["area"][i]) == "large" for i in shown)
    assert "size=large" in page.url and "score=" not in page.url
    page.keyboard.press("j")
    assert focused_index(page) == card_indices(page)[1]


@pytest.mark.parametrize(("key", "column", "descending"), [
    ("quality", "quality", False), ("score", "score", True), ("iou", "iou", False), ("size", "area", False),
    ("class", "category", False), ("image", None, True),
])
def test_each_sort_orders_the_cards(review_set, browser: Browser, key, column, descending):
    _, index, data, _ = review_set
    col = data["columns"]
    names = data["categories"]
    if column is None:
        value = list(range(MASKS))
    elif column == "category":
        value = [sorted(names).index(names[c]) for c in col["category"]]
    else:
        value = col[column]
    sign = -1 if descending else 1
    expected = sorted(range(MASKS), key=lambda i: (sign * value[i], sign * i))[:100]
    page = open_page(browser, index, f"sort={key}" + ("&dir=desc" if descending else ""))
    assert card_indices(page) == expected
    assert page.input_value("#sort") == key
    assert page.inner_text("#direction") == ("descending" if descending else "ascending")


def test_the_default_order_is_ascending_quality(review_set, browser: Browser):
    _, index, data, _ = review_set
    quality = data["columns"]["quality"]
    page = open_page(browser, index)
    assert page.input_value("#sort") == "quality"
    assert card_indices(page) == sorted(range(MASKS), key=lambda i: (quality[i], i))[:100]


def _download(page: Page, button: str) -> tuple[str, Any]:
    with page.expect_download() as info:
        page.click(button)
    return info.value.suggested_filename, json.loads(Path(info.value.path()).read_text())


def test_keyboard_review_survives_a_reload_and_exports(review_set, browser: Browser, tmp_path):
    labels, index, data, records = review_set
    page = open_page(browser, index, "sort=score")
    first = card_indices(page)
    assert focused_index(page) == first[0] and page.is_visible(".card.focused")
    page.keyboard.press("a")  # accept, and on to the next card
    page.keyboard.press("r")
    page.keyboard.press("j")
    page.keyboard.press("a")
    assert focused_index(page) == first[4]
    page.keyboard.press("u")  # undo the last accept: back on that card, undecided
    assert focused_index(page) == first[3]
    page.keyboard.press("ArrowLeft")
    page.keyboard.press("r")
    page.keyboard.press("r")
    page.keyboard.press("k")
    page.keyboard.press("x")  # back to undecided
    state = decisions(page)
    assert [state[i] for i in first[:5]] == ["accepted", "rejected", "rejected", "undecided", "undecided"]
    page.keyboard.press("n")
    second = card_indices(page)
    page.keyboard.press("Shift+A")  # accept the rest of the page ...
    assert set(decisions(page).values()) == {"accepted"}
    page.keyboard.press("z")  # ... and take it back in one step
    assert set(decisions(page).values()) == {"undecided"}
    page.keyboard.press("r")
    page.keyboard.press("Shift+A")
    assert page.inner_text("#counts").endswith(f"accepted {1 + len(second) - 1}, rejected 3, "
                                               f"undecided {MASKS - len(second) - 3}")

    page.goto(index.resolve().as_uri() + "#sort=score")  # back to page 1, then a reload: the decisions come
    page.reload()                                         # back from localStorage
    page.wait_for_selector("html[data-ready=true]")
    assert [decisions(page)[i] for i in first[:3]] == ["accepted", "rejected", "rejected"]
    accepted = [first[0], *second[1:]]
    rejected = [first[1], first[2], second[0]]

    name, coco = _download(page, "#export-accepted")
    assert name == "labels.accepted.json"
    assert {key: value for key, value in coco.items() if key != "annotations"} == {
        key: value for key, value in labels.labels.items() if key != "annotations"}
    by_position = sorted(accepted, key=lambda i: data["columns"]["position"][i])
    assert coco["annotations"] == [records["annotations"][i] for i in by_position]
    assert coco["annotations"] == [a for a in labels.labels["annotations"]
                                   if a["id"] in {data["columns"]["ann"][i] for i in accepted}]
    name, ids = _download(page, "#export-rejected")
    assert name == "labels.rejected_ids.json"
    assert ids == sorted(data["columns"]["ann"][i] for i in rejected)

    # Another label file's gallery, opened from disk in the same browser, starts with no decisions.
    other = many_labels(tmp_path, num_images=1, per_image=40, seed=7)
    other_page = write_gallery(other.labels, other.paths, tmp_path / "gallery", crop_size=48, source=other.labels_path)
    load(page, other_page)
    assert page.inner_text("#counts") == "40 match; accepted 0, rejected 0, undecided 40"
