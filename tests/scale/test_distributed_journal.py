"""A shared study on the embedded journal-file store: creation, claiming, heartbeats, retries, status, report."""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console

from mal.automl.dead_workers import fail_stale_trials
from mal.automl.distributed_report import distributed_result
from mal.automl.orphans import stop_orphaned_job
from mal.automl.platforms.local import process_start_ticks
from mal.automl.storage import HEARTBEAT_ATTR, create_distributed_study, load_distributed_study, open_storage
from mal.automl.worker import StudyWorker
from mal.errors import SpecError, UserError
from support.study import automl_run_command, dummy_command, launches, make_skill_dir, spec_overrides, write_dummy_study

QUIET = Console(file=io.StringIO())


def _create(root, name="s", settings=None, **kwargs):
    return create_distributed_study(
        str(root / "study.journal"),
        name,
        make_skill_dir(root),
        {"algorithm": "random", "automl_max_recommendations": 4, "automl_max_epochs": 2, **(settings or {})},
        spec_overrides(root),
        command=dummy_command(),
        heartbeat_interval=0.2,
        grace_period=1.0,
        **kwargs,
    )

def _worker_command(url: str, workspace: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mal", "automl", "worker", "--storage", url, "--study", "s",
            "--workspace", str(workspace), "--poll-interval", "0.05", *extra]  # fmt: skip


def test_two_workers_in_one_process_run_every_trial_once(tmp_path, monkeypatch):
    log = tmp_path / "launches.log"
    monkeypatch.setenv("MAL_DUMMY_STARTED_LOG", str(log))
    _create(tmp_path, settings={"automl_max_recommendations": 6, "automl_max_concurrent": 2})
    url = str(tmp_path / "study.journal")
    workers = [StudyWorker(url, "s", workspace_dir=tmp_path / "ws", poll_interval=0.05, console=QUIET) for _ in "ab"]
    threads = [threading.Thread(target=worker.run) for worker in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    study, _ = load_distributed_study(url, "s")
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6
    ran = [worker.summary.completed for worker in workers]
    assert sorted(ran[0] + ran[1]) == list(range(6))  # each trial once, by exactly one worker
    assert sorted(dir_ for dir_, start in launches(log)) == sorted(t.user_attrs["results_dir"] for t in trials)
    # Random configurations are drawn up front from the seed: the same study gives the same values.
    (tmp_path / "again").mkdir()
    again = _create(tmp_path / "again")
    assert [t.user_attrs["params"] for t in again.get_trials()] == [t.user_attrs["params"] for t in trials[:4]]


def test_a_stale_trial_is_failed_and_retried_exactly_once(tmp_path):
    study = _create(tmp_path, settings={"automl_max_recommendations": 1})
    storage = open_storage(tmp_path / "study.journal")
    study_id = storage.get_study_id_from_name("s")
    first = storage.get_trial_id_from_study_id_trial_number(study_id, 0)
    # A worker takes the trial, beats once, then dies.
    assert storage.set_trial_state_values(first, TrialState.RUNNING)
    storage.set_trial_user_attr(first, "worker", "ghost:1")
    storage.set_trial_system_attr(first, HEARTBEAT_ATTR, time.time())
    assert fail_stale_trials(study, grace_period=30.0) == []  # still fresh
    storage.set_trial_system_attr(first, HEARTBEAT_ATTR, time.time() - 60)
    assert fail_stale_trials(study, grace_period=30.0) == [0]
    assert fail_stale_trials(study, grace_period=30.0) == []  # the second look changes nothing
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.WAITING]
    assert "ghost:1 stopped sending heartbeats" in trials[0].user_attrs["failure"]["reason"]
    assert trials[1].user_attrs["retry_of"] == 0
    assert trials[1].user_attrs["params"] == trials[0].user_attrs["params"]
    # The retry dies too: it is failed, and not retried a second time.
    retry = storage.get_trial_id_from_study_id_trial_number(study_id, 1)
    assert storage.set_trial_state_values(retry, TrialState.RUNNING)
    storage.set_trial_system_attr(retry, HEARTBEAT_ATTR, time.time() - 60)
    assert fail_stale_trials(study, grace_period=30.0) == [1]
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.FAIL]


