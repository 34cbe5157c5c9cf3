"""COCO box annotations: one validation pass that reports every problem, then array access to the boxes.

`check_coco` never raises for a bad file: it returns the report (and the boxes when there were no errors).
`load_coco` raises `DataError` carrying the report. Category ids are taken from the file as they are.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import warnings
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from mal.data.geometry import segmentation_problems
from mal.data.sources import resolve_source
from mal.errors import DataError

SMALL_AREA = 32**2
MEDIUM_AREA = 96**2
# Boxes that poke out of the image by less than this many pixels are clipped without a warning:
# rounding in polygon-derived boxes routinely gives x + w = width + 0.0001.
CLIP_TOLERANCE_PX = 1e-3
# A COCO file nests about 5 levels (file > annotations > annotation > segmentation > polygon); far more is hostile.
MAX_JSON_DEPTH = 100

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: where it is, what is wrong, and how to fix it."""

    severity: Severity
    code: str
    message: str
    fix: str
    file: str
    image_id: Any = None
    ann_id: Any = None

    @property
    def where(self) -> str:
        parts = []
        if self.ann_id is not None:
            parts.append(f"annotation {self.ann_id}")
        if self.image_id is not None:
            parts.append(f"image {self.image_id}")
        return ", ".join(parts)

    def __str__(self) -> str:
        where = f" ({self.where})" if self.where else ""
        return f"{self.file}{where}: {self.message}; {self.fix}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "fix": self.fix,
            "file": self.file,
            "image_id": self.image_id,
            "ann_id": self.ann_id,
        }


@dataclass
class ValidationReport:
    """Every problem found in one pass, plus counts of what the dataset holds."""

    file: str
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    min_obj_size: float = 0.0
    max_obj_size: float = math.inf

    def add(self, severity: Severity, code: str, message: str, fix: str, *, image_id=None, ann_id=None) -> None:
        self.problems.append(Problem(severity, code, message, fix, self.file, image_id, ann_id))

    def error(self, code: str, message: str, fix: str, **where: Any) -> None:
        self.add("error", code, message, fix, **where)

    def warning(self, code: str, message: str, fix: str, **where: Any) -> None:
        self.add("warning", code, message, fix, **where)

    @property
    def errors(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [problem for problem in self.problems if problem.severity == "warning"]

    @property
    def ok(self) -> bool:
        return not self.errors

    def codes(self) -> Counter[str]:
        return Counter(problem.code for problem in self.problems)

    def summary(self) -> str:
        """One sentence: the first error and how many there are in all."""
        errors = self.errors
        if not errors:
            return f"{self.file} is valid ({len(self.warnings)} warnings)."
        first = errors[0]
        where = f" ({first.where})" if first.where else ""
        more = f" and {len(errors) - 1} more errors" if len(errors) > 1 else ""
        return f"{self.file}{where}: {first.message}; {first.fix}{more} (run `mal dataset check` for the full list)."

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "ok": self.ok,
            "counts": dict(self.counts),
            "min_obj_size": self.min_obj_size,
            "max_obj_size": self.max_obj_size if math.isfinite(self.max_obj_size) else None,
            "problems": [problem.to_dict() for problem in self.problems],
        }

    def renderables(self, examples_per_code: int = 3) -> list[Any]:
        """Rich tables: counts, then problems grouped by kind with a few examples each."""
        from rich.table import Table

        counts = Table(title=f"Dataset {self.file}", show_header=False, title_justify="left")
        counts.add_column("what", style="bold")
        counts.add_column("value", justify="right")
        labels = {
            "images": "images",
            "images_without_boxes": "images without boxes",
            "boxes": "boxes",
            "classes": "classes",
            "small": f"small boxes (< {32}²)",
            "medium": f"medium boxes (< {96}²)",
            "large": "large boxes",
            "crowd": "crowd boxes",
            "clipped": "boxes clipped to the image",
            "with_masks": "boxes with a ground-truth mask",
            "filtered_small": f"boxes with area ≤ min_obj_size ({self.min_obj_size:g})",
            "filtered_large": f"boxes with area > max_obj_size ({self.max_obj_size:g})",
            "trainable": "boxes used for training",
        }
        for key, label in labels.items():
            if key in self.counts:
                counts.add_row(label, f"{self.counts[key]:,}")
        out: list[Any] = [counts]
        if self.problems:
            table = Table(title="Problems", title_justify="left")
            for column in ("severity", "kind", "count", "examples (first few)", "fix"):
                table.add_column(column, overflow="fold")
            grouped: dict[tuple[str, str], list[Problem]] = {}
            for problem in self.problems:
                grouped.setdefault((problem.severity, problem.code), []).append(problem)
            for (severity, code), items in grouped.items():
                examples = "\n".join(
                    f"{p.where + ': ' if p.where else ''}{p.message}" for p in items[:examples_per_code]
                )
                style = "red" if severity == "error" else "yellow"
                table.add_row(f"[{style}]{severity}[/]", code, str(len(items)), examples, items[0].fix)
            out.append(table)
        verdict = "[green]OK[/]" if self.ok else f"[red]{len(self.errors)} errors[/]"
        out.append(f"{verdict}, {len(self.warnings)} warnings")
        return out

    def render(self, width: int = 110) -> str:
        """The summary as plain text (what `mal dataset check` prints, without colour)."""
        from rich.console import Console

        console = Console(width=width, record=True, file=open(os.devnull, "w"), color_system=None)  # noqa: SIM115
        with console.file:
            for item in self.renderables():
                console.print(item)
        return console.export_text()


