"""The output folder of an export, all or nothing: everything is written into a temporary folder beside it,
which is renamed into place only when complete; a failure or Ctrl-C leaves the old folder (or none) as it was."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from mal.errors import UserError

# link() fails with these where a hard link cannot be made (another disk, a file system without them, a file
# the kernel protects, too many links): the image is copied instead.
_NO_LINK_ERRNOS = frozenset({errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK, errno.EOPNOTSUPP, errno.ENOTSUP})


def check_output_folder(out: Path, *, overwrite: bool, inputs: Iterable[Path]) -> None:
    """Refuse (UserError) an --out the export may not replace: a file, a link, a non-empty folder without
    --overwrite, or a folder holding one of the inputs (replacing it would delete them)."""
    if out.is_symlink():
        raise UserError(f"--out {out} is a symbolic link; pass a real folder path.")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder path.")
    if not out.exists() or not any(out.iterdir()):
        return
    if not overwrite:
        raise UserError(f"--out {out} is not empty; pass --overwrite to replace it, or choose a new folder.")
    folder = out.resolve()
    for item in inputs:
        if item.resolve() == folder or item.resolve().is_relative_to(folder):
            raise UserError(f"--out {out} holds the input {item}; --overwrite would delete it, choose another folder.")


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A new empty folder beside `out` to write into; on success it replaces `out`, on any failure it is removed."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    except (PermissionError, FileExistsError, NotADirectoryError) as exc:
        raise UserError(f"--out {out}: cannot create a folder in {out.parent} ({exc.strerror}); choose a writable "
                        "folder path.") from None
    try:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes it private; the export is an ordinary folder
        yield staging
        _replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace(staging: Path, out: Path) -> None:
    if not out.exists():
        os.rename(staging, out)
        return
    with contextlib.suppress(OSError):  # an empty folder is replaced by rename() itself
        os.rename(staging, out)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    os.rename(out, retired / out.name)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(retired / out.name, out)  # put the old folder back rather than leave none
        raise
    finally:
        shutil.rmtree(retired, ignore_errors=True)


def place_image(source: Path, target: Path) -> bool:
    """Put the image at `target` as a hard link to `source` (no space used) or, where the file system refuses
    one, as a copy; True when linked. Never a symbolic link: the folder must hold the images it is handed with."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target, follow_symlinks=True)
        return True
    except OSError as exc:
        if exc.errno not in _NO_LINK_ERRNOS:
            raise
    shutil.copyfile(source, target)
    return False


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
