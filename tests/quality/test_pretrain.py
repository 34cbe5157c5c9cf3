"""`mal pretrain`: MAE on the dataset's images, a checkpoint `mal train` loads through train.pretrained_model_path."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mal.data.coco import load_coco
from mal.engine.pretrain import _random_crops, epoch_plan, run
from mal.model.backbone import build_backbone
from mal.spec.load import load_spec
from mal.weights import load_pretrained_backbone


@pytest.fixture(scope="module")
def pretrained(spec_file, tmp_path_factory) -> Path:
    results = tmp_path_factory.mktemp("results")
    spec = load_spec(spec_file, [f"results_dir={results}"])
    assert run(spec) == 0
    return results


def test_plan_has_every_training_box_plus_random_crops_inside_the_images(spec_file):
    spec = load_spec(spec_file, [])
    coco = load_coco(spec.dataset.train_ann_path, spec.dataset.train_img_dir)
    plan = epoch_plan(coco, spec, epoch=0)
    trainable = int((coco.size_filter(64.0) & ~coco.iscrowd).sum())
    assert len(plan.image_ids) == trainable + 2 * len(coco.images)
    assert sum(len(batch) for batch in plan.batches) == len(plan.image_ids)
    assert max(len(batch) for batch in plan.batches) == 16
    assert (plan.crop_boxes[:, 2:] > plan.crop_boxes[:, :2]).all()
    ids = np.repeat(np.asarray(sorted(coco.images)), 50)
    trainable_rows = np.flatnonzero(coco.size_filter(64.0))
    random_crops = _random_crops(coco, ids, trainable_rows, np.random.default_rng(0), [0.0, 1.2])
    assert (random_crops[:, :2] >= 0).all() and (random_crops[:, 2:] <= 96).all()
    assert len(np.unique(random_crops[:, 0])) > 100  # placed anywhere, not on the boxes
    # A different epoch draws different crops; the same epoch the same ones.
    again = epoch_plan(coco, spec, epoch=0)
    assert np.array_equal(again.crop_boxes, plan.crop_boxes)
    assert not np.array_equal(epoch_plan(coco, spec, epoch=1).crop_boxes, plan.crop_boxes)


def test_pretrain_writes_status_events_and_a_backbone_checkpoint(pretrained):
    events = [json.loads(line) for line in (pretrained / "pretrain" / "status.json").read_text().splitlines()]
    assert [e["status"] for e in events] == ["STARTED", "RUNNING", "RUNNING", "SUCCESS"]
    assert [e["epoch"] for e in events[1:3]] == [1, 2]
    assert all(np.isfinite(e["kpi"]["pretrain/loss"]) for e in events[1:])
    checkpoint = torch.load(pretrained / "pretrain" / "mae_backbone.pth", weights_only=True)
    assert checkpoint["arch"] == "vit-tiny/16" and checkpoint["crop_size"] == 32 and checkpoint["epoch"] == 2
    assert "blocks.11.mlp.fc2.weight" in checkpoint["model"]


def test_checkpoint_loads_into_the_train_backbone_exactly(pretrained):
    path = pretrained / "pretrain" / "mae_backbone.pth"
    saved = torch.load(path, weights_only=True)["model"]
    torch.manual_seed(5)
    backbone = build_backbone("vit-tiny/16", 32)
    report = load_pretrained_backbone(backbone, path)
    assert not report.missing and not report.mismatched and not report.unexpected
    for key, value in saved.items():
        assert torch.equal(backbone.vit.state_dict()[key], value), key


def test_mal_train_starts_from_the_pretrained_weights(spec_file, pretrained, tmp_path):
    checkpoint = pretrained / "pretrain" / "mae_backbone.pth"
    env = {**os.environ, "MAL_NO_PROGRESS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mal",
            "train",
            "-e",
            str(spec_file),
            f"results_dir={tmp_path}",
            f"train.pretrained_model_path={checkpoint}",
            "dataset.load_mask=false",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "150 backbone tensors loaded, 0 missing, 0 with mismatched shapes" in result.stdout


def test_crop_size_not_a_patch_multiple_is_a_spec_error(spec_file, tmp_path):
    env = {**os.environ, "MAL_NO_PROGRESS": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mal",
            "pretrain",
            "-e",
            str(spec_file),
            f"results_dir={tmp_path}",
            "pretrain.crop_size=40",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 2
    assert "pretrain.crop_size = 40 is not a multiple of 16" in result.stderr.strip().splitlines()[-1]