@dataclass(frozen=True)
class ImageRecord:
    id: int
    file_name: str
    width: int
    height: int
    path: Path


class CocoBoxes:
    """The boxes of a validated COCO file as arrays (one row per annotation, in file order).

    `bbox_xywh` holds the boxes as given; `boxes_xyxy` the same boxes clipped to their image; `box_areas` the
    clipped box areas. `raw` is the parsed file, so an output can keep every key the input had.
    """

    def __init__(
        self,
        *,
        ann_path: Path,
        img_dir: Path,
        raw: dict[str, Any],
        images: dict[int, ImageRecord],
        categories: dict[int, str],
        annotations: list[dict[str, Any]],
        ann_ids: np.ndarray,
        image_ids: np.ndarray,
        category_ids: np.ndarray,
        bbox_xywh: np.ndarray,
        boxes_xyxy: np.ndarray,
        iscrowd: np.ndarray,
        has_segmentation: np.ndarray,
        load_mask: bool,
    ) -> None:
        self.ann_path = ann_path
        self.img_dir = img_dir
        self.raw = raw
        self.images = images
        self.categories = categories
        self.annotations = annotations
        self.ann_ids = ann_ids
        self.image_ids = image_ids
        self.category_ids = category_ids
        self.bbox_xywh = bbox_xywh
        self.boxes_xyxy = boxes_xyxy
        self.box_areas = (boxes_xyxy[:, 2] - boxes_xyxy[:, 0]) * (boxes_xyxy[:, 3] - boxes_xyxy[:, 1])
        self.iscrowd = iscrowd
        self.has_segmentation = has_segmentation
        self.load_mask = load_mask

    def __len__(self) -> int:
        return len(self.ann_ids)

    def __repr__(self) -> str:
        return (
            f"CocoBoxes({self.ann_path.name}: {len(self.images)} images, {len(self)} boxes, "
            f"{len(self.categories)} classes)"
        )

    @property
    def has_masks(self) -> bool:
        """True when masks were requested and every box has a ground-truth segmentation."""
        return self.load_mask and len(self) > 0 and bool(self.has_segmentation.all())

    @cached_property
    def row_of_ann(self) -> dict[int, int]:
        return {int(ann_id): row for row, ann_id in enumerate(self.ann_ids.tolist())}

    @cached_property
    def boxes_by_image(self) -> dict[int, np.ndarray]:
        """Image id -> rows of its boxes (file order); images without boxes are absent."""
        order = np.argsort(self.image_ids, kind="stable")
        ids, starts = np.unique(self.image_ids[order], return_index=True)
        return {int(i): rows for i, rows in zip(ids.tolist(), np.split(order, starts[1:]), strict=True)}

    def size_filter(self, min_obj_size: float = 0.0, max_obj_size: float = math.inf) -> np.ndarray:
        """Rows whose clipped box area lies in (min_obj_size, max_obj_size]."""
        return (self.box_areas > min_obj_size) & (self.box_areas <= max_obj_size)

    def gt_mask(self, ann_id: int) -> np.ndarray:
        """The ground-truth mask of one annotation as uint8 H x W (1 = object)."""
        return self.gt_masks([ann_id])[0]

    def gt_masks(self, ann_ids: list[int] | np.ndarray) -> np.ndarray:
        """Masks of annotations of ONE image as uint8 N x H x W, decoded in one pycocotools call."""
        from pycocotools import mask as mask_utils

        if not self.load_mask:
            raise DataError(f"{self.ann_path}: masks were not loaded; set dataset.load_mask=true to read them.")
        rows = [self.row_of_ann[int(ann_id)] for ann_id in ann_ids]
        image_ids = {int(self.image_ids[row]) for row in rows}
        if len(image_ids) > 1:
            raise ValueError("gt_masks takes annotations of one image; call it once per image")
        if not rows:
            return np.zeros((0, 0, 0), dtype=np.uint8)
        image = self.images[image_ids.pop()]
        rles = []
        for row in rows:
            if not self.has_segmentation[row]:
                raise DataError(
                    f"{self.ann_path} (annotation {self.ann_ids[row]}): no segmentation; add one or set "
                    "dataset.load_mask=false."
                )
            rles.append(_to_rle(self.annotations[row]["segmentation"], image.height, image.width, mask_utils))
        with warnings.catch_warnings():
            # pycocotools' Cython decode trips numpy 2's copy-keyword deprecation; harmless.
            warnings.simplefilter("ignore", DeprecationWarning)
            decoded = mask_utils.decode(rles)  # H x W x N, Fortran order
        return np.ascontiguousarray(decoded.transpose(2, 0, 1))


