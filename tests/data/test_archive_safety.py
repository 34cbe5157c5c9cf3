"""Extraction refuses members that escape the target, special files and zip bombs, naming the member."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from mal.data.archives import ExtractLimits, extract_archive
from mal.data.sources import resolve_source
from mal.errors import DataError


def tar_with(tmp_path: Path, *members: tarfile.TarInfo, data: bytes = b"hello") -> Path:
    archive = tmp_path / "crafted.tar"
    with tarfile.open(archive, "w") as tar:
        for member in members:
            if member.isfile():
                member.size = len(data)
                tar.addfile(member, io.BytesIO(data))
            else:
                tar.addfile(member)
    return archive


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


@pytest.mark.parametrize(
    ("crafted", "words"),
    [
        (member("../escape.txt"), "'..'"),
        (member("ok/../../escape.txt"), "'..'"),
        (member("/etc/evil.txt"), "absolute"),
        (member("link", tarfile.SYMTYPE, "../../outside"), "outside"),
        (member("link", tarfile.SYMTYPE, "/etc/passwd"), "outside"),
        (member("hard", tarfile.LNKTYPE, "../outside"), "outside"),
        (member("dev", tarfile.CHRTYPE), "device"),
        (member("blk", tarfile.BLKTYPE), "device"),
        (member("pipe", tarfile.FIFOTYPE), "device"),
    ],
)
def test_unsafe_tar_members_are_refused(tmp_path, crafted, words):
    archive = tar_with(tmp_path, member("fine.txt"), crafted)
    target = tmp_path / "out"
    with pytest.raises(DataError, match=words) as caught:
        extract_archive(archive, target)
    assert crafted.name in str(caught.value)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path.parent / "escape.txt").exists()


def test_links_inside_the_archive_are_allowed(tmp_path):
    archive = tar_with(tmp_path, member("dir/a.txt"), member("dir/b.txt", tarfile.SYMTYPE, "a.txt"))
    extract_archive(archive, tmp_path / "out")
    assert (tmp_path / "out" / "dir" / "b.txt").read_bytes() == b"hello"
    assert not (tmp_path / "out" / "dir" / "b.txt").is_symlink()


def test_refused_archive_leaves_no_cache_entry(tmp_path):
    archive = tar_with(tmp_path, member("fine.txt"), member("../escape.txt"))
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match="escape"):
        resolve_source(archive, cache_dir=cache)
    assert [p.name for p in (cache / "sources").iterdir() if not p.name.endswith(".lock")] == []


def test_tar_bomb_ratio_is_refused(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 12 << 20
        tar.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(DataError, match="zip bomb"):
        extract_archive(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "zeros.bin").exists()
    # The same archive passes when the user raises the limit on purpose.
    extract_archive(archive, tmp_path / "ok", limits=ExtractLimits(max_ratio=1e6))
    assert (tmp_path / "ok" / "zeros.bin").stat().st_size == 12 << 20


def test_total_size_limit_from_env(tmp_path, monkeypatch):
    archive = tar_with(tmp_path, member("a.txt"), member("b.txt"), data=b"x" * 1000)
    monkeypatch.setenv("MAL_EXTRACT_MAX_BYTES", "1500")
    with pytest.raises(DataError, match="MAL_EXTRACT_MAX_BYTES"):
        extract_archive(archive, tmp_path / "out")


def test_zip_traversal_absolute_and_bomb(tmp_path):
    for name, words in (("../evil.txt", "'..'"), ("/abs.txt", "absolute"), ("C:/win.txt", "absolute")):
        archive = tmp_path / "evil.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.writestr(name, "x")
        with pytest.raises(DataError, match=words):
            extract_archive(archive, tmp_path / "out")
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("zeros.bin", bytes(12 << 20))
    with pytest.raises(DataError, match="zip bomb"):
        extract_archive(bomb, tmp_path / "out")
    assert not (tmp_path / "out" / "zeros.bin").exists()


def zip_with(archive: Path, *members: tuple[str, int, str]) -> Path:
    """A zip of (name, file type bits from `stat`, data) members; a link's data is its target."""
    with zipfile.ZipFile(archive, "w") as zf:
        for name, kind, data in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = (kind | 0o644) << 16
            zf.writestr(info, data)
    return archive


def test_zip_symlink_outside_is_refused(tmp_path):
    archive = zip_with(tmp_path / "link.zip", ("link", stat.S_IFLNK, "../../etc/passwd"))
    with pytest.raises(DataError, match="'link'"):
        extract_archive(archive, tmp_path / "out")


def test_not_an_archive(tmp_path):
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"plain text")
    with pytest.raises(DataError, match="neither a tar nor a zip"):
        extract_archive(fake, tmp_path / "out")


def test_a_truncated_download_says_the_archive_is_incomplete(tmp_path):
    payload = bytes(range(256)) * 400  # 100 KiB that gzip cannot shrink much
    tar_path = tmp_path / "data.tar.gz"
    with tarfile.open(tar_path, "w:gz") as tar:
        info = tarfile.TarInfo("images/a.bin")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    zip_path = tmp_path / "data.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("images/a.bin", payload)
    for archive in (tar_path, zip_path):
        whole = archive.read_bytes()
        archive.write_bytes(whole[: len(whole) // 2])  # a download cut off half way
    with pytest.raises(DataError, match=r"could not be extracted \(.+\); check that the archive is complete"):
        extract_archive(tar_path, tmp_path / "out-tar")
    with pytest.raises(DataError, match="starts like a zip archive but its end is missing; download it again"):
        extract_archive(zip_path, tmp_path / "out-zip")


def test_zip_links_inside_the_archive_and_special_files(tmp_path):
    archive = zip_with(
        tmp_path / "links.zip", ("dir/a.txt", stat.S_IFREG, "hello"), ("dir/b.txt", stat.S_IFLNK, "a.txt")
    )
    extract_archive(archive, tmp_path / "out")
    # A link inside the archive becomes a copy of its file: no link is ever created on disk.
    assert not (tmp_path / "out" / "dir" / "b.txt").is_symlink()
    assert (tmp_path / "out" / "dir" / "b.txt").read_text() == "hello"
    fifo = zip_with(tmp_path / "fifo.zip", ("pipe", stat.S_IFIFO, ""))
    with pytest.raises(DataError, match="member 'pipe' that is a device or special file"):
        extract_archive(fifo, tmp_path / "out2")
