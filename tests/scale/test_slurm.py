"""The Slurm platform: sbatch options from the spec, and a study whose trials run as jobs of a real local Slurm."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState
from rich.console import Console

from mal.automl.dead_workers import fail_stale_trials
from mal.automl.failures import StudyStoppedError
from mal.automl.orphans import stop_orphaned_job
from mal.automl.platforms.slurm import SlurmPlatform, parse_exit_code
from mal.automl.report import study_result
from mal.automl.storage import create_distributed_study, load_distributed_study
from mal.automl.worker import StudyWorker
from mal.errors import UserError
from support.study import dummy_command, make_skill_dir, quiet_runner, spec_overrides

GOOD = {"train.lr": 3e-6, "train.wd": 1e-3}  # the dummy job's optimum
BAD = {"train.lr": 1e-7, "train.wd": 1e-3}


def test_resources_come_from_the_spec_and_the_settings(tmp_path):
    platform = SlurmPlatform.from_settings(
        {"partition": "gpu", "account": "vision", "time_limit": "04:00:00", "extra_sbatch_args": ["--qos=high"]},
        max_concurrent=8,
    )
    spec = {"train": {"num_gpus": 8, "num_nodes": 2}}
    args = platform.sbatch_args(spec, "rec_003", tmp_path)
    assert args[:2] == ["sbatch", "--parsable"]
    for option in (
        "--nodes=2",
        "--ntasks-per-node=8",
        "--gres=gpu:8",
        "--partition=gpu",
        "--account=vision",
        "--time=04:00:00",
        "--qos=high",
        "--job-name=mal-rec_003",
    ):
        assert option in args
    cpu = SlurmPlatform(use_gpus=False).sbatch_args({"train": {"num_gpus": 1}}, "x", tmp_path)
    assert "--ntasks-per-node=1" in cpu and not any(a.startswith("--gres") for a in cpu)
    # The job runs under srun (Lightning then reads the Slurm environment), every argument quoted.
    script = platform.batch_script(["python", "-m", "mal", "train", "-e", "/a b/spec.yaml", "x=$(rm -rf /)"], tmp_path)
    srun_line = next(line for line in script.splitlines() if line.startswith("srun "))
    assert shlex.split(srun_line)[-2:] == ["/a b/spec.yaml", "x=$(rm -rf /)"]
    assert parse_exit_code("0:0") == 0 and parse_exit_code("2:0") == 2 and parse_exit_code("0:9") == -9
    with pytest.raises(UserError, match="unknown"):
        SlurmPlatform.from_settings({"partitoin": "gpu"})


def _scontrol(field: str, slurm_id: str, env) -> str:
    out = subprocess.run(
        ["scontrol", "--oneliner", "show", "job", slurm_id], capture_output=True, text=True, env=env, check=False
    ).stdout
    return dict(part.split("=", 1) for part in out.split() if "=" in part).get(field, "")


def test_a_study_runs_its_trials_as_slurm_jobs_and_the_pruner_cancels_one(slurm, tmp_path):
    url = str(tmp_path / "study.journal")
    create_distributed_study(
        url, "slurm-asha", make_skill_dir(tmp_path),
        {"algorithm": "asha", "automl_max_trials": 2, "automl_max_epochs": 4, "automl_reduction_factor": 2,
         "automl_max_concurrent": 1},
        spec_overrides(tmp_path), command=dummy_command(), enqueue=[GOOD, BAD],
    )  # fmt: skip
    platform = SlurmPlatform(
        max_concurrent=1, command=dummy_command(), use_gpus=False, time_limit="10", env={"MAL_DUMMY_SLEEP": "0.6"}
    )
    worker = StudyWorker(
        url,
        "slurm-asha",
        platform=platform,
        workspace_dir=tmp_path / "ws",
        poll_interval=0.1,
        console=Console(file=io.StringIO()),
    )
    summary = worker.run()
    assert summary.completed == [0] and summary.pruned == [1]

    study, _ = load_distributed_study(url, "slurm-asha")
    good, bad = study.get_trials()
    assert good.state == TrialState.COMPLETE and bad.state == TrialState.PRUNED
    assert sorted(good.intermediate_values) == [1, 2, 3, 4]
    assert list(bad.intermediate_values) == [1]  # stopped at the first rung: worse than trial 0 there
    env = slurm.env()
    assert _scontrol("JobState", good.user_attrs["platform_job_id"], env) == "COMPLETED"
    deadline = time.monotonic() + 30
    while (state := _scontrol("JobState", bad.user_attrs["platform_job_id"], env)) == "COMPLETING":
        assert time.monotonic() < deadline, "the cancelled job never left COMPLETING"
        time.sleep(0.2)
    assert state == "CANCELLED"
    good_dir, bad_dir = Path(good.user_attrs["results_dir"]), Path(bad.user_attrs["results_dir"])
    assert (good_dir / "exit_code").read_text().strip() == "0"
    assert (good_dir / "train" / "mal_model_best.pth").exists()
    assert not (bad_dir / "train" / "mal_model_epoch_004.pth").exists()  # it never trained to the end


def test_the_local_runner_submits_its_trials_to_slurm(slurm, tmp_path):
    platform = SlurmPlatform(max_concurrent=2, command=dummy_command(), use_gpus=False)
    runner = quiet_runner(tmp_path, platform=platform, poll_interval=0.2)
    result = runner.run(
        automl_algorithm="random",
        spec_overrides=spec_overrides(tmp_path),
        automl_settings={"automl_max_recommendations": 2, "automl_max_epochs": 2},
    )
    assert [h["status"] for h in result["history"]] == ["done", "done"]
    ids = [(Path(h["checkpoint"]).parents[1] / "slurm_job_id").read_text().strip() for h in result["history"]]
    assert len(set(ids)) == 2 and all(_scontrol("JobState", i, slurm.env()) == "COMPLETED" for i in ids)


def _final_state(slurm_id: str, env, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while (state := _scontrol("JobState", slurm_id, env)) in ("COMPLETING", "PENDING", "RUNNING"):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return state


def test_a_dead_workers_slurm_job_is_cancelled_when_its_trial_is_failed(slurm, tmp_path):
    url = str(tmp_path / "study.journal")
    create_distributed_study(
        url, "slurm-orphan", make_skill_dir(tmp_path), {"algorithm": "random", "automl_max_recommendations": 1},
        spec_overrides(tmp_path), command=dummy_command(), slurm={"use_gpus": False, "time_limit": "10"},
        heartbeat_interval=0.2, grace_period=1.0,
    )  # fmt: skip
    victim = subprocess.Popen(
        [sys.executable, "-m", "mal", "automl", "worker", "--storage", url, "--study", "slurm-orphan",
         "--platform", "slurm", "--workspace", str(tmp_path / "ws"), "--poll-interval", "0.1"],
        env={**os.environ, "MAL_DUMMY_SLEEP": "60"}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    study, _ = load_distributed_study(url, "slurm-orphan")
    env = slurm.env()
    slurm_id, deadline = None, time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            slurm_id = study.get_trials()[0].user_attrs.get("platform_job_id")
            if slurm_id and _scontrol("JobState", slurm_id, env) == "RUNNING":
                break
            time.sleep(0.1)
    finally:
        victim.kill()
        victim.wait(timeout=10)
    assert slurm_id and _scontrol("JobState", slurm_id, env) == "RUNNING"  # the job outlives its worker

    time.sleep(1.5)  # past the grace period: the worker is dead
    # The checker may run where the trial's folder is not visible: the id comes from the store, not the folder.
    (Path(study.get_trials()[0].user_attrs["results_dir"]) / "slurm_job_id").unlink()
    outcomes: list[str] = []
    stop = lambda dead: outcomes.append(stop_orphaned_job(dead.user_attrs))  # noqa: E731 - what a worker does
    assert fail_stale_trials(study, 1.0, on_failed=stop) == [0]
    assert outcomes == [f"its Slurm job {slurm_id} was stopped"]
    assert _final_state(slurm_id, env) == "CANCELLED"
    assert fail_stale_trials(study, 1.0, on_failed=lambda dead: outcomes.append("again")) == []  # once only


def _kill_batch_script(slurm_id: str, env) -> None:
    """SIGKILL every process of the job on its node, as the kernel's OOM killer or an operator would."""
    listed = subprocess.run(["scontrol", "listpids", slurm_id], capture_output=True, text=True, env=env, check=True)
    pids = [int(line.split()[0]) for line in listed.stdout.splitlines()[1:] if line.split()[0].isdigit()]
    assert pids, listed.stdout
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", ["killed on the node", "cancelled by someone else"])
def test_a_job_slurm_ended_before_it_recorded_an_exit_code_fails_its_trial_with_slurms_reason(slurm, tmp_path, how):
    """The batch script ends before it writes exit_code: the trial fails as infrastructure, not as lost, and its
    reason says what Slurm saw."""
    import threading

    platform = SlurmPlatform(max_concurrent=1, command=dummy_command(), use_gpus=False, time_limit="10",
                             env={"MAL_DUMMY_SLEEP": "60"})  # fmt: skip
    runner = quiet_runner(tmp_path, platform=platform, poll_interval=0.2)
    results: list[dict] = []
    stops: list[StudyStoppedError] = []

    def run_study() -> None:
        # Its only trial fails, so the study stops saying it found nothing; the trial's record is in the folder.
        try:
            runner.run(automl_algorithm="random", spec_overrides=spec_overrides(tmp_path),
                       automl_settings={"automl_max_recommendations": 1, "automl_max_epochs": 2,
                                        "automl_max_concurrent": 1, "run_baseline": False})  # fmt: skip
        except StudyStoppedError as exc:
            stops.append(exc)
            results.append(study_result(next((tmp_path / "ws").glob("run_*"))))

    study = threading.Thread(target=run_study)
    study.start()
    env, deadline = slurm.env(), time.monotonic() + 60
    while (
        not (ids := list((tmp_path / "ws").rglob("slurm_job_id")))
        or _scontrol("JobState", ids[0].read_text().strip(), env) != "RUNNING"
    ):
        assert time.monotonic() < deadline and study.is_alive(), "the trial's job never ran"
        time.sleep(0.1)
    slurm_id = ids[0].read_text().strip()
    time.sleep(1.0)  # the dummy job is inside its first epoch
    if how == "killed on the node":
        _kill_batch_script(slurm_id, env)
    else:
        subprocess.run(["scancel", slurm_id], env=env, check=True, timeout=30)
    study.join(timeout=120)
    assert not study.is_alive()
    assert "No trial of the study finished with a metric" in str(stops[0]) and stops[0].exit_code == 1
    (trial,) = results[0]["history"]
    assert trial["status"] == "failed" and trial["failure_class"] == "infrastructure"
    if how == "killed on the node":
        assert _final_state(slurm_id, env) == "FAILED"
        assert trial["failure_reason"] == (
            "killed by SIGKILL (possibly the kernel's out-of-memory killer); last output: "
            f"slurm: job {slurm_id} ended FAILED before it finished (see `sacct -j {slurm_id}`)"
        )
    else:
        assert _final_state(slurm_id, env) == "CANCELLED"
        assert trial["failure_reason"].startswith("killed by SIGTERM; last output: ")


