"""Safe extraction of image archives (tar with any compression, zip) into a fresh folder.

Nothing an archive holds can make us write outside the target folder, whatever the Python version:
- every member is written by us, never by `tarfile`/`zipfile`'s own extract (so CVE-2025-4517 and its kind in
  the standard library's filters do not apply), through directory descriptors opened with `O_NOFOLLOW` from the
  target down, so a path component that is a link on disk is refused by the kernel, not by a string check;
- no link is ever created on disk. A symbolic or hard link whose target is a regular file of the same archive is
  written as a copy of that file, after all regular files; the target is found by following the archive's own
  link table (the `..` of a link is applied after the links before it, as the filesystem would), and a link that
  leaves the archive, points at a folder, dangles or loops is refused, as is any member stored below a link;
- device files, FIFOs and sockets are refused, and so are archives whose unpacked size or compression ratio
  looks like a zip bomb (link copies count towards the size).
Needs `os.open(..., dir_fd=...)`, i.e. Linux or macOS.
"""

from __future__ import annotations

import errno
import os
import re
import stat
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from mal.env import env_int, env_number
from mal.errors import DataError
from mal.fileio import NO_SPACE_ERRNOS

MAX_EXTRACT_BYTES_ENV = "MAL_EXTRACT_MAX_BYTES"
MAX_EXTRACT_RATIO_ENV = "MAL_EXTRACT_MAX_RATIO"
DEFAULT_MAX_EXTRACT_BYTES = 200 << 30
DEFAULT_MAX_EXTRACT_RATIO = 100.0
# Small archives of text compress far better than 100:1 yet are harmless; the ratio only counts above this.
RATIO_CHECK_FLOOR_BYTES = 8 << 20
# The kernel's own limit on links followed while resolving one path.
MAX_LINK_HOPS = 40
_CHUNK = 4 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass(frozen=True)
class ExtractLimits:
    max_bytes: int = DEFAULT_MAX_EXTRACT_BYTES
    max_ratio: float = DEFAULT_MAX_EXTRACT_RATIO

    @classmethod
    def from_env(cls) -> ExtractLimits:
        return cls(
            max_bytes=env_int(MAX_EXTRACT_BYTES_ENV, DEFAULT_MAX_EXTRACT_BYTES, minimum=1, what="a size in bytes"),
            max_ratio=env_number(MAX_EXTRACT_RATIO_ENV, DEFAULT_MAX_EXTRACT_RATIO, minimum=1, what="a ratio"),
        )


class NoSpaceError(DataError):
    """The disk under the extraction target is full (or over quota)."""


