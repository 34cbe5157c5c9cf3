"""`mal gallery`: read a label file (and the ground truth, for IoUs and outlines), check both, write the review page."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mal.errors import DataError
from mal.gallery.label_files import check_entries, check_masks_fit, read_coco_file
from mal.gallery.write import write_gallery
from mal.masks import segmentation_to_rle


def gallery_main(
    labels_path: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    gt_path: str | Path | None = None,
    max_images: int | None = None,
    workers: int | None = None,
) -> Path:
    """`mal gallery`: read a label dump (and optionally the ground truth for IoUs) and write the page."""
    labels = read_coco_file(labels_path, "label file")
    check_entries(labels, labels_path, "label file")
    folder = Path(images_dir)
    files = {image["id"]: folder / image["file_name"] for image in labels["images"]}
    truth = None
    if gt_path is not None:
        ground_truth = read_coco_file(gt_path, "ground-truth file")
        check_entries(ground_truth, gt_path, "ground-truth file")
        truth = _truth_by_id(labels, labels_path, ground_truth, gt_path)
    return write_gallery(
        labels, files, out_dir, ground_truth=truth, max_images=max_images, source=labels_path, masks_checked=True,
        workers=workers,
    )


def _truth_by_id(
    labels: Mapping[str, Any], labels_path: str | Path, ground_truth: Mapping[str, Any], gt_path: str | Path
) -> dict[Any, Any]:
    """The ground-truth mask (compressed RLE) of each labelled instance, by annotation id: the ground-truth
    annotation of the same id is its source box. The gallery draws it and measures the IoU with it."""
    sizes = {image["id"]: (image.get("height"), image.get("width")) for image in labels["images"]}
    truth = {a["id"]: a for a in ground_truth.get("annotations", []) if a.get("segmentation") and "id" in a}
    pairs = [
        (a["id"], a, truth[a["id"]])
        for a in labels.get("annotations", [])
        if a.get("segmentation") and a.get("id") in truth and a["image_id"] in sizes
    ]
    for _, label, _ in pairs:
        if sizes[label["image_id"]][0] is None:
            raise DataError(
                f"label file {labels_path} (image {label['image_id']}): no width/height, which comparing masks "
                "with --gt needs; add the image's pixel size."
            )
    # The ground truth was checked against its own image sizes; here it must fit the labelled image (checked
    # again only where the two files give that image different sizes).
    truth_sizes = {image["id"]: (image.get("height"), image.get("width")) for image in ground_truth["images"]}
    check_masks_fit(
        [(gt, *sizes[label["image_id"]], f"image {label['image_id']}") for _, label, gt in pairs
         if truth_sizes.get(gt["image_id"]) != sizes[label["image_id"]]],
        f"ground-truth file {gt_path}",
    )
    return {ann_id: segmentation_to_rle(gt["segmentation"], sizes[label["image_id"]]) for ann_id, label, gt in pairs}
