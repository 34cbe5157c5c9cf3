"""Read a COCO box file: find it (folder, archive or URL), parse its JSON safely, and validate it in one pass.

`check_coco` never raises for a bad file: it returns the report (and the boxes when there were no errors).
`load_coco` raises `DataError` carrying the report. Category ids are taken from the file as they are.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from mal.data.coco_boxes import CocoBoxes
from mal.data.coco_report import ValidationReport
from mal.data.coco_validation import CocoValidator
from mal.data.json_depth import MAX_JSON_DEPTH, json_nesting_depth
from mal.data.sources import resolve_source
from mal.errors import DataError


def load_coco(
    ann_path: str | os.PathLike[str],
    img_dir: str | os.PathLike[str],
    *,
    load_mask: bool = False,
    check_images: bool = True,
    min_obj_size: float = 0.0,
    max_obj_size: float = math.inf,
    cache_dir: Path | None = None,
) -> CocoBoxes:
    """Load and validate a COCO file; raise `DataError` (with `.report`) when it has any error."""
    coco, report = check_coco(
        ann_path,
        img_dir,
        load_mask=load_mask,
        check_images=check_images,
        min_obj_size=min_obj_size,
        max_obj_size=max_obj_size,
        cache_dir=cache_dir,
    )
    if coco is None:
        error = DataError(report.summary())
        error.report = report  # type: ignore[attr-defined]
        raise error
    return coco


def check_coco(
    ann_path: str | os.PathLike[str],
    img_dir: str | os.PathLike[str],
    *,
    load_mask: bool = False,
    check_images: bool = True,
    min_obj_size: float = 0.0,
    max_obj_size: float = math.inf,
    cache_dir: Path | None = None,
    decode_images: bool = False,
) -> tuple[CocoBoxes | None, ValidationReport]:
    """Validate a COCO file in one pass; the boxes come back only when there was no error.

    check_images reads each image's header (exists, size, pixel limit); decode_images also decodes every pixel,
    which finds truncated and corrupt files (what `mal dataset check` does; loading for training does not,
    the loaders decode anyway).
    """
    report = ValidationReport(file=str(ann_path), min_obj_size=min_obj_size, max_obj_size=max_obj_size)
    try:
        ann_file = resolve_source(ann_path, cache_dir=cache_dir)
    except DataError as exc:
        report.error("missing_file", str(exc).rstrip("."), "point dataset.*_ann_path to an existing COCO JSON")
        return None, report
    try:
        image_root = resolve_source(img_dir, cache_dir=cache_dir)
    except DataError as exc:
        report.error("missing_folder", str(exc).rstrip("."), "point dataset.*_img_dir to the image folder")
        image_root = None
    raw = _parse_json(ann_file, report)
    if raw is None:
        return None, report
    return CocoValidator(report, raw, ann_file, image_root, load_mask, check_images, decode_images).run()


def _parse_json(path: Path, report: ValidationReport) -> dict[str, Any] | None:
    if path.is_dir():
        report.error("not_a_file", f"{path} is a folder", "point the annotation path to the COCO JSON file")
        return None
    try:
        data = path.read_bytes()
        depth = json_nesting_depth(data)
        raw = json.loads(data) if depth <= MAX_JSON_DEPTH else None
    except json.JSONDecodeError as exc:
        report.error(
            "malformed_json",
            f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
            "fix the JSON syntax there (a JSON linter shows it)",
        )
        return None
    except (UnicodeDecodeError, OSError) as exc:
        report.error("unreadable_file", f"cannot be read as UTF-8 JSON ({exc})", "save it as UTF-8 JSON")
        return None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits (Python's int-parsing limit)
        reason = str(exc).split(";")[0]
        report.error("malformed_json", f"holds a value JSON cannot read ({reason})", "fix or remove that value")
        return None
    except RecursionError:  # the scan above should have caught it; kept as the last line of defence
        depth = MAX_JSON_DEPTH + 1
    if depth > MAX_JSON_DEPTH:
        report.error(
            "nested_too_deeply",
            f"is nested too deeply (more than {MAX_JSON_DEPTH} levels of lists/objects)",
            "a COCO file needs about 5 levels; remove the deep nesting",
        )
        return None
    if not isinstance(raw, dict):
        report.error("not_coco", "top level is not a JSON object", "write a COCO object with images/annotations")
        return None
    return raw