def _job_pid(pid_file: Path, timeout: float = 60) -> tuple[int, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            pid, ticks = pid_file.read_text().split()
            return int(pid), int(ticks)
        time.sleep(0.05)
    raise AssertionError(f"{pid_file} never appeared")


def test_a_dead_workers_job_is_stopped_when_another_worker_retries_its_trial(tmp_path, monkeypatch):
    _create(tmp_path, settings={"automl_max_recommendations": 1})
    url = str(tmp_path / "study.journal")
    victim = subprocess.Popen(
        _worker_command(url, tmp_path / "ws"),
        env={**os.environ, "MAL_DUMMY_SLEEP": "30"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    trial_dir = tmp_path / "ws" / "s" / "trials" / "trial_0000"
    try:
        pid, ticks = _job_pid(trial_dir / "job.pid")
    finally:
        victim.kill()
        victim.wait(timeout=10)
    assert process_start_ticks(pid) == ticks  # the job outlives its worker: an orphan, 60 s from its end

    monkeypatch.setenv("MAL_DUMMY_SLEEP", "0.05")  # the retry, run here, is quick
    summary = StudyWorker(url, "s", workspace_dir=tmp_path / "ws", poll_interval=0.05, console=QUIET).run()
    assert summary.stale_failed == [0] and summary.orphans == {0: "its job was stopped"}
    assert process_start_ticks(pid) is None
    assert int((trial_dir / "exit_code").read_text()) == -signal.SIGTERM  # stopped, not finished
    study, _ = load_distributed_study(url, "s")
    assert [t.state for t in study.get_trials()] == [TrialState.FAIL, TrialState.COMPLETE]
    assert summary.completed == [1]


def test_an_orphan_that_ended_or_runs_elsewhere_is_reported_not_signalled(tmp_path):
    trial_dir = tmp_path / "trial_0000"
    trial_dir.mkdir()
    attrs = {"job_id": "trial_0000", "results_dir": str(trial_dir), "host": socket.gethostname()}
    assert stop_orphaned_job({}) == "no job had been started for it"
    assert stop_orphaned_job(attrs) == "its job had already ended"  # no job.pid: the job never started
    # A job.pid whose pid now belongs to another process (this one, with other start ticks) is left alone.
    (trial_dir / "job.pid").write_text(f"{os.getpid()} 1\n")
    assert stop_orphaned_job(attrs) == "its job had already ended"
    elsewhere = stop_orphaned_job({**attrs, "host": "gpu-node-7"})
    assert elsewhere.startswith("its job may still run on gpu-node-7") and str(trial_dir / "job.pid") in elsewhere


def test_a_slurm_orphan_without_slurm_tools_here_is_reported_with_the_command_to_cancel_it(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no squeue or scancel on this machine, and no slurm_job_id file
    attrs = {"job_id": "trial_0003", "results_dir": str(tmp_path), "host": "login-1", "platform_job_id": "4242"}
    outcome = stop_orphaned_job(attrs)
    assert outcome.startswith("its Slurm job 4242 could not be stopped from here (FileNotFoundError")
    assert outcome.endswith("stop it with `scancel 4242`")


def test_enqueued_values_run_first_and_the_cli_reads_the_store(tmp_path):
    good = {"train.lr": 3e-6, "train.wd": 1e-3}
    _create(tmp_path, settings={"automl_max_recommendations": 2}, enqueue=[good])
    url = str(tmp_path / "study.journal")
    worker = subprocess.run(
        _worker_command(url, tmp_path / "ws"), capture_output=True, text=True, timeout=120, check=False
    )
    assert worker.returncode == 0, worker.stderr[-2000:]
    status = subprocess.run(
        [sys.executable, "-m", "mal", "automl", "status", "--storage", url, "--study", "s", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr[-2000:]
    result = json.loads(status.stdout)
    assert result["progress"]["completed"] == result["progress"]["total"] == 2
    assert result["history"][0]["params"] == good
    assert result["best"]["rec_id"] == 0  # lr = 3e-6 is the dummy job's optimum
    assert result["best"]["checkpoint"].endswith("mal_model_best.pth")
    report = subprocess.run(
        [sys.executable, "-m", "mal", "automl", "report", "--storage", url, "--study", "s",
         "--out", str(tmp_path / "report")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert report.returncode == 0, report.stderr[-2000:]
    text = (tmp_path / "report" / "report.md").read_text()
    # The same report a local study gets: summary, a row per trial with its worker, the plots, best_spec.yaml.
    assert "2/2 trials finished" in text and "by 1 worker(s)" in text
    assert re.search(r"\| trial_0000 \(best\) \| - \| 2 \| [0-9.]+ \| done \|", text)
    assert (tmp_path / "report" / "optimisation_history.png").stat().st_size > 0
    assert "train:" in (tmp_path / "report" / "best_spec.yaml").read_text()


def test_refusals_name_the_problem(tmp_path):
    with pytest.raises(UserError, match="database is locked"):
        open_storage(f"sqlite:///{tmp_path}/x.db")
    with pytest.raises(SpecError, match="through one scheduler, which asks the algorithm for every configuration"):
        _create(tmp_path, name="p", settings={"algorithm": "pbt"}, enqueue=[{"train.lr": 2e-6}])
    # Without values to queue, pbt gets a scheduled study: nothing queued, the runner submits every job.
    scheduled = _create(tmp_path, name="p", settings={"algorithm": "pbt"})
    assert scheduled.user_attrs["mal:config"]["scheduler"] is True and scheduled.get_trials() == []
    with pytest.raises(SpecError, match="grace_period"):
        create_distributed_study(
            str(tmp_path / "g.journal"), "g", make_skill_dir(tmp_path), heartbeat_interval=10, grace_period=15
        )
    _create(tmp_path)
    with pytest.raises(UserError, match="other settings"):
        _create(tmp_path, settings={"automl_max_recommendations": 5})
    with pytest.raises(UserError, match="has no study 'nope'"):
        load_distributed_study(str(tmp_path / "study.journal"), "nope")
    assert optuna.load_study(storage=open_storage(tmp_path / "study.journal"), study_name="s")


def test_mal_automl_run_with_storage_creates_the_study_and_works_on_it(tmp_path):
    """`mal automl run --storage`: the study file becomes a shared study and this process works on it to the end;
    with --create-only it only creates it."""
    url = str(tmp_path / "cli.journal")
    study_file = write_dummy_study(tmp_path, tmp_path / "ws", automl_max_recommendations=2, automl_max_epochs=2,
                                   run_final_evaluation=True)  # fmt: skip
    done = subprocess.run(
        [*automl_run_command(study_file), "--storage", url, "--study", "cli"],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert "study 'cli' is ready" in done.stdout
    study, config = load_distributed_study(url, "cli")
    assert config["settings"]["algorithm"] == "random"
    assert [t.state for t in study.get_trials()] == [TrialState.COMPLETE] * 2
    # Its final evaluation ran here once the worker found the study done, and the store keeps it for status.
    final = distributed_result(url, "cli")["final_evaluation"]
    best = max(study.get_trials(), key=lambda t: t.value)
    assert (final["status"], final["job_id"], final["metric_value"]) == ("measured", best.user_attrs["job_id"],
                                                                          pytest.approx(best.value))  # fmt: skip
    assert "final evaluation: mal evaluate on the best checkpoint" in done.stdout

    bayesian = yaml.safe_load(study_file.read_text()) | {"algorithm": "bayesian"}
    study_file.write_text(yaml.safe_dump(bayesian))
    created = subprocess.run(
        [*automl_run_command(study_file), "--storage", url, "--study", "gp", "--create-only"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr[-2000:]
    study, config = load_distributed_study(url, "gp")
    assert config["settings"]["algorithm"] == "bayesian"
    assert [t.state for t in study.get_trials()] == [TrialState.WAITING] * 2  # --create-only: nothing ran here
    assert distributed_result(url, "gp")["final_evaluation"]["status"] == "not_run"



def test_a_worker_waits_for_its_study_and_keeps_to_its_own_concurrency(tmp_path):
    """Workers may start before the coordinator has created the study (--wait), and a small machine can take
    fewer trials at once than the study allows (--max-concurrent)."""
    url = str(tmp_path / "study.journal")
    missing = subprocess.run(
        _worker_command(url, tmp_path / "ws", "--wait", "0.5"), capture_output=True, text=True, timeout=60, check=False
    )
    assert missing.returncode != 0 and "has no study 's'" in missing.stderr
    worker = subprocess.Popen(
        _worker_command(url, tmp_path / "ws", "--wait", "60", "--max-concurrent", "1"),
        env={**os.environ, "MAL_DUMMY_SLEEP": "0.2"}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    time.sleep(1.5)  # the worker is up and waiting before the study exists
    assert worker.poll() is None
    _create(tmp_path, settings={"automl_max_recommendations": 3, "automl_max_concurrent": 3})
    _, err = worker.communicate(timeout=180)
    assert worker.returncode == 0, err[-2000:]
    study, _ = load_distributed_study(url, "s")
    trials = sorted(study.get_trials(), key=lambda t: t.datetime_start)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    for earlier, later in itertools.pairwise(trials):
        assert earlier.datetime_complete <= later.datetime_start  # one at a time, though the study allows 3


def test_mal_version_names_the_package_version():
    from mal import __version__

    done = subprocess.run([sys.executable, "-m", "mal", "--version"], capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == f"mal {__version__}"


def test_bayesian_on_the_store_fits_the_gp_after_its_initial_design(tmp_path):
    """The default algorithm runs the same GP search on a shared store as in one process (tests/scale/
    test_shared_gp.py pins the proposals): a Latin hypercube of max(5, d + 1) = 5 trainings, then EI."""
    _create(tmp_path, settings={"algorithm": "bayesian", "automl_max_recommendations": 7, "automl_max_concurrent": 1})
    worker = StudyWorker(str(tmp_path / "study.journal"), "s", workspace_dir=tmp_path / "ws", poll_interval=0.05,
                         console=QUIET)  # fmt: skip
    assert sorted(worker.run().completed) == list(range(7))
    study, _ = load_distributed_study(str(tmp_path / "study.journal"), "s")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    assert [t.user_attrs["proposal"]["source"] for t in trials] == ["initial_design"] * 5 + ["gp_ei"] * 2
    assert all(t.user_attrs["proposal"]["expected_improvement"] >= 0.0 for t in trials[5:])


def test_a_store_that_cannot_be_opened_is_one_line_without_the_password(tmp_path):
    with pytest.raises(UserError, match=r"folder .*nope does not exist; create it or pick another path"):
        open_storage(tmp_path / "nope" / "study.journal")
    with pytest.raises(UserError) as refused:  # nothing listens on port 1
        open_storage("postgresql://mal:s3cret@127.0.0.1:1/studies")
    message = str(refused.value)
    assert "s3cret" not in message and "postgresql://mal:***@127.0.0.1:1/studies" in message
    assert len(message.splitlines()) == 1
    assert message.startswith("Could not open storage") or "needs a PostgreSQL driver" in message
    with pytest.raises(UserError, match=r"Could not open storage nosuchdb://mal:\*\*\*@host/x"):
        open_storage("nosuchdb://mal:s3cret@host/x")


@pytest.mark.parametrize(
    ("mode", "category", "reason"),
    [("crash", "model_code", "RuntimeError"), ("nometric", "metric_missing", "reported no 'val/mIoU'")],
)
def test_a_failing_training_fails_its_trial_with_the_cause(tmp_path, monkeypatch, mode, category, reason):
    monkeypatch.setenv("MAL_DUMMY_MODE", mode)
    _create(tmp_path, settings={"automl_max_recommendations": 2})
    summary = StudyWorker(str(tmp_path / "study.journal"), "s", workspace_dir=tmp_path / "ws", poll_interval=0.05,
                          console=QUIET).run()  # fmt: skip
    assert sorted(summary.failed) == [0, 1] and summary.completed == []
    study, _ = load_distributed_study(str(tmp_path / "study.journal"), "s")
    for trial in study.get_trials():
        assert trial.state == TrialState.FAIL and "retry_of" not in trial.user_attrs  # a real failure: no retry
        assert trial.user_attrs["failure"]["category"] == category and reason in trial.user_attrs["failure"]["reason"]


def test_sigterm_hands_the_workers_trials_back_and_another_worker_finishes_them(tmp_path):
    _create(tmp_path, settings={"automl_max_recommendations": 2, "automl_max_concurrent": 2})
    url = str(tmp_path / "study.journal")
    leaving = subprocess.Popen(
        _worker_command(url, tmp_path / "ws"), env={**os.environ, "MAL_DUMMY_SLEEP": "30"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    trial_dirs = [tmp_path / "ws" / "s" / "trials" / f"trial_{n:04d}" for n in range(2)]
    jobs = [_job_pid(d / "job.pid") for d in trial_dirs]
    leaving.send_signal(signal.SIGTERM)
    _, err = leaving.communicate(timeout=60)
    assert leaving.returncode == 143, err[-2000:]  # 128 + SIGTERM
    assert "stopped; its running trials went back to the study" in err
    assert all(process_start_ticks(pid) != ticks for pid, ticks in jobs)  # its trainings stopped with it
    study, _ = load_distributed_study(url, "s")
    handed_back = study.get_trials()
    assert [t.state for t in handed_back] == [TrialState.FAIL] * 2 + [TrialState.WAITING] * 2
    assert "the worker was stopped" in handed_back[0].user_attrs["failure"]["reason"]

    summary = StudyWorker(url, "s", workspace_dir=tmp_path / "ws", poll_interval=0.05, console=QUIET).run()
    assert sorted(summary.completed) == [2, 3]
    retries = study.get_trials()[2:]
    assert sorted(t.user_attrs["retry_of"] for t in retries) == [0, 1]
    assert all(t.user_attrs["params"] == study.get_trials()[t.user_attrs["retry_of"]].user_attrs["params"]
               for t in retries)  # fmt: skip
