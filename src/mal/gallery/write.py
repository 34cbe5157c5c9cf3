"""Write the review page for a COCO dict of labels: the thumbnails first, then `index.html`.

`write_gallery` writes `out_dir/thumbs/<image>.jpg` (the image scaled to `thumb_size` with every mask as a
translucent fill and an opaque outline) and then `out_dir/index.html`, last, so a reader never finds a page
that points at missing thumbnails.
"""

from __future__ import annotations

import io
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from PIL import Image

from mal.fileio import atomic_write_bytes, atomic_write_text
from mal.gallery.html_page import render_page
from mal.gallery.label_files import check_masks_fit
from mal.gallery.thumbnails import PALETTE, hex_colour, mask_overlay, open_image
from mal.masks import decode_rle, segmentation_to_rle


def _doubt_key(anns: list[dict[str, Any]], ious: Mapping[Any, float]) -> tuple[float, float]:
    """Images whose worst instance is most doubtful come first when only some images are shown."""
    worst_iou = min((ious[a["id"]] for a in anns if a.get("id") in ious), default=2.0)
    worst_score = min((float(a["score"]) for a in anns if a.get("score") is not None), default=2.0)
    return worst_iou, worst_score


def write_gallery(
    labels: Mapping[str, Any],
    image_path_of: Callable[[Any], str | Path] | Mapping[Any, str | Path],
    out_dir: str | Path,
    *,
    ious: Mapping[Any, float] | None = None,
    max_images: int | None = None,
    thumb_size: int = 512,
    source: str | Path | None = None,
) -> Path:
    """Write the review page for a COCO dict whose annotations carry `segmentation` (and `score`); return it.

    image_path_of maps an image id to its file (a callable or a dict). ious maps annotation id -> IoU with the
    ground truth, where that exists. max_images keeps the images with the most doubtful instances. source names
    the label file in errors. Every image and mask is checked before the first thumbnail is written.
    """
    out = Path(out_dir)
    iou_of = dict(ious or {})
    path_of = image_path_of.__getitem__ if isinstance(image_path_of, Mapping) else image_path_of
    categories = {c["id"]: c.get("name", str(c["id"])) for c in labels.get("categories", [])}
    anns_of: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in labels.get("annotations", []):
        anns_of[ann["image_id"]].append(ann)

    images = list(labels.get("images", []))
    if max_images is not None:
        images = sorted(images, key=lambda im: _doubt_key(anns_of[im["id"]], iou_of))[: max(max_images, 0)]

    # Headers and masks first: a bad image or mask is refused before anything is written.
    for image_info in images:
        image_id = image_info["id"]
        path = Path(path_of(image_id))
        height, width = open_image(path, image_id, decode=False, source=source)  # type: ignore[misc]
        check_masks_fit([(ann, height, width, f"image {path.name}") for ann in anns_of[image_id]], source)

    entries: list[dict[str, Any]] = []
    for order, image_info in enumerate(images):
        image_id = image_info["id"]
        image = open_image(Path(path_of(image_id)), image_id, decode=True, source=source)
        assert isinstance(image, Image.Image)
        scale = min(1.0, thumb_size / max(image.width, image.height))
        thumb_hw = (max(1, round(image.height * scale)), max(1, round(image.width * scale)))
        anns = anns_of[image_id]
        masks = [
            decode_rle(segmentation_to_rle(a["segmentation"], (image.height, image.width)))
            if a.get("segmentation")
            else None
            for a in anns
        ]
        buffer = io.BytesIO()
        mask_overlay(image, masks, thumb_hw).save(buffer, format="JPEG", quality=88)
        thumb_name = f"thumbs/{order:05d}.jpg"
        atomic_write_bytes(out / thumb_name, buffer.getvalue())
        for index, ann in enumerate(anns):
            x, y, w, h = (float(v) for v in ann.get("bbox", (0, 0, image.width, image.height)))
            score = ann.get("score")
            entries.append(
                {
                    "ann_id": ann.get("id"),
                    "image_id": image_id,
                    "image_order": order,
                    "file": str(image_info.get("file_name", image_id)),
                    "thumb": thumb_name,
                    "thumb_w": thumb_hw[1],
                    "thumb_h": thumb_hw[0],
                    "box": [x * scale, y * scale, w * scale, h * scale],
                    "category": categories.get(ann.get("category_id"), str(ann.get("category_id"))),
                    "score": None if score is None else float(score),
                    "iou": iou_of.get(ann.get("id")),
                    "area": ann.get("area"),
                    "has_mask": masks[index] is not None,
                    "colour": hex_colour(PALETTE[index % len(PALETTE)]),
                }
            )

    index_path = out / "index.html"
    atomic_write_text(index_path, render_page(entries, num_images=len(images)))
    return index_path
