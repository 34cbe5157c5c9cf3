"""A small synthetic COCO dataset: textured shapes on textured backgrounds, with exact masks.

Shapes are ellipses (box fill ~0.79), triangles (0.5) and wavy blobs/stars (~0.6), so a mask that simply fills
its box scores well below 1 and learning the shape matters. Objects never overlap, so each mask is exactly the
visible object and its box is the mask's tight box. Objects are bright and saturated, backgrounds dark, so a
tiny ViT learns them in minutes on a CPU. The same seed gives the same files.
"""

from __future__ import annotations

import colorsys
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from mal.fileio import atomic_write_json

SHAPES = ("ellipse", "triangle", "blob")


def make_synthetic_coco(
    out_dir: str | os.PathLike[str],
    *,
    num_images: int = 24,
    image_size: tuple[int, int] = (160, 160),
    objects_per_image: tuple[int, int] = (2, 5),
    num_categories: int = 3,
    seed: int = 0,
) -> Path:
    """Write `out_dir/images/*.png` and `out_dir/annotations.json` (RLE masks); return the JSON path.

    `image_size` is (height, width). Category k draws shape `SHAPES[k % 3]`; category ids are 1..num_categories.
    """
    from pycocotools import mask as mask_utils

    if num_categories < 1 or num_images < 1:
        raise ValueError("num_images and num_categories must be >= 1")
    out = Path(out_dir)
    image_dir = out / "images"
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    height, width = image_size
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for image_number in range(num_images):
        image_id = image_number + 1
        canvas = _background(rng, height, width)
        taken: list[tuple[float, float, float, float]] = []
        wanted = int(rng.integers(objects_per_image[0], objects_per_image[1] + 1))
        for _ in range(wanted):
            category = int(rng.integers(num_categories))
            mask = _place_shape(rng, SHAPES[category % len(SHAPES)], height, width, taken)
            if mask is None:
                continue
            canvas[mask] = _object_texture(rng, height, width)[mask]
            rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category + 1,
                    "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                    "area": float(mask_utils.area(rle)),
                    "segmentation": {"size": [height, width], "counts": rle["counts"].decode("ascii")},
                    "iscrowd": 0,
                }
            )
        file_name = f"synthetic_{image_id:04d}.png"
        Image.fromarray(np.clip(canvas * 255 + 0.5, 0, 255).astype(np.uint8)).save(image_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": width, "height": height})
    categories = [
        {
            "id": k + 1,
            "name": f"{SHAPES[k % len(SHAPES)]}" + (f"_{k // len(SHAPES)}" if k >= len(SHAPES) else ""),
            "supercategory": "shape",
        }
        for k in range(num_categories)
    ]
    ann_path = out / "annotations.json"
    atomic_write_json(
        ann_path,
        {
            "info": {"description": "MAL synthetic shapes", "seed": seed, "version": "1"},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": categories,
        },
        indent=None,
    )
    return ann_path


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bicubically."""
    grid = (rng.random((cells, cells)) * 255).astype(np.uint8)
    upsampled = Image.fromarray(grid).resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(upsampled, dtype=np.float32) / 255.0


def _colour(rng: np.random.Generator, value: tuple[float, float], saturation: tuple[float, float]) -> np.ndarray:
    rgb = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*saturation), rng.uniform(*value))
    return np.asarray(rgb, dtype=np.float32)


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = _colour(rng, value=(0.15, 0.4), saturation=(0.2, 0.7))
    blotches = _smooth_noise(rng, height, width, cells=int(rng.integers(4, 9)))
    shade = 0.6 + 0.8 * blotches[:, :, None]
    grain = rng.normal(0.0, 0.03, size=(height, width, 3)).astype(np.float32)
    return np.clip(base * shade + grain, 0.0, 1.0)


def _object_texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    base = _colour(rng, value=(0.75, 1.0), saturation=(0.5, 1.0))
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6, 14)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin((cols * np.cos(angle) + rows * np.sin(angle)) * (2 * np.pi / period))
    shade = 0.8 + 0.2 * stripes[:, :, None]
    grain = rng.normal(0.0, 0.03, size=(height, width, 3)).astype(np.float32)
    return np.clip(base * shade + grain, 0.0, 1.0)


def _place_shape(
    rng: np.random.Generator,
    shape: str,
    height: int,
    width: int,
    taken: list[tuple[float, float, float, float]],
    attempts: int = 40,
) -> np.ndarray | None:
    """A boolean mask of a new shape whose box keeps a 2 px gap to every box in `taken`, or None."""
    short = min(height, width)
    for attempt in range(attempts):
        shrink = 1.0 - 0.5 * attempt / attempts  # later attempts try smaller objects
        side = rng.uniform(0.3, 0.5) * short * shrink
        aspect = rng.uniform(0.7, 1.4)
        box_w, box_h = side * np.sqrt(aspect), side / np.sqrt(aspect)
        if box_w >= width - 2 or box_h >= height - 2:
            continue
        x0 = rng.uniform(1, width - box_w - 1)
        y0 = rng.uniform(1, height - box_h - 1)
        box = (x0, y0, x0 + box_w, y0 + box_h)
        if any(box[0] < t[2] + 2 and t[0] < box[2] + 2 and box[1] < t[3] + 2 and t[1] < box[3] + 2 for t in taken):
            continue
        mask = _draw(rng, shape, box, height, width)
        if mask.sum() < 16:
            continue
        taken.append(box)
        return mask
    return None


def _draw(
    rng: np.random.Generator, shape: str, box: tuple[float, float, float, float], height: int, width: int
) -> np.ndarray:
    x0, y0, x1, y1 = box
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    if shape == "ellipse":
        draw.ellipse(box, fill=1)
    elif shape == "triangle":
        apex = x0 + rng.uniform(0.0, 1.0) * (x1 - x0)
        points = [(apex, y0), (x0, y1), (x1, y1)]
        if rng.random() < 0.5:  # upside down
            points = [(apex, y1), (x0, y0), (x1, y0)]
        draw.polygon(points, fill=1)
    else:
        lobes = int(rng.integers(3, 7))
        depth = rng.uniform(0.2, 0.35)
        phase = rng.uniform(0, 2 * np.pi)
        theta = np.linspace(0, 2 * np.pi, 96, endpoint=False)
        radius = (1 + depth * np.cos(lobes * theta + phase)) / (1 + depth)
        centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
        xs = centre_x + radius * np.cos(theta) * (x1 - x0) / 2
        ys = centre_y + radius * np.sin(theta) * (y1 - y0) / 2
        draw.polygon(list(zip(xs.tolist(), ys.tolist())), fill=1)
    return np.asarray(canvas, dtype=bool)
