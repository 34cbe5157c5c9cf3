"""Decode an image file into an RGB uint8 tensor, whatever mode or orientation it was stored in."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from mal.data.image_checks import IMAGE_DECODE_ERRORS
from mal.data.pixel_limit import DEFAULT_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_ENV, max_image_pixels, pixel_limit
from mal.errors import DataError

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "MAX_IMAGE_PIXELS_ENV", "max_image_pixels", "read_image"]


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """The image at `path` as a 3 x H x W uint8 tensor, EXIF orientation applied.

    Grayscale, palette, RGBA (alpha dropped), CMYK and 16-bit/float images all become 8-bit RGB; images with
    more than 8 bits are stretched from their own min..max so dim 12-bit microscopy stays visible.
    """
    limit = max_image_pixels()
    try:
        with pixel_limit() as limit, Image.open(path) as handle:
            if handle.width * handle.height > limit:
                raise _too_large(path, handle.width * handle.height, limit)
            handle = ImageOps.exif_transpose(handle)
            array = _to_rgb_array(handle)
    except Image.DecompressionBombError as exc:
        raise _too_large(path, None, limit) from exc
    except FileNotFoundError as exc:
        raise DataError(f"image {path} does not exist; add it or fix file_name / img_dir.") from exc
    except IMAGE_DECODE_ERRORS as exc:  # UnidentifiedImageError is an OSError
        raise DataError(f"image {path} cannot be decoded ({exc}); replace it with a valid image.") from exc
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def _too_large(path: str | os.PathLike[str], pixels: int | None, limit: int) -> DataError:
    size = f"{pixels:,} pixels" if pixels else "too many pixels"
    return DataError(
        f"image {Path(path).name} has {size}, above the decompression-bomb limit of {limit:,}; "
        f"if it is genuine raise {MAX_IMAGE_PIXELS_ENV}."
    )


def _to_rgb_array(handle: Image.Image) -> np.ndarray:
    if handle.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(handle, dtype=np.float32)
        low, high = float(values.min()), float(values.max())
        in_byte_range = high <= 255 and low >= 0
        scaled = values if in_byte_range else (values - low) * (255.0 / max(high - low, 1e-6))
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if handle.mode == "P" and "transparency" in handle.info:
        handle = handle.convert("RGBA")
    if handle.mode != "RGB":
        handle = handle.convert("RGB")
    return np.asarray(handle, dtype=np.uint8)
