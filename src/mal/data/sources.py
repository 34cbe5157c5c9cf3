"""Turn any image/annotation location into a local path: a folder or file, an archive, or a URL.

Archives and remote sources are staged once into a cache keyed by the source's identity (uri + size + mtime or
etag), so later runs and concurrent processes reuse them. Staging writes into a temp folder beside the cache
entry and renames it into place, so a killed download never leaves a half entry. Extraction refuses members that
would land outside the target (absolute paths, `..`, links pointing out, device files) and archives whose
unpacked size or compression ratio looks like a zip bomb.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from filelock import FileLock
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from mal.errors import DataError
from mal.fileio import atomic_write_json

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
_CHUNK = 4 << 20
_METADATA = "source.json"

# Defaults for the zip-bomb guard; both can be raised through the environment for unusual data.
MAX_EXTRACT_BYTES_ENV = "MAL_EXTRACT_MAX_BYTES"
MAX_EXTRACT_RATIO_ENV = "MAL_EXTRACT_MAX_RATIO"
DEFAULT_MAX_EXTRACT_BYTES = 200 << 30
DEFAULT_MAX_EXTRACT_RATIO = 100.0
# Small archives of text compress far better than 100:1 yet are harmless; the ratio only counts above this.
RATIO_CHECK_FLOOR_BYTES = 8 << 20


@dataclass(frozen=True)
class StagedSource:
    """Where a source lives locally, and whether an earlier run or process had already staged it."""

    path: Path
    reused: bool
    cached: bool  # False for a plain local folder/file that is used in place


@dataclass(frozen=True)
class ExtractLimits:
    max_bytes: int = DEFAULT_MAX_EXTRACT_BYTES
    max_ratio: float = DEFAULT_MAX_EXTRACT_RATIO

    @classmethod
    def from_env(cls) -> ExtractLimits:
        return cls(
            max_bytes=int(float(os.environ.get(MAX_EXTRACT_BYTES_ENV, DEFAULT_MAX_EXTRACT_BYTES))),
            max_ratio=float(os.environ.get(MAX_EXTRACT_RATIO_ENV, DEFAULT_MAX_EXTRACT_RATIO)),
        )


def default_cache_dir() -> Path:
    configured = os.environ.get("MAL_CACHE_DIR")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mal"


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def redact(uri: str) -> str:
    """The uri without any user:password part, safe to print."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


def resolve_source(uri: str | os.PathLike[str], *, cache_dir: Path | None = None) -> Path:
    """A local path for `uri`: folders and plain files as they are, archives and URLs staged once in the cache."""
    return stage_source(uri, cache_dir=cache_dir).path


def stage_source(uri: str | os.PathLike[str], *, cache_dir: Path | None = None) -> StagedSource:
    text = os.fspath(uri)
    scheme = _scheme(text)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if scheme in ("", "file"):
        path = Path(urlsplit(text).path if scheme == "file" else text).expanduser()
        if not path.exists():
            raise DataError(f"{path} does not exist; check the path in the spec.")
        if path.is_file() and is_archive(path.name):
            status = path.stat()
            identity = {"uri": str(path.resolve()), "size": status.st_size, "mtime_ns": status.st_mtime_ns}
            return _stage(identity, cache_root, lambda dest: _extract_into(path, dest, path.name))
        return StagedSource(path=path, reused=False, cached=False)
    return _stage_remote(text, cache_root)


def _scheme(text: str) -> str:
    if re.match(r"^[A-Za-z]:[\\/]", text):  # a Windows drive letter, not a URL scheme
        return ""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", text)
    return match.group(1).lower() if match else ""


def _stage_remote(uri: str, cache_root: Path) -> StagedSource:
    import fsspec

    shown = redact(uri).rstrip("/")
    try:
        fs, remote_path = fsspec.core.url_to_fs(uri)
        info = fs.info(remote_path)
    except FileNotFoundError as exc:
        raise DataError(f"{shown} was not found; check the URL and that the object exists.") from exc
    except ImportError as exc:
        raise DataError(f"{shown} needs an extra package ({exc}); install it (e.g. pip install s3fs).") from exc
    except Exception as exc:
        raise DataError(
            f"{shown} could not be read ({type(exc).__name__}); check the URL, network and credentials."
        ) from exc

    name = PurePosixPath(remote_path.rstrip("/")).name or "source"
    if info.get("type") == "directory":
        entries = fs.find(remote_path, detail=True)
        listing = sorted((key, _identity_fields(value)) for key, value in entries.items())
        identity = {"uri": shown, "listing": listing}

        def produce(dest: Path) -> str:
            _download_tree(fs, remote_path, entries, dest / name, shown)
            return name

    else:
        identity = {"uri": shown, **_identity_fields(info)}

        def produce(dest: Path) -> str:
            downloaded = dest.parent / f"download-{name}"
            _download_file(fs, remote_path, int(info.get("size") or 0), downloaded, shown)
            if not is_archive(name):
                dest.mkdir(parents=True)
                downloaded.rename(dest / name)
                return name
            try:
                return _extract_into(downloaded, dest, name)
            finally:
                downloaded.unlink(missing_ok=True)

    return _stage(identity, cache_root, produce)


