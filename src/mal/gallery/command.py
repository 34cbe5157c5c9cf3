"""`mal gallery`: read a label file (and the ground truth, for IoUs), check both, and write the review page."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mal.errors import DataError
from mal.gallery.label_files import check_entries, check_masks_fit, read_coco_file
from mal.gallery.write import write_gallery
from mal.masks import segmentation_to_rle
from mal.metrics import instance_ious


def gallery_main(
    labels_path: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    gt_path: str | Path | None = None,
    max_images: int | None = None,
    thumb_size: int = 512,
) -> Path:
    """`mal gallery`: read a label dump (and optionally the ground truth for IoUs) and write the page."""
    labels = read_coco_file(labels_path, "label file")
    check_entries(labels, labels_path, "label file")
    folder = Path(images_dir)
    files = {image["id"]: folder / image["file_name"] for image in labels["images"]}
    ious = None
    if gt_path is not None:
        ground_truth = read_coco_file(gt_path, "ground-truth file")
        check_entries(ground_truth, gt_path, "ground-truth file")
        ious = _ious_against(labels, labels_path, ground_truth, gt_path)
    return write_gallery(
        labels, files, out_dir, ious=ious, max_images=max_images, thumb_size=thumb_size, source=labels_path
    )


def _ious_against(
    labels: Mapping[str, Any], labels_path: str | Path, ground_truth: Mapping[str, Any], gt_path: str | Path
) -> dict[Any, float]:
    """IoU of each labelled instance with the ground-truth annotation of the same id (its source box)."""
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
    # The ground truth was checked against its own image sizes; here it must fit the labelled image.
    check_masks_fit(
        [(gt, *sizes[label["image_id"]], f"image {label['image_id']}") for _, label, gt in pairs],
        f"ground-truth file {gt_path}",
    )
    preds = [segmentation_to_rle(p["segmentation"], sizes[p["image_id"]]) for _, p, _ in pairs]
    gts = [segmentation_to_rle(g["segmentation"], sizes[p["image_id"]]) for _, p, g in pairs]
    values = instance_ious(preds, gts)
    return {ann_id: float(v) for (ann_id, _, _), v in zip(pairs, values)}
