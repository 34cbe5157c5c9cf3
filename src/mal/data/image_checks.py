"""The image files a COCO file names: a name must stay inside the image folder, and each file must exist, read,
match the size the JSON declares and stay under the decompression-bomb limit."""

from __future__ import annotations

import os
import re
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from mal.data.coco_boxes import ImageRecord
from mal.data.coco_report import ValidationReport


def escapes_image_folder(file_name: str) -> bool:
    """Whether a COCO file_name points outside the image folder it is joined to: an absolute path (POSIX or
    Windows) or one with a '..' part. Subfolders ("train2017/a.jpg") and links the user made inside the folder
    stay allowed; a label file must not make us read, or show in a review page, /etc/passwd."""
    normalised = file_name.replace("\\", "/")
    return normalised.startswith("/") or bool(re.match(r"^[A-Za-z]:", normalised)) or ".." in normalised.split("/")


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


def check_image_files(report: ValidationReport, images: dict[int, ImageRecord], decode_images: bool) -> None:
    """Report each listed image that is missing, unreadable, above the pixel limit or not the size the JSON says.

    With decode_images every pixel is decoded, not only the header read, so truncated files are found too.
    """
    from mal.data.pixel_limit import MAX_IMAGE_PIXELS_ENV, pixel_limit

    records = list(images.values())
    with pixel_limit() as limit:
        if decode_images and len(records) > 1:
            from PIL import Image

            # Decoders release the GIL, so threads make the full decode several times faster. PIL registers
            # its format plugins lazily: do it once here rather than racing in every thread.
            Image.init()
            workers = min(DECODE_THREADS, os.cpu_count() or 1)
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mal-decode") as pool:
                outcomes = list(pool.map(lambda image: _inspect_image(image.path, decode_images, limit), records))
        else:
            outcomes = [_inspect_image(image.path, decode_images, limit) for image in records]
    for image, (kind, detail) in zip(records, outcomes, strict=True):
        if kind == "missing":
            report.error(
                "missing_image",
                f"{image.path} does not exist",
                "add the image or fix file_name/img_dir",
                image_id=image.id,
            )
        elif kind == "unreadable":
            report.error(
                "unreadable_image",
                f"{image.path} cannot be read as an image ({detail})",
                "replace the file with a valid image",
                image_id=image.id,
            )
        elif kind == "too_large" or detail[2] > limit:
            report.error(
                "image_too_large",
                f"{image.path} has more pixels than the decompression-bomb limit ({MAX_IMAGE_PIXELS_ENV})",
                f"downscale or tile the image, or raise {MAX_IMAGE_PIXELS_ENV} if it is genuine",
                image_id=image.id,
            )
        elif detail[:2] != (image.width, image.height):
            width, height = detail[:2]
            report.error(
                "image_size_mismatch",
                f"{image.file_name} is {width}x{height} on disk but the JSON says {image.width}x{image.height}",
                "fix width/height in the JSON",
                image_id=image.id,
            )
