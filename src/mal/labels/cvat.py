"""CVAT for images 1.1: `annotations.xml` beside `images/`, the layout CVAT exports and imports ("CVAT 1.1"), and
`cvat_labels.json`, the labels to paste into a CVAT project's raw label editor first.

Each mask is a CVAT mask shape: CVAT's own run-length code over the mask's pixel extent, so the masks arrive
pixel for pixel (no polygon tracing, which would round the outline). Score and quality travel as text attributes,
which CVAT keeps when the project's label declares them (cvat_labels.json does) and drops silently otherwise.
The XML is written with the standard library: Datumaro, the library CVAT itself imports this format with, pins
older Pillow and OpenCV than mal uses, so it is the tests' reader, not a dependency.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from mal.labels.label_set import SCORE_KEYS, LabelledImage, LabelSet
from mal.labels.pixels import image_masks, mask_extent, row_major_runs

TASK_NAME = "mal labels"


class CvatWriter:
    image_folder = "images"

    def __init__(self, labels: LabelSet, folder: Path) -> None:
        self.labels = labels
        self.folder = folder
        self.attributes = [key for key in SCORE_KEYS if any(key in a for i in labels.images for a in i.annotations)]
        self.root = ET.Element("annotations")
        ET.SubElement(self.root, "version").text = "1.1"
        self._meta()
        self.skipped = 0
        self.frames = 0

    def _meta(self) -> None:
        task = ET.SubElement(ET.SubElement(self.root, "meta"), "task")
        ET.SubElement(task, "name").text = TASK_NAME
        ET.SubElement(task, "size").text = str(len(self.labels.images))
        ET.SubElement(task, "mode").text = "annotation"
        labels = ET.SubElement(task, "labels")
        for name in self.labels.categories.values():
            label = ET.SubElement(labels, "label")
            ET.SubElement(label, "name").text = name
            ET.SubElement(label, "type").text = "mask"
            attributes = ET.SubElement(label, "attributes")
            for key in self.attributes:
                attribute = ET.SubElement(attributes, "attribute")
                for tag, text in (("name", key), ("mutable", "False"), ("input_type", "text")):
                    ET.SubElement(attribute, tag).text = text
                ET.SubElement(attribute, "default_value")
                ET.SubElement(attribute, "values")

    def add(self, image: LabelledImage) -> int:
        element = ET.SubElement(
            self.root,
            "image",
            id=str(self.frames),
            name=image.file_name,
            width=str(image.width),
            height=str(image.height),
        )
        self.frames += 1
        written = 0
        for annotation, mask in zip(image.annotations, image_masks(image), strict=True):
            extent = mask_extent(mask)
            if extent is None:  # CVAT has no empty mask shape
                self.skipped += 1
                continue
            x0, y0, x1, y1 = extent
            shape = ET.SubElement(
                element,
                "mask",
                label=self.labels.categories[annotation["category_id"]],
                source="auto",
                occluded="0",
                rle=", ".join(map(str, row_major_runs(mask[y0:y1, x0:x1]))),
                left=str(x0),
                top=str(y0),
                width=str(x1 - x0),
                height=str(y1 - y0),
                z_order="0",
            )
            for key in self.attributes:
                if key in annotation:
                    ET.SubElement(shape, "attribute", name=key).text = repr(float(annotation[key]))
            written += 1
        return written

    def finish(self) -> None:
        tree = ET.ElementTree(self.root)
        ET.indent(tree)
        tree.write(self.folder / "annotations.xml", encoding="utf-8", xml_declaration=True)
        (self.folder / "cvat_labels.json").write_text(json.dumps(self.raw_labels(), indent=2) + "\n", encoding="utf-8")

    def raw_labels(self) -> list[dict[str, object]]:
        """The labels in the JSON CVAT's raw label editor takes."""
        attributes = [
            {"name": key, "mutable": False, "input_type": "text", "default_value": "", "values": [""]}
            for key in self.attributes
        ]
        return [{"name": name, "type": "mask", "attributes": attributes} for name in self.labels.categories.values()]

    def import_hint(self, out: Path, with_images: bool) -> str:
        if with_images:
            return (
                f"in CVAT, create a project with the labels of {out / 'cvat_labels.json'} (Raw), then Import dataset "
                f"with format CVAT 1.1 and a zip of {out}'s contents"
            )
        return (
            f"in CVAT, on a task holding the images and the labels of {out / 'cvat_labels.json'}, Upload annotations "
            f"with format CVAT 1.1 and {out / 'annotations.xml'}"
        )