def extract_archive(
    archive: Path,
    dest: Path,
    *,
    limits: ExtractLimits | None = None,
    display_name: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Safely extract a tar (any compression) or zip archive into `dest` (created if missing)."""
    limits = limits or ExtractLimits.from_env()
    shown = display_name or str(archive)
    advance = progress or (lambda _: None)
    dest.mkdir(parents=True, exist_ok=True)
    budget = _Budget(limits, max(archive.stat().st_size, 1), shown)
    try:
        with _Writer(dest, shown) as writer:
            if zipfile.is_zipfile(archive):
                _extract_zip(archive, writer, budget, advance)
            elif tarfile.is_tarfile(archive):
                _extract_tar(archive, writer, budget, advance)
            elif _starts_like_a_zip(archive):
                # A zip's table of contents is at its end, so a cut-off download starts right but is no zip at all.
                raise DataError(f"{shown} starts like a zip archive but its end is missing; download it again in full.")
            else:
                raise DataError(f"{shown} is neither a tar nor a zip archive; repack it or point to the folder.")
            writer.materialise_links(budget, advance)
    except DataError:
        raise
    except OSError as exc:
        if exc.errno in NO_SPACE_ERRNOS:
            raise NoSpaceError(
                f"no space left on the disk of {dest} while extracting {shown}; free space there or set "
                "MAL_CACHE_DIR to a folder on a larger disk."
            ) from exc
        raise DataError(f"{shown} could not be extracted ({exc}); check that the archive is complete.") from exc
    except (tarfile.TarError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{shown} could not be extracted ({exc}); check that the archive is complete.") from exc


def _starts_like_a_zip(archive: Path) -> bool:
    with open(archive, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def member_path(name: str, shown: str) -> PurePosixPath:
    """The member's path relative to the root, refusing absolute paths and `..`; "" and "." give PurePosixPath()."""
    normalised = name.replace("\\", "/")
    if normalised.startswith("/") or re.match(r"^[A-Za-z]:", normalised):
        raise DataError(f"{shown} has member {name!r} with an absolute path; refusing to extract it.")
    if "\x00" in normalised:
        raise DataError(f"{shown} has member {name!r} with a NUL character in its name; refusing to extract it.")
    path = PurePosixPath(normalised)
    if ".." in path.parts:
        raise DataError(f"{shown} has member {name!r} that climbs out with '..'; refusing to extract it.")
    return path


@dataclass
class _Budget:
    """Bytes written so far, checked against the zip-bomb limits as they grow."""

    limits: ExtractLimits
    compressed_size: int
    shown: str
    total: int = 0

    def charge(self, size: int) -> None:
        self.total += max(size, 0)
        self.check()

    def check(self, coming: int = 0) -> None:
        """Refuse once what is written, plus `coming` bytes announced by a header, passes a limit."""
        total = self.total + max(coming, 0)
        if total > self.limits.max_bytes:
            raise DataError(
                f"{self.shown} unpacks to more than {self.limits.max_bytes} bytes; if that is intended raise "
                f"{MAX_EXTRACT_BYTES_ENV}."
            )
        ratio = total / self.compressed_size
        if total > RATIO_CHECK_FLOOR_BYTES and ratio > self.limits.max_ratio:
            raise DataError(
                f"{self.shown} unpacks {ratio:.0f}x its size (limit {self.limits.max_ratio:g}x), which looks like a "
                f"zip bomb; if it is intended raise {MAX_EXTRACT_RATIO_ENV}."
            )


@dataclass(frozen=True)
class _Link:
    name: PurePosixPath
    target: str
    from_root: bool  # a tar hard link names its target from the archive root; a symlink from its own folder


@dataclass
class _Writer:
    """Writes members below `root` through descriptors opened with O_NOFOLLOW, and keeps the links for last."""

    root: Path
    shown: str
    links: dict[PurePosixPath, _Link] = field(default_factory=dict)
    _root_fd: int = -1

    def __enter__(self) -> _Writer:
        self._root_fd = os.open(self.root, _DIR_FLAGS)
        return self

    def __exit__(self, *_: object) -> None:
        os.close(self._root_fd)

    def add_link(self, name: PurePosixPath, target: str, *, from_root: bool) -> None:
        if not name.parts:
            raise DataError(f"{self.shown} has a link as its root folder; refusing to extract it.")
        self._refuse_below_a_link(name)
        self.links[name] = _Link(name, target, from_root)

    def make_dir(self, name: PurePosixPath) -> None:
        self._refuse_below_a_link(name)
        with self._dir_fd(name.parts):
            pass

    def write_file(
        self, name: PurePosixPath, source: IO[bytes], budget: _Budget, advance: Callable[[int], None]
    ) -> None:
        if not name.parts:
            raise DataError(f"{self.shown} has a file member without a name; refusing to extract it.")
        self._refuse_below_a_link(name)
        with self._dir_fd(name.parts[:-1]) as parent:
            try:
                fd = os.open(name.parts[-1], _FILE_FLAGS, 0o644, dir_fd=parent)
            except OSError as exc:
                if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENOTDIR):
                    raise DataError(
                        f"{self.shown} has member {str(name)!r} whose place is already taken by a folder or a link; "
                        "refusing to extract it."
                    ) from exc
                raise
            with os.fdopen(fd, "wb") as out:
                while chunk := source.read(_CHUNK):
                    budget.charge(len(chunk))
                    out.write(chunk)
                    advance(len(chunk))

    def materialise_links(self, budget: _Budget, advance: Callable[[int], None]) -> None:
        """Each link becomes a copy of the regular file it leads to, read through O_NOFOLLOW descriptors."""
        for link in self.links.values():
            target = self._resolve(link)
            try:
                with self._dir_fd(target.parts[:-1], create=False) as parent:
                    fd = os.open(target.parts[-1], os.O_RDONLY | os.O_NOFOLLOW, dir_fd=parent)
            except (FileNotFoundError, NotADirectoryError):
                raise self._link_error(link, "leads to nothing in the archive") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise self._link_error(link, "leads to a folder; only links to files are supported")
            with os.fdopen(fd, "rb") as source:
                self.write_file(link.name, source, budget, advance)

    def _resolve(self, link: _Link) -> PurePosixPath:
        """Follow `link` through the archive's link table to a path that is no link, never above the root."""
        resolved: list[str] = [] if link.from_root else list(link.name.parts[:-1])
        pending = self._target_parts(link)
        hops = 0
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not resolved:
                    raise self._link_error(link, "leads outside the archive")
                resolved.pop()
                continue
            resolved.append(part)
            further = self.links.get(PurePosixPath(*resolved))
            if further is not None:
                hops += 1
                if hops > MAX_LINK_HOPS:
                    raise self._link_error(link, f"goes through more than {MAX_LINK_HOPS} links (a loop?)")
                resolved.pop()
                if further.from_root:
                    resolved.clear()
                pending = self._target_parts(further, origin=link) + pending
        if not resolved:
            raise self._link_error(link, "leads to the archive's root folder")
        return PurePosixPath(*resolved)

    def _target_parts(self, link: _Link, origin: _Link | None = None) -> list[str]:
        target = link.target.replace("\\", "/")
        if target.startswith("/") or re.match(r"^[A-Za-z]:", target) or "\x00" in target:
            raise self._link_error(origin or link, "leads outside the archive")
        return target.split("/")

    def _link_error(self, link: _Link, why: str) -> DataError:
        return DataError(f"{self.shown} has link {str(link.name)!r} -> {link.target!r} that {why}; refusing it.")

    def _refuse_below_a_link(self, name: PurePosixPath) -> None:
        for depth in range(1, len(name.parts)):
            above = PurePosixPath(*name.parts[:depth])
            if above in self.links:
                raise DataError(
                    f"{self.shown} has member {str(name)!r} stored below the link {str(above)!r}; refusing to "
                    "extract it."
                )

    @contextmanager
    def _dir_fd(self, parts: tuple[str, ...], *, create: bool = True) -> Iterator[int]:
        """A descriptor of root/parts, creating missing folders; any component that is not a real folder on
        disk (a link, a file) makes the kernel refuse it (O_NOFOLLOW | O_DIRECTORY)."""
        fds: list[int] = []
        current = self._root_fd
        try:
            for part in parts:
                if part in ("", "."):
                    continue
                if create:
                    with suppress(FileExistsError):
                        os.mkdir(part, 0o755, dir_fd=current)
                try:
                    current = os.open(part, _DIR_FLAGS, dir_fd=current)
                except OSError as exc:
                    if not create:
                        raise
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
                        raise DataError(
                            f"{self.shown} stores something below {'/'.join(parts)!r}, which is not a folder in the "
                            "archive; refusing to extract it."
                        ) from exc
                    raise
                fds.append(current)
            yield current
        finally:
            for fd in reversed(fds):
                os.close(fd)


