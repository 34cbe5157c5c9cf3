"""Image decoding: every stored mode becomes RGB uint8, EXIF orientation applied, bombs refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mal.data.images import read_image
from mal.errors import DataError


@pytest.mark.parametrize(
    ("mode", "value"),
    [("L", 100), ("RGBA", (10, 20, 30, 0)), ("P", 3), ("1", 1), ("LA", (50, 255))],
)
def test_modes_become_rgb(tmp_path, mode, value):
    path = tmp_path / f"image_{mode}.png"
    Image.new(mode, (7, 5), value).save(path)
    image = read_image(path)
    assert image.shape == (3, 5, 7) and image.dtype == torch.uint8
    expected = np.asarray(Image.open(path).convert("RGB"))[0, 0]
    assert image[:, 0, 0].tolist() == expected.tolist()


def test_cmyk_jpeg(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 6), (0, 255, 255, 0)).save(path)  # red in CMYK
    image = read_image(path).int()
    assert image.shape == (3, 6, 8)
    assert image[0].min() > 200 and image[1].max() < 60 and image[2].max() < 60


def test_16_bit_images_are_stretched(tmp_path):
    path = tmp_path / "deep.png"
    values = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)
    Image.fromarray(values).save(path)
    image = read_image(path)
    assert image.shape == (3, 2, 2)
    assert image[0].tolist() == [[0, 64], [128, 255]]


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    pixels = np.zeros((10, 20, 3), dtype=np.uint8)
    pixels[:, :5] = 255  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways, display rotated 90 degrees clockwise
    Image.fromarray(pixels).save(path, exif=exif.tobytes(), quality=100)
    image = read_image(path)
    assert image.shape == (3, 20, 10)
    assert image[:, :5].float().mean() > 200 and image[:, -5:].float().mean() < 50


def test_decompression_bomb_guard(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setenv("MAL_MAX_IMAGE_PIXELS", "5000")
    with pytest.raises(DataError, match="decompression-bomb limit of 5,000; .*MAL_MAX_IMAGE_PIXELS"):
        read_image(path)


def test_broken_and_missing_files(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="cannot be decoded"):
        read_image(broken)
    with pytest.raises(DataError, match="does not exist"):
        read_image(tmp_path / "missing.png")
