"""Turn any image/annotation location into a local path: a folder or file, an archive, or a URL.

Archives and remote sources are staged once into a cache keyed by the source's identity (uri + size + mtime or
etag), so later runs and concurrent processes reuse them. Staging writes into a temp folder beside the cache
entry and renames it into place, so a killed download never leaves a half entry. Archives are unpacked by
`mal.data.archives`, which never writes outside the entry whatever they hold.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

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

from mal.data.archives import ExtractLimits, NoSpaceError, extract_archive, member_path
from mal.env import env_folder
from mal.errors import DataError
from mal.fileio import NO_SPACE_ERRNOS, atomic_write_json
from mal.redaction import redact_url

ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".zip")
_CHUNK = 4 << 20
_METADATA = "source.json"


@dataclass(frozen=True)
class StagedSource:
    """Where a source lives locally, and whether an earlier run or process had already staged it."""

    path: Path
    reused: bool
    cached: bool  # False for a plain local folder/file that is used in place


def default_cache_dir() -> Path:
    return env_folder("MAL_CACHE_DIR", Path.home() / ".cache" / "mal")


def is_archive(name: str) -> bool:
    return name.lower().endswith(ARCHIVE_SUFFIXES)


def redact(uri: str) -> str:
    """The uri with its credentials hidden, safe to print (one rule for the whole package: mal.redaction)."""
    return redact_url(uri)


def resolve_source(uri: str | os.PathLike[str], *, cache_dir: Path | None = None) -> Path:
    """A local path for `uri`: folders and plain files as they are, archives and URLs staged once in the cache."""
    return stage_source(uri, cache_dir=cache_dir).path


def stage_source(uri: str | os.PathLike[str], *, cache_dir: Path | None = None) -> StagedSource:
    text = os.fspath(uri)
    scheme = _scheme(text)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    ExtractLimits.from_env()  # a bad MAL_EXTRACT_* value fails before the cache folder and its lock exist
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
        except OSError as exc:
            shutil.rmtree(temp, ignore_errors=True)
            if exc.errno in NO_SPACE_ERRNOS:
                raise NoSpaceError(
                    f"no space left on the disk of the cache {root}; free space there or set MAL_CACHE_DIR to a "
                    "folder on a larger disk."
                ) from exc
            raise
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


def _download_failed(exc: Exception, shown: str, target: Path) -> DataError:
    if isinstance(exc, OSError) and exc.errno in NO_SPACE_ERRNOS:
        return NoSpaceError(
            f"no space left on the disk of {target} while downloading {shown}; free space there or set "
            "MAL_CACHE_DIR to a folder on a larger disk."
        )
    return DataError(f"{shown} could not be downloaded ({type(exc).__name__}); check network/credentials.")


def _download_file(fs: Any, remote_path: str, size: int, target: Path, shown: str) -> None:
    try:
        with _progress(f"download {shown}", size) as advance, fs.open(remote_path, "rb") as source:
            _copy_stream(source, target, advance)
    except Exception as exc:
        raise _download_failed(exc, shown, target) from exc


def _download_tree(fs: Any, remote_root: str, entries: dict[str, Any], dest: Path, shown: str) -> None:
    root = remote_root.rstrip("/")
    total = sum(int(value.get("size") or 0) for value in entries.values())
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with _progress(f"download {shown}", total) as advance:
            for key in sorted(entries):
                relative = key[len(root) :].lstrip("/")
                target = dest / member_path(relative, shown)
                with fs.open(key, "rb") as source:
                    _copy_stream(source, target, advance)
    except DataError:
        raise
    except Exception as exc:
        raise _download_failed(exc, shown, dest) from exc


def _extract_into(archive: Path, dest: Path, name: str) -> str | None:
    """Extract and return the single top-level entry (folder or file) when there is one, else None."""
    with _progress(f"extract {name}", None) as advance:
        extract_archive(archive, dest, display_name=name, progress=advance)
    children = [child for child in dest.iterdir()]
    return children[0].name if len(children) == 1 else None
