"""`mal train` end to end on synthetic data: a real learning signal, the job contract's files, resume, DDP."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from mal import jobfiles
from mal.engine.checkpoint_io import load_trained_model
from support.engine import run_mal, status_events

pytestmark = pytest.mark.slow


def test_training_beats_box_fill_and_writes_the_job_contract(trained, tiny_spec):
    events = status_events(trained)
    assert events[0]["status"] == "STARTED"
    assert events[-1]["status"] == "SUCCESS"
    running = [e for e in events if e["status"] == "RUNNING"]
    assert [e["epoch"] for e in running] == list(range(1, 16))
    assert all(e["max_epoch"] == 15 for e in events)
    validated = [e for e in running if "val/mIoU" in e["kpi"]]
    assert [e["epoch"] for e in validated] == [5, 10, 15]  # no stale validation values in between
    final_miou = validated[-1]["kpi"]["val/mIoU"]

    train_dir = trained / "train"
    # Epoch files count from 1, like the events; train.keep_last_checkpoints=1 keeps the newest and the best.
    scores = [e["kpi"]["val/mIoU"] for e in validated]
    best_epoch = validated[scores.index(max(scores))]["epoch"]
    assert sorted(jobfiles.epoch_checkpoints(train_dir)) == sorted({15, best_epoch})
    assert (train_dir / "mal_model_latest.pth").resolve() == (train_dir / "mal_model_epoch_015.pth").resolve()
    assert (train_dir / "mal_model_best.pth").samefile(train_dir / f"mal_model_epoch_{best_epoch:03d}.pth")
    checkpoint = torch.load(train_dir / "mal_model_best.pth", weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["config"]["model"]["arch"] == "vit-tiny/16"
    _model, config = load_trained_model(train_dir / "mal_model_latest.pth")
    assert config["dataset"]["crop_size"] == 64

    result = run_mal("evaluate", "-e", str(tiny_spec), f"results_dir={trained}")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((trained / "evaluate" / "metrics.json").read_text())
    assert metrics["box_fill_mIoU"] == pytest.approx(0.63, abs=0.05)
    # A real learning signal: the masks beat the boxes they were learned from.
    assert metrics["mIoU"] > metrics["box_fill_mIoU"] + 0.03, metrics
    assert final_miou == pytest.approx(metrics["mIoU"], abs=0.02)
    eval_events = status_events(trained, "evaluate")
    assert eval_events[-1]["status"] == "SUCCESS" and eval_events[-1]["kpi"]["mIoU"] == pytest.approx(metrics["mIoU"])


def test_teacher_is_the_ema_of_the_student_in_the_checkpoint(trained):
    model, _ = load_trained_model(trained / "train" / "mal_model_latest.pth")
    student = dict(model.student.named_parameters())
    teacher = dict(model.teacher.named_parameters())
    differs = [name for name in student if not torch.equal(student[name], teacher[name])]
    assert differs, "the teacher never moved away from its initial copy"


def test_resume_after_sigkill_loses_and_repeats_no_epoch(tiny_spec, tmp_path):
    results = tmp_path / "killed"
    args = ["train", "-e", str(tiny_spec), f"results_dir={results}", "train.num_epochs=4",
            "train.checkpoint_interval=1", "train.validation_interval=4"]
    env = dict(os.environ, MAL_NO_PROGRESS="1")
    process = subprocess.Popen([sys.executable, "-m", "mal", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    checkpoint = results / "train" / "mal_model_epoch_002.pth"
    deadline = time.time() + 300
    while not checkpoint.exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    assert checkpoint.exists(), "training never reached its second checkpoint"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    before = [e for e in status_events(results) if e["status"] == "RUNNING"]
    assert before and before[-1]["epoch"] < 4
    steps_per_epoch = before[0]["global_step"]

    result = run_mal(*args, "train.resume_training_checkpoint_path=auto")
    assert result.returncode == 0, result.stderr[-3000:]
    events = status_events(results)
    restart = max(i for i, e in enumerate(events) if e["status"] == "STARTED")
    resumed_from = events[restart]["epoch"]
    after = [e["epoch"] for e in events[restart:] if e["status"] == "RUNNING"]
    assert after == list(range(resumed_from + 1, 5))  # continues where the last checkpoint left off, once each
    assert resumed_from >= 2 and events[-1]["status"] == "SUCCESS"
    assert events[-1]["kpi"]["train/loss"] == events[-1]["kpi"]["train/loss"]  # not NaN
    final = torch.load(results / "train" / "mal_model_latest.pth", weights_only=True, map_location="cpu")
    assert final["epoch"] == 3 and final["global_step"] == 4 * steps_per_epoch  # no step lost or repeated


def test_two_process_ddp_on_cpu(tiny_spec, tmp_path):
    results = tmp_path / "ddp"
    result = run_mal("train", "-e", str(tiny_spec), f"results_dir={results}", "train.num_epochs=1",
                     "train.num_gpus=2", "train.validation_interval=1", "train.num_threads=1")
    assert result.returncode == 0, result.stderr[-3000:]
    events = status_events(results)
    assert [e["status"] for e in events] == ["STARTED", "RUNNING", "SUCCESS"]  # rank 0 alone writes
    # Validation is sharded over both processes and reduced: every box counted once.
    assert events[1]["kpi"]["val/instances"] == 73
    checkpoint = torch.load(results / "train" / "mal_model_epoch_001.pth", weights_only=True, map_location="cpu")
    assert checkpoint["hyper_parameters"]["world_size"] == 2


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["dataset.train_ann_path=null"], "dataset.train_ann_path is required"),
        (["dataset.crop_size=72"], "not a multiple of 16"),
        (["dataset.min_obj_size=1e9", "dataset.max_obj_size=1e10"], "lower dataset.min_obj_size"),
        (["train.resume_training_checkpoint_path=/nonexistent.pth"], "does not exist"),
        (["dataset.train_img_dir=/nonexistent"], "/nonexistent"),
    ],
)
def test_user_errors_exit_2_and_write_nothing(tiny_spec, tmp_path, overrides, fragment):
    results = tmp_path / "bad"
    result = run_mal("train", "-e", str(tiny_spec), f"results_dir={results}", *overrides)
    assert result.returncode == 2, result.stderr[-2000:]
    assert fragment in result.stderr.strip().splitlines()[-1]
    assert not (results / "train").exists()


def test_wandb_offline_run_is_written_without_network(tiny_spec, tmp_path):
    pytest.importorskip("wandb")
    results = tmp_path / "wandb"
    result = run_mal("train", "-e", str(tiny_spec), f"results_dir={results}", "train.num_epochs=1",
                     "wandb.enable=true", "wandb.mode=offline", "wandb.name=unit-test")
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((results / "train" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))


def test_boxes_per_epoch_sets_the_steps_of_every_epoch(tiny_spec, tmp_path):
    results = tmp_path / "fixed_epochs"
    result = run_mal("train", "-e", str(tiny_spec), f"results_dir={results}", "train.num_epochs=2",
                     "train.batch_size=4", "train.boxes_per_epoch=10", "train.validation_interval=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "(10 per epoch)" in result.stdout
    running = [e for e in status_events(results) if e["status"] == "RUNNING"]
    assert [(e["epoch"], e["global_step"]) for e in running] == [(1, 3), (2, 6)]  # ceil(10 / 4) steps each


def test_a_new_run_beside_an_earlier_runs_checkpoints_is_refused(tiny_spec, tmp_path):
    results = tmp_path / "twice"
    first = run_mal("train", "-e", str(tiny_spec), f"results_dir={results}", "train.num_epochs=2",
                    "train.validation_interval=2")  # fmt: skip
    assert first.returncode == 0, first.stderr[-3000:]
    # A new run in the same folder would leave these beside its own files (and evaluate would take the newest).
    files = {path.name: path.stat().st_mtime_ns for path in (results / "train").glob("mal_model_epoch_*.pth")}
    again = run_mal("train", "-e", str(tiny_spec), f"results_dir={results}", "train.num_epochs=1")
    assert again.returncode == 2
    assert "already holds the checkpoints of an earlier run (epochs 2)" in again.stderr
    assert "train.resume_training_checkpoint_path=auto" in again.stderr
    assert {path.name: path.stat().st_mtime_ns for path in (results / "train").glob("mal_model_epoch_*.pth")} == files
