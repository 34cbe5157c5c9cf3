"""A tiny synthetic dataset and one short training run, shared by the engine tests (trained once per session)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mal.data.synthetic import make_synthetic_coco

TINY_SPEC = """\
dataset:
  train_ann_path: {ann}
  train_img_dir: {images}
  crop_size: 64
  min_obj_size: 256
  num_workers_per_gpu: 0
model:
  arch: vit-tiny/16
  mask_head_hidden_channel: 64
  mask_head_out_channel: 64
  teacher_momentum: 0.9
  vit_dpr: 0.0
train:
  num_epochs: 15
  batch_size: 16
  lr: 5.0e-5
  validation_interval: 5
  checkpoint_interval: 5
  loss_mil_step: 20
  loss_crf_step: 40
  crf_num_iter: 10
  num_threads: 2
evaluate:
  batch_size: 32
inference:
  batch_size: 32
"""


def run_mal(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mal", *args], capture_output=True, text=True, timeout=timeout,
                          env=_env())


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["MAL_NO_PROGRESS"] = "1"
    return env


def status_events(results_dir: Path, action: str = "train") -> list[dict]:
    path = results_dir / action / "status.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_coco(root, num_images=24, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_spec(synthetic, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("spec") / "spec.yaml"
    path.write_text(TINY_SPEC.format(ann=synthetic / "annotations.json", images=synthetic / "images"))
    return path


@pytest.fixture(scope="session")
def trained(tiny_spec, tmp_path_factory) -> Path:
    """results_dir of one finished `mal train` run on the synthetic data."""
    results = tmp_path_factory.mktemp("trained")
    result = run_mal("train", "-e", str(tiny_spec), f"results_dir={results}")
    assert result.returncode == 0, result.stderr[-3000:]
    return results
