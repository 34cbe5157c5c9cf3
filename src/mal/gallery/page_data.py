"""`data.js`: what the page shows (one column per field, one row per card) and what its export writes back.

The page opens from disk, where fetch() of a file:// URL is refused, so the data comes in as a script: two
globals. MAL_GALLERY holds the columns the grid filters and sorts on. MAL_GALLERY_RECORDS is the label file
itself (every top-level key but `annotations`, and the shown annotations, verbatim, in card order) as one JSON
string: a string literal is scanned far faster than the same object literal, and it is parsed only on export.
Its SHA-256 names the gallery's decisions in the browser's storage, so two galleries never share them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mal.errors import DataError
from mal.gallery.crop_jobs import CardFacts
from mal.masks import size_bucket

DATA_FILE = "data.js"
CROPS_DIR = "thumbs"


@dataclass(frozen=True)
class Card:
    """One annotation on the page. position is its index in the label file's annotation list; its picture is
    number `slot` (from the left) of strip `sheet`."""

    annotation: Mapping[str, Any]
    position: int
    image_order: int
    iou: float | None
    sheet: int
    slot: int


def _number(value: Any, digits: int = 6) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return round(float(value), digits)


def _script_json(value: Any) -> str:
    # "<" escaped: nothing in a label can end a script element; the text stays valid JSON and JavaScript.
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def records_json(labels: Mapping[str, Any], cards: Sequence[Card], source: str | Path | None) -> str:
    """The label file as the export rebuilds it (see the module doc); DataError for a value JSON cannot hold."""
    records = {
        "base": {key: value for key, value in labels.items() if key != "annotations"},
        "annotations": [card.annotation for card in cards],
    }
    try:
        return json.dumps(records, separators=(",", ":"), allow_nan=False)
    except ValueError:  # NaN or Infinity, which Python's json reads but no browser does
        raise DataError(
            f"{source or 'labels'}: a value is NaN or Infinity, which the page's export cannot write back as JSON; "
            "replace it with a number or null."
        ) from None


def render_data(
    cards: Sequence[Card],
    facts: Mapping[int, CardFacts],
    categories: Mapping[Any, str],
    images: Sequence[Mapping[str, Any]],
    records: str,
    *,
    crop_size: int,
    has_truth: bool,
    source: str | Path | None,
) -> str:
    """The text of data.js. facts: card index -> what drawing the card measured (area, IoU when there is a
    ground truth); an IoU the caller gave (Card.iou) wins."""
    names = list(dict.fromkeys(categories.values()))
    category_index = {name: index for index, name in enumerate(names)}

    def category_of(annotation: Mapping[str, Any]) -> int:
        name = categories.get(annotation.get("category_id"), str(annotation.get("category_id")))
        if name not in category_index:
            category_index[name] = len(names)
            names.append(name)
        return category_index[name]

    area_list = [facts[index].area for index in range(len(cards))]
    qualities = [_number(card.annotation.get("quality")) for card in cards]
    ious = [_number(card.iou if card.iou is not None else facts[index].iou) for index, card in enumerate(cards)]
    data = {
        "version": 1,
        "identity": hashlib.sha256(records.encode()).hexdigest()[:20],
        "source": Path(source).name if source is not None else None,
        "crops": {"dir": CROPS_DIR, "size": crop_size},
        "has_truth": has_truth,
        "has_iou": any(value is not None for value in ious),
        "has_quality": any(value is not None for value in qualities),
        "categories": names,
        "files": [str(image.get("file_name", image.get("id"))) for image in images],
        "image_ids": [image.get("id") for image in images],
        "columns": {
            "ann": [card.annotation.get("id") for card in cards],
            "image": [card.image_order for card in cards],
            "category": [category_of(card.annotation) for card in cards],
            "score": [_number(card.annotation.get("score")) for card in cards],
            "iou": ious,
            "quality": qualities,
            "area": area_list,
            "size": size_bucket(area_list).tolist() if cards else [],
            "mask": [1 if card.annotation.get("segmentation") else 0 for card in cards],
            "position": [card.position for card in cards],
            "sheet": [card.sheet for card in cards],
            "slot": [card.slot for card in cards],
        },
    }
    return (
        "// The review gallery's data, written by mal gallery and loaded by index.html.\n"
        f"window.MAL_GALLERY = {_script_json(data)};\n"
        f"window.MAL_GALLERY_RECORDS = {_script_json(records)};\n"
    )
