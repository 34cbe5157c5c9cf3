"""Spec presets shipped inside the package (the embedded defaults of `mal demo`)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def preset_path(name: str) -> Path:
    """Path of a shipped preset YAML, e.g. `preset_path("demo")`."""
    return Path(str(resources.files(__package__).joinpath(f"{name}.yaml")))
