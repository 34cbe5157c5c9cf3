"""An image for the review page, read under the decompression-bomb pixel limit, with one clear error for each fault."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from mal.data.image_checks import IMAGE_DECODE_ERRORS
from mal.data.pixel_limit import MAX_IMAGE_PIXELS_ENV, pixel_limit
from mal.errors import DataError


def open_image(
    path: Path, image_id: Any, *, decode: bool, source: str | Path | None = None
) -> Image.Image | tuple[int, int]:
    """The image as RGB (decode) or just its (height, width) from the header; DataError for anything wrong."""
    entry = f"{source} (image {image_id}): " if source is not None else ""
    try:
        with pixel_limit() as limit, Image.open(path) as opened:
            if opened.width * opened.height > limit:
                raise _too_large(entry, path, limit)
            return opened.convert("RGB") if decode else (opened.height, opened.width)
    except Image.DecompressionBombError:
        raise _too_large(entry, path, limit) from None
    except FileNotFoundError:
        raise DataError(
            f"{entry}image file {path} for image id {image_id} does not exist; check the images folder."
        ) from None
    except IMAGE_DECODE_ERRORS as error:
        raise DataError(f"{entry}image file {path} for image id {image_id} cannot be read ({error}).") from None


def _too_large(entry: str, path: Path, limit: int) -> DataError:
    return DataError(
        f"{entry}image file {path} has more than {limit:,} pixels, the decompression-bomb limit; downscale it, or "
        f"raise {MAX_IMAGE_PIXELS_ENV} if it is genuine."
    )
