"""`mal labels export`: read a label file once, then let the chosen tool's writer fill a staged folder, image by
image (each image hard-linked, or copied, into it), and rename the folder into place when everything is written."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mal.labels.label_set import read_label_set
from mal.labels.staging import check_output_folder, place_image, staged_folder
from mal.progress import progress

# format -> (module:class of its writer, the tool's name); imported on use, so only the chosen tool's library loads
WRITERS: dict[str, tuple[str, str]] = {
    "fiftyone": ("mal.labels.fiftyone:FiftyOneWriter", "FiftyOne"),
    "cvat": ("mal.labels.cvat:CvatWriter", "CVAT"),
    "labelstudio": ("mal.labels.labelstudio:LabelStudioWriter", "Label Studio"),
}


@dataclass(frozen=True)
class ExportSummary:
    tool: str
    out: Path
    images: int
    masks: int
    skipped: int  # empty masks the tool cannot hold
    linked: int
    copied: int
    import_hint: str

    def lines(self) -> list[str]:
        plural = "s" if self.skipped > 1 else ""
        skipped = f", {self.skipped} empty mask{plural} left out" if self.skipped else ""
        placed = (
            f"{self.linked} images hard-linked and {self.copied} copied"
            if self.linked or self.copied
            else "labels only: pass --images to include the images"
        )
        return [
            f"wrote {self.images} images and {self.masks} masks for {self.tool} to {self.out} ({placed}{skipped}).",
            f"to import: {self.import_hint}; see docs/EXPORT.md.",
        ]


def _writer_class(fmt: str) -> Any:
    if fmt not in WRITERS:
        raise ValueError(f"unknown export format {fmt!r}")
    module_name, class_name = WRITERS[fmt][0].split(":")
    writer_class = getattr(importlib.import_module(module_name), class_name)
    check = getattr(writer_class, "check_dependencies", None)
    if check is not None:
        check()  # a missing extra is said before the label file is read
    return writer_class


def export_labels(
    labels_path: str | os.PathLike[str],
    fmt: str,
    out: str | os.PathLike[str],
    *,
    images_dir: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
) -> ExportSummary:
    """Write `labels_path` for the tool `fmt` into the folder `out` (with the images of `images_dir`, if given)."""
    writer_class = _writer_class(fmt)
    out = Path(os.path.abspath(out))
    inputs = [Path(labels_path)] + ([Path(images_dir)] if images_dir is not None else [])
    check_output_folder(out, overwrite=overwrite, inputs=inputs)
    labels = read_label_set(labels_path, images_dir)
    linked = copied = masks = 0
    with staged_folder(out) as folder:
        writer = writer_class(labels, folder)
        for image in progress(labels.images, total=len(labels.images), description=f"export {fmt}", unit="images"):
            if image.source is not None:
                if place_image(image.source, folder / writer.image_folder / image.file_name):
                    linked += 1
                else:
                    copied += 1
            masks += writer.add(image)
        writer.finish()
    return ExportSummary(
        tool=WRITERS[fmt][1],
        out=out,
        images=len(labels.images),
        masks=masks,
        skipped=writer.skipped,
        linked=linked,
        copied=copied,
        import_hint=writer.import_hint(out, images_dir is not None),
    )


def export_main(labels_path: Path, fmt: str, out: Path, images_dir: Path | None, overwrite: bool) -> int:
    """The CLI's entry: export, then print the summary (stdout: the two lines, for people and scripts alike)."""
    summary = export_labels(labels_path, fmt, out, images_dir=images_dir, overwrite=overwrite)
    for line in summary.lines():
        print(line)
    return 0
