"""Crafted archives: zips and tars of files, folders and links, as hostile archives are made."""

from __future__ import annotations

import io
import stat
import tarfile
import warnings
import zipfile
from pathlib import Path

# (name, kind, link target or file data)
Member = tuple[str, str, str]


def build_zip(path: Path, members: list[Member]) -> Path:
    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as zf:
        warnings.simplefilter("ignore")  # random archives repeat names on purpose
        for name, kind, payload in members:
            info = zipfile.ZipInfo(name + ("/" if kind == "dir" else ""))
            bits = {"file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "hardlink": stat.S_IFLNK}
            info.external_attr = (bits[kind] | 0o755) << 16
            zf.writestr(info, "" if kind == "dir" else payload)
    return path


def build_tar(path: Path, members: list[Member]) -> Path:
    kinds = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}
    with tarfile.open(path, "w") as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.type = kinds[kind]
            if kind == "file":
                data = payload.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.linkname = payload if kind in ("symlink", "hardlink") else ""
                tar.addfile(info)
    return path
