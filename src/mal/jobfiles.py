"""The job contract's files, in one place: what `mal <action>` writes under `results_dir` and how to read it.

The engine writes these files and `mal.automl` reads them; both import the names and rules from here, so they
cannot drift apart (docs/ARCHITECTURE.md, "Contracts"):

    results_dir/<action>/status.json            JSON Lines events: status, epoch, max_epoch, kpi, message, time
    results_dir/train/mal_model_epoch_NNN.pth   after epoch NNN (counted from 1, as status.json's `epoch`),
                                                written atomically; the newest train.keep_last_checkpoints are kept
    results_dir/train/mal_model_latest.pth      a symlink to the newest epoch file
    results_dir/train/mal_model_best.pth        the best epoch by the monitored metric: a hard link to its epoch
                                                file (a symlink where hard links are impossible)

Standard library only: every layer may import it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

STATUS_FILE = "status.json"
TRAIN_DIR = "train"
EPOCH_CHECKPOINT = "mal_model_epoch_{epoch:03d}.pth"
LATEST_CHECKPOINT = "mal_model_latest.pth"
BEST_CHECKPOINT = "mal_model_best.pth"
# Every file name the training writes into its folder starts so (the temp files of an atomic save too).
CHECKPOINT_GLOB = "mal_model_*"
STATUSES = ("STARTED", "RUNNING", "SUCCESS", "FAILURE")
FINAL_STATUSES = ("SUCCESS", "FAILURE")

_EPOCH_FILE = re.compile(r"^mal_model_epoch_(\d+)\.pth$")


def action_dir(results_dir: str | Path, action: str = "train") -> Path:
    return Path(results_dir) / action


def status_path(results_dir: str | Path, action: str = "train") -> Path:
    return action_dir(results_dir, action) / STATUS_FILE


def epoch_checkpoint_name(epoch: int) -> str:
    return EPOCH_CHECKPOINT.format(epoch=epoch)


def epoch_of(path: str | Path) -> int | None:
    """The epoch number in an epoch checkpoint's file name, None for any other file."""
    match = _EPOCH_FILE.match(Path(path).name)
    return int(match.group(1)) if match else None


def epoch_checkpoints(train_dir: str | Path) -> dict[int, Path]:
    """epoch -> file of every epoch checkpoint in a train folder."""
    folder = Path(train_dir)
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        epoch = epoch_of(path)
        if epoch is not None:
            found[epoch] = path
    return found


def latest_checkpoint(train_dir: str | Path) -> Path | None:
    """The newest complete epoch checkpoint of a train folder, by the one rule both sides use: the highest epoch
    file first (each is renamed into place whole), then the target of the `latest` link. The link comes second
    because a run killed between saving an epoch and moving the link leaves it one epoch behind."""
    found = epoch_checkpoints(train_dir)
    if found:
        return found[max(found)]
    link = Path(train_dir) / LATEST_CHECKPOINT
    return link.resolve() if link.exists() else None


def best_checkpoint(train_dir: str | Path, events: list[dict[str, Any]] | None = None) -> Path | None:
    """`mal_model_best.pth`, else the `best_checkpoint` the job last reported in `events`, else None (never the
    latest: a run without validation has no best)."""
    best = Path(train_dir) / BEST_CHECKPOINT
    if best.exists():
        return best
    for event in reversed(events or []):
        reported = event.get("best_checkpoint")
        if reported:
            path = Path(reported)
            if not path.is_absolute():
                path = Path(train_dir) / path
            if path.exists():
                return path
    return None


def parse_status_lines(text: str) -> list[dict[str, Any]]:
    """Complete events of a status.json text; a torn last line (the writer killed mid-line) is skipped."""
    events = []
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(event, dict) and "status" in event:
            events.append(event)
    return events


def read_status_events(results_dir: str | Path, action: str = "train") -> list[dict[str, Any]]:
    """The job's events so far; [] while it has written none (or its folder does not exist)."""
    try:
        text = status_path(results_dir, action).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return []
    return parse_status_lines(text)


def final_event(events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The SUCCESS or FAILURE event that ended the job, None while it runs."""
    for event in reversed(events):
        if event.get("status") in FINAL_STATUSES:
            return event
    return None
