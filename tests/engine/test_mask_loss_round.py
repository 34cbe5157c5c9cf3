"""A second round: `mal train` on a label file with masks learns from them through train.loss_mask_weight."""

from __future__ import annotations

import json

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from support.engine import run_mal
from support.specs import write_tiny_spec


def _scalars(results, tag: str) -> list[float]:
    events = next((results / "train" / "tensorboard").glob("events*"))
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return [event.value for event in accumulator.Scalars(tag)] if tag in accumulator.Tags()["scalars"] else []


def test_training_on_a_label_file_with_masks_adds_the_mask_loss(synthetic, tmp_path):
    spec = write_tiny_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images",
                           overrides={"train.loss_mask_weight": 2.0, "train.loss_mask_min_quality": 0.5})  # fmt: skip
    result = run_mal("train", "-e", str(spec), f"results_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-3000:]
    losses = _scalars(tmp_path / "run", "train/loss_mask")
    assert losses and all(value > 0 for value in losses)  # the synthetic masks are drawn by hand: every one counts

    plain = run_mal("train", "-e", str(spec), f"results_dir={tmp_path / 'plain'}", "train.loss_mask_weight=0")
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert _scalars(tmp_path / "plain", "train/loss_mask") == []


def test_a_mask_loss_without_any_mask_to_learn_from_is_refused(synthetic, tmp_path):
    raw = json.loads((synthetic / "annotations.json").read_text())
    for annotation in raw["annotations"]:
        annotation.pop("segmentation", None)
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps(raw))
    spec = write_tiny_spec(tmp_path / "spec.yaml", boxes, synthetic / "images",
                           overrides={"train.loss_mask_weight": 1.0})  # fmt: skip
    result = run_mal("train", "-e", str(spec), f"results_dir={tmp_path / 'run'}")
    assert result.returncode == 2  # the user's input
    assert "train.loss_mask_weight is 1 but" in result.stderr and "has no segmentation" in result.stderr
    assert str(boxes) in result.stderr
    assert not (tmp_path / "run" / "train").exists() or not list((tmp_path / "run" / "train").glob("*.pth"))


def test_a_quality_bar_no_mask_reaches_is_refused(synthetic, tmp_path):
    raw = json.loads((synthetic / "annotations.json").read_text())
    for annotation in raw["annotations"]:
        annotation["quality"] = 0.4
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(raw))
    spec = write_tiny_spec(tmp_path / "spec.yaml", labels, synthetic / "images",
                           overrides={"train.loss_mask_weight": 1.0, "train.loss_mask_min_quality": 0.65})  # fmt: skip
    result = run_mal("train", "-e", str(spec), f"results_dir={tmp_path / 'run'}")
    assert result.returncode == 2
    assert "train.loss_mask_min_quality is 0.65 but no mask of" in result.stderr
    assert "the highest quality is 0.4" in result.stderr