def test_mal_automl_run_with_platform_slurm_runs_every_trial_as_a_slurm_job(slurm, tmp_path):
    """The study file alone (platform: slurm, slurm: {...}) sends the local runner's trials to Slurm."""
    from support.study import automl_run_command, write_dummy_study

    study_file = write_dummy_study(tmp_path, tmp_path / "ws", automl_max_recommendations=2, automl_max_epochs=2)
    study = yaml.safe_load(study_file.read_text())
    study |= {"platform": "slurm", "slurm": {"use_gpus": False, "time_limit": "10"}}
    study_file.write_text(yaml.safe_dump(study))
    done = subprocess.run(automl_run_command(study_file), env=slurm.env(), capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = (tmp_path / "ws").glob("run_*")
    history = json.loads((run_dir / "result.json").read_text())["history"]
    assert [h["status"] for h in history] == ["done", "done"]
    ids = [(Path(h["checkpoint"]).parents[1] / "slurm_job_id").read_text().strip() for h in history]
    assert len(set(ids)) == 2 and all(_final_state(i, slurm.env()) == "COMPLETED" for i in ids)

    study["slurm"]["gpus_per_job"] = 1  # not a Slurm setting
    study_file.write_text(yaml.safe_dump(study))
    refused = subprocess.run(automl_run_command(study_file), env=slurm.env(), capture_output=True, text=True,
                             timeout=120)  # fmt: skip
    assert refused.returncode == 2 and "has unknown key(s) ['gpus_per_job']" in refused.stderr


def test_an_unknown_platform_is_refused_before_anything_runs(tmp_path):
    from support.study import automl_run_command, write_dummy_study

    study_file = write_dummy_study(tmp_path, tmp_path / "ws")
    study_file.write_text(yaml.safe_dump(yaml.safe_load(study_file.read_text()) | {"platform": "kubernetes"}))
    refused = subprocess.run(automl_run_command(study_file), capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines()[-1].endswith("platform = 'kubernetes' must be local or slurm.")
    assert not (tmp_path / "ws").exists() or not list((tmp_path / "ws").glob("run_*"))


def test_a_slurm_study_resumed_from_the_cli_stays_on_slurm(slurm, tmp_path):
    from support.study import automl_run_command, write_dummy_study

    study_file = write_dummy_study(tmp_path, tmp_path / "ws", automl_max_recommendations=1, automl_max_epochs=2,
                                   run_baseline=True, run_final_evaluation=True)  # fmt: skip
    study = yaml.safe_load(study_file.read_text())
    study_file.write_text(yaml.safe_dump({**study, "platform": "slurm", "slurm": {"use_gpus": False}}))
    # The calibration training fails (a data error): the launch is blocked, the folder stays for a resume.
    first = subprocess.run(automl_run_command(study_file), capture_output=True, text=True, timeout=180,
                           env={**slurm.env(), "MAL_DUMMY_MODE": "exit2"})  # fmt: skip
    assert first.returncode == 2, first.stderr[-2000:]
    assert "The baseline (calibration) did not give val/mIoU" in first.stderr
    run_dir = next((tmp_path / "ws").glob("run_*"))
    resumed = subprocess.run(
        [sys.executable, "-m", "mal", "automl", "resume", str(run_dir), "--yes", "--no-live", "--poll-interval", "0.2"],
        capture_output=True, text=True, timeout=300, env=slurm.env(),
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # Every job of the resumed study went to Slurm again: baseline, the trial and the final evaluation.
    for folder in ("baseline", "trials/rec_000", "final_evaluation"):
        slurm_id = (run_dir / folder / "slurm_job_id").read_text().strip()
        assert _final_state(slurm_id, slurm.env()) == "COMPLETED"
    assert json.loads((run_dir / "result.json").read_text())["final_evaluation"]["status"] == "measured"
