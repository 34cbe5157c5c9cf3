"""The job contract seen from outside the job: build a trial's spec, read its status.json and checkpoints.

Any platform (local or remote) leaves the same files under a job's results_dir, so this module is shared:
    results_dir/train/status.json           JSON Lines events with kpi per epoch
    results_dir/train/mal_model_epoch_NNN.pth, mal_model_latest.pth, mal_model_best.pth
    results_dir/evaluate/metrics.json       the evaluate action's metrics
Plain JSON and YAML only: AutoML never imports the engine.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mal import jobfiles
from mal.dotted import get_dotted, set_dotted
from mal.jobfiles import read_status_events
from mal.safe_yaml import load_mapping

# -- specs -------------------------------------------------------------------------------------------------------


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A spec or template file as a mapping (empty for an empty file); SpecError naming the file otherwise."""
    return load_mapping(path, str(path), "must hold a mapping of spec sections, got {kind}; rewrite it.")


def dump_yaml(spec: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(spec), sort_keys=False, default_flow_style=None)


def device_count(spec: Mapping[str, Any]) -> int:
    """Data-parallel processes a training of this spec runs (gpu_ids wins over num_gpus when longer)."""
    gpus = int(get_dotted(spec, "train.num_gpus", 1) or 1)
    gpu_ids = get_dotted(spec, "train.gpu_ids") or []
    nodes = int(get_dotted(spec, "train.num_nodes", 1) or 1)
    return max(gpus, len(gpu_ids) if len(gpu_ids) > 1 else 1) * nodes


def cap_batch_size(spec: dict[str, Any], samples: int | None) -> list[dict[str, Any]]:
    """Cap train.batch_size in place so an epoch has at least one step on every device; the changes made."""
    batch = get_dotted(spec, "train.batch_size")
    if not samples or not isinstance(batch, int):
        return []
    devices = device_count(spec)
    if batch * devices <= samples:
        return []
    capped = max(1, samples // devices)
    set_dotted(spec, "train.batch_size", capped)
    reason = f"{samples} training samples over {devices} device(s) give zero steps per epoch at batch size {batch}"
    return [{"key": "train.batch_size", "from": batch, "to": capped, "reason": reason}]


def count_train_samples(spec: Mapping[str, Any]) -> int | None:
    """Boxes the training will use, counted from a local `dataset.train_ann_path` with plain json.

    Mirrors the data loader's filter: not crowd, box area in (min_obj_size, max_obj_size]. None when the file
    is remote, missing or not COCO.
    """
    ann_path = get_dotted(spec, "dataset.train_ann_path")
    if not ann_path or "://" in str(ann_path):
        return None
    path = Path(str(ann_path)).expanduser()
    if not path.is_file():
        return None
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    annotations = coco.get("annotations") if isinstance(coco, dict) else None
    if not isinstance(annotations, list):
        return None
    low = float(get_dotted(spec, "dataset.min_obj_size", 0.0) or 0.0)
    high = float(get_dotted(spec, "dataset.max_obj_size", math.inf) or math.inf)
    count = 0
    for ann in annotations:
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if not bbox or len(bbox) < 4 or ann.get("iscrowd", 0):
            continue
        area = max(float(bbox[2]), 0.0) * max(float(bbox[3]), 0.0)
        if low < area <= high:
            count += 1
    return count


# -- status.json and checkpoints: the rules live in mal.jobfiles, shared with the engine that writes the files ----


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def epoch_metrics(events: list[dict[str, Any]], metric: str) -> dict[int, float]:
    """epoch -> value of `metric` from every event whose kpi holds it (the last event of an epoch wins)."""
    values: dict[int, float] = {}
    for event in events:
        kpi = event.get("kpi") or {}
        value = _finite(kpi.get(metric)) if isinstance(kpi, dict) else None
        if value is not None and isinstance(event.get("epoch"), int):
            values[int(event["epoch"])] = value
    return values


def last_epoch(events: list[dict[str, Any]]) -> int:
    return max((int(e["epoch"]) for e in events if isinstance(e.get("epoch"), int)), default=0)


def latest_checkpoint(results_dir: str | Path) -> Path | None:
    """The newest epoch checkpoint of a trial (what a promoted trial continues from)."""
    return jobfiles.latest_checkpoint(jobfiles.action_dir(results_dir, jobfiles.TRAIN_DIR))


def best_checkpoint(results_dir: str | Path, events: list[dict[str, Any]] | None = None) -> Path | None:
    """The trial's best checkpoint (never its latest): see `mal.jobfiles.best_checkpoint`."""
    if events is None:
        events = read_status_events(results_dir)
    return jobfiles.best_checkpoint(jobfiles.action_dir(results_dir, jobfiles.TRAIN_DIR), events)


def read_eval_metrics(results_dir: str | Path) -> dict[str, Any] | None:
    try:
        data = json.loads((Path(results_dir) / "evaluate" / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
