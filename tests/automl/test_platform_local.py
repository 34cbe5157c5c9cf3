"""The local platform: real subprocesses, exit codes, logs, process-tree cancel, re-attach after a restart."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import yaml

from mal.automl.platforms.local import LocalPlatform, detect_gpus, process_start_ticks
from support.study import dummy_command


def _spec(tmp_path: Path, name: str, **train) -> tuple[Path, Path]:
    trial = tmp_path / name
    trial.mkdir()
    spec = {"results_dir": str(trial), "train": {"num_epochs": 2, **train}}
    path = trial / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path, trial


def _wait(platform: LocalPlatform, job_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while platform.status(job_id).state == "running":
        assert time.monotonic() < deadline, "job did not end"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    return process_start_ticks(pid) is not None


def test_success_exit_codes_and_logs(tmp_path):
    platform = LocalPlatform(max_concurrent=2, command=dummy_command(), gpus=[])
    good, good_dir = _spec(tmp_path, "good")
    bad, _ = _spec(tmp_path, "bad", lrr=1.0)
    platform.submit("good", "train", good, good_dir)
    platform.submit("bad", "train", bad, tmp_path / "bad")
    _wait(platform, "good")
    _wait(platform, "bad")
    assert platform.status("good").state == "exited" and platform.status("good").exit_code == 0
    assert (good_dir / "train" / "mal_model_epoch_002.pth").exists()
    bad_status = platform.status("bad")
    assert bad_status.exit_code == 2
    assert "lrr" in platform.logs("bad").splitlines()[-1]
    assert platform.results_dir("good") == good_dir


def test_cancel_kills_the_whole_process_tree(tmp_path):
    platform = LocalPlatform(
        max_concurrent=1, command=dummy_command(), gpus=[], kill_grace=2.0, env={"MAL_DUMMY_MODE": "hang"}
    )
    spec, trial = _spec(tmp_path, "hang")
    record = platform.submit("hang", "train", spec, trial)
    grandchild_file = trial / "train" / "grandchild.pid"
    deadline = time.monotonic() + 20
    while not grandchild_file.exists():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    grandchild = int(grandchild_file.read_text())
    assert _alive(grandchild) and platform.status("hang").state == "running"
    platform.cancel("hang")
    assert platform.status("hang").state == "cancelled"
    assert not _alive(record.pid)
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_a_new_platform_reattaches_and_reads_the_exit_code(tmp_path):
    first = LocalPlatform(max_concurrent=1, command=dummy_command(), gpus=[], env={"MAL_DUMMY_SLEEP": "0.3"})
    spec, trial = _spec(tmp_path, "long", num_epochs=3)
    record = first.submit("long", "train", spec, trial)
    # A runner restarted after a crash only has the saved record, without the pid.
    saved = type(record).from_dict({**record.to_dict(), "pid": None, "start_ticks": None})
    second = LocalPlatform(max_concurrent=1, command=dummy_command(), gpus=[])
    deadline = time.monotonic() + 10
    while not (trial / "job.pid").exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert second.attach(saved)
    assert second.status("long").state == "running"
    _wait(second, "long")
    assert second.status("long").exit_code == 0
    first._reap("long", block=True)
    # A pid whose start time does not match (a recycled pid) is never taken for the job.
    stale = type(record).from_dict({**record.to_dict(), "start_ticks": (record.start_ticks or 0) + 1})
    third = LocalPlatform(max_concurrent=1, command=dummy_command(), gpus=[])
    assert not third.attach(stale)


def test_gpus_come_from_the_environment_and_bound_concurrency():
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "0,2"}) == ["0", "2"]
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert detect_gpus({"CUDA_VISIBLE_DEVICES": "1,-1,3"}) == ["1"]
    platform = LocalPlatform(max_concurrent=4, gpus=["0", "1"])
    assert platform.capacity == 2 and platform.devices_per_job == 1
    cpu = LocalPlatform(max_concurrent=3, gpus=[])
    assert cpu.capacity == 3 and cpu.devices_per_job == 0


def test_each_job_gets_its_own_gpu(tmp_path):
    # A fake GPU list: the dummy job ignores devices but we can read what it was given.
    script = tmp_path / "env_job.py"
    script.write_text(
        "import os, sys, time; open(sys.argv[1] + '.gpu', 'w').write("
        "os.environ['CUDA_VISIBLE_DEVICES']); time.sleep(0.5)\n"
    )
    platform = LocalPlatform(max_concurrent=2, command=[sys.executable, str(script), "{spec}"], gpus=["3", "5"])
    for name in ("a", "b"):
        spec, trial = _spec(tmp_path, name)
        platform.submit(name, "train", spec, trial)
    with pytest.raises(RuntimeError, match="no free GPU"):
        spec, trial = _spec(tmp_path, "c")
        platform.submit("c", "train", spec, trial)
    for name in ("a", "b"):
        _wait(platform, name)
    given = sorted((tmp_path / name / "spec.yaml.gpu").read_text() for name in ("a", "b"))
    assert given == ["3", "5"]
    assert os.environ.get("MAL_AUTOML_JOB_ID") is None
