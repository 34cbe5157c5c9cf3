"""`mal demo` wires the whole job together: data, training, evaluation, labels and the review page."""

from __future__ import annotations

import json
import os

import pytest

from mal.engine.run_lock import hold_run_lock
from mal.presets import preset_path
from mal.spec import load_spec
from support.engine import run_mal

pytestmark = pytest.mark.slow


def test_demo_preset_is_a_valid_spec():
    spec = load_spec(preset_path("demo"))
    assert spec.model.arch == "vit-tiny/16" and spec.dataset.crop_size % 16 == 0


def test_demo_runs_end_to_end(tmp_path):
    results = tmp_path / "demo"
    result = run_mal("demo", "--results-dir", str(results), "--epochs", "1", "train.validation_interval=1")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "box filled as the mask" in result.stdout
    metrics = json.loads((results / "evaluate" / "metrics.json").read_text())
    assert 0.0 <= metrics["mIoU"] <= 1.0 and metrics["box_fill_mIoU"] > 0.5
    labels = json.loads((results / "labels.json").read_text())
    assert all("counts" in ann["segmentation"] for ann in labels["annotations"])
    assert (results / "inference" / "gallery" / "index.html").is_file()
    assert str(results / "inference" / "gallery" / "index.html") in result.stdout

    # Run again, it trains again (mal train alone would refuse to start beside the first run's checkpoints).
    again = run_mal("demo", "--results-dir", str(results), "--epochs", "1", "train.validation_interval=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "replacing the previous demo's training" in again.stdout
    # A train folder of other data is not the demo's to delete.
    other = tmp_path / "other.json"
    other.write_bytes((results / "data" / "annotations.json").read_bytes())
    kept = sorted(path.name for path in (results / "train").glob("mal_model_epoch_*.pth"))
    refused = run_mal("demo", "--results-dir", str(results), "--epochs", "1", "--ann", str(other), "--images",
                      str(results / "data" / "images"))  # fmt: skip
    assert refused.returncode == 2 and "already holds the checkpoints of an earlier run" in refused.stderr
    assert sorted(path.name for path in (results / "train").glob("mal_model_epoch_*.pth")) == kept
    # While another run holds the train folder, a demo run again deletes nothing of it.
    with hold_run_lock(results / "train", "train"):
        busy = run_mal("demo", "--results-dir", str(results), "--epochs", "1")
    assert busy.returncode == 2 and str(os.getpid()) in busy.stderr
    assert sorted(path.name for path in (results / "train").glob("mal_model_epoch_*.pth")) == kept


def test_demo_needs_both_ann_and_images(tmp_path):
    result = run_mal("demo", "--results-dir", str(tmp_path), "--ann", "x.json")
    assert result.returncode == 2
    assert "--images" in result.stderr