def _to_rle(segmentation: Any, height: int, width: int, mask_utils: Any) -> dict[str, Any]:
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return {"size": segmentation["size"], "counts": counts.encode() if isinstance(counts, str) else counts}


# ------------------------------------------------------------------------------------------------ loading


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
    return _Validator(report, raw, ann_file, image_root, load_mask, check_images, decode_images).run()


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


def json_nesting_depth(data: bytes) -> int:
    """How deeply a JSON document nests lists/objects, found from its bytes without parsing it.

    json.loads stops only at the interpreter's recursion limit (~1000 levels), while copy.deepcopy of the file (as
    inference does) fails at a few hundred; this scan is vectorized and costs a fraction of the parse. Brackets
    inside strings are skipped: a string is open after an odd number of unescaped quotes.
    """
    encoding = json.detect_encoding(data)
    if encoding != "utf-8":  # UTF-16/32 files: their bytes hold brackets only after re-encoding
        data = data.decode(encoding).encode("utf-8")
    raw = np.frombuffer(data, dtype=np.uint8)
    quotes = np.flatnonzero(raw == ord('"'))
    backslashes = np.flatnonzero(raw == ord("\\"))
    if backslashes.size and quotes.size:
        # A quote is escaped when an odd number of backslashes stands right before it.
        run_start = np.flatnonzero(np.diff(backslashes, prepend=-2) != 1)
        start_of = backslashes[run_start][np.searchsorted(run_start, np.arange(backslashes.size), side="right") - 1]
        before = np.searchsorted(backslashes, quotes) - 1
        touching = (before >= 0) & (backslashes[np.maximum(before, 0)] == quotes - 1)
        count = np.where(touching, quotes - start_of[np.maximum(before, 0)], 0)
        quotes = quotes[count % 2 == 0]
    opening = np.flatnonzero((raw == ord("[")) | (raw == ord("{")))
    closing = np.flatnonzero((raw == ord("]")) | (raw == ord("}")))
    opening = opening[np.searchsorted(quotes, opening) % 2 == 0]
    closing = closing[np.searchsorted(quotes, closing) % 2 == 0]
    if opening.size == 0:
        return 0
    positions = np.concatenate([opening, closing])
    steps = np.concatenate([np.ones(opening.size, np.int64), -np.ones(closing.size, np.int64)])
    return int(np.cumsum(steps[np.argsort(positions, kind="stable")]).max())


