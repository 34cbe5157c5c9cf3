"""Numbers read from `MAL_*` environment variables, checked where they are read.

A bad value (`MAL_EXTRACT_MAX_BYTES=lots`, `MAL_MAX_IMAGE_PIXELS=-5`) is a `UserError` naming the variable, its value
and what it accepts, so the CLI exits 2 with one line instead of a ValueError traceback. Imports only `mal.errors`:
every layer (data, automl) may use it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from mal.errors import UserError


class EnvError(UserError):
    """A `MAL_*` environment variable holds a value mal cannot use."""


def _read(name: str, default: float, minimum: float, what: str, whole: bool) -> float:
    # An empty value counts as unset: `VAR= mal ...` is the usual way to clear a variable for one command.
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)  # also "1e9" and "200_000"
    except ValueError:
        value = math.nan
    if math.isfinite(value) and value >= minimum and (not whole or value == int(value)):
        return value
    shown = repr(raw if len(raw) <= 40 else raw[:37] + "...")
    fmt = ".0f" if whole else "g"
    raise EnvError(
        f"environment variable {name}={shown} is not usable; set it to {what} >= {minimum:{fmt}} "
        f"(default {default:{fmt}}) or unset it."
    )


def env_number(name: str, default: float, *, minimum: float, what: str = "a number") -> float:
    """The variable as a finite float >= minimum, or `default` when it is unset or empty; EnvError otherwise."""
    return _read(name, default, minimum, what, whole=False)


def env_int(name: str, default: int, *, minimum: int, what: str = "a whole number") -> int:
    """`env_number` for counts and sizes: the value must be whole ("1e9" is, "1.5" is not)."""
    return int(_read(name, default, minimum, what, whole=True))


def _shortened_path(raw: str, limit: int = 200) -> str:
    """A path as the user can recognise it on one line: whole up to `limit` characters, else its start and its end
    (the folder names that tell it apart) around "...", never cut at the end."""
    if len(raw) <= limit:
        return raw
    head = limit // 3
    return raw[:head] + "..." + raw[-(limit - head - 3):]


def env_folder(name: str, default: Path) -> Path:
    """The variable as a folder path (`~` expanded), or `default` when it is unset or empty; EnvError when it names
    an existing file or a `~user` that does not exist. The folder itself need not exist yet."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    shown = repr(_shortened_path(raw))
    try:
        path = Path(raw).expanduser()
    except RuntimeError:  # `~nosuchuser/...`
        raise EnvError(f"environment variable {name}={shown} names an unknown home folder; fix or unset it.") from None
    if path.exists() and not path.is_dir():
        raise EnvError(
            f"environment variable {name}={shown} is a file, not a folder; point it at a folder or unset it."
        )
    return path


__all__ = ["EnvError", "env_folder", "env_int", "env_number"]
