"""The decompression-bomb guard shared by image checks and decoding (torch-free, so `mal dataset check` stays light).

PIL has its own guard (an error above 2 x `Image.MAX_IMAGE_PIXELS`, about 179 M pixels by default) that would
override ours and ignore `MAL_MAX_IMAGE_PIXELS`; `pixel_limit()` lets ours decide instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image

from mal.env import env_int

MAX_IMAGE_PIXELS_ENV = "MAL_MAX_IMAGE_PIXELS"
DEFAULT_MAX_IMAGE_PIXELS = 400_000_000  # 20k x 20k; far above camera and microscopy tiles


def max_image_pixels() -> int:
    return env_int(MAX_IMAGE_PIXELS_ENV, DEFAULT_MAX_IMAGE_PIXELS, minimum=1, what="a whole number of pixels")


@contextmanager
def pixel_limit() -> Iterator[int]:
    """Within the block PIL only refuses images above our limit; yields the limit for the caller's own check."""
    limit = max_image_pixels()
    previous = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = limit // 2 + 1  # PIL raises above twice this, i.e. only above our limit
        try:
            yield limit
        finally:
            Image.MAX_IMAGE_PIXELS = previous
