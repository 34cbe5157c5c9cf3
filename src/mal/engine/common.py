"""Pieces every action shares: which checkpoint to use, which device, a progress bar."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from mal import jobfiles
from mal.errors import CheckpointError
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


def show_progress() -> bool:
    return sys.stderr.isatty() and not os.environ.get("MAL_NO_PROGRESS")


class RateColumn(ProgressColumn):
    """Items per second, e.g. `153.2 boxes/s`."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.1f} {self.unit}/s" if speed else f"- {self.unit}/s")


def progress(items: Iterable[T], total: int, description: str, unit: str = "boxes",
             size: Callable[[T], int] | None = None) -> Iterator[T]:
    """Iterate with a rich progress bar on a terminal (advancing by `size(item)`), silently elsewhere."""
    if not show_progress():
        yield from items
        return
    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(unit),
               TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar:  # stdout stays clean for pipes
        task = bar.add_task(description, total=total)
        for item in items:
            yield item
            bar.advance(task, size(item) if size else 1)
