"""Sources: folders as they are, archives extracted once into the cache, reuse across runs and processes."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import tarfile
import zipfile
from pathlib import Path

import pytest

from mal.data.coco import load_coco
from mal.data.sources import resolve_source, stage_source
from mal.errors import DataError


def make_tar_gz(source_dir: Path, archive: Path, arcname: str = "images") -> Path:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source_dir, arcname=arcname)
    return archive


def cache_entries(cache: Path) -> list[Path]:
    root = cache / "sources"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def test_local_folder_and_file_are_returned_as_is(tmp_path, synthetic_dir):
    folder = synthetic_dir / "images"
    assert resolve_source(folder, cache_dir=tmp_path) == folder
    assert resolve_source(str(synthetic_dir / "annotations.json"), cache_dir=tmp_path).is_file()
    assert resolve_source(f"file://{folder}", cache_dir=tmp_path) == folder
    assert not (tmp_path / "sources").exists()


def test_missing_local_path_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        resolve_source(tmp_path / "nothing-here")


def test_tar_gz_is_extracted_once_and_reused(tmp_path, synthetic_dir):
    archive = make_tar_gz(synthetic_dir / "images", tmp_path / "images.tar.gz")
    cache = tmp_path / "cache"
    first = stage_source(archive, cache_dir=cache)
    assert not first.reused and first.path.name == "images" and first.path.is_dir()
    names = sorted(p.name for p in first.path.iterdir())
    assert names == sorted(p.name for p in (synthetic_dir / "images").iterdir())
    stamps = {p: p.stat().st_mtime_ns for p in first.path.iterdir()}
    second = stage_source(archive, cache_dir=cache)
    assert second.reused and second.path == first.path
    assert {p: p.stat().st_mtime_ns for p in second.path.iterdir()} == stamps
    assert len(cache_entries(cache)) == 1
    # A changed archive (new size/mtime) is a new identity, so it is staged again.
    make_tar_gz(synthetic_dir / "images", archive, arcname="renamed")
    third = stage_source(archive, cache_dir=cache)
    assert not third.reused and third.path.name == "renamed" and len(cache_entries(cache)) == 2


def test_dataset_loads_from_archives(tmp_path, synthetic_dir):
    images = make_tar_gz(synthetic_dir / "images", tmp_path / "images.tgz")
    ann_zip = tmp_path / "ann.zip"
    with zipfile.ZipFile(ann_zip, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(synthetic_dir / "annotations.json", "annotations.json")
    coco = load_coco(ann_zip, images, cache_dir=tmp_path / "cache")
    assert len(coco) == len(json.loads((synthetic_dir / "annotations.json").read_text())["annotations"])
    assert all(record.path.is_file() for record in coco.images.values())


def test_cache_dir_defaults_to_env(tmp_path, synthetic_dir, monkeypatch):
    monkeypatch.setenv("MAL_CACHE_DIR", str(tmp_path / "env-cache"))
    path = resolve_source(make_tar_gz(synthetic_dir / "images", tmp_path / "i.tar.gz"))
    assert (tmp_path / "env-cache") in path.parents


def test_truncated_archive_leaves_no_cache_entry(tmp_path, synthetic_dir):
    archive = make_tar_gz(synthetic_dir / "images", tmp_path / "images.tar.gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=r"images\.tar\.gz"):
        resolve_source(archive, cache_dir=cache)
    assert cache_entries(cache) == []
    assert not [p for p in (cache / "sources").iterdir() if p.name.startswith(".tmp-")]


def _stage_in_child(archive: str, cache: str, queue) -> None:
    staged = stage_source(archive, cache_dir=Path(cache))
    queue.put((str(staged.path), staged.reused, os.getpid()))


def test_two_processes_stage_one_archive_once(tmp_path):
    # An archive big enough that the second process arrives while the first is still extracting.
    payload = tmp_path / "payload"
    payload.mkdir()
    for index in range(40):
        (payload / f"blob_{index}.bin").write_bytes(os.urandom(256 * 1024))
    archive = make_tar_gz(payload, tmp_path / "payload.tar.gz", arcname="payload")
    cache = tmp_path / "cache"
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_stage_in_child, args=(str(archive), str(cache), queue)) for _ in range(2)]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    paths = {path for path, _, _ in results}
    assert len(paths) == 1
    assert sorted(reused for _, reused, _ in results) == [False, True]
    metadata = json.loads((cache_entries(cache)[0] / "source.json").read_text())
    stager = next(pid for _, reused, pid in results if not reused)
    assert metadata["staged_by_pid"] == stager
    assert len(list(Path(paths.pop()).iterdir())) == 40


def test_stale_temp_dir_of_a_killed_run_is_cleaned(tmp_path, synthetic_dir):
    archive = make_tar_gz(synthetic_dir / "images", tmp_path / "images.tar.gz")
    cache = tmp_path / "cache"
    staged = stage_source(archive, cache_dir=cache)
    entry = staged.path.parent.parent
    # Pretend a killed run left a half-written temp dir and never renamed it into place.
    digest = entry.name
    (entry.parent / f".tmp-{digest}-dead").mkdir()
    (entry.parent / f".tmp-{digest}-dead" / "half.bin").write_bytes(b"x")
    import shutil

    shutil.rmtree(entry)
    again = stage_source(archive, cache_dir=cache)
    assert not again.reused and again.path.is_dir()
    assert not list(entry.parent.glob(f".tmp-{digest}-*"))


def test_remote_credentials_are_not_printed(tmp_path):
    with pytest.raises(DataError) as caught:
        resolve_source("https://user:s3cr3t@127.0.0.1:9/data.json", cache_dir=tmp_path)
    assert "s3cr3t" not in str(caught.value) and "127.0.0.1:9/data.json" in str(caught.value)


def test_zip_with_single_file_resolves_to_that_file(tmp_path):
    archive = tmp_path / "one.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("annotations.json", "{}")
    path = resolve_source(archive, cache_dir=tmp_path / "cache")
    assert path.name == "annotations.json" and path.read_text() == "{}"


def test_tar_with_several_top_level_entries_resolves_to_the_root(tmp_path):
    archive = tmp_path / "many.tar"
    with tarfile.open(archive, "w") as tar:
        for name in ("a.txt", "b.txt"):
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    path = resolve_source(archive, cache_dir=tmp_path / "cache")
    assert sorted(p.name for p in path.iterdir()) == ["a.txt", "b.txt"]
