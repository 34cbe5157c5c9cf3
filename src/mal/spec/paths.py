"""Path checks the spec models run on their values: `~` expansion, and whether an output file path is usable.

Kept apart from `mal.spec.schema` (the models): `mal.engine.inference` runs the same output-file check on the
default label path (results_dir/inference/labels.json), which no spec key holds.
"""

from __future__ import annotations

import os
from pathlib import Path


def expand_home(value: str | None) -> str | None:
    """`~/x` as the home folder (a field validator for path keys); None and "" are returned as they are."""
    # `~/x` must mean the home folder, as it does for the data paths, not a folder named `~` in the working dir.
    return os.path.expanduser(value) if value else value


def _local_file(source: str) -> Path | None:
    """The file a data path names on this machine (None for a URL: no local output can be that)."""
    if source.startswith("file://"):
        source = source[len("file://") :]
    elif "://" in source:
        return None
    return Path(source).expanduser()


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)  # also through symlinks and hard links
    except OSError:  # one of them does not exist (yet): compare where they would be
        return a.resolve() == b.resolve()


def output_file_problem(out_path: Path, inputs: dict[str, str | None]) -> str | None:
    """Why `out_path` cannot take an output file: a folder, inside a file, or one of the input files (key -> path),
    whose content the output would replace. None when it can."""
    if out_path.is_dir():
        return f"is a folder; give a file path such as {out_path / 'labels.json'}"
    for parent in out_path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                return f"is inside {parent}, which is a file, not a folder; give another path"
            break
    for key, source in inputs.items():
        local = _local_file(source) if source else None
        if local is not None and _same_file(out_path, local):
            return (
                f"is the input annotation file {key} = {source}; writing the labels there would replace its "
                "ground truth: set inference.label_dump_path to another file"
            )
    return None
