"""A tiny synthetic dataset and one short training run, shared by the engine tests (trained once per session)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mal.data.synthetic import make_synthetic_coco
from support.specs import write_tiny_spec

# The support spec, trained long enough (15 epochs at crop 64) that masks beat their boxes.
ENGINE_SPEC = {
    "dataset.crop_size": 64,
    "dataset.min_obj_size": 256,
    "model.mask_head_hidden_channel": 64,
    "model.mask_head_out_channel": 64,
    "model.teacher_momentum": 0.9,
    "train.num_epochs": 15,
    "train.batch_size": 16,
    "train.lr": 5.0e-5,
    "train.validation_interval": 5,
    "train.checkpoint_interval": 5,
    "train.loss_mil_step": 20,
    "train.loss_crf_step": 40,
    "train.crf_num_iter": 10,
    "train.num_threads": 2,
    "evaluate.batch_size": 32,
    "inference.batch_size": 32,
}


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
    return write_tiny_spec(path, synthetic / "annotations.json", synthetic / "images", overrides=ENGINE_SPEC)


@pytest.fixture(scope="session")
def trained(tiny_spec, tmp_path_factory) -> Path:
    """results_dir of one finished `mal train` run on the synthetic data."""
    results = tmp_path_factory.mktemp("trained")
    result = run_mal("train", "-e", str(tiny_spec), f"results_dir={results}")
    assert result.returncode == 0, result.stderr[-3000:]
    return results
