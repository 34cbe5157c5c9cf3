"""What `mal automl status` and the live table show of each trial (its values, its wall time) and of the study (its
ETA), and that `status | head -1` ends quietly."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from mal.automl.eta import eta_text, seconds_per_epoch, study_eta, study_progress_eta, wall_seconds
from mal.automl.report import compact_params, trials_table
from support.engine import run_mal
from support.study import automl_run_command, write_dummy_study

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


def _at(seconds: float) -> str:
    return (T0 + timedelta(seconds=seconds)).isoformat(timespec="milliseconds")


def _entry(rec_id: int, status: str, budget: int, epochs: list[int], start: float | None, end: float | None,
           resume_from: int | None = None, **extra: Any) -> dict[str, Any]:  # fmt: skip
    return {
        "rec_id": rec_id,
        "job_id": f"rec_{rec_id:03d}",
        "params": {"train.lr": 1.234567e-5, "train.wd": 0.000123456},
        "metric": 0.5 if status == "done" else None,
        "status": status,
        "failure_reason": None,
        "budget": budget,
        "resume_from": resume_from,
        "info": {},
        "epochs": [[e, 0.1 * e] for e in epochs],
        "started": None if start is None else _at(start),
        "finished": None if end is None else _at(end),
        "results_dir": None,
        **extra,
    }


# -- the ETA on hand-made numbers --------------------------------------------------------------------------------


def test_study_eta_is_remaining_epochs_times_seconds_per_epoch_over_concurrency():
    assert study_eta(100, 40, 2.0, 2) == 60.0
    assert study_eta(100, 40, 2.0, 1) == 120.0
    assert study_eta(100, 120, 2.0, 2) == 0.0  # past the plan: nothing left ...
    assert study_eta(100, 120, 2.0, 2, running_left=3) == 3.0  # ... but what the running trials still train
    assert study_eta(100, 40, None, 2) is None  # nothing measured: unknown, not a guess
    assert study_eta(None, 40, 2.0, 2) is None


def test_seconds_per_epoch_pools_finished_trials_and_counts_a_resumed_trials_new_epochs_only():
    history = [
        _entry(0, "done", 4, [1, 2, 3, 4], 0, 40),  # 4 epochs in 40 s
        _entry(1, "done", 8, [5, 6, 7, 8], 50, 70, resume_from=0),  # epochs 5..8 from rec 0's checkpoint: 4 in 20 s
        _entry(2, "stopped", 8, [5, 6], 50, 60, resume_from=0),  # stopped after 2 new epochs: 10 s
        _entry(3, "running", 4, [1], 80, None),  # not finished: not measured
    ]
    speed, source = seconds_per_epoch(history, {"seconds": 999, "budget": 1}, now=T0 + timedelta(seconds=90))
    assert source == "trials" and speed == pytest.approx(70 / 10)


def test_before_any_trial_finished_the_baseline_measures_the_speed():
    running = [_entry(0, "running", 4, [1], 0, None)]
    assert seconds_per_epoch(running, {"seconds": 30.0, "budget": 10}) == (3.0, "baseline")
    # A calibration training's own per-epoch time leaves its start-up out.
    calibration = {"seconds": 30.0, "budget": 1, "seconds_per_epoch": 12.0, "startup_seconds": 18.0}
    assert seconds_per_epoch(running, calibration) == (12.0, "baseline")
    assert seconds_per_epoch(running, {"status": "skipped"}) == (None, None)
    assert seconds_per_epoch(running, None) == (None, None)


def test_progress_eta_from_trials_review_and_phase():
    history = [
        _entry(0, "done", 4, [1, 2, 3, 4], 0, 40),
        _entry(1, "running", 4, [1], 30, None),
    ]
    review = {"planned_epochs": 20, "concurrency": 2}
    progress = study_progress_eta(history, review, None, phase="search", now=T0 + timedelta(seconds=50))
    assert progress["epochs_done"] == 5 and progress["remaining_epochs"] == 15
    assert progress["seconds_per_epoch"] == 10.0 and progress["eta_source"] == "trials"
    assert progress["eta_seconds"] == 15 * 10.0 / 2
    line = eta_text({**progress, "phase": "search"})
    assert line.startswith("ETA 75 s: 15/20 planned epochs left") and "(finished trials), 2 at once" in line

    assert study_progress_eta(history, review, None, phase="done")["eta_seconds"] == 0.0
    unknown = study_progress_eta(history[1:], review, None, phase="search")
    assert unknown["eta_seconds"] is None and eta_text(unknown).startswith("ETA unknown")


def test_wall_time_of_finished_running_and_never_started_trials():
    now = T0 + timedelta(seconds=100)
    assert wall_seconds(_entry(0, "done", 2, [1, 2], 10, 25), now) == 15.0
    assert wall_seconds(_entry(1, "running", 2, [], 40, None), now) == 60.0  # elapsed so far
    assert wall_seconds(_entry(2, "failed", 2, [], None, 5), now) is None  # cached: never launched


def test_compact_params_cuts_keys_to_what_tells_them_apart_and_floats_to_3_digits():
    text = compact_params({"train.lr": 1.234567e-5, "train.weight_decay": 0.000123456, "model.arch": "vit-tiny/16",
                           "model.head.dim": 256, "loss.dim": 3})  # fmt: skip
    assert text == "lr=1.23e-05 weight_decay=0.000123 arch=vit-tiny/16 head.dim=256 loss.dim=3"


def test_the_live_table_shows_values_wall_time_and_reads_the_eta_from_the_run_folder(tmp_path):
    """The scheduler passes the table its trials alone: the ETA comes from the run folder they lie in."""
    (tmp_path / "run.json").write_text("{}")
    (tmp_path / "launch_review.json").write_text(json.dumps({"planned_epochs": 12, "concurrency": 2}))
    history = [
        _entry(0, "done", 4, [1, 2, 3, 4], 0, 40, results_dir=str(tmp_path / "trials" / "rec_000")),
        _entry(1, "running", 4, [1], 30, None, results_dir=str(tmp_path / "trials" / "rec_001")),
    ]
    console = Console(file=io.StringIO(), width=200)
    console.print(trials_table(history))
    text = " ".join(console.file.getvalue().split())
    assert "lr=1.23e-05 wd=0.000123" in text and "40.0s" in text
    # 12 planned - 5 done = 7 epochs at 10 s/epoch, 2 at once
    assert "ETA 35 s: 7/12 planned epochs left, 10 s/epoch (finished trials), 2 at once" in text


# -- a real study through `mal automl status` --------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> Path:
    """A random search of 3 dummy trainings, 2 epochs each, 2 at once, run by the real `mal automl run`."""
    root = tmp_path_factory.mktemp("status_view")
    study = write_dummy_study(root, root / "ws", automl_max_recommendations=3, automl_max_epochs=2,
                              automl_max_concurrent=2)  # fmt: skip
    done = run_mal(*automl_run_command(study)[3:], timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = (root / "ws").glob("run_*")
    return run_dir


def _status(run_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    done = run_mal("automl", "status", str(run_dir), *extra, timeout=120)
    assert done.returncode == 0 and not done.stderr, done.stderr[-2000:]
    return done


@pytest.mark.slow
def test_status_shows_each_trials_values_and_wall_time_and_the_eta(finished_study, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich's width when stdout is no terminal: one line per trial
    result = json.loads(_status(finished_study, "--json").stdout)
    for key in ("best", "progress", "baseline", "final_evaluation", "history"):  # TAO's fields stay
        assert key in result
    progress = result["progress"]
    assert progress["planned_epochs"] == 6 and progress["epochs_done"] == 6 and progress["concurrency"] == 2
    assert progress["eta_seconds"] == 0.0 and progress["eta_source"] == "trials" and progress["seconds_per_epoch"] > 0
    for entry in result["history"]:
        assert entry["wall_seconds"] > 0 and entry["epochs_trained"] == 2
        assert re.fullmatch(r"lr=\S+ wd=\S+", entry["params_text"])
        lr = float(entry["params_text"].split()[0].split("=")[1])
        assert lr == pytest.approx(entry["params"]["train.lr"], rel=5e-3)  # 3 significant digits

    # The result dict (result.json, AutoMLRunner.run) carries the ETA too; its history stays the plain records.
    saved = json.loads((finished_study / "result.json").read_text())
    assert saved["progress"]["eta_seconds"] == 0.0 and "wall_seconds" not in saved["history"][0]

    text = _status(finished_study).stdout
    for entry in result["history"]:
        row = next(line for line in text.splitlines() if entry["job_id"] in line)
        assert entry["params_text"] in row and re.search(r"\b\d+\.\ds\b", row), row
    assert "ETA 0 s: the search is over" in text


@pytest.mark.slow
def test_status_of_a_study_stopped_midway_estimates_what_is_left(finished_study, tmp_path, monkeypatch):
    """The same trials, as if the study had stopped in its search with 10 more epochs planned."""
    monkeypatch.setenv("COLUMNS", "200")
    run_dir = tmp_path / "run"
    shutil.copytree(finished_study, run_dir, symlinks=True)
    state = json.loads((run_dir / "state.json").read_text())
    state["phase"] = "stopped"
    (run_dir / "state.json").write_text(json.dumps(state))
    review = json.loads((run_dir / "launch_review.json").read_text())
    review["planned_epochs"] = 16
    (run_dir / "launch_review.json").write_text(json.dumps(review))

    progress = json.loads(_status(run_dir, "--json").stdout)["progress"]
    assert progress["remaining_epochs"] == 10
    assert progress["eta_seconds"] == pytest.approx(10 * progress["seconds_per_epoch"] / 2, abs=0.1)
    assert "10/16 planned epochs left" in " ".join(_status(run_dir).stdout.split())


# -- `status | head -1` ------------------------------------------------------------------------------------------


def _inflate(run_dir: Path, copies: int) -> None:
    """Copies of the study's first trial, so that status prints far more than a pipe holds (64 KiB) and the
    reader closes it while `mal` still writes."""
    state = json.loads((run_dir / "state.json").read_text())
    first = state["trials"]["rec_000"]
    for rec_id in range(3, 3 + copies):
        state["trials"][f"rec_{rec_id:03d}"] = {**first, "job_id": f"rec_{rec_id:03d}", "rec_id": rec_id}
    (run_dir / "state.json").write_text(json.dumps(state))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("head") is None, reason="needs bash and head")
@pytest.mark.parametrize("extra", [["--json"], []], ids=["json", "table"])
def test_status_piped_into_head_ends_quietly_with_exit_0(finished_study, tmp_path, extra):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_study, run_dir, symlinks=True)
    _inflate(run_dir, 2000)
    command = shlex.join([sys.executable, "-m", "mal", "automl", "status", str(run_dir), *extra])
    # PIPESTATUS[0]: mal's own exit status, not head's.
    script = f'{command} | head -1; exit "${{PIPESTATUS[0]}}"'
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "MAL_NO_PROGRESS": "1"})  # fmt: skip
    assert done.stderr == "", done.stderr[-2000:]
    assert done.returncode == 0
    assert len(done.stdout.splitlines()) == 1
