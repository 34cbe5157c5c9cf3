"""The quality tests' shared spec: a tiny synthetic dataset with the pretraining settings `mal pretrain` tests use."""

from __future__ import annotations

from pathlib import Path

import pytest

from mal.data.synthetic import make_synthetic_coco
from support.specs import write_tiny_spec

PRETRAIN_SPEC = {
    "train.num_epochs": 1,
    "train.batch_size": 16,
    "train.crf_num_iter": 2,
    "train.num_threads": 1,
    "pretrain.num_epochs": 2,
    "pretrain.batch_size": 16,
    "pretrain.random_crops_per_image": 2,
    "pretrain.decoder_embed_dim": 32,
    "pretrain.decoder_depth": 1,
    "pretrain.decoder_num_heads": 2,
}


@pytest.fixture(scope="session")
def spec_file(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_coco(root, num_images=6, image_size=(96, 96), seed=3)
    path = root / "spec.yaml"
    return write_tiny_spec(path, root / "annotations.json", root / "images", overrides=PRETRAIN_SPEC)
