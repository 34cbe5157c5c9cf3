"""A static review page for a label dump: every mask drawn over its image, doubtful instances first.

`write_gallery` writes `out_dir/thumbs/<image>.jpg` (the image scaled to `thumb_size` with every mask as a
translucent fill and an opaque outline) and then `out_dir/index.html`, last, so a reader never finds a page
that points at missing thumbnails. The page needs nothing from the network: CSS, JavaScript and the instance
data (embedded as JSON) live inside it. One card per instance zooms into its box on the shared image thumbnail
and lists category, score and IoU; the cards sort by worst IoU, smallest score or image. The sort order can
also be chosen with the URL fragment (`index.html#sort=score`), which is how the tests drive it.
"""

from __future__ import annotations

import io
import json
import math
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mal.data.coco import IMAGE_DECODE_ERRORS, MAX_JSON_DEPTH, escapes_image_folder, json_nesting_depth
from mal.data.geometry import segmentation_problems
from mal.data.pixel_limit import MAX_IMAGE_PIXELS_ENV, pixel_limit
from mal.errors import DataError
from mal.fileio import atomic_write_bytes, atomic_write_text
from mal.masks import decode_rle, segmentation_to_rle
from mal.metrics import instance_ious

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


def _hex(color: np.ndarray) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in color)


def _overlay(image: Image.Image, masks: list[np.ndarray | None], thumb_hw: tuple[int, int]) -> Image.Image:
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


