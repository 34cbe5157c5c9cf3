"""The one tiny spec every test starts from (vit-tiny/16 at crop 32, 2 epochs, one thread), with dotted overrides
for what a test needs beyond it: `write_tiny_spec(path, ann, images, {"train.num_epochs": 15})`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mal.dotted import set_dotted

TINY: dict[str, Any] = {
    "dataset": {"crop_size": 32, "min_obj_size": 64, "num_workers_per_gpu": 0},
    "model": {"arch": "vit-tiny/16", "mask_head_hidden_channel": 16, "mask_head_out_channel": 16, "vit_dpr": 0.0},
    "train": {"num_epochs": 2, "batch_size": 8, "validation_interval": 1, "checkpoint_interval": 1, "num_threads": 1},
    "evaluate": {"batch_size": 64},
    "inference": {"batch_size": 64},
}


def tiny_spec(
    ann: Path, images: Path, results: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    spec = yaml.safe_load(yaml.safe_dump(TINY))  # a deep copy
    set_dotted(spec, "dataset.train_ann_path", str(ann))
    set_dotted(spec, "dataset.train_img_dir", str(images))
    if results is not None:
        spec["results_dir"] = str(results)
    for key, value in (overrides or {}).items():
        set_dotted(spec, key, value)
    return spec


def write_tiny_spec(
    path: Path, ann: Path, images: Path, results: Path | None = None, overrides: Mapping[str, Any] | None = None
) -> Path:
    path.write_text(yaml.safe_dump(tiny_spec(ann, images, results, overrides), sort_keys=False))
    return path
