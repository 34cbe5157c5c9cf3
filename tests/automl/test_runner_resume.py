"""End to end: a study through `mal automl run`, the runner SIGKILLed mid-study, then `mal automl resume`.

Asserts what a user relies on: no finished trial lost or repeated (every training launched exactly once, the
running ones re-attached), the search continues with the same state, and the baseline, the final evaluation
and the report are all there at the end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from support.reliability import sigint_as_in_a_terminal
from support.study import dummy_command, launches, make_skill_dir, spec_overrides

pytestmark = pytest.mark.slow

FINAL = ("done", "stopped", "failed")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mal", "automl", *args, "--yes", "--no-live", "--poll-interval", "0.05"]


def _state(ws: Path) -> dict:
    runs = sorted(ws.glob("run_*/state.json"))
    if not runs:
        return {}
    try:
        return json.loads(runs[-1].read_text())
    except ValueError:
        return {}


@pytest.mark.parametrize(
    ("algorithm", "settings"),
    [
        ("random", {"automl_max_recommendations": 6, "automl_max_epochs": 2}),
        (
            "asha",
            {
                "automl_max_recommendations": 4,
                "automl_max_epochs": 4,
                "automl_reduction_factor": 2,
                "automl_min_top_configs": 1,
            },
        ),
    ],
)
def test_sigkill_the_runner_then_resume(tmp_path, algorithm, settings):
    log = tmp_path / "launches.log"
    ws = tmp_path / "ws"
    study = {
        "skill_dir": str(make_skill_dir(tmp_path)),
        "workspace_dir": str(ws),
        "algorithm": algorithm,
        "automl_settings": {**settings, "automl_max_concurrent": 2, "run_baseline": True, "run_final_evaluation": True},
        "spec_overrides": spec_overrides(tmp_path),
        "command": dummy_command(),
    }
    study_file = tmp_path / "automl.yaml"
    study_file.write_text(yaml.safe_dump(study))
    env = {**os.environ, "MAL_DUMMY_STARTED_LOG": str(log), "MAL_DUMMY_SLEEP": "0.15"}

    runner = subprocess.Popen(
        _cli("run", "-e", str(study_file)),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        state = _state(ws)
        trials = state.get("trials", {}).values()
        if sum(t["state"] in FINAL for t in trials) >= 2 and any(t["state"] == "running" for t in trials):
            break
        assert runner.poll() is None, runner.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the study never had two finished trials and one running"
        time.sleep(0.02)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    runner.stderr.close()
    before = {job: t for job, t in _state(ws)["trials"].items() if t["state"] in FINAL}
    assert _state(ws)["phase"] == "search"

    run_dir = sorted(ws.glob("run_*"))[-1]
    resumed = subprocess.run(_cli("resume", str(run_dir)), env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    result = json.loads((run_dir / "result.json").read_text())
    history = result["history"]
    assert [h["rec_id"] for h in history] == list(range(len(history)))
    assert all(h["status"] in FINAL for h in history)
    state = _state(ws)
    assert sorted(state["completion_order"]) == sorted(h["job_id"] for h in history)  # each concluded once
    for job_id, record in before.items():  # nothing finished before the kill changed
        after = next(h for h in history if h["job_id"] == job_id)
        assert after["metric"] == record["metric"] and after["status"] == record["state"]
    started = [Path(results_dir).name for results_dir, _ in launches(log)]
    assert sorted(started) == sorted([h["job_id"] for h in history] + ["baseline"])  # none repeated, none lost
    for entry in history:
        if entry["resume_from"] is not None:
            parent = history[entry["resume_from"]]
            assert parent["status"] == "done" and entry["params"] == parent["params"]
    assert result["phase"] == "done"
    assert result["baseline"]["status"] == "measured"
    assert result["final_evaluation"]["status"] == "measured"
    assert result["final_evaluation"]["checkpoint"] == result["best"]["checkpoint"]
    assert (run_dir / "report" / "report.md").is_file() and (run_dir / "report" / "report.html").is_file()
    if algorithm == "asha":
        assert any(h["resume_from"] is not None for h in history)
        assert max(h["budget"] for h in history) == 4
    else:
        assert len(history) == 6


@pytest.mark.parametrize(
    ("signum", "code", "how"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
    ids=["ctrl_c", "sigterm"],
)
def test_ctrl_c_or_sigterm_stops_the_running_trainings_and_resume_reruns_them(tmp_path, signum, code, how):
    """Ctrl-C (SIGINT to the runner's process group, as a terminal sends it) or SIGTERM (kill, timeout, systemd,
    docker stop) must not leave trainings running unwatched: their jobs live in sessions of their own, which the
    signal never reaches."""
    from mal.automl.platforms.local import process_start_ticks

    ws = tmp_path / "ws"
    study = {
        "skill_dir": str(make_skill_dir(tmp_path)),
        "workspace_dir": str(ws),
        "algorithm": "random",
        "automl_settings": {"automl_max_recommendations": 4, "automl_max_epochs": 2, "automl_max_concurrent": 2,
                            "run_baseline": False},
        "spec_overrides": spec_overrides(tmp_path),
        "command": dummy_command(),
    }
    study_file = tmp_path / "automl.yaml"
    study_file.write_text(yaml.safe_dump(study))
    env = {**os.environ, "MAL_DUMMY_SLEEP": "30"}  # an epoch takes 30 s: the trainings are surely running
    runner = subprocess.Popen(_cli("run", "-e", str(study_file)), env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, start_new_session=True,
                              preexec_fn=sigint_as_in_a_terminal)
    deadline = time.monotonic() + 60
    while len(pid_files := sorted(ws.glob("run_*/**/job.pid"))) < 2:
        assert runner.poll() is None, runner.stderr.read()[-2000:]
        assert time.monotonic() < deadline, "two trainings never started"
        time.sleep(0.05)
    time.sleep(0.3)  # let both write their pid and start time
    jobs = [tuple(map(int, path.read_text().split())) for path in pid_files]
    os.killpg(runner.pid, signum)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == code, err[-2000:]
    assert err.strip().splitlines()[-1] == f"mal automl run: {how}; continue with `mal automl resume`."
    for pid, ticks in jobs:
        assert process_start_ticks(pid) != ticks, f"training {pid} still runs after Ctrl-C"
    state = _state(ws)
    assert state["phase"] == "search"
    assert sorted(t["state"] for t in state["trials"].values()) == ["interrupted", "interrupted"]

    env["MAL_DUMMY_SLEEP"] = "0.05"
    run_dir = sorted(ws.glob("run_*"))[-1]
    resumed = subprocess.run(_cli("resume", str(run_dir)), env=env, capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((run_dir / "result.json").read_text())["history"]
    assert [h["status"] for h in history] == ["done"] * 4


def test_sigterm_stops_the_trainings_of_a_runner_called_from_python(tmp_path):
    """AutoMLRunner.run without the CLI: SIGTERM raises TerminatedError out of run() after the running trainings
    were stopped, and the handler the caller had is put back."""
    import threading

    from mal.automl.platforms.local import process_start_ticks
    from mal.automl.stopping import TerminatedError
    from support.study import quiet_runner

    ws = tmp_path / "ws"
    jobs: list[tuple[int, int]] = []

    def terminate_once_two_run() -> None:
        deadline = time.monotonic() + 60
        while len(pid_files := sorted(ws.glob("run_*/**/job.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # let both write their pid and start time
        jobs.extend(tuple(map(int, path.read_text().split())) for path in pid_files)
        os.kill(os.getpid(), signal.SIGTERM)

    def unhandled(signum, frame):
        raise AssertionError("SIGTERM reached the test: the runner did not handle it")

    previous = signal.signal(signal.SIGTERM, unhandled)  # a regression fails here instead of killing pytest
    threading.Thread(target=terminate_once_two_run, daemon=True).start()
    try:
        with pytest.raises(TerminatedError):
            quiet_runner(tmp_path, env={"MAL_DUMMY_SLEEP": "30"}).run(
                automl_algorithm="random",
                automl_settings={"automl_max_recommendations": 4, "automl_max_epochs": 2,
                                 "automl_max_concurrent": 2, "run_baseline": False},
                spec_overrides=spec_overrides(tmp_path),
            )  # fmt: skip
        assert signal.getsignal(signal.SIGTERM) is unhandled
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert len(jobs) == 2
    for pid, ticks in jobs:
        assert process_start_ticks(pid) != ticks, f"training {pid} still runs after SIGTERM"
    assert sorted(t["state"] for t in _state(ws)["trials"].values()) == ["interrupted", "interrupted"]
