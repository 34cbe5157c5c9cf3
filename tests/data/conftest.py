"""Fixtures for the mal.data tests: a small synthetic dataset, a COCO-file writer, a real local S3 server."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.s3 import local_s3


@pytest.fixture(scope="session")
def synthetic_dir(synthetic_coco: Callable[..., Path]) -> Path:
    """8 images of shapes (read-only for tests: copy it before changing anything)."""
    return synthetic_coco(num_images=8, image_size=(96, 96), objects_per_image=(2, 4), seed=7)


@pytest.fixture
def synthetic_raw(synthetic_dir: Path) -> dict[str, Any]:
    return json.loads((synthetic_dir / "annotations.json").read_text())


@pytest.fixture
def write_coco(tmp_path: Path, synthetic_dir: Path) -> Callable[..., tuple[Path, Path]]:
    """Write a (possibly broken) COCO dict next to a copy of the synthetic images; return (json, images)."""
    image_dir = tmp_path / "images"
    shutil.copytree(synthetic_dir / "images", image_dir)

    def write(raw: dict[str, Any] | str, name: str = "annotations.json") -> tuple[Path, Path]:
        path = tmp_path / name
        path.write_text(raw if isinstance(raw, str) else json.dumps(copy.deepcopy(raw)))
        return path, image_dir

    return write


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A real S3 API (moto's threaded server) on localhost; yields a boto3 client with bucket `mal-test`."""
    with local_s3(monkeypatch) as client:
        yield client
