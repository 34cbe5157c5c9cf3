"""Write the review page for a COCO dict of labels: the cards' pictures, then `data.js`, then `index.html`.

Everything is checked before the first file is written (every image header, every mask against its image). The
index.html of an earlier gallery in the folder is removed first; the pictures are written to `thumbs/` (over the
earlier ones, in place: see crop_jobs), data.js follows and index.html comes last, so a reader never finds a page
that points at missing or half-written files. A run that fails part way leaves no index.html.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mal.errors import DataError
from mal.fileio import atomic_write_text
from mal.gallery.crop_jobs import SHEET_CARDS, ImageJob, render_all, sheet_name
from mal.gallery.crops import CropItem
from mal.gallery.html_page import render_page
from mal.gallery.label_files import check_masks_fit
from mal.gallery.page_data import CROPS_DIR, DATA_FILE, Card, records_json, render_data
from mal.gallery.thumbnails import open_image
from mal.masks import segmentation_to_rle
from mal.metrics import instance_ious

CARD_SIZE = 160
# What marks a crops folder as the gallery's own, so a rerun may replace it.
OWNER_MARK = ".mal-gallery"
_OLD_THUMB = re.compile(r"\d{5}\.jpg")  # the one-thumbnail-per-image layout before issue 23


def _doubt_key(anns: list[dict[str, Any]], ious: Mapping[Any, float]) -> tuple[float, float, float]:
    """Images whose worst instance is most doubtful come first when only some images are shown."""
    worst_iou = min((ious[a["id"]] for a in anns if a.get("id") in ious), default=2.0)
    worst_quality = min((float(a["quality"]) for a in anns if a.get("quality") is not None), default=2.0)
    worst_score = min((float(a["score"]) for a in anns if a.get("score") is not None), default=2.0)
    return worst_iou, worst_quality, worst_score


def write_gallery(
    labels: Mapping[str, Any],
    image_path_of: Callable[[Any], str | Path] | Mapping[Any, str | Path],
    out_dir: str | Path,
    *,
    ious: Mapping[Any, float] | None = None,
    max_images: int | None = None,
    source: str | Path | None = None,
    ground_truth: Mapping[Any, Any] | None = None,
    masks_checked: bool = False,
    crop_size: int = CARD_SIZE,
    workers: int | None = None,
) -> Path:
    """Write the review page for a COCO dict whose annotations carry `segmentation` (and `score`); return it.

    image_path_of maps an image id to its file (a callable or a dict). ious maps annotation id -> IoU with the
    ground truth and ground_truth annotation id -> the ground-truth segmentation (drawn as an outline), where
    they exist. max_images keeps the images with the most doubtful instances. source names the label file in
    errors. masks_checked says the caller already checked every mask against the width/height its image declares
    (`check_entries`), so only images whose real size differs are checked again. workers: processes drawing the
    cards (default: one per core).
    """
    out = Path(out_dir)
    iou_of = dict(ious or {})
    truth_of = dict(ground_truth or {})
    path_of = image_path_of.__getitem__ if isinstance(image_path_of, Mapping) else image_path_of
    categories = {c["id"]: str(c.get("name", c["id"])) for c in labels.get("categories", [])}
    anns_of: dict[Any, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    for position, ann in enumerate(labels.get("annotations", [])):
        anns_of[ann["image_id"]].append((position, ann))

    images = list(labels.get("images", []))
    sizes = _check_inputs(images, anns_of, path_of, truth_of, source, masks_checked)
    if max_images is not None:
        if truth_of and not iou_of:  # the cards measure IoUs as they are drawn, too late to choose the images
            iou_of = _ious_for_choice(anns_of, truth_of, sizes)
        images = sorted(images, key=lambda im: _doubt_key([a for _, a in anns_of[im["id"]]], iou_of))
        images = images[: max(max_images, 0)]
    _check_crops_folder(out / CROPS_DIR)

    cards: list[Card] = []
    sheets_of: list[tuple[Any, list[tuple[int, tuple[CropItem, ...]]]]] = []
    sheet_count = 0
    for order, image_info in enumerate(images):
        image_id = image_info["id"]
        items = []
        for position, ann in anns_of[image_id]:
            sheet, slot = divmod(len(items), SHEET_CARDS)
            cards.append(Card(ann, position, order, iou_of.get(ann.get("id")), sheet_count + sheet, slot))
            items.append(_crop_item(len(cards) - 1, ann, truth_of.get(ann.get("id")), sizes[image_id]))
        sheets = [(sheet_count + k, tuple(items[k * SHEET_CARDS : (k + 1) * SHEET_CARDS]))
                  for k in range(-(-len(items) // SHEET_CARDS))]
        sheet_count += len(sheets)
        sheets_of.append((image_id, sheets))
    records = records_json(labels, cards, source)

    # The old page goes first: no page may point at cards half rewritten. The cards are rewritten in place.
    index_path = out / "index.html"
    index_path.unlink(missing_ok=True)
    crops = out / CROPS_DIR
    for folder in range(0, max(sheet_count, 1), 1000):
        (crops / sheet_name(folder)).parent.mkdir(parents=True, exist_ok=True)
    (crops / OWNER_MARK).write_text("cards of a mal gallery; the next `mal gallery` run here rewrites them\n")
    named = None if source is None else str(source)
    jobs = [ImageJob(str(path_of(image_id)), image_id, named, str(crops), crop_size, tuple(sheets))
            for image_id, sheets in sheets_of if sheets]
    facts = render_all(jobs, workers)
    _remove_other_files(crops, {sheet_name(sheet) for sheet in range(sheet_count)})
    atomic_write_text(out / DATA_FILE, render_data(cards, facts, categories, images, records, crop_size=crop_size,
                                                   has_truth=bool(truth_of), source=source))
    atomic_write_text(index_path, render_page(num_cards=len(cards), num_images=len(images)))
    return index_path


def _remove_other_files(crops: Path, keep: set[str]) -> None:
    """Delete what an earlier, larger gallery (or the one-thumbnail-per-image layout) left in the cards folder."""
    for entry in crops.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            for child in entry.iterdir():
                if f"{entry.name}/{child.name}" not in keep and not child.is_dir():
                    child.unlink()
            if not any(entry.iterdir()):
                entry.rmdir()
        elif entry.name != OWNER_MARK:
            entry.unlink()


def _check_inputs(
    images: list[dict[str, Any]],
    anns_of: Mapping[Any, list[tuple[int, dict[str, Any]]]],
    path_of: Callable[[Any], str | Path],
    truth_of: Mapping[Any, Any],
    source: str | Path | None,
    masks_checked: bool,
) -> dict[Any, tuple[int, int]]:
    """Every image's (height, width) from its header; DataError for a missing or broken image, or a mask (label or
    ground truth) that does not fit its image."""
    sizes: dict[Any, tuple[int, int]] = {}
    for image_info in images:
        image_id = image_info["id"]
        path = Path(path_of(image_id))
        height, width = open_image(path, image_id, decode=False, source=source)  # type: ignore[misc]
        sizes[image_id] = (height, width)
        if masks_checked and (image_info.get("height"), image_info.get("width")) == (height, width):
            continue
        where = f"image {path.name}"
        check_masks_fit([(ann, height, width, where) for _, ann in anns_of[image_id]], source)
        truths = [({"id": a.get("id"), "segmentation": truth_of[a["id"]]}, height, width, where)
                  for _, a in anns_of[image_id] if a.get("id") in truth_of]
        check_masks_fit(truths, "ground truth")
    return sizes


def _ious_for_choice(
    anns_of: Mapping[Any, list[tuple[int, dict[str, Any]]]], truth_of: Mapping[Any, Any], sizes: Mapping[Any, Any]
) -> dict[Any, float]:
    pairs = [(a["id"], a, sizes[image_id]) for image_id, anns in anns_of.items() if image_id in sizes
             for _, a in anns if a.get("id") in truth_of and a.get("segmentation")]
    values = instance_ious([segmentation_to_rle(a["segmentation"], hw) for _, a, hw in pairs],
                           [segmentation_to_rle(truth_of[ann_id], hw) for ann_id, _, hw in pairs])
    return {ann_id: float(value) for (ann_id, _, _), value in zip(pairs, values)}


def _crop_item(index: int, ann: Mapping[str, Any], truth: Any, size: tuple[int, int]) -> CropItem:
    counts = segmentation_to_rle(ann["segmentation"], size)["counts"] if ann.get("segmentation") else None
    truth_counts = segmentation_to_rle(truth, size)["counts"] if truth else None
    bbox = ann.get("bbox")
    return CropItem(index, counts, tuple(float(v) for v in bbox) if bbox else None, truth_counts)  # type: ignore[arg-type]


def _check_crops_folder(folder: Path) -> None:
    """Refuse an output that is not a folder, and a `thumbs` folder that a gallery did not write (its files would
    be overwritten or deleted)."""
    if folder.parent.exists() and not folder.parent.is_dir():
        raise DataError(f"the gallery's output {folder.parent} is a file; give a folder (new, or an earlier gallery).")
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_dir() and not folder.is_symlink() and (
        (folder / OWNER_MARK).is_file() or all(_OLD_THUMB.fullmatch(p.name) for p in folder.iterdir())
    ):
        return
    raise DataError(
        f"{folder} exists and was not written by mal gallery (its cards would replace it); choose another output "
        "folder or move it away."
    )
