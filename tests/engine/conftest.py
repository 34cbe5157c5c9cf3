"""A tiny synthetic dataset and one short training run, shared by the engine tests (trained once per session).

The CLI helpers these tests call (`run_mal`, `status_events`) are in `support.engine`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from support.engine import run_mal
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
    "train.num_threads": 1,
    "evaluate.batch_size": 32,
    "inference.batch_size": 32,
}


@pytest.fixture(scope="session")
def synthetic(synthetic_coco: Callable[..., Path]) -> Path:
    """24 images of shapes, enough for masks to beat their boxes (read-only)."""
    return synthetic_coco(num_images=24, seed=0)


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
