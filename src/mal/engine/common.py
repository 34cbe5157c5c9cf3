"""Pieces every action shares: which checkpoint to use, which device, a progress bar (mal.progress)."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import torch

from mal import jobfiles
from mal.errors import CheckpointError
from mal.progress import progress, show_progress  # noqa: F401  (the engine's callers import them from here)
from mal.spec.schema import ExperimentSpec

T = TypeVar("T")


def resolve_checkpoint(spec: ExperimentSpec, explicit: str | None, key: str) -> Path:
    """`explicit` when given, else the best checkpoint of results_dir/train, else its latest."""
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise CheckpointError(f"{key} = {explicit} does not exist; point it to a .pth written by mal train.")
        return path
    train_dir = jobfiles.action_dir(spec.results_dir, jobfiles.TRAIN_DIR)
    candidate = jobfiles.best_checkpoint(train_dir) or jobfiles.latest_checkpoint(train_dir)
    if candidate is not None:
        return candidate.resolve()
    raise CheckpointError(
        f"no checkpoint found in {train_dir}; run mal train first or set {key}=PATH/TO/mal_model_epoch_NNN.pth."
    )


def pick_device() -> torch.device:
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
