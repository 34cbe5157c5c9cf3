"""A real S3 API for tests outside tests/data: moto's threaded server on localhost, reached through s3fs.

Each test folder wraps `local_s3` in a fixture of its own (tests/data/conftest.py's `s3_server` is one).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from support.services import free_port

BUCKET = "mal-test"


@contextlib.contextmanager
def local_s3(monkeypatch: pytest.MonkeyPatch, bucket: str = BUCKET) -> Iterator[Any]:
    """Start moto's server, point AWS_* variables at it (test credentials), yield a boto3 client with `bucket`.

    Skips the test when s3fs, boto3 or moto[server] is not installed.
    """
    pytest.importorskip("s3fs")
    boto3 = pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    import s3fs

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
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
    s3fs.S3FileSystem.clear_instance_cache()  # a cached filesystem would still talk to an earlier endpoint
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket=bucket)
    try:
        yield client
    finally:
        # moto keeps one in-memory S3 per process, whatever server serves it: empty the bucket so that the next
        # test's server does not start with this test's objects in it.
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for item in page.get("Contents", []):
                client.delete_object(Bucket=bucket, Key=item["Key"])
        client.delete_bucket(Bucket=bucket)
        s3fs.S3FileSystem.clear_instance_cache()
        server.stop()


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """An http://127.0.0.1:PORT that accepts connections (the kernel's backlog) and never answers: what a client
    sees of an overloaded or half-broken endpoint, the case that waits on read timeouts."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
