"""One run per output folder: `results_dir/<action>/mal.lock`, held with flock for the life of the run.

Two `mal train` on one results_dir used to delete each other's temporary checkpoints and interleave their epoch
files. The kernel drops an flock when its holder dies, even by SIGKILL, so a lock left behind by a dead run is
simply taken over; the pid (and host) written in the file only serve the messages. The file is removed on release,
and so are the folders the lock itself had to create, when still empty (a run refused for bad data leaves nothing).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from mal.errors import SpecError

LOCK_NAME = "mal.lock"

# Launchers give every process but the first a nonzero rank in one of these; only the first one owns the folder
# (Lightning's DDP children re-run `mal train` in the same results_dir while the first one holds the lock).
_RANK_VARIABLES = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")


def is_primary_process(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    return all((env.get(name) or "0").strip() in ("0", "") for name in _RANK_VARIABLES)


def _owner(fd: int) -> str:
    """`pid N on host H` from a lock file, or '' when it holds nothing readable."""
    try:
        text = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
    except OSError:
        return ""
    if not text or not text[0].isdigit():
        return ""
    host = f" on host {text[1]}" if len(text) > 1 and text[1] != socket.gethostname() else ""
    return f"pid {text[0]}{host}"


def _lock_file(path: Path) -> int:
    """An open, flock-ed descriptor of the file now at `path`; raises BlockingIOError when another run holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BaseException:
            os.close(fd)
            raise
        # The previous holder unlinks the file before it lets go: if we locked such an orphan, lock the new one.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


@contextlib.contextmanager
def hold_run_lock(folder: str | os.PathLike[str], action: str, key: str = "results_dir") -> Iterator[None]:
    """Own `folder` (results_dir/<action>) for the block, or raise SpecError naming the run that owns it."""
    if not is_primary_process():
        yield
        return
    target = Path(folder)
    created = [path for path in (target, *target.parents) if not path.exists()]
    target.mkdir(parents=True, exist_ok=True)
    path = target / LOCK_NAME
    try:
        fd = _lock_file(path)
    except BlockingIOError:
        owner = _read_owner(path)
        raise SpecError(
            f"{key}: {target} is in use by another mal {action} ({owner or 'its pid is not written yet'}); wait "
            f"for it to finish or stop it, or set {key} to another folder."
        ) from None
    try:
        stale = _owner(fd)
        if stale:
            print(f"mal {action}: took over {path}, left by {stale} which is no longer running.", flush=True)
        # The pid is only for messages: on a full disk the lock works without it.
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
        yield
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still locked, so no other run can lock this file and then lose it
        os.close(fd)
        for folder_made in created:  # deepest first; only what is still empty
            with contextlib.suppress(OSError):
                folder_made.rmdir()


def _read_owner(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return ""
    try:
        return _owner(fd)
    finally:
        os.close(fd)
