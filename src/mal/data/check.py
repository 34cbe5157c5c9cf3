"""`mal dataset check`: validate a COCO file and its images, and print what it holds and what is wrong."""

from __future__ import annotations

import math
import os
from pathlib import Path

from rich.console import Console

from mal.data.coco import check_coco
from mal.data.coco_report import ValidationReport


def dataset_check(
    ann_path: str | os.PathLike[str],
    img_dir: str | os.PathLike[str],
    *,
    load_mask: bool = False,
    min_obj_size: float = 0.0,
    max_obj_size: float = math.inf,
    check_images: bool = True,
    decode_images: bool = True,
    cache_dir: Path | None = None,
) -> ValidationReport:
    """The full validation report (never raises for a bad dataset; `report.ok` says whether it loads).

    By default every image is decoded, not only its header read: a truncated file would otherwise pass here and
    fail in the middle of training (measured: 0.04 s for coco128_dev's 64 JPEGs, 0.75 s for dsb2018_dev's 498
    PNGs, on 2 AMD EPYC cores).
    """
    _, report = check_coco(
        ann_path,
        img_dir,
        load_mask=load_mask,
        check_images=check_images,
        min_obj_size=min_obj_size,
        max_obj_size=max_obj_size,
        cache_dir=cache_dir,
        decode_images=decode_images,
    )
    return report


def print_report(report: ValidationReport, console: Console | None = None) -> int:
    """Print the summary tables; return the exit code the CLI should use (2 when there are errors)."""
    console = console or Console()
    for item in report.renderables():
        console.print(item)
    return 0 if report.ok else 2
