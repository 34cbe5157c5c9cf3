"""Remote sources on a real S3 API (moto's server on localhost, reached through s3fs)."""

from __future__ import annotations

import tarfile

from mal.data.coco import load_coco
from mal.data.sources import stage_source


def upload_dataset(client, root, prefix: str) -> None:
    client.upload_file(str(root / "annotations.json"), "mal-test", f"{prefix}/annotations.json")
    for image in sorted((root / "images").iterdir()):
        client.upload_file(str(image), "mal-test", f"{prefix}/images/{image.name}")


def test_dataset_loads_from_s3_and_is_cached(s3_server, synthetic_dir, tmp_path):
    upload_dataset(s3_server, synthetic_dir, "set")
    cache = tmp_path / "cache"
    coco = load_coco("s3://mal-test/set/annotations.json", "s3://mal-test/set/images", cache_dir=cache)
    local = load_coco(synthetic_dir / "annotations.json", synthetic_dir / "images")
    assert len(coco) == len(local) and set(coco.images) == set(local.images)
    assert all(record.path.is_file() and cache in record.path.parents for record in coco.images.values())

    images = stage_source("s3://mal-test/set/images/", cache_dir=cache)
    assert images.reused
    stamps = {p.name: p.stat().st_mtime_ns for p in images.path.iterdir()}
    assert stamps.keys() == {p.name for p in (synthetic_dir / "images").iterdir()}
    again = stage_source("s3://mal-test/set/images", cache_dir=cache)
    assert again.reused and {p.name: p.stat().st_mtime_ns for p in again.path.iterdir()} == stamps

    # Changing the remote object changes its etag/size, so it is fetched again.
    s3_server.put_object(Bucket="mal-test", Key="set/annotations.json", Body=b"{}")
    changed = stage_source("s3://mal-test/set/annotations.json", cache_dir=cache)
    assert not changed.reused and changed.path.read_text() == "{}"


def test_remote_archive_is_downloaded_and_extracted_once(s3_server, synthetic_dir, tmp_path):
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(synthetic_dir / "images", arcname="images")
    s3_server.upload_file(str(archive), "mal-test", "archives/images.tar.gz")
    cache = tmp_path / "cache"
    first = stage_source("s3://mal-test/archives/images.tar.gz", cache_dir=cache)
    assert not first.reused and first.path.name == "images"
    assert len(list(first.path.iterdir())) == len(list((synthetic_dir / "images").iterdir()))
    assert not list(first.path.parent.parent.glob("download-*"))  # the archive itself is not kept
    second = stage_source("s3://mal-test/archives/images.tar.gz", cache_dir=cache)
    assert second.reused and second.path == first.path


def test_missing_remote_object(s3_server, tmp_path):
    import pytest

    from mal.errors import DataError

    with pytest.raises(DataError, match=r"s3://mal-test/absent\.json was not found"):
        stage_source("s3://mal-test/absent.json", cache_dir=tmp_path)
