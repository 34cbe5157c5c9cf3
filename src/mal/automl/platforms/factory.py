"""The one place a platform is built from a study's settings, for `mal automl run` and `mal automl worker` alike."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mal.automl.platforms.base import Platform
from mal.automl.platforms.local import DEFAULT_COMMAND, LocalPlatform
from mal.errors import SpecError

PLATFORMS = ("local", "slurm")


def make_platform(
    name: str | None,
    max_concurrent: int,
    command: Sequence[str] | str | None = None,
    kill_grace: float | None = None,
    slurm: Mapping[str, Any] | None = None,
    **slurm_overrides: Any,
) -> Platform:
    """`local` subprocesses (default) or `slurm` batch jobs running `command` (default: `python -m mal ...`).

    kill_grace: seconds between SIGTERM and SIGKILL when a local trial is stopped.
    slurm: the study's `slurm:` mapping; slurm_overrides (a worker's --partition, --account, --time) win over it.
    """
    name = name or "local"
    # What built the platform, kept by a study so that its resume builds the same one.
    recipe = {"name": name, "max_concurrent": max_concurrent, "command": command, "kill_grace": kill_grace,
              "slurm": None if slurm is None else dict(slurm), **slurm_overrides}  # fmt: skip
    command = command or DEFAULT_COMMAND
    platform: Platform
    if name == "local":
        platform = LocalPlatform(
            max_concurrent=max_concurrent, command=command, kill_grace=5.0 if kill_grace is None else kill_grace
        )
    elif name == "slurm":
        from mal.automl.platforms.slurm import SlurmPlatform

        settings = {"max_concurrent": max_concurrent, "command": command, **dict(slurm or {})}
        platform = SlurmPlatform.from_settings(settings, **slurm_overrides)
    else:
        raise SpecError(f"platform {name!r} is unknown; use one of {list(PLATFORMS)}.")
    platform.recipe = recipe
    return platform
