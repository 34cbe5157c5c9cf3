"""The progress bar of every long loop: rich, on a terminal's stderr only (stdout stays clean for pipes), off
with MAL_NO_PROGRESS. Free of torch, so light commands (mal labels export) draw it too."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

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

T = TypeVar("T")


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
