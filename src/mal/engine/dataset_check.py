"""`mal dataset check`: validate the spec's COCO files, images and pretrained weights, print the report, exit 2 on
errors."""

from __future__ import annotations

from pathlib import Path

from mal.data.check import dataset_check, print_report
from mal.errors import DataError, SpecError
from mal.spec.schema import ExperimentSpec


def run(spec: ExperimentSpec) -> int:
    if spec.train.pretrained_model_path:
        from mal.weights import check_pretrained

        # The spec's other input: a missing or misfit weights file is found here, not after training's data load.
        check_pretrained(spec.train.pretrained_model_path, spec.model.arch, spec.dataset.crop_size)
    dataset = spec.dataset
    pairs = [("train", dataset.train_ann_path, dataset.train_img_dir)]
    if dataset.val_ann_path and dataset.val_ann_path != dataset.train_ann_path:
        pairs.append(("val", dataset.val_ann_path, dataset.val_img_dir or dataset.train_img_dir))
    if spec.inference.ann_path and spec.inference.ann_path not in {p[1] for p in pairs}:
        pairs.append(("inference", spec.inference.ann_path, spec.inference.img_dir or dataset.train_img_dir))
    pairs = [pair for pair in pairs if pair[1]]
    if not pairs:
        raise SpecError("mal dataset check needs dataset.train_ann_path (and dataset.train_img_dir) in the spec.")
    first_failure: str | None = None
    for name, ann_path, img_dir in pairs:
        if not img_dir:
            key = "inference.img_dir" if name == "inference" else f"dataset.{name}_img_dir"
            raise SpecError(f"the {name} annotations {ann_path} need an image folder; set {key}.")
        print(f"== {name}: {ann_path}")
        report = dataset_check(ann_path, img_dir, load_mask=dataset.load_mask, min_obj_size=dataset.min_obj_size,
                               max_obj_size=dataset.max_obj_size,
                               cache_dir=Path(dataset.cache_dir) if dataset.cache_dir else None)
        if print_report(report) and first_failure is None:
            first_failure = report.summary()
    if first_failure is not None:
        # The job contract: exit 2 with the cause as the last stderr line (the tables above went to stdout).
        raise DataError(first_failure)
    return 0
