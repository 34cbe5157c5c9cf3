"""Atomic file writes: readers never see a half-written file, even if the writer is killed."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

# The disk is full (or over quota, or past a file-size limit): nothing the user's input did, said in one line.
NO_SPACE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# ... or it cannot be written at all (read-only, failing): the storage faults the CLI reports as one plain line.
STORAGE_ERRNOS = NO_SPACE_ERRNOS | {errno.EROFS, errno.EIO}


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO[Any]]:
    """Open a temp file beside `path`; on success fsync and rename it over `path`, on failure remove it."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    binary = "b" in mode
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 minus the umask).
        os.fchmod(fd, 0o666 & ~_current_umask())
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        if isinstance(exc, OSError) and exc.filename is None:
            # write() errors (a full disk, a quota) name no file; name the one the user asked for.
            raise OSError(exc.errno, exc.strerror or str(exc), str(target)) from exc
        raise


def remove_stale_temp_files(folder: str | os.PathLike[str], name_glob: str = "*") -> list[Path]:
    """Delete the temp files `atomic_open` leaves when its writer is SIGKILLed (`.<name>.<random>.tmp`).

    Call it only where no other process can be writing the same outputs (e.g. at the start of a job).
    """
    removed = []
    for stale in Path(folder).glob(f".{name_glob}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
            removed.append(stale)
    return removed


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent) + "\n")
