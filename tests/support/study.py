"""Shared pieces of the AutoML runner tests: the dummy job's command, a skill dir, a tiny COCO file."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from mal.automl import AutoMLRunner, LocalPlatform
from mal.automl.platforms.base import Platform
from mal.spec.export import write_skill_dir

DUMMY_JOB = Path(__file__).with_name("dummy_job.py")


def dummy_command() -> list[str]:
    return [sys.executable, str(DUMMY_JOB), "{action}", "-e", "{spec}"]


def make_skill_dir(root: Path) -> Path:
    skill = root / "skill"
    if not (skill / "schemas" / "train.schema.json").exists():
        write_skill_dir(skill)
    return skill


def quiet_runner(
    root: Path,
    env: dict[str, str] | None = None,
    max_concurrent: int = 2,
    platform: Platform | None = None,
    poll_interval: float = 0.05,
) -> AutoMLRunner:
    """An AutoMLRunner over `root`'s skill dir and workspace, its console swallowed; the dummy job runs on local
    CPU slots unless `platform` is given."""
    return AutoMLRunner(
        skill_dir=make_skill_dir(root),
        platform=platform or LocalPlatform(max_concurrent=max_concurrent, command=dummy_command(), gpus=[], env=env),
        workspace_dir=root / "ws",
        poll_interval=poll_interval,
        console=Console(file=io.StringIO()),
    )


def write_annotations(path: Path, boxes: int, side: float = 60.0) -> Path:
    """A COCO file with `boxes` boxes of side x side pixels on one image."""
    coco = {
        "images": [{"id": 1, "width": 640, "height": 480, "file_name": "a.jpg"}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": [1.0, 1.0, side, side],
                "area": side * side,
                "iscrowd": 0,
            }
            for i in range(boxes)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }
    path.write_text(json.dumps(coco))
    return path


def spec_overrides(root: Path, boxes: int = 40, **extra: Any) -> dict[str, Any]:
    ann = write_annotations(root / "train.json", boxes)
    images = root / "images"
    images.mkdir(exist_ok=True)
    return {
        "dataset.train_ann_path": str(ann),
        "dataset.train_img_dir": str(images),
        "dataset.min_obj_size": 0,
        **extra,
    }


def write_dummy_study(root: Path, workspace: Path, **settings: Any) -> Path:
    """automl.yaml for a random search of dummy jobs; baseline and final evaluation off unless `settings` say."""
    study = {
        "skill_dir": str(make_skill_dir(root)),
        "workspace_dir": str(workspace),
        "algorithm": "random",
        "automl_settings": {"run_baseline": False, "run_final_evaluation": False, **settings},
        "spec_overrides": spec_overrides(root),
        "command": dummy_command(),
    }
    path = root / "automl.yaml"
    path.write_text(yaml.safe_dump(study))
    return path


def automl_run_command(study_file: Path) -> list[str]:
    """`mal automl run` without prompts or the live table, polling its jobs every 50 ms."""
    return [sys.executable, "-m", "mal", "automl", "run", "-e", str(study_file), "--yes", "--no-live",
            "--poll-interval", "0.05"]  # fmt: skip


def launches(log: Path) -> list[tuple[str, int]]:
    """(results_dir, start epoch) of every training the dummy job started (MAL_DUMMY_STARTED_LOG)."""
    if not log.exists():
        return []
    return [(line.split()[0], int(line.split()[1])) for line in log.read_text().splitlines() if line.strip()]
