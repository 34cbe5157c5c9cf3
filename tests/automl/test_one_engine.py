"""Local and shared studies are one engine: a local study is an Optuna study (its journal opens in a real
optuna-dashboard), and one worker on a shared store runs the trials a local study of the same seed runs."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml
from rich.console import Console

from mal.automl import AutoMLRunner
from mal.automl.cli import main as automl_main
from mal.automl.platforms.store import StorePlatform
from mal.automl.scheduled import run_scheduled_study
from mal.automl.storage import create_distributed_study, open_storage
from mal.automl.study_journal import JOURNAL_FILE, record_from_frozen
from mal.automl.worker import StudyWorker
from support.services import free_port
from support.study import dummy_command, make_skill_dir, quiet_runner, spec_overrides

SETTINGS = {
    "algorithm": "random",
    "automl_max_recommendations": 4,
    "automl_max_epochs": 2,
    "automl_max_concurrent": 1,
    "run_baseline": False,
    "run_final_evaluation": False,
    "seed": 11,
}


@pytest.fixture(scope="module")
def local_study(tmp_path_factory):
    root = tmp_path_factory.mktemp("local")
    result = quiet_runner(root, max_concurrent=1).run(automl_settings=SETTINGS, spec_overrides=spec_overrides(root))
    return result, Path(result["workspace"])


def test_a_local_study_keeps_every_trial_in_an_optuna_journal(local_study):
    result, run_dir = local_study
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(run_dir / JOURNAL_FILE)))
    study = optuna.load_study(storage=storage, study_name=run_dir.name)
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert [t.value for t in trials] == [h["metric"] for h in result["history"]]
    assert [t.params for t in trials] == [h["params"] for h in result["history"]]
    assert all(sorted(t.intermediate_values) == [1, 2] for t in trials)
    # The same record, read back from the journal, is what the report shows.
    assert [record_from_frozen(t).entry() for t in trials] == result["history"]


def test_optuna_dashboard_serves_a_finished_local_study(local_study):
    result, run_dir = local_study
    dashboard = shutil.which("optuna-dashboard", path=str(Path(optuna.__file__).parents[4] / "bin"))
    assert dashboard, "optuna-dashboard is a dev dependency: pip install -e '.[dev]'"
    port = free_port()
    server = subprocess.Popen(
        [dashboard, str(run_dir / JOURNAL_FILE), "--host", "127.0.0.1", "--port", str(port), "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", server)["study_summaries"]
        assert [s["study_name"] for s in studies] == [run_dir.name]
        detail = _get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}?after=0", server)
        trials = sorted(detail["trials"], key=lambda t: t["number"])
        assert [t["state"] for t in trials] == ["Complete"] * 4
        assert [t["values"] for t in trials] == [[h["metric"]] for h in result["history"]]
        for trial, entry in zip(trials, result["history"]):
            shown = {p["name"]: float(p["param_external_value"]) for p in trial["params"]}
            assert shown == pytest.approx(entry["params"])
    finally:
        server.terminate()
        server.wait(timeout=10)


def _get_json(url: str, server: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if server.poll() is not None:
                raise AssertionError(f"optuna-dashboard exited: {server.stderr.read().decode()[-2000:]}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_one_worker_on_a_shared_store_runs_the_trials_a_local_study_runs(local_study, tmp_path):
    result, _ = local_study
    create_distributed_study(
        str(tmp_path / "study.journal"), "same", make_skill_dir(tmp_path), SETTINGS, spec_overrides(tmp_path),
        command=dummy_command(),
    )  # fmt: skip
    worker = StudyWorker(
        str(tmp_path / "study.journal"), "same", workspace_dir=tmp_path / "ws", poll_interval=0.05,
        console=Console(file=io.StringIO()),
    )  # fmt: skip
    worker.run()
    shared = [record_from_frozen(t) for t in optuna.load_study(
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
            str(tmp_path / "study.journal"))), study_name="same").get_trials()]  # fmt: skip
    local = result["history"]
    assert [r.params for r in shared] == [h["params"] for h in local]
    assert [r.budget for r in shared] == [h["budget"] for h in local]
    assert [r.metric for r in shared] == pytest.approx([h["metric"] for h in local])
    assert [r.epochs for r in shared] == [dict(h["epochs"]) for h in local]


HYPERBAND = {**SETTINGS, "algorithm": "hyperband", "automl_max_epochs": 4, "automl_reduction_factor": 2}


def _run_scheduled(root: Path, settings: dict, max_concurrent: int) -> tuple[dict, StudyWorker]:
    """A scheduled study in root/study.journal: its runner here, one worker beside it; (result, worker)."""
    url = str(root / "study.journal")
    study = create_distributed_study(url, "hb", make_skill_dir(root), settings, spec_overrides(root),
                                     command=dummy_command())  # fmt: skip
    assert study.user_attrs["mal:config"]["scheduler"] is True and not study.get_trials()
    quiet = Console(file=io.StringIO())
    runner = AutoMLRunner(skill_dir=make_skill_dir(root), platform=StorePlatform(url, "hb", max_concurrent),
                          workspace_dir=root / "ws", poll_interval=0.05, console=quiet)  # fmt: skip
    worker = StudyWorker(url, "hb", workspace_dir=root / "workers", poll_interval=0.05, console=quiet)
    result = run_scheduled_study(runner, {"automl_settings": settings, "spec_overrides": spec_overrides(root)}, worker)
    return result, worker


def _trials(result: dict) -> list[tuple]:
    return [(h["params"], h["budget"], h["resume_from"], h["status"], h["metric"]) for h in result["history"]]


def test_one_worker_on_a_shared_store_runs_the_hyperband_trials_a_local_study_runs(tmp_path):
    """Hyperband on a store is the local study itself, its jobs handed to the workers: same brackets, same
    promotions from the same checkpoints, same metrics."""
    local_root, shared_root = tmp_path / "local", tmp_path / "shared"
    local_root.mkdir()
    shared_root.mkdir()
    local = quiet_runner(local_root, max_concurrent=1).run(
        automl_settings=HYPERBAND, spec_overrides=spec_overrides(local_root)
    )
    url = str(shared_root / "study.journal")
    shared, worker = _run_scheduled(shared_root, HYPERBAND, max_concurrent=1)
    assert len(local["history"]) == 14 and any(h["resume_from"] is not None for h in local["history"])
    assert _trials(shared) == _trials(local)
    # Every job ran on the worker, as a trial of the shared study, and the worker left when the scheduler was done.
    jobs = optuna.load_study(storage=open_storage(url), study_name="hb").get_trials()
    assert sorted(t.user_attrs["job_id"] for t in jobs) == sorted(h["job_id"] for h in shared["history"])
    assert all(t.user_attrs["exit_code"] == 0 and t.user_attrs["worker"] == worker.worker_id for t in jobs)
    assert sorted(worker.summary.completed) == [t.number for t in jobs]


def test_the_cli_runs_a_scheduled_study_and_resumes_its_scheduler(tmp_path, capsys):
    """`mal automl run --storage` with hyperband: the scheduler and a worker in one process; the run folder keeps
    where its jobs go (owner-only), and `mal automl resume` of that folder goes back to the same store."""
    study = tmp_path / "automl.yaml"
    study.write_text(yaml.safe_dump({
        "workspace_dir": str(tmp_path / "ws"), "skill_dir": str(make_skill_dir(tmp_path)), "algorithm": "hyperband",
        "automl_settings": {**HYPERBAND, "automl_max_epochs": 2}, "spec_overrides": spec_overrides(tmp_path),
        "command": dummy_command(), "poll_interval": 0.05,
    }))  # fmt: skip
    url = str(tmp_path / "store.journal")
    assert automl_main(["run", "-e", str(study), "--storage", url, "--study", "hb", "--yes"]) == 0
    out = capsys.readouterr().out
    assert "runs one scheduler (its hyperband search) in this process" in out
    run_dir = next((tmp_path / "ws").glob("run_*"))
    result = json.loads((run_dir / "result.json").read_text())
    assert result["phase"] == "done" and result["best"]["metric_value"] is not None
    store_file = run_dir / "store.json"
    assert json.loads(store_file.read_text()) == {"storage": url, "study": "hb"}
    assert store_file.stat().st_mode & 0o077 == 0
    jobs = optuna.load_study(storage=open_storage(url), study_name="hb").get_trials()
    assert {t.user_attrs["job_id"] for t in jobs} == {h["job_id"] for h in result["history"]}
    # Resuming the finished scheduler changes nothing and ends at once, worker included.
    assert automl_main(["resume", str(run_dir), "--yes"]) == 0
    assert len(optuna.load_study(storage=open_storage(url), study_name="hb").get_trials()) == len(jobs)


def test_a_scheduled_study_runs_its_baseline_and_final_evaluation_on_the_workers(tmp_path):
    settings = {**HYPERBAND, "automl_max_epochs": 2, "run_baseline": True, "run_final_evaluation": True}
    url = str(tmp_path / "study.journal")
    result, worker = _run_scheduled(tmp_path, settings, max_concurrent=2)
    assert result["baseline"]["status"] == "measured" and result["final_evaluation"]["status"] == "measured"
    jobs = {
        t.user_attrs["job_id"]: t for t in optuna.load_study(storage=open_storage(url), study_name="hb").get_trials()
    }
    assert (
        jobs["baseline"].user_attrs["action"] == "train" and jobs["final_evaluation"].user_attrs["action"] == "evaluate"
    )
    # The evaluation job's metric is its final KPI; every job, evaluation included, ended complete on the worker.
    assert jobs["final_evaluation"].value == pytest.approx(result["final_evaluation"]["metric_value"])
    assert {t.state for t in jobs.values()} == {optuna.trial.TrialState.COMPLETE}
    assert worker.summary.failed == [] and len(worker.summary.completed) == len(jobs)
