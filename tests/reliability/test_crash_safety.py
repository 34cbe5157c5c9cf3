"""Crash safety: a SIGKILL at a random moment costs at most one checkpoint interval and never leaves a truncated
output; a killed AutoML trial is concluded once (never lost, never run twice); a full disk is one clear line."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from support.reliability import mal_env, popen_mal, run_mal, status_events, write_spec
from support.specs import write_tiny_spec
from support.study import automl_run_command, launches, write_dummy_study

pytestmark = pytest.mark.slow


def _kill_group(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)


def _wait_for(predicate, process: subprocess.Popen, timeout: float = 180) -> bool:
    """Poll until predicate() (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def kill_training_then_resume(spec: Path, results: Path, seed: int) -> dict:
    """Start `mal train`, SIGKILL it at a random moment after its first status event, resume with `auto`."""
    rng = random.Random(seed)
    process = popen_mal("train", "-e", spec)
    status = results / "train" / "status.json"
    started = _wait_for(lambda: status.exists(), process)
    delay = rng.uniform(0.0, 6.0)
    killed_after = None
    if started:
        time.sleep(delay)
        if process.poll() is None:
            _kill_group(process)
            killed_after = [e["status"] for e in status_events(status)]
    if killed_after is None:
        process.communicate(timeout=30)
    checkpoints_at_kill = sorted(path.name for path in (results / "train").glob("mal_model_epoch_*.pth"))
    # What a kill in the middle of a checkpoint save leaves (atomic_open's temp file); the resume must drop it.
    (results / "train").mkdir(parents=True, exist_ok=True)
    (results / "train" / ".mal_model_epoch_001.pth.killed.tmp").write_bytes(b"PK\x03\x04half")
    resumed = run_mal("train", "-e", spec, "train.resume_training_checkpoint_path=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return {
        "seed": seed,
        "delay": delay,
        "killed": killed_after is not None,
        "checkpoints_at_kill": checkpoints_at_kill,
    }


def assert_resumed_run_is_complete(results: Path, epochs: int) -> None:
    train = results / "train"
    names = sorted(path.name for path in train.glob("mal_model_epoch_*.pth"))
    assert names == [f"mal_model_epoch_{epoch:03d}.pth" for epoch in range(1, epochs + 1)]  # counted from 1
    assert not [path for path in train.iterdir() if path.name.endswith(".tmp")]
    events = status_events(train / "status.json")
    assert events[-1]["status"] == "SUCCESS"
    last = torch.load(train / "mal_model_latest.pth", weights_only=True)
    assert last["epoch"] == epochs - 1  # the same final epoch count as an uninterrupted run
    for event in events:
        for value in event["kpi"].values():
            assert value is not None and math.isfinite(value), event  # status.json writes NaN as null
    for tensor in last["state_dict"].values():
        if tensor.is_floating_point():
            assert torch.isfinite(tensor).all()


@pytest.mark.parametrize("seed", [1, 2])
def test_sigkill_during_training_then_resume_auto_finishes_the_run(tmp_path, synthetic, seed):
    epochs = 4
    results = tmp_path / "results"
    # Every epoch file kept (train.keep_last_checkpoints=0): the run must show no epoch lost or repeated.
    spec = write_tiny_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results,
                           {"train.num_epochs": epochs, "train.keep_last_checkpoints": 0})
    kill_training_then_resume(spec, results, seed)
    assert_resumed_run_is_complete(results, epochs)


def _assert_complete_labels(path: Path, expected_boxes: int) -> None:
    out = json.loads(path.read_text())
    assert len(out["annotations"]) == expected_boxes
    assert all("counts" in ann["segmentation"] and ann["area"] >= 0 for ann in out["annotations"])


def test_sigkill_during_inference_never_leaves_a_truncated_label_file(tmp_path, synthetic, trained):
    boxes = len(json.loads((synthetic / "annotations.json").read_text())["annotations"])
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results)
    labels = tmp_path / "labels.json"
    argv = ("inference", "-e", spec, f"inference.checkpoint={trained}", f"inference.label_dump_path={labels}")
    rng = random.Random(0)
    for _ in range(2):
        process = popen_mal(*argv)
        status = results / "inference" / "status.json"
        if _wait_for(lambda s=status: s.exists(), process):
            time.sleep(rng.uniform(0.0, 0.6))
            if process.poll() is None:
                _kill_group(process)
        process.communicate(timeout=60)
        if labels.exists():  # written whole (atomic rename) or not at all
            _assert_complete_labels(labels, boxes)
            labels.unlink()
    (tmp_path / ".labels.json.killed.tmp").write_text('{"images": [')  # what a kill mid-write leaves
    rerun = run_mal(*argv)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    _assert_complete_labels(labels, boxes)
    assert sorted(path.name for path in tmp_path.glob(".labels.json.*")) == []  # the rerun cleared the leftovers


