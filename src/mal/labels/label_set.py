"""The label file to hand off, read once: mal.data's COCO validation (ids, boxes, masks that fit their image, the
image files when a folder is given), then what a hand-off needs on top of it: a mask on every annotation, one
name per category and one image per file name that XML can hold, numeric scores, and image files that stay
inside the images folder once symbolic links are followed."""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mal.data.coco import load_coco
from mal.data.coco_boxes import CocoBoxes
from mal.errors import DataError
from mal.gallery.label_files import check_entries

# Characters XML 1.0 cannot hold at all; CVAT's and Label Studio's files are XML, and one such character in a
# name would make the whole written file unreadable.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
# Per-annotation numbers the tools can show and sort by (`quality` comes from the quality estimate, when written).
SCORE_KEYS = ("score", "quality")


@dataclass(frozen=True)
class LabelledImage:
    id: int
    file_name: str
    width: int
    height: int
    source: Path | None  # the image file, resolved inside the images folder; None when no folder was given
    annotations: list[dict[str, Any]]  # in file order


@dataclass(frozen=True)
class LabelSet:
    path: Path
    raw: dict[str, Any]  # the parsed file, so a writer can keep every key it had
    categories: dict[int, str]
    images: list[LabelledImage]  # in file order

    @property
    def mask_count(self) -> int:
        return sum(len(image.annotations) for image in self.images)


def read_label_set(labels_path: str | os.PathLike[str], images_dir: str | os.PathLike[str] | None) -> LabelSet:
    """The validated label file; DataError (one sentence naming the file and the entry) on anything wrong."""
    path = Path(labels_path)
    if not path.is_file():
        raise DataError(f"label file {path} does not exist or is not a file; pass the COCO JSON mal inference wrote.")
    if images_dir is not None and not Path(images_dir).is_dir():
        raise DataError(f"--images {images_dir} is not a folder; pass the folder the file names are relative to.")
    coco = load_coco(
        path, images_dir if images_dir is not None else path.parent, load_mask=True, check_images=images_dir is not None
    )
    _check_annotations(coco, path)
    _check_category_names(coco.categories, path)
    _check_file_names(coco, path)
    by_image: dict[int, list[dict[str, Any]]] = {image_id: [] for image_id in coco.images}
    for annotation in coco.annotations:
        by_image[annotation["image_id"]].append(annotation)
    images = [
        LabelledImage(
            id=record.id,
            file_name=record.file_name,
            width=record.width,
            height=record.height,
            source=_inside_folder(coco, record.id, record.file_name, path) if images_dir is not None else None,
            annotations=by_image[record.id],
        )
        for record in coco.images.values()
    ]
    return LabelSet(path=path, raw=coco.raw, categories=dict(coco.categories), images=images)


def _check_annotations(coco: CocoBoxes, path: Path) -> None:
    for annotation in coco.annotations:
        where = f"label file {path} (annotation {annotation['id']})"
        if not annotation.get("segmentation"):
            raise DataError(
                f"{where} has no segmentation; every annotation needs a mask to hand off (mal inference writes one "
                "on each)."
            )
    # The review page's checks of a label file (ids, boxes, finite score/quality, masks that fit their image).
    check_entries(coco.raw, path, "label file")


def _check_category_names(categories: dict[int, str], path: Path) -> None:
    owner: dict[str, int] = {}
    for category_id, name in categories.items():
        if not name.strip() or _NOT_XML.search(name):
            raise DataError(
                f"label file {path} (category {category_id}): name {name[:60]!r} is empty or holds control "
                "characters; give every category a plain name."
            )
        if name in owner:
            raise DataError(
                f"label file {path}: categories {owner[name]} and {category_id} share the name {name[:60]!r}; give "
                "every category its own name (the tools label masks by name)."
            )
        owner[name] = category_id


def _check_file_names(coco: CocoBoxes, path: Path) -> None:
    """One image per written file: two entries naming the same file, or one naming another's folder, would
    overwrite each other in the output."""
    owner: dict[str, int] = {}
    for record in coco.images.values():
        where = f"label file {path} (image {record.id})"
        if _NOT_XML.search(record.file_name):
            raise DataError(f"{where}: file_name {record.file_name[:120]!r} holds control characters; rename the file.")
        key = posixpath.normpath(record.file_name)
        if key in (".", "/"):
            raise DataError(f"{where}: file_name {record.file_name!r} names the folder itself; write the image's name.")
        if key in owner:
            raise DataError(
                f"{where}: file_name {record.file_name[:120]!r} is also image {owner[key]}'s; give every image its "
                "own file."
            )
        owner[key] = record.id
    for key, image_id in owner.items():
        for parent in Path(key).parents:
            if str(parent) in owner:
                raise DataError(
                    f"label file {path} (image {image_id}): file_name {key[:120]!r} lies in a folder that image "
                    f"{owner[str(parent)]} names as its file; rename one of them."
                )


def _inside_folder(coco: CocoBoxes, image_id: int, file_name: str, path: Path) -> Path:
    """The image file with every symbolic link followed, refused when that leaves the images folder: a label file
    must not make the export copy /etc/passwd into a folder handed to others."""
    root = coco.img_dir.resolve()
    source = (coco.img_dir / file_name).resolve()
    if not source.is_relative_to(root) or not source.is_file():
        raise DataError(
            f"label file {path} (image {image_id}): {file_name[:120]!r} resolves to {source}, not a file inside the "
            f"images folder {root} (a symbolic link out of it?); put the image itself in that folder."
        )
    return source
