"""The one validation pass over a parsed COCO document: every section, id, box and mask is checked and each
problem goes into the report; when nothing was wrong, the boxes come back as arrays."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from mal.data.coco_boxes import CocoBoxes, ImageRecord
from mal.data.coco_report import ValidationReport
from mal.data.geometry import segmentation_problems
from mal.data.image_checks import check_image_files, escapes_image_folder

SMALL_AREA = 32**2
MEDIUM_AREA = 96**2
# Boxes that poke out of the image by less than this many pixels are clipped without a warning:
# rounding in polygon-derived boxes routinely gives x + w = width + 0.0001.
CLIP_TOLERANCE_PX = 1e-3


def _is_int(value: Any) -> bool:
    """An integer id that fits the int64 arrays the boxes are kept in (JSON allows any size)."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class CocoValidator:
    """One pass over a parsed COCO document; `run` gives the boxes (None after any error) and the report."""

    def __init__(
        self,
        report: ValidationReport,
        raw: dict[str, Any],
        ann_file: Path,
        image_root: Path | None,
        load_mask: bool,
        check_images: bool,
        decode_images: bool = False,
    ) -> None:
        self.report = report
        self.raw = raw
        self.ann_file = ann_file
        self.image_root = image_root
        self.load_mask = load_mask
        self.check_images = check_images
        self.decode_images = decode_images
        self.clipped = 0
        self.masks_to_check: list[tuple[Any, ImageRecord, dict[str, Any]]] = []

    def run(self) -> tuple[CocoBoxes | None, ValidationReport]:
        report = self.report
        sections = {}
        for key in ("images", "annotations", "categories"):
            value = self.raw.get(key)
            if value is None:
                report.error("missing_key", f"top-level key '{key}' is missing", f"add a '{key}' list")
            elif not isinstance(value, list):
                report.error("wrong_type", f"top-level '{key}' is not a list", f"make '{key}' a JSON list")
            else:
                sections[key] = value
        if len(sections) < 3:
            return None, report
        images = self._images(sections["images"])
        categories = self._categories(sections["categories"])
        boxes = self._annotations(sections["annotations"], images, categories)
        if self.check_images and self.image_root is not None:
            check_image_files(self.report, images, self.decode_images)
        self._count(images, categories, boxes)
        if not report.ok:
            return None, report
        return (
            CocoBoxes(
                ann_path=self.ann_file,
                img_dir=self.image_root,  # type: ignore[arg-type]
                raw=self.raw,
                images=images,
                categories=categories,
                load_mask=self.load_mask,
                **boxes,
            ),
            report,
        )

    # ----------------------------------------------------------------------------------------- sections

    def _images(self, items: list[Any]) -> dict[int, ImageRecord]:
        report = self.report
        images: dict[int, ImageRecord] = {}
        seen: Counter[int] = Counter()
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                report.error("wrong_type", f"images[{position}] is not an object", "make it a COCO image object")
                continue
            missing = [key for key in ("id", "file_name", "width", "height") if key not in item]
            image_id = item.get("id", f"images[{position}]")
            if missing:
                report.error("missing_key", f"image misses {', '.join(missing)}", "add the keys", image_id=image_id)
                continue
            if not _is_int(image_id):
                report.error("bad_id", f"image id {image_id!r} is not an integer", "use integer ids (below 2**63)")
                continue
            width, height, file_name = item["width"], item["height"], item["file_name"]
            if not (_is_number(width) and _is_number(height) and 1 <= width < math.inf and 1 <= height < math.inf):
                report.error(
                    "bad_image_size",
                    f"width/height {width!r}x{height!r} are not positive numbers",
                    "write the image's pixel size",
                    image_id=image_id,
                )
                continue
            if not isinstance(file_name, str) or not file_name:
                report.error(
                    "bad_file_name",
                    "file_name is empty or not a string",
                    "write the image's file name",
                    image_id=image_id,
                )
                continue
            if escapes_image_folder(file_name):
                report.error(
                    "bad_file_name",
                    f"file_name {file_name[:120]!r} leaves the image folder (absolute, or with '..')",
                    "write file names relative to the image folder, without '..'",
                    image_id=image_id,
                )
                continue
            seen[image_id] += 1
            root = self.image_root if self.image_root is not None else Path()
            images[image_id] = ImageRecord(image_id, file_name, int(width), int(height), root / file_name)
        for image_id, count in seen.items():
            if count > 1:
                report.error(
                    "duplicate_id",
                    f"image id {image_id} is used by {count} images",
                    "give every image a unique id",
                    image_id=image_id,
                )
        return images

    def _categories(self, items: list[Any]) -> dict[int, str]:
        report = self.report
        categories: dict[int, str] = {}
        seen: Counter[int] = Counter()
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                report.error("wrong_type", f"categories[{position}] is not an object", "make it {id, name}")
                continue
            missing = [key for key in ("id", "name") if key not in item]
            if missing:
                report.error("missing_key", f"categories[{position}] misses {', '.join(missing)}", "add the keys")
                continue
            if not _is_int(item["id"]):
                report.error("bad_id", f"category id {item['id']!r} is not an integer", "use integer ids (below 2**63)")
                continue
            seen[item["id"]] += 1
            categories[item["id"]] = str(item["name"])
        for category_id, count in seen.items():
            if count > 1:
                report.error(
                    "duplicate_id",
                    f"category id {category_id} is used by {count} categories",
                    "give every category a unique id",
                )
        if not items:
            report.error("empty_dataset", "there are no categories", "list the categories of the boxes")
        return categories

    def _annotations(
        self, items: list[Any], images: dict[int, ImageRecord], categories: dict[int, str]
    ) -> dict[str, Any]:
        report = self.report
        rows: list[dict[str, Any]] = []
        bboxes: list[list[float]] = []
        for position, item in enumerate(items):
            if not isinstance(item, dict):
                report.error("wrong_type", f"annotations[{position}] is not an object", "make it an object")
                continue
            ann_id = item.get("id", f"annotations[{position}]")
            image_id = item.get("image_id")
            missing = [key for key in ("id", "image_id", "category_id", "bbox") if key not in item]
            if missing:
                report.error(
                    "missing_key",
                    f"annotation misses {', '.join(missing)}",
                    "add the keys",
                    ann_id=ann_id,
                    image_id=image_id,
                )
                continue
            bad_ids = [key for key in ("id", "image_id", "category_id") if not _is_int(item[key])]
            if bad_ids:
                report.error(
                    "bad_id",
                    f"{', '.join(bad_ids)} not an integer",
                    "use integer ids (below 2**63)",
                    ann_id=ann_id,
                    image_id=image_id,
                )
                continue
            bbox = item["bbox"]
            if not isinstance(bbox, list) or len(bbox) != 4:
                length = len(bbox) if isinstance(bbox, list) else type(bbox).__name__
                report.error(
                    "bad_bbox",
                    f"bbox has {length} values instead of 4",
                    "write bbox as [x, y, width, height]",
                    ann_id=ann_id,
                    image_id=image_id,
                )
                continue
            if not all(_is_number(value) for value in bbox):
                report.error(
                    "bad_bbox", f"bbox {bbox} holds a non-number", "write numbers", ann_id=ann_id, image_id=image_id
                )
                continue
            if self.load_mask:
                self._check_segmentation(item, images.get(image_id))
            rows.append(item)
            bboxes.append(bbox)
        self._check_masks()
        if not items:
            report.error("empty_dataset", "there are no annotations (boxes)", "add boxes to label")

        ann_ids = np.fromiter((row["id"] for row in rows), dtype=np.int64, count=len(rows))
        image_ids = np.fromiter((row["image_id"] for row in rows), dtype=np.int64, count=len(rows))
        category_ids = np.fromiter((row["category_id"] for row in rows), dtype=np.int64, count=len(rows))
        xywh = np.asarray(bboxes, dtype=np.float64).reshape(-1, 4)
        bad = np.zeros(len(rows), dtype=bool)

        def flag(mask: np.ndarray, code: str, describe, fix: str) -> None:
            nonlocal bad
            for row in np.flatnonzero(mask & ~bad).tolist():
                report.error(code, describe(row), fix, ann_id=int(ann_ids[row]), image_id=int(image_ids[row]))
            bad |= mask

        unique_ids, first_rows, id_counts = np.unique(ann_ids, return_index=True, return_counts=True)
        for ann_id, row, count in zip(unique_ids[id_counts > 1], first_rows[id_counts > 1], id_counts[id_counts > 1]):
            report.error(
                "duplicate_id",
                f"annotation id {ann_id} is used {count} times",
                "give every annotation a unique id",
                ann_id=int(ann_id),
                image_id=int(image_ids[row]),
            )
        known_images = np.fromiter(images, dtype=np.int64, count=len(images))
        known_categories = np.fromiter(categories, dtype=np.int64, count=len(categories))
        flag(
            ~np.isin(image_ids, known_images),
            "unknown_image",
            lambda r: f"image_id {image_ids[r]} is not in 'images'",
            "fix image_id or add the image",
        )
        flag(
            ~np.isin(category_ids, known_categories),
            "unknown_category",
            lambda r: f"category_id {category_ids[r]} is not in 'categories'",
            "fix category_id or add the category",
        )
        flag(
            ~np.isfinite(xywh).all(axis=1),
            "bbox_not_finite",
            lambda r: f"bbox {bboxes[r]} holds NaN or inf",
            "write finite numbers",
        )
        with np.errstate(invalid="ignore"):
            flag(
                (xywh[:, 2] <= 0) | (xywh[:, 3] <= 0),
                "bbox_empty",
                lambda r: f"bbox {bboxes[r]} has zero or negative width/height",
                "fix the box or remove the annotation",
            )

        # Image sizes per row (rows of unknown images get 0 and are already flagged).
        sizes = np.zeros((len(rows), 2), dtype=np.float64)
        if len(known_images):
            order = np.argsort(known_images)
            wh = np.array([[images[i].width, images[i].height] for i in known_images.tolist()], dtype=np.float64)
            position = np.clip(np.searchsorted(known_images[order], image_ids), 0, len(order) - 1)
            sizes = wh[order][position]
        x0, y0 = xywh[:, 0], xywh[:, 1]
        with np.errstate(over="ignore"):  # 1e308-sized boxes overflow to inf and are flagged as outside below
            x1, y1 = x0 + xywh[:, 2], y0 + xywh[:, 3]
        width, height = sizes[:, 0], sizes[:, 1]
        with np.errstate(invalid="ignore"):
            outside = (x0 >= width) | (y0 >= height) | (x1 <= 0) | (y1 <= 0)
            flag(
                outside,
                "bbox_outside",
                lambda r: f"bbox {bboxes[r]} lies wholly outside the {int(width[r])}x{int(height[r])} image",
                "fix the box coordinates or remove the annotation",
            )
            tol = CLIP_TOLERANCE_PX
            poking = ~bad & ((x0 < -tol) | (y0 < -tol) | (x1 > width + tol) | (y1 > height + tol))
        for row in np.flatnonzero(poking).tolist():
            report.warning(
                "bbox_clipped",
                f"bbox {bboxes[row]} extends past the {int(width[row])}x{int(height[row])} image",
                "it is clipped to the image; fix it to silence this",
                ann_id=int(ann_ids[row]),
                image_id=int(image_ids[row]),
            )
        self.clipped = int(poking.sum())
        xyxy = (
            np.stack(
                [np.clip(x0, 0, width), np.clip(y0, 0, height), np.clip(x1, 0, width), np.clip(y1, 0, height)], axis=1
            )
            if len(rows)
            else np.zeros((0, 4))
        )
        has_segmentation = np.fromiter((bool(row.get("segmentation")) for row in rows), dtype=bool, count=len(rows))
        iscrowd = np.fromiter((bool(row.get("iscrowd", 0)) for row in rows), dtype=bool, count=len(rows))
        return {
            "annotations": rows,
            "ann_ids": ann_ids,
            "image_ids": image_ids,
            "category_ids": category_ids,
            "bbox_xywh": xywh,
            "boxes_xyxy": xyxy,
            "iscrowd": iscrowd,
            "has_segmentation": has_segmentation,
        }

    def _check_segmentation(self, item: dict[str, Any], image: ImageRecord | None) -> None:
        segmentation = item.get("segmentation")
        where = {"ann_id": item["id"], "image_id": item["image_id"]}
        if not segmentation:
            self.report.warning(
                "no_mask",
                "annotation has no segmentation",
                "it is left out of mask evaluation; add a mask to score it",
                **where,
            )
            return
        if image is None:  # the unknown image_id is reported on its own; there is no size to check against
            return
        self.masks_to_check.append((segmentation, image, where))

    def _check_masks(self) -> None:
        """Every action that reads masks loads them through here, so pycocotools never sees a value it mishandles."""
        items = [(segmentation, image.height, image.width) for segmentation, image, _ in self.masks_to_check]
        for (_, _, where), problem in zip(self.masks_to_check, segmentation_problems(items), strict=True):
            if problem is not None:
                self.report.error("bad_mask", problem[0], problem[1], **where)
        self.masks_to_check.clear()

    def _count(self, images: dict[int, ImageRecord], categories: dict[int, str], boxes: dict[str, Any]) -> None:
        report = self.report
        xyxy = boxes["boxes_xyxy"]
        areas = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
        with np.errstate(invalid="ignore"):
            keep = (areas > report.min_obj_size) & (areas <= report.max_obj_size)
        report.counts.update(
            images=len(images),
            images_without_boxes=len(set(images) - set(boxes["image_ids"].tolist())),
            boxes=len(boxes["ann_ids"]),
            classes=len(categories),
            small=int((areas < SMALL_AREA).sum()),
            medium=int(((areas >= SMALL_AREA) & (areas < MEDIUM_AREA)).sum()),
            large=int((areas >= MEDIUM_AREA).sum()),
            crowd=int(boxes["iscrowd"].sum()),
            clipped=self.clipped,
            filtered_small=int((areas <= report.min_obj_size).sum()),
            filtered_large=int((areas > report.max_obj_size).sum()),
            trainable=int((keep & ~boxes["iscrowd"]).sum()),
        )
        if self.load_mask:
            report.counts["with_masks"] = int(boxes["has_segmentation"].sum())
        if not images and isinstance(self.raw.get("images"), list):
            report.error("empty_dataset", "there are no images", "list the images in 'images'")
