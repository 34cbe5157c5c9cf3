"""Image thumbnails for the review page: the image read under the pixel limit, scaled down, every mask drawn on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mal.data.image_checks import IMAGE_DECODE_ERRORS
from mal.data.pixel_limit import MAX_IMAGE_PIXELS_ENV, pixel_limit
from mal.errors import DataError

# Distinct, colour-blind-friendly hues (Okabe-Ito first, then Tableau), cycled over the instances of an image.
PALETTE = np.array(
    [
        (230, 159, 0),
        (86, 180, 233),
        (0, 158, 115),
        (240, 228, 66),
        (0, 114, 178),
        (213, 94, 0),
        (204, 121, 167),
        (31, 119, 180),
        (255, 127, 14),
        (44, 160, 44),
        (214, 39, 40),
        (148, 103, 189),
    ],
    dtype=np.uint8,
)
FILL_ALPHA = 0.45


def hex_colour(color: np.ndarray) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color)


def mask_overlay(image: Image.Image, masks: list[np.ndarray | None], thumb_hw: tuple[int, int]) -> Image.Image:
    """The image at thumbnail size with mask i filled and outlined in PALETTE[i % len(PALETTE)]."""
    height, width = image.height, image.width
    # Label map: 0 background, i + 1 instance i; later instances sit on top where masks overlap.
    labels = np.zeros((height, width), dtype=np.int32)
    for index, mask in enumerate(masks):
        if mask is not None:
            labels[mask.astype(bool)] = index + 1
    thumb_h, thumb_w = thumb_hw
    small = np.asarray(Image.fromarray(labels).resize((thumb_w, thumb_h), Image.Resampling.NEAREST))
    pixels = np.asarray(image.resize((thumb_w, thumb_h), Image.Resampling.BILINEAR), dtype=np.float32)
    colours = np.concatenate([np.zeros((1, 3), np.uint8), PALETTE[np.arange(len(masks)) % len(PALETTE)]])
    fill = colours[small].astype(np.float32)
    inside = small > 0
    pixels[inside] = (1 - FILL_ALPHA) * pixels[inside] + FILL_ALPHA * fill[inside]
    # Outline: a labelled pixel whose 4-neighbour carries another label (edge padding keeps the border quiet).
    padded = np.pad(small, 1, mode="edge")
    edge = (
        (padded[:-2, 1:-1] != small)
        | (padded[2:, 1:-1] != small)
        | (padded[1:-1, :-2] != small)
        | (padded[1:-1, 2:] != small)
    ) & inside
    pixels[edge] = fill[edge]
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


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