def _extract_tar(archive: Path, writer: _Writer, budget: _Budget, advance: Callable[[int], None]) -> None:
    shown = writer.shown
    with tarfile.open(archive, "r:*") as tar:
        # One streaming pass: each header is checked before its data is read.
        for member in tar:
            name = member_path(member.name, shown)
            if member.issym() or member.islnk():
                writer.add_link(name, member.linkname, from_root=member.islnk())
            elif member.isdir():
                writer.make_dir(name)
            elif member.isfile():
                budget.check(member.size)
                source = tar.extractfile(member)
                if source is None:
                    raise DataError(f"{shown} has member {member.name!r} whose data cannot be read.")
                with source:
                    writer.write_file(name, source, budget, advance)
            else:
                raise DataError(f"{shown} has member {member.name!r} that is a device or special file.")


def _extract_zip(archive: Path, writer: _Writer, budget: _Budget, advance: Callable[[int], None]) -> None:
    shown = writer.shown
    with zipfile.ZipFile(archive) as zf:
        members = zf.infolist()
        # A zip says how much it holds up front: refuse a bomb before writing anything.
        budget.check(sum(info.file_size for info in members))
        for info in members:
            name = member_path(info.filename, shown)
            mode = info.external_attr >> 16
            kind = stat.S_IFMT(mode)
            if kind and kind not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                raise DataError(f"{shown} has member {info.filename!r} that is a device or special file.")
            if stat.S_ISLNK(mode):
                if info.file_size > 4096:
                    raise DataError(f"{shown} has link {info.filename!r} with a target longer than 4096 bytes.")
                writer.add_link(name, zf.read(info).decode("utf-8", "replace"), from_root=False)
            elif info.is_dir():
                writer.make_dir(name)
            else:
                with zf.open(info) as source:
                    writer.write_file(name, source, budget, advance)
