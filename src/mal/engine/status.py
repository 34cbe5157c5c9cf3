"""status.json: the job contract's event log, one JSON object per line (read by AutoML to prune or promote).

Each event: {"status": STARTED|RUNNING|SUCCESS|FAILURE, "epoch", "max_epoch", "kpi", "message", "time", ...}.
Lines are appended with a flush and fsync each, so a reader never sees a half line unless the writer died
mid-write; the reader (`mal.jobfiles.read_status_events`, shared with AutoML) skips such a
last line.

A full disk must not cost the job its last word: a failed append is cut back off (no half line, no empty file
left behind), and every append keeps RESERVE_BYTES allocated past the end of the file (Linux fallocate with
KEEP_SIZE: invisible to readers), so the FAILURE event that ends a run killed by a full disk still fits.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import math
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mal.jobfiles import STATUSES
from mal.redaction import redact_text

RESERVE_BYTES = 64 * 1024  # a few hundred events

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


@functools.cache
def _fallocate() -> object | None:
    """libc's fallocate(2), or None where there is none (macOS, Windows, a libc without it)."""
    try:
        function = ctypes.CDLL(None, use_errno=True).fallocate
    except (OSError, AttributeError):
        return None
    function.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)
    function.restype = ctypes.c_int
    return function


def _allocate_past_end(fd: int, end: int, size: int, release: bool = False) -> None:
    """Keep (or with release, give back) `size` bytes of disk after `end` without changing the file's length.
    Best effort: where the file system cannot, status writes simply have no reserve."""
    function = _fallocate()
    if function is None or size <= 0:
        return
    mode = _FALLOC_FL_KEEP_SIZE | (_FALLOC_FL_PUNCH_HOLE if release else 0)
    function(fd, mode, end, size)  # type: ignore[operator]


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class StatusFile:
    """Appends job events to `results_dir/<action>/status.json`."""

    def __init__(self, path: str | os.PathLike[str], max_epoch: int = 0) -> None:
        self.path = Path(path)
        self.max_epoch = max_epoch
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, status: str, *, epoch: int = 0, kpi: Mapping[str, float] | None = None,
              message: str = "", **extra: Any) -> dict[str, Any]:
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        event = {
            "status": status,
            "epoch": int(epoch),
            "max_epoch": int(self.max_epoch),
            "kpi": {key: _finite(float(value)) for key, value in (kpi or {}).items()},
            "message": redact_text(message),
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            **{key: _finite(value) for key, value in extra.items()},
        }
        self._append((json.dumps(event) + "\n").encode("utf-8"), final=status in ("SUCCESS", "FAILURE"))
        return event

    def _append(self, data: bytes, final: bool) -> None:
        existed = self.path.exists()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    if written <= 0:  # pragma: no cover - a regular file writes or raises
                        raise OSError(errno.EIO, "nothing written")
                    view = view[written:]
                os.fsync(fd)
            except OSError as exc:
                # Cut off what part of the line made it, so the file stays whole lines (and frees that space).
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
                if not existed and size == 0:
                    with contextlib.suppress(OSError):
                        self.path.unlink()
                # write() errors name no file; the CLI names this one.
                raise OSError(exc.errno, exc.strerror or str(exc), str(self.path)) from None
            end = size + len(data)
            with contextlib.suppress(OSError):
                _allocate_past_end(fd, end, RESERVE_BYTES, release=final)
        finally:
            os.close(fd)