def _open_image(
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


def _check_masks_fit(items: list[tuple[dict[str, Any], int, int, str]], source: str | Path | None) -> None:
    """Refuse (DataError) the first segmentation pycocotools could not decode safely to its image's size.

    items: (annotation, height, width, which image) for each annotation; those without a mask are skipped.
    """
    with_masks = [item for item in items if item[0].get("segmentation")]
    problems = segmentation_problems((ann["segmentation"], height, width) for ann, height, width, _ in with_masks)
    for (ann, _, _, where), problem in zip(with_masks, problems, strict=True):
        if problem is not None:
            raise DataError(
                f"{source or 'labels'} (annotation {ann.get('id')}, {where}): {problem[0]}; {problem[1]}."
            )


def _doubt_key(anns: list[dict[str, Any]], ious: Mapping[Any, float]) -> tuple[float, float]:
    """Images whose worst instance is most doubtful come first when only some images are shown."""
    worst_iou = min((ious[a["id"]] for a in anns if a.get("id") in ious), default=2.0)
    worst_score = min((float(a["score"]) for a in anns if a.get("score") is not None), default=2.0)
    return worst_iou, worst_score


def write_gallery(
    labels: Mapping[str, Any],
    image_path_of: Callable[[Any], str | Path] | Mapping[Any, str | Path],
    out_dir: str | Path,
    *,
    ious: Mapping[Any, float] | None = None,
    max_images: int | None = None,
    thumb_size: int = 512,
    source: str | Path | None = None,
) -> Path:
    """Write the review page for a COCO dict whose annotations carry `segmentation` (and `score`); return it.

    image_path_of maps an image id to its file (a callable or a dict). ious maps annotation id -> IoU with the
    ground truth, where that exists. max_images keeps the images with the most doubtful instances. source names
    the label file in errors. Every image and mask is checked before the first thumbnail is written.
    """
    out = Path(out_dir)
    iou_of = dict(ious or {})
    path_of = image_path_of.__getitem__ if isinstance(image_path_of, Mapping) else image_path_of
    categories = {c["id"]: c.get("name", str(c["id"])) for c in labels.get("categories", [])}
    anns_of: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for ann in labels.get("annotations", []):
        anns_of[ann["image_id"]].append(ann)

    images = list(labels.get("images", []))
    if max_images is not None:
        images = sorted(images, key=lambda im: _doubt_key(anns_of[im["id"]], iou_of))[: max(max_images, 0)]

    # Headers and masks first: a bad image or mask is refused before anything is written.
    for image_info in images:
        image_id = image_info["id"]
        path = Path(path_of(image_id))
        height, width = _open_image(path, image_id, decode=False, source=source)  # type: ignore[misc]
        _check_masks_fit([(ann, height, width, f"image {path.name}") for ann in anns_of[image_id]], source)

    entries: list[dict[str, Any]] = []
    for order, image_info in enumerate(images):
        image_id = image_info["id"]
        image = _open_image(Path(path_of(image_id)), image_id, decode=True, source=source)
        assert isinstance(image, Image.Image)
        scale = min(1.0, thumb_size / max(image.width, image.height))
        thumb_hw = (max(1, round(image.height * scale)), max(1, round(image.width * scale)))
        anns = anns_of[image_id]
        masks = [
            decode_rle(segmentation_to_rle(a["segmentation"], (image.height, image.width)))
            if a.get("segmentation")
            else None
            for a in anns
        ]
        buffer = io.BytesIO()
        _overlay(image, masks, thumb_hw).save(buffer, format="JPEG", quality=88)
        thumb_name = f"thumbs/{order:05d}.jpg"
        atomic_write_bytes(out / thumb_name, buffer.getvalue())
        for index, ann in enumerate(anns):
            x, y, w, h = (float(v) for v in ann.get("bbox", (0, 0, image.width, image.height)))
            score = ann.get("score")
            entries.append(
                {
                    "ann_id": ann.get("id"),
                    "image_id": image_id,
                    "image_order": order,
                    "file": str(image_info.get("file_name", image_id)),
                    "thumb": thumb_name,
                    "thumb_w": thumb_hw[1],
                    "thumb_h": thumb_hw[0],
                    "box": [x * scale, y * scale, w * scale, h * scale],
                    "category": categories.get(ann.get("category_id"), str(ann.get("category_id"))),
                    "score": None if score is None else float(score),
                    "iou": iou_of.get(ann.get("id")),
                    "area": ann.get("area"),
                    "has_mask": masks[index] is not None,
                    "colour": _hex(PALETTE[index % len(PALETTE)]),
                }
            )

    index_path = out / "index.html"
    atomic_write_text(index_path, _page(entries, num_images=len(images)))
    return index_path


def _page(entries: list[dict[str, Any]], num_images: int) -> str:
    # "<" escaped so no label text can close the script element; the result is still valid JSON.
    data = json.dumps({"entries": entries, "num_images": num_images}).replace("<", "\\u003c")
    return _PAGE_TEMPLATE.replace("__DATA__", data)


_PAGE_TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>MAL masks for review</title>
<script>
  // Any script error lands in the page, so a reviewer (and the tests) can see it.
  function reportError(text) {
    var box = document.getElementById("errors");
    if (!box) { window.__pendingErrors = (window.__pendingErrors || []).concat([text]); return; }
    var line = document.createElement("div");
    line.className = "error";
    line.textContent = text;
    box.appendChild(line);
  }
  window.onerror = function (message, source, line) { reportError(message + " (line " + line + ")"); };
  window.addEventListener("unhandledrejection", function (event) { reportError(String(event.reason)); });
</script>
<style>
  body { font-family: system-ui, sans-serif; margin: 16px; background: #f4f4f4; color: #222; }
  header { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin-bottom: 12px; }
  #errors .error { color: #b00020; font-weight: bold; }
  #cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; }
  .instance-card { background: #fff; border-radius: 6px; padding: 8px; box-shadow: 0 1px 3px rgba(0,0,0,.2); }
  .view { position: relative; width: 200px; height: 200px; overflow: hidden; background-color: #000;
          background-repeat: no-repeat; image-rendering: pixelated; margin: 0 auto; }
  .view .box { position: absolute; border: 1px dashed #fff; box-sizing: border-box; }
  .meta { font-size: 13px; line-height: 1.45; margin-top: 6px; word-break: break-all; }
  .swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px; margin-right: 4px; }
  .low { color: #b00020; font-weight: bold; }
</style>
</head>
<body>
<header>
  <h1 style="font-size: 20px; margin: 0">MAL masks for review</h1>
  <label>Sort by
    <select id="sort">
      <option value="iou">worst IoU first</option>
      <option value="score">smallest score first</option>
      <option value="image">image</option>
    </select>
  </label>
  <span id="summary"></span>
</header>
<div id="errors"></div>
<div id="cards"></div>
<script type="application/json" id="gallery-data">__DATA__</script>
<script>
(function () {
  var data = JSON.parse(document.getElementById("gallery-data").textContent);
  var entries = data.entries;
  var VIEW = 200;
  (window.__pendingErrors || []).forEach(reportError);

  // Missing values sort last, whatever the key.
  function ascending(key) {
    return function (a, b) {
      var x = a[key], y = b[key];
      if (x === null || x === undefined) { return (y === null || y === undefined) ? 0 : 1; }
      if (y === null || y === undefined) { return -1; }
      return x - y;
    };
  }
  var ORDERS = {
    iou: function (a, b) { return ascending("iou")(a, b) || ascending("score")(a, b); },
    score: function (a, b) { return ascending("score")(a, b) || ascending("iou")(a, b); },
    image: function (a, b) { return a.image_order - b.image_order; }
  };

  function fmt(value) { return (value === null || value === undefined) ? "n/a" : value.toFixed(3); }

  function view(entry) {
    // Zoom into the box and its surroundings (1.5x, at least 24 thumbnail pixels) on the shared thumbnail.
    var b = entry.box;
    var side = Math.max(b[2], b[3], 16) * 1.5;
    var cx = b[0] + b[2] / 2, cy = b[1] + b[3] / 2;
    var zoom = VIEW / side;
    var left = cx - side / 2, top = cy - side / 2;
    var element = document.createElement("a");
    element.className = "view";
    element.href = entry.thumb;
    element.target = "_blank";
    element.style.backgroundImage = "url('" + entry.thumb + "')";
    element.style.backgroundSize = (entry.thumb_w * zoom) + "px " + (entry.thumb_h * zoom) + "px";
    element.style.backgroundPosition = (-left * zoom) + "px " + (-top * zoom) + "px";
    element.style.display = "block";
    var outline = document.createElement("div");
    outline.className = "box";
    outline.style.left = ((b[0] - left) * zoom) + "px";
    outline.style.top = ((b[1] - top) * zoom) + "px";
    outline.style.width = (b[2] * zoom) + "px";
    outline.style.height = (b[3] * zoom) + "px";
    element.appendChild(outline);
    return element;
  }

  function line(parent, label, value, low) {
    var row = document.createElement("div");
    row.textContent = label + ": " + value;
    if (low) { row.className = "low"; }
    parent.appendChild(row);
  }

  function card(entry) {
    var element = document.createElement("div");
    element.className = "instance-card";
    element.dataset.annId = String(entry.ann_id);
    element.dataset.imageId = String(entry.image_id);
    element.appendChild(view(entry));
    var meta = document.createElement("div");
    meta.className = "meta";
    var title = document.createElement("div");
    var swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = entry.colour;
    title.appendChild(swatch);
    title.appendChild(document.createTextNode(entry.category + (entry.has_mask ? "" : " (no mask)")));
    meta.appendChild(title);
    line(meta, "score", fmt(entry.score), entry.score !== null && entry.score < 0.5);
    if (entry.iou !== null && entry.iou !== undefined) { line(meta, "IoU", fmt(entry.iou), entry.iou < 0.5); }
    line(meta, "image", entry.file);
    line(meta, "annotation", String(entry.ann_id));
    element.appendChild(meta);
    return element;
  }

  function render(order) {
    var sorted = entries.slice().sort(ORDERS[order]);
    var cards = document.getElementById("cards");
    cards.replaceChildren.apply(cards, sorted.map(card));
    document.getElementById("sort").value = order;
    document.getElementById("summary").textContent =
      entries.length + " instances in " + data.num_images + " images";
  }

  var select = document.getElementById("sort");
  var hasIou = entries.some(function (e) { return e.iou !== null && e.iou !== undefined; });
  var requested = (location.hash.match(/sort=(\\w+)/) || [])[1];
  var initial = ORDERS[requested] ? requested : (hasIou ? "iou" : "score");
  select.addEventListener("change", function () {
    history.replaceState(null, "", "#sort=" + select.value);
    render(select.value);
  });
  render(initial);
})();
</script>
</body>
</html>
"""


def gallery_main(
    labels_path: str | Path,
    images_dir: str | Path,
    out_dir: str | Path,
    *,
    gt_path: str | Path | None = None,
    max_images: int | None = None,
    thumb_size: int = 512,
) -> Path:
    """`mal gallery`: read a label dump (and optionally the ground truth for IoUs) and write the page."""
    labels = _read_coco(labels_path, "label file")
    _check_entries(labels, labels_path, "label file")
    folder = Path(images_dir)
    files = {image["id"]: folder / image["file_name"] for image in labels["images"]}
    ious = None
    if gt_path is not None:
        ground_truth = _read_coco(gt_path, "ground-truth file")
        _check_entries(ground_truth, gt_path, "ground-truth file")
        ious = _ious_against(labels, labels_path, ground_truth, gt_path)
    return write_gallery(
        labels, files, out_dir, ious=ious, max_images=max_images, thumb_size=thumb_size, source=labels_path
    )


def _read_coco(path: str | Path, what: str) -> dict[str, Any]:
    try:
        data = Path(path).read_bytes()
        if json_nesting_depth(data) > MAX_JSON_DEPTH:
            raise RecursionError
        content = json.loads(data)
    except FileNotFoundError:
        raise DataError(f"{what} {path} does not exist; pass the path of a COCO JSON file.") from None
    except IsADirectoryError:
        raise DataError(f"{what} {path} is a folder; pass the path of a COCO JSON file.") from None
    except RecursionError:
        raise DataError(
            f"{what} {path} is nested too deeply (more than {MAX_JSON_DEPTH} levels of lists/objects); a COCO "
            "file needs about 5."
        ) from None
    except ValueError as error:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        reason = str(error).split(";")[0]
        raise DataError(f"{what} {path} is not valid JSON ({reason}).") from None
    if not isinstance(content, dict) or not isinstance(content.get("images"), list):
        raise DataError(f"{what} {path} is not a COCO file: it needs an 'images' list.")
    return content


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _check_entries(content: dict[str, Any], path: str | Path, what: str) -> None:
    """Refuse (DataError naming the file and the entry) what the page cannot show: an image without an integer
    id or a file_name, an annotation without image_id, a non-numeric bbox or score, or a mask that does not fit
    the image size the file declares."""
    sizes: dict[int, tuple[int, int]] = {}
    for position, image in enumerate(content["images"]):
        if not isinstance(image, dict):
            raise DataError(f"{what} {path}: images[{position}] is not an object; write COCO image objects.")
        missing = [key for key in ("id", "file_name") if key not in image]
        if missing:
            raise DataError(
                f"{what} {path}: images[{position}] has no {' and no '.join(missing)}; every image needs an "
                "integer id and a file_name."
            )
        if not _is_int(image["id"]):
            raise DataError(f"{what} {path}: images[{position}] has id {image['id']!r}; use an integer id.")
        if not isinstance(image["file_name"], str) or not image["file_name"]:
            raise DataError(
                f"{what} {path} (image {image['id']}): file_name {image['file_name']!r} is not a file name; "
                "write the image's file name."
            )
        if escapes_image_folder(image["file_name"]):
            raise DataError(
                f"{what} {path} (image {image['id']}): file_name {image['file_name'][:120]!r} leaves the image "
                "folder (absolute, or with '..'); write file names relative to the image folder."
            )
        if "width" in image or "height" in image:
            width, height = image.get("width"), image.get("height")
            if not (_is_int(width) and _is_int(height) and width > 0 and height > 0):
                raise DataError(
                    f"{what} {path} (image {image['id']}): width/height {width!r}x{height!r} are not positive "
                    "integers; write the image's pixel size."
                )
            sizes[image["id"]] = (height, width)
    for key in ("annotations", "categories"):
        if not isinstance(content.get(key, []), list):
            raise DataError(f"{what} {path}: '{key}' is not a list; make it a JSON list.")
    for position, category in enumerate(content.get("categories", [])):
        if not isinstance(category, dict) or not _is_int(category.get("id")):
            raise DataError(f"{what} {path}: categories[{position}] has no integer id; write {{id, name}}.")
    to_check: list[tuple[dict[str, Any], int, int, str]] = []
    for position, ann in enumerate(content.get("annotations", [])):
        if not isinstance(ann, dict):
            raise DataError(f"{what} {path}: annotations[{position}] is not an object; write COCO annotations.")
        name = f"annotation {ann['id']!r}" if "id" in ann else f"annotations[{position}]"
        if "id" in ann and not _is_int(ann["id"]):
            raise DataError(f"{what} {path} ({name}): the id is not an integer; use integer ids.")
        if not _is_int(ann.get("image_id")):
            raise DataError(f"{what} {path} ({name}): image_id is missing or not an integer; add the image's id.")
        bbox = ann.get("bbox")
        if bbox is not None and not (isinstance(bbox, list) and len(bbox) == 4 and all(map(_is_finite, bbox))):
            raise DataError(f"{what} {path} ({name}): bbox {bbox!r:.80} is not 4 finite numbers; fix the box.")
        score = ann.get("score")
        if score is not None and not _is_finite(score):
            raise DataError(f"{what} {path} ({name}): score {score!r:.40} is not a finite number; fix it.")
        if ann["image_id"] in sizes:
            to_check.append((ann, *sizes[ann["image_id"]], f"image {ann['image_id']}"))
    _check_masks_fit(to_check, f"{what} {path}")


def _ious_against(
    labels: Mapping[str, Any], labels_path: str | Path, ground_truth: Mapping[str, Any], gt_path: str | Path
) -> dict[Any, float]:
    """IoU of each labelled instance with the ground-truth annotation of the same id (its source box)."""
    sizes = {image["id"]: (image.get("height"), image.get("width")) for image in labels["images"]}
    truth = {a["id"]: a for a in ground_truth.get("annotations", []) if a.get("segmentation") and "id" in a}
    pairs = [
        (a["id"], a, truth[a["id"]])
        for a in labels.get("annotations", [])
        if a.get("segmentation") and a.get("id") in truth and a["image_id"] in sizes
    ]
    for _, label, _ in pairs:
        if sizes[label["image_id"]][0] is None:
            raise DataError(
                f"label file {labels_path} (image {label['image_id']}): no width/height, which comparing masks "
                "with --gt needs; add the image's pixel size."
            )
    # The ground truth was checked against its own image sizes; here it must fit the labelled image.
    _check_masks_fit(
        [(gt, *sizes[label["image_id"]], f"image {label['image_id']}") for _, label, gt in pairs],
        f"ground-truth file {gt_path}",
    )
    preds = [segmentation_to_rle(p["segmentation"], sizes[p["image_id"]]) for _, p, _ in pairs]
    gts = [segmentation_to_rle(g["segmentation"], sizes[p["image_id"]]) for _, p, g in pairs]
    values = instance_ious(preds, gts)
    return {ann_id: float(v) for (ann_id, _, _), v in zip(pairs, values)}
