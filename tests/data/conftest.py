"""Fixtures for the mal.data tests: a small synthetic dataset, a COCO-file writer, a real local S3 server."""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from support.services import free_port


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
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": endpoint,
    }.items():
        monkeypatch.setenv(key, value)
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="mal-test")
    yield client
    s3fs.S3FileSystem.clear_instance_cache()
    server.stop()