def _identity_fields(info: dict[str, Any]) -> dict[str, str]:
    keys = ("size", "ETag", "etag", "LastModified", "last_modified", "mtime", "md5Hash", "generation")
    return {key: str(info[key]) for key in keys if info.get(key) is not None}


def _stage(identity: dict[str, Any], cache_root: Path, produce: Callable[[Path], str | None]) -> StagedSource:
    """Run `produce(temp/data)` once per identity under a file lock; return the cached entry."""
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:32]
    root = cache_root / "sources"
    final = root / digest
    if (final / _METADATA).is_file():
        return StagedSource(path=_entry_path(final), reused=True, cached=True)
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / f"{digest}.lock")):
        if (final / _METADATA).is_file():
            return StagedSource(path=_entry_path(final), reused=True, cached=True)
        # Leftovers of a killed process that held this lock before us.
        for stale in root.glob(f".tmp-{digest}-*"):
            shutil.rmtree(stale, ignore_errors=True)
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        temp = Path(tempfile.mkdtemp(prefix=f".tmp-{digest}-", dir=root))
        try:
            entry = produce(temp / "data")
            metadata = {
                "identity": identity,
                "entry": f"data/{entry}" if entry else "data",
                "staged_by_pid": os.getpid(),
                "staged_at": datetime.now(UTC).isoformat(),
            }
            atomic_write_json(temp / _METADATA, metadata)
            os.replace(temp, final)
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
    return StagedSource(path=_entry_path(final), reused=False, cached=True)


def _entry_path(final: Path) -> Path:
    metadata = json.loads((final / _METADATA).read_text())
    return final / metadata["entry"]


@contextmanager
def _progress(description: str, total: int | None) -> Iterator[Callable[[int], None]]:
    console = Console(stderr=True)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn())
    with Progress(
        *columns, TimeRemainingColumn(), console=console, transient=True, disable=not console.is_terminal
    ) as progress:
        task = progress.add_task(description, total=total or None)
        yield lambda advance: progress.advance(task, advance)


def _copy_stream(source: Any, target: Path, advance: Callable[[int], None]) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            out.write(chunk)
            advance(len(chunk))


def _download_file(fs: Any, remote_path: str, size: int, target: Path, shown: str) -> None:
    try:
        with _progress(f"download {shown}", size) as advance, fs.open(remote_path, "rb") as source:
            _copy_stream(source, target, advance)
    except Exception as exc:
        raise DataError(f"{shown} could not be downloaded ({type(exc).__name__}); check network/credentials.") from exc


def _download_tree(fs: Any, remote_root: str, entries: dict[str, Any], dest: Path, shown: str) -> None:
    root = remote_root.rstrip("/")
    total = sum(int(value.get("size") or 0) for value in entries.values())
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with _progress(f"download {shown}", total) as advance:
            for key in sorted(entries):
                relative = key[len(root) :].lstrip("/")
                target = dest / _safe_relative(relative, shown)
                with fs.open(key, "rb") as source:
                    _copy_stream(source, target, advance)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{shown} could not be downloaded ({type(exc).__name__}); check network/credentials.") from exc


def _extract_into(archive: Path, dest: Path, name: str) -> str | None:
    """Extract and return the single top-level entry (folder or file) when there is one, else None."""
    extract_archive(archive, dest, display_name=name)
    children = [child for child in dest.iterdir()]
    return children[0].name if len(children) == 1 else None


# ---------------------------------------------------------------------------------------------- extraction


