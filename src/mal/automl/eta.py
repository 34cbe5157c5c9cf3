"""How long a local study has left, from what it has measured: remaining planned epochs x seconds per epoch /
trials at once.

Seconds per epoch come from the finished trials (their wall time over the epochs they trained); before any trial
has finished, from the baseline's calibration training (baseline.json `seconds_per_epoch`, else `seconds` /
`budget`); with neither, the ETA is unknown rather than a guess. Planned epochs and concurrency are the launch
review's (launch_review.json).

Works on report entries (`TrialRecord.entry()` dicts), so the live table, `mal automl status` and its JSON share it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from mal.automl.preflight import format_duration
from mal.automl.trial_record import FINAL_STATES

# Phases after the search: no training is left to run.
_SEARCH_OVER = ("final", "done")


def parse_time(text: object) -> datetime | None:
    """A study file's ISO timestamp; None when absent or unreadable (a damaged state.json must not break status)."""
    if not isinstance(text, str) or not text:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    # Every study file writes UTC (`mal.automl.trials.now`); a naive stamp from elsewhere is read as UTC too.
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def wall_seconds(entry: Mapping[str, Any], now: datetime | None = None) -> float | None:
    """Start to end of a trial; for one still running (no end yet), start to `now`. None if it never started."""
    started = parse_time(entry.get("started"))
    if started is None:
        return None
    finished = parse_time(entry.get("finished"))
    if finished is None:
        if entry.get("status") != "running":
            return None  # pending or interrupted: no clock is running for it
        finished = now or datetime.now(UTC)
    return max(0.0, (finished - started).total_seconds())


def _reached(entry: Mapping[str, Any]) -> int:
    """The epoch a trial got to: its budget once done, else its last reported epoch."""
    if entry.get("status") == "done":
        return int(entry.get("budget") or 0)
    epochs = entry.get("epochs") or []
    return int(max(epoch for epoch, _ in epochs)) if epochs else 0


def epochs_trained(entry: Mapping[str, Any], by_rec: Mapping[int, Mapping[str, Any]]) -> int:
    """Epochs this trial trained itself: a trial continuing rec N's checkpoint starts at the epoch N reached, and
    the planned epochs of successive halving and PBT count only those new epochs too."""
    start = 0
    parent = by_rec.get(entry["resume_from"]) if entry.get("resume_from") is not None else None
    if parent is not None:
        start = _reached(parent)
    return max(0, _reached(entry) - start)


def seconds_per_epoch(
    history: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any] | None, now: datetime | None = None
) -> tuple[float | None, str | None]:
    """(seconds per epoch, where they come from: "trials" or "baseline"), or (None, None) when nothing is measured.

    Finished trials are pooled (total wall time / total epochs) so a short trial's start-up cost weighs as little
    as it does in the study's real time."""
    by_rec = {int(h["rec_id"]): h for h in history}
    seconds = epochs = 0.0
    for entry in history:
        if entry.get("status") not in FINAL_STATES:
            continue
        wall, trained = wall_seconds(entry, now), epochs_trained(entry, by_rec)
        if wall is not None and trained > 0:
            seconds += wall
            epochs += trained
    if epochs > 0:
        return seconds / epochs, "trials"
    if baseline:
        measured = baseline.get("seconds_per_epoch")  # a calibration training's, its start-up left out
        if isinstance(measured, int | float) and measured > 0:
            return float(measured), "baseline"
        spent, budget = baseline.get("seconds"), baseline.get("budget")
        if isinstance(spent, int | float) and isinstance(budget, int | float) and spent > 0 and budget > 0:
            return float(spent) / float(budget), "baseline"
    return None, None


def study_eta(
    planned_epochs: float | None,
    epochs_done: float,
    seconds_per_epoch: float | None,
    concurrency: int | None,
    running_left: float = 0,
) -> float | None:
    """Seconds the search has left: max(planned - done, what the running trials still have to train) epochs, at
    `seconds_per_epoch`, `concurrency` trials at once. None when the speed or the plan is unknown."""
    if seconds_per_epoch is None or planned_epochs is None or not math.isfinite(seconds_per_epoch):
        return None
    # A search that outgrows its plan (failed trials asked again) still has its running trials to finish.
    remaining = max(0.0, float(planned_epochs) - float(epochs_done), float(running_left))
    return remaining * seconds_per_epoch / max(1, int(concurrency or 1))


def study_progress_eta(
    history: Sequence[Mapping[str, Any]],
    review: Mapping[str, Any] | None,
    baseline: Mapping[str, Any] | None,
    phase: str | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The ETA fields of a study's `progress`: planned_epochs, epochs_done, remaining_epochs, seconds_per_epoch,
    eta_source ("trials", "baseline" or None), concurrency and eta_seconds (None: unknown; 0 once the search is
    over)."""
    review = review or {}
    by_rec = {int(h["rec_id"]): h for h in history}
    done = sum(epochs_trained(h, by_rec) for h in history)
    running_left = sum(max(0, int(h.get("budget") or 0) - _reached(h)) for h in history if h.get("status") == "running")
    speed, source = seconds_per_epoch(history, baseline, now)
    planned = review.get("planned_epochs")
    planned = planned if isinstance(planned, int | float) else None
    concurrency = review.get("concurrency")
    concurrency = int(concurrency) if isinstance(concurrency, int | float) and concurrency >= 1 else 1
    if phase in _SEARCH_OVER:
        eta: float | None = 0.0
        remaining: float | None = 0
    else:
        eta = study_eta(planned, done, speed, concurrency, running_left)
        remaining = None if planned is None else max(0, planned - done, running_left)
    return {
        "planned_epochs": planned,
        "epochs_done": done,
        "remaining_epochs": remaining,
        "seconds_per_epoch": None if speed is None else round(speed, 3),
        "eta_source": source,
        "eta_seconds": None if eta is None else round(eta, 1),
        "concurrency": concurrency,
    }


def eta_text(progress: Mapping[str, Any]) -> str:
    """One line for people: the ETA and what it rests on."""
    eta = progress.get("eta_seconds")
    if eta is None:
        if progress.get("planned_epochs") is None:
            return "ETA unknown: the study has no planned epochs yet (no launch review)"
        return "ETA unknown: no trial has finished and no baseline training was measured"
    if progress.get("phase") in _SEARCH_OVER:
        return "ETA 0 s: the search is over"
    source = "finished trials" if progress.get("eta_source") == "trials" else "baseline"
    return (
        f"ETA {format_duration(eta)}: {progress.get('remaining_epochs')}/{progress.get('planned_epochs')} planned "
        f"epochs left, {progress.get('seconds_per_epoch'):.3g} s/epoch ({source}), "
        f"{progress.get('concurrency', 1)} at once"
    )
