"""Three `mal automl worker` processes share one study on a real PostgreSQL; one is SIGKILLed mid-trial."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

from optuna.trial import TrialState

from mal.automl.storage import create_distributed_study, load_distributed_study
from support.study import dummy_command, launches, make_skill_dir, spec_overrides

PLANNED = 9


def _worker(url: str, workspace, log_dir, index: int, env: dict[str, str]) -> subprocess.Popen:
    out = open(log_dir / f"worker{index}.log", "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", "mal", "automl", "worker", "--storage", url, "--study", "pg",
         "--workspace", str(workspace), "--poll-interval", "0.1"],
        stdout=out, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip


def _victims_running_trial(study, pid: int):
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        results = trial.user_attrs.get("results_dir")
        # Mid-trial: the job has begun writing its status.json.
        mine = f":{pid}:" in trial.user_attrs.get("worker", "")
        if mine and results and os.path.exists(os.path.join(results, "train", "status.json")):
            return trial
    return None


def test_three_workers_share_a_study_and_a_killed_workers_trial_is_retried(postgres, tmp_path):
    url = postgres.url
    create_distributed_study(
        url, "pg", make_skill_dir(tmp_path),
        {"algorithm": "random", "automl_max_recommendations": PLANNED, "automl_max_epochs": 3,
         "automl_max_concurrent": 1},
        spec_overrides(tmp_path), command=dummy_command(), heartbeat_interval=0.5, grace_period=3.0,
    )  # fmt: skip
    log = tmp_path / "launches.log"
    env = {**os.environ, "MAL_DUMMY_SLEEP": "0.4", "MAL_DUMMY_STARTED_LOG": str(log)}
    workers = [_worker(url, tmp_path / "ws", tmp_path, i, env) for i in range(3)]
    study, _ = load_distributed_study(url, "pg")
    victim, killed = workers[0], None
    deadline = time.monotonic() + 90
    while killed is None and time.monotonic() < deadline:
        killed = _victims_running_trial(study, victim.pid)
        time.sleep(0.05)
    assert killed is not None, "worker 0 never ran a trial"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    for index, worker in enumerate(workers[1:], start=1):
        assert worker.wait(timeout=150) == 0, (tmp_path / f"worker{index}.log").read_text()[-2000:]

    trials = study.get_trials()
    assert len(trials) == PLANNED + 1  # the planned ones and one retry
    dead = trials[killed.number]
    assert dead.state == TrialState.FAIL
    assert dead.user_attrs["failure"]["category"] == "infrastructure"
    assert "stopped sending heartbeats" in dead.user_attrs["failure"]["reason"]
    retries = [t for t in trials if t.user_attrs.get("retry_of") is not None]
    assert len(retries) == 1 and retries[0].user_attrs["retry_of"] == killed.number
    assert retries[0].state == TrialState.COMPLETE
    assert retries[0].user_attrs["params"] == dead.user_attrs["params"]
    assert f":{victim.pid}:" not in retries[0].user_attrs["worker"]
    # Every planned recommendation finished exactly once; nothing else is pending or running.
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert Counter(t.user_attrs["slot"] for t in complete) == Counter(range(PLANNED))
    assert len(complete) == PLANNED and all(t.value is not None for t in complete)
    # Each trial was launched once, in its own folder (the killed one's job started once, too).
    started = Counter(results_dir for results_dir, _ in launches(log))
    assert set(started.values()) == {1}
    assert set(started) == {t.user_attrs["results_dir"] for t in trials}
    assert len({t.user_attrs["worker"] for t in trials}) == 3  # all three workers took part

    status = subprocess.run(
        [sys.executable, "-m", "mal", "automl", "status", "--storage", url, "--study", "pg", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr[-2000:]
    progress = json.loads(status.stdout)["progress"]
    assert progress["completed"] == progress["total"] == PLANNED + 1
    assert progress["failed"] == 1 and progress["retried"] == 1 and progress["running"] == 0
    assert progress["best_metric"] == max(t.value for t in complete)