def escapes_image_folder(file_name: str) -> bool:
    """Whether a COCO file_name points outside the image folder it is joined to: an absolute path (POSIX or
    Windows) or one with a '..' part. Subfolders ("train2017/a.jpg") and links the user made inside the folder
    stay allowed; a label file must not make us read, or show in a review page, /etc/passwd."""
    normalised = file_name.replace("\\", "/")
    return normalised.startswith("/") or bool(re.match(r"^[A-Za-z]:", normalised)) or ".." in normalised.split("/")


def _is_int(value: Any) -> bool:
    """An integer id that fits the int64 arrays the boxes are kept in (JSON allows any size)."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _oriented_size(handle: Any) -> tuple[int, int]:
    """Width and height after EXIF orientation, read from the header only (never decoding pixels)."""
    from PIL import Image

    width, height = handle.size
    if handle.format == "PNG":
        # PNG's getexif() decodes the whole image to look for a trailing eXIf chunk; read only early ones.
        exif = Image.Exif()
        if "exif" in handle.info:
            exif.load(handle.info["exif"])
    else:
        exif = handle.getexif()
    if exif.get(0x0112, 1) in (5, 6, 7, 8):  # rotated by 90 degrees
        width, height = height, width
    return width, height


# Everything PIL raises for a broken or hostile file: its decoders surface zlib, struct and EOF errors as they are.
IMAGE_DECODE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    IndexError,
    struct.error,
    zlib.error,
)
DECODE_THREADS = 4  # decoding is CPU-bound; a few threads already saturate a laptop's disk and cores


def _inspect_image(path: Path, decode: bool, limit: int) -> tuple[str, Any]:
    """("ok", (width, height, pixels)) or ("missing" | "unreadable" | "too_large", detail); never raises.

    Reads the header, and with `decode` every pixel too (a truncated file has a valid header) unless the image
    has more than `limit` pixels. Call it inside `pixel_limit()`, which must decide the decompression-bomb limit.
    """
    from PIL import Image

    try:
        with Image.open(path) as handle:
            width, height = _oriented_size(handle)
            pixels = handle.width * handle.height
            if decode and pixels <= limit:
                handle.load()
    except Image.DecompressionBombError:
        return "too_large", None
    except FileNotFoundError:
        return "missing", None
    except IMAGE_DECODE_ERRORS as exc:  # UnidentifiedImageError is an OSError
        return "unreadable", exc
    return "ok", (width, height, pixels)


class _Validator:
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
            self._check_files(images)
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

    def _check_files(self, images: dict[int, ImageRecord]) -> None:
        from mal.data.pixel_limit import MAX_IMAGE_PIXELS_ENV, pixel_limit

        records = list(images.values())
        with pixel_limit() as limit:
            if self.decode_images and len(records) > 1:
                from PIL import Image

                # Decoders release the GIL, so threads make the full decode several times faster. PIL registers
                # its format plugins lazily: do it once here rather than racing in every thread.
                Image.init()
                workers = min(DECODE_THREADS, os.cpu_count() or 1)
                with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mal-decode") as pool:
                    outcomes = list(
                        pool.map(lambda image: _inspect_image(image.path, self.decode_images, limit), records)
                    )
            else:
                outcomes = [_inspect_image(image.path, self.decode_images, limit) for image in records]
        for image, (kind, detail) in zip(records, outcomes, strict=True):
            if kind == "missing":
                self.report.error(
                    "missing_image",
                    f"{image.path} does not exist",
                    "add the image or fix file_name/img_dir",
                    image_id=image.id,
                )
            elif kind == "unreadable":
                self.report.error(
                    "unreadable_image",
                    f"{image.path} cannot be read as an image ({detail})",
                    "replace the file with a valid image",
                    image_id=image.id,
                )
            elif kind == "too_large" or detail[2] > limit:
                self.report.error(
                    "image_too_large",
                    f"{image.path} has more pixels than the decompression-bomb limit ({MAX_IMAGE_PIXELS_ENV})",
                    f"downscale or tile the image, or raise {MAX_IMAGE_PIXELS_ENV} if it is genuine",
                    image_id=image.id,
                )
            elif detail[:2] != (image.width, image.height):
                width, height = detail[:2]
                self.report.error(
                    "image_size_mismatch",
                    f"{image.file_name} is {width}x{height} on disk but the JSON says {image.width}x{image.height}",
                    "fix width/height in the JSON",
                    image_id=image.id,
                )

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