def _dummy_jobs(pattern: str) -> list[int]:
    """Pids of dummy training jobs whose command line contains `pattern`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        text = b" ".join(command).decode(errors="replace")
        if "dummy_job.py" in text and pattern in text:
            pids.append(int(entry.name))
    return pids


def test_sigkilled_trials_are_concluded_once_and_the_study_finishes(tmp_path):
    """Two trials' jobs are SIGKILLed mid-epoch: each is recorded failed (killed) once, nothing is lost or rerun."""
    log = tmp_path / "launches.log"
    ws = tmp_path / "ws"
    study_file = write_dummy_study(
        tmp_path, ws, automl_max_recommendations=6, automl_max_epochs=3, automl_max_concurrent=2
    )
    env = {**mal_env(), "MAL_DUMMY_STARTED_LOG": str(log), "MAL_DUMMY_SLEEP": "0.4"}
    runner = subprocess.Popen(
        automl_run_command(study_file),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    killed: list[str] = []
    rng = random.Random(3)
    try:
        for target in (0, 2):  # the 1st and 3rd trials launched: never two in a row
            _wait_for(lambda t=target: len(launches(log)) > t, runner, timeout=60)
            trial_dir = launches(log)[target][0]
            time.sleep(rng.uniform(0.1, 0.6))
            for pid in _dummy_jobs(trial_dir):
                os.kill(pid, signal.SIGKILL)
                killed.append(Path(trial_dir).name)
        _, stderr = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            os.killpg(runner.pid, signal.SIGKILL)
    assert runner.returncode == 0, stderr[-3000:]
    run_dir = sorted(ws.glob("run_*"))[-1]
    result = json.loads((run_dir / "result.json").read_text())
    history = result["history"]
    assert [entry["rec_id"] for entry in history] == list(range(6))
    started = [Path(results_dir).name for results_dir, _ in launches(log)]
    assert sorted(started) == sorted(entry["job_id"] for entry in history)  # each launched once: none lost or rerun
    state = json.loads((run_dir / "state.json").read_text())
    assert sorted(state["completion_order"]) == sorted(set(state["completion_order"]))  # each concluded once
    assert killed, "no trial was running when the test tried to kill it"
    for entry in history:
        if entry["job_id"] in killed:
            assert entry["status"] == "failed" and "SIGKILL" in (entry["failure_reason"] or ""), entry
        else:
            assert entry["status"] == "done" and entry["metric"] is not None


# ------------------------------------------------------------------------------------------------ full disk


def _fill(disk: Path, leave_bytes: int) -> None:
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    (disk / "filler").write_bytes(b"\0" * max(free - leave_bytes, 0))


def test_full_disk_during_inference_is_one_clear_line_and_no_label_file(small_disk, tmp_path, synthetic, trained):
    spec = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images", tmp_path / "r")
    labels = small_disk / "labels.json"
    _fill(small_disk, leave_bytes=4096)
    result = run_mal("inference", "-e", spec, f"inference.checkpoint={trained}", f"inference.label_dump_path={labels}")
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot write" in last and str(labels) in last and "No space left" in last, last
    assert sorted(path.name for path in small_disk.iterdir()) == ["filler"]  # no label file, no temp file
    assert status_events(tmp_path / "r" / "inference" / "status.json")[-1]["status"] == "FAILURE"


def test_full_disk_while_checkpointing_is_one_clear_line_and_no_half_checkpoint(small_disk, synthetic):
    results = small_disk / "results"
    spec = write_spec(small_disk.parent / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results)
    result = run_mal("train", "-e", spec)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot write" in last and "mal_model_epoch_001.pth" in last and "disk full" in last, last
    assert not list((results / "train").glob("*.pth")) and not list((results / "train").glob(".*.tmp"))
    assert status_events(results / "train" / "status.json")[-1]["status"] == "FAILURE"
