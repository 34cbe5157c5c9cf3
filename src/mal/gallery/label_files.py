"""Read a label or ground-truth COCO file for the gallery, and refuse (DataError) what the page cannot show."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from mal.data.geometry import segmentation_problems
from mal.data.image_checks import escapes_image_folder
from mal.data.json_depth import MAX_JSON_DEPTH, json_nesting_depth
from mal.errors import DataError


def check_masks_fit(items: list[tuple[dict[str, Any], int, int, str]], source: str | Path | None) -> None:
    """Refuse (DataError) the first segmentation pycocotools could not decode safely to its image's size.

    items: (annotation, height, width, which image) for each annotation; those without a mask are skipped.
    """
    with_masks = [item for item in items if item[0].get("segmentation")]
    problems = segmentation_problems((ann["segmentation"], height, width) for ann, height, width, _ in with_masks)
    for (ann, _, _, where), problem in zip(with_masks, problems, strict=True):
        if problem is not None:
            raise DataError(f"{source or 'labels'} (annotation {ann.get('id')}, {where}): {problem[0]}; {problem[1]}.")


def read_coco_file(path: str | Path, what: str) -> dict[str, Any]:
    """The parsed file; DataError (naming `what` and the path) unless it is JSON, shallow, with an 'images' list."""
    try:
        data = Path(path).read_bytes()
        if json_nesting_depth(data) > MAX_JSON_DEPTH:
            raise RecursionError
        content = json.loads(data)
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist; pass the path of a COCO JSON file.") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a folder; pass the path of a COCO JSON file.") from None
    except RecursionError:
        raise DataError(
            f"{what} {path} is nested too deeply (more than {MAX_JSON_DEPTH} levels of lists/objects); a COCO "
            "file needs about 5."
        ) from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        reason = str(error).split(";")[0]
        raise DataError(f"{what} {path} is not valid JSON ({reason}).") from None
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise DataError(f"{what} {path} is not a COCO file: it needs an 'images' list.")
    return content


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_entries(content: dict[str, Any], path: str | Path, what: str) -> None:
    """Refuse (DataError naming the file and the entry) what the page cannot show: an image without an integer
    id or a file_name, an annotation without image_id, a non-numeric bbox, score or quality, or a mask that does not fit
    the image size the file declares."""
    sizes: dict[int, tuple[int, int]] = {}
    for position, image in enumerate(content["images"]):
        if not isinstance(image, dict):
            raise DataError(f"{what} {path}: images[{position}] is not an object; write COCO image objects.")
        missing = [key for key in ("id", "file_name") if key not in image]
        if missing:
            raise DataError(
                f"{what} {path}: images[{position}] has no {' and no '.join(missing)}; every image needs an "
                "integer id and a file_name."
            )
        if not _is_int(image["id"]):
            raise DataError(f"{what} {path}: images[{position}] has id {image['id']!r}; use an integer id.")
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            raise DataError(
                f"{what} {path} (image {image['id']}): file_name {image['file_name']!r} is not a file name; "
                "write the image's file name."
            )
        if escapes_image_folder(image["file_name"]):
            raise DataError(
                f"{what} {path} (image {image['id']}): file_name {image['file_name'][:120]!r} leaves the image "
                "folder (absolute, or with '..'); write file names relative to the image folder."
            )
        if "width" in image or "height" in image:
            width, height = image.get("width"), image.get("height")
            if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
                raise DataError(
                    f"{what} {path} (image {image['id']}): width/height {width!r}x{height!r} are not positive "
                    "integers; write the image's pixel size."
                )
            sizes[image["id"]] = (height, width)
    for key in ("annotations", "categories"):
        if not isinstance(content.get(key, []), list):
            raise DataError(f"{what} {path}: '{key}' is not a list; make it a JSON list.")
    for position, category in enumerate(content.get("categories", [])):
        if not isinstance(category, dict) or not _is_int(category.get("id")):
            raise DataError(f"{what} {path}: categories[{position}] has no integer id; write {{id, name}}.")
    to_check: list[tuple[dict[str, Any], int, int, str]] = []
    for position, ann in enumerate(content.get("annotations", [])):
        if not isinstance(ann, dict):
            raise DataError(f"{what} {path}: annotations[{position}] is not an object; write COCO annotations.")
        name = f"annotation {ann['id']!r}" if "id" in ann else f"annotations[{position}]"
        if "id" in ann and not _is_int(ann["id"]):
            raise DataError(f"{what} {path} ({name}): the id is not an integer; use integer ids.")
        if not _is_int(ann.get("image_id")):
            raise DataError(f"{what} {path} ({name}): image_id is missing or not an integer; add the image's id.")
        bbox = ann.get("bbox")
        if bbox is not None and not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_finite, bbox))):
            raise DataError(f"{what} {path} ({name}): bbox {bbox!r:.80} is not 4 finite numbers; fix the box.")
        for key in ("score", "quality"):
            value = ann.get(key)
            if value is not None and not _is_finite(value):
                raise DataError(f"{what} {path} ({name}): {key} {value!r:.40} is not a finite number; fix it.")
        if ann["image_id"] in sizes:
            to_check.append((ann, *sizes[ann["image_id"]], f"image {ann['image_id']}"))
    check_masks_fit(to_check, f"{what} {path}")