def extract_archive(
    archive: Path, dest: Path, *, limits: ExtractLimits | None = None, display_name: str | None = None
) -> None:
    """Safely extract a tar (any compression) or zip archive into `dest` (created)."""
    limits = limits or ExtractLimits.from_env()
    shown = display_name or str(archive)
    dest.mkdir(parents=True, exist_ok=True)
    compressed_size = max(archive.stat().st_size, 1)
    if zipfile.is_zipfile(archive):
        _extract_zip(archive, dest, limits, compressed_size, shown)
    elif tarfile.is_tarfile(archive):
        _extract_tar(archive, dest, limits, compressed_size, shown)
    elif _starts_like_a_zip(archive):
        # A zip's table of contents is at its end, so a cut-off download starts right but is no zip at all.
        raise DataError(f"{shown} starts like a zip archive but its end is missing; download it again in full.")
    else:
        raise DataError(f"{shown} is neither a tar nor a zip archive; repack it or point to the folder.")


def _starts_like_a_zip(archive: Path) -> bool:
    with open(archive, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def _safe_relative(name: str, shown: str) -> PurePosixPath:
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        raise DataError(f"{shown} has member {name!r} with an absolute path; refusing to extract it.")
    path = PurePosixPath(normalised)
    if ".." in path.parts:
        raise DataError(f"{shown} has member {name!r} that climbs out with '..'; refusing to extract it.")
    return path


def _check_link(member_name: str, link_target: str, *, relative_to_member: bool, shown: str) -> None:
    target = link_target.replace("\\", "/")
    if target.startswith("/") or re.match(r"^[A-Za-z]:", target):
        raise DataError(f"{shown} has link {member_name!r} -> {link_target!r} outside the archive; refusing it.")
    base = PurePosixPath(member_name).parent if relative_to_member else PurePosixPath()
    resolved = os.path.normpath(str(base / target))
    if resolved == ".." or resolved.startswith("../"):
        raise DataError(f"{shown} has link {member_name!r} -> {link_target!r} outside the archive; refusing it.")


def _check_totals(total: int, limits: ExtractLimits, compressed_size: int, shown: str) -> None:
    if total > limits.max_bytes:
        raise DataError(
            f"{shown} unpacks to more than {limits.max_bytes} bytes; if that is intended raise {MAX_EXTRACT_BYTES_ENV}."
        )
    if total > RATIO_CHECK_FLOOR_BYTES and total / compressed_size > limits.max_ratio:
        raise DataError(
            f"{shown} unpacks {total / compressed_size:.0f}x its size (limit {limits.max_ratio:g}x), which looks "
            f"like a zip bomb; if it is intended raise {MAX_EXTRACT_RATIO_ENV}."
        )


def _extract_tar(archive: Path, dest: Path, limits: ExtractLimits, compressed_size: int, shown: str) -> None:
    total = 0
    try:
        with tarfile.open(archive, "r:*") as tar, _progress(f"extract {shown}", None) as advance:
            # One streaming pass: each header is checked before its data is written.
            for member in tar:
                _safe_relative(member.name, shown)
                if (
                    member.ischr()
                    or member.isblk()
                    or member.isfifo()
                    or not (member.isfile() or member.isdir() or member.issym() or member.islnk())
                ):
                    raise DataError(f"{shown} has member {member.name!r} that is a device or special file.")
                if member.issym():
                    _check_link(member.name, member.linkname, relative_to_member=True, shown=shown)
                if member.islnk():
                    _check_link(member.name, member.linkname, relative_to_member=False, shown=shown)
                total += member.size
                _check_totals(total, limits, compressed_size, shown)
                tar.extract(member, dest, filter="data")
                advance(member.size)
    except DataError:
        raise
    except tarfile.FilterError as exc:
        raise DataError(f"{shown} has an unsafe member ({exc}); refusing to extract it.") from exc
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{shown} could not be extracted ({exc}); check that the archive is complete.") from exc


def _extract_zip(archive: Path, dest: Path, limits: ExtractLimits, compressed_size: int, shown: str) -> None:
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            for info in members:
                _safe_relative(info.filename, shown)
                mode = info.external_attr >> 16
                if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
                    raise DataError(f"{shown} has member {info.filename!r} that is a device or special file.")
                if stat.S_ISLNK(mode):
                    target = zf.read(info).decode("utf-8", "replace")
                    _check_link(info.filename, target, relative_to_member=True, shown=shown)
            _check_totals(sum(info.file_size for info in members), limits, compressed_size, shown)
            with _progress(f"extract {shown}", sum(info.file_size for info in members)) as advance:
                for info in members:
                    if stat.S_ISLNK(info.external_attr >> 16):
                        link = dest / info.filename
                        link.parent.mkdir(parents=True, exist_ok=True)
                        os.symlink(zf.read(info).decode("utf-8"), link)
                    else:
                        zf.extract(info, dest)
                    advance(info.file_size)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DataError(f"{shown} could not be extracted ({exc}); check that the archive is complete.") from exc
