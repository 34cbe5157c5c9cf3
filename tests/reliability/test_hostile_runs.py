"""Hostile runs: spec values that used to pass validation and crash later, two runs on one results_dir, Ctrl-C and
SIGTERM during training, a full disk under status.json, and a label file aimed at the ground truth. Each is one
clear line and the right exit code, through the real CLI."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from mal import jobfiles
from support.reliability import (
    Bench,
    assert_user_error,
    leftovers,
    mal_env,
    popen_mal,
    run_mal,
    status_events,
    write_spec,
)

pytestmark = pytest.mark.slow


# A case returns (argv for `mal`, words the last stderr line must contain).
Case = Callable[[Bench], tuple[list[str], list[str]]]


def train_case(overrides: list[str], *words: str, action: str = "train") -> Case:
    def build(bench: Bench) -> tuple[list[str], list[str]]:
        return [action, "-e", str(bench.spec()), *overrides], list(words)

    return build


def _results_dir_is_a_file(bench: Bench) -> tuple[list[str], list[str]]:
    existing = bench.root / "results.txt"
    existing.write_text("not a folder")
    return ["train", "-e", str(bench.spec()), f"results_dir={existing}"], ["results_dir", str(existing), "file"]


def _results_dir_inside_a_file(bench: Bench) -> tuple[list[str], list[str]]:
    existing = bench.root / "results.txt"
    existing.write_text("not a folder")
    inside = existing / "run"
    return ["train", "-e", str(bench.spec()), f"results_dir={inside}"], ["results_dir", str(inside), "file"]


def _labels(path_of: Callable[[Bench], Path], *words: str) -> Case:
    def build(bench: Bench) -> tuple[list[str], list[str]]:
        target = path_of(bench)
        argv = ["inference", "-e", str(bench.spec()), f"inference.label_dump_path={target}"]
        return argv, ["inference.label_dump_path", str(target), *words]

    return build


def _symlink_to_ann(bench: Bench) -> Path:
    link = bench.root / "labels.json"
    link.symlink_to(bench.ann)
    return link


def _other_spelling_of_ann(bench: Bench) -> Path:
    return bench.synthetic / "images" / ".." / "annotations.json"


def _resume_with(*overrides: str) -> Case:
    def build(bench: Bench) -> tuple[list[str], list[str]]:
        argv = ["train", "-e", str(bench.spec()), f"train.resume_training_checkpoint_path={bench.trained}", *overrides]
        key, value = overrides[0].split("=")
        return argv, [key, value, "train.resume_training_checkpoint_path"]

    return build


VALUE_CASES: dict[str, Case] = {
    "beta_equal_to_one": train_case(["train.optim_betas=[0.9,1.0]"], "train.optim_betas", "1.0"),
    "beta_above_one": train_case(["train.optim_betas=[0.9,1.5]"], "train.optim_betas", "1.5"),
    "beta_negative": train_case(["train.optim_betas=[-0.1,0.999]"], "train.optim_betas", "-0.1"),
    "beta_nan": train_case(["train.optim_betas=[.nan,0.9]"], "train.optim_betas", "nan"),
    "seed_negative": train_case(["train.seed=-1"], "train.seed", "-1"),
    "seed_beyond_32_bits": train_case(["train.seed=4294967296"], "train.seed", "4294967296"),
    "seed_absurd": train_case(["train.seed=123456789012345678901234567890"], "train.seed", "1234567890"),
    "frozen_beyond_tiny_depth": train_case(["model.frozen_stages=[13]"], "model.frozen_stages", "13", "12"),
    "frozen_beyond_large_depth": train_case(["model.arch=vit-mae-large/16", "model.frozen_stages=[25]"],
                                            "model.frozen_stages", "25", "24"),
    "frozen_below_none": train_case(["model.frozen_stages=[-2]"], "model.frozen_stages", "-2"),
    "warmup_infinite": train_case(["train.warmup_epochs=.inf"], "train.warmup_epochs", "inf"),
    "warmup_nan": train_case(["train.warmup_epochs=.nan"], "train.warmup_epochs", "nan"),
    "warmup_huge": train_case(["train.warmup_epochs=1.0e+12"], "train.warmup_epochs", "1000000000000"),
    "pretrain_warmup_huge": train_case(["pretrain.warmup_epochs=1.0e+300"], "pretrain.warmup_epochs", "1e+300"),
    "lr_nan": train_case(["train.lr=.nan"], "train.lr", "nan"),
    "loss_weight_infinite": train_case(["train.loss_crf_weight=.inf"], "train.loss_crf_weight", "inf"),
    "gpu_ids_empty": train_case(["train.gpu_ids=[]"], "train.gpu_ids", "[]"),
    "gpu_id_negative": train_case(["train.gpu_ids=[-1]"], "train.gpu_ids", "-1"),
    "export_batch_zero": train_case(["export.batch_size=0"], "export.batch_size", "0", action="export"),
    "results_dir_is_a_file": _results_dir_is_a_file,
    "results_dir_inside_a_file": _results_dir_inside_a_file,
    "labels_are_the_ground_truth": _labels(lambda bench: bench.ann, "dataset.train_ann_path", "ground truth"),
    "labels_link_to_the_ground_truth": _labels(_symlink_to_ann, "dataset.train_ann_path", "ground truth"),
    "labels_other_spelling_of_ground_truth": _labels(_other_spelling_of_ann, "dataset.train_ann_path"),
    "labels_into_a_folder": _labels(lambda bench: bench.synthetic / "images", "folder"),
    "labels_inside_a_file": _labels(lambda bench: bench.ann / "labels.json", "file"),
}

RESUME_CASES: dict[str, Case] = {
    "resume_other_arch": _resume_with("model.arch=vit-small/16"),
    "resume_other_head": _resume_with("model.mask_head_hidden_channel=32"),
}


def _run_case(case: Case, bench: Bench) -> None:
    ann_before = bench.ann.read_bytes()
    argv, words = case(bench)
    result = run_mal(*argv, env=mal_env(MAL_CACHE_DIR=str(bench.root / "cache")), cwd=bench.root, timeout=120)
    assert_user_error(result, *words)
    assert leftovers(bench.results) == []
    assert not (bench.results / "train").exists() and not (bench.results / "inference").exists()
    assert bench.ann.read_bytes() == ann_before  # the ground truth is never touched


@pytest.mark.parametrize("name", list(VALUE_CASES), ids=list(VALUE_CASES))
def test_bad_value_is_refused_before_any_work(name, tmp_path, synthetic):
    _run_case(VALUE_CASES[name], Bench(tmp_path, synthetic))


@pytest.mark.parametrize("name", list(RESUME_CASES), ids=list(RESUME_CASES))
def test_resuming_into_another_network_names_the_key_and_both_values(name, tmp_path, synthetic, trained):
    _run_case(RESUME_CASES[name], Bench(tmp_path, synthetic, trained))


def test_results_dir_with_a_tilde_is_the_home_folder(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("results_dir: ~/runs/a\n")
    result = run_mal("train", "-e", spec, "--print-spec", "inference.label_dump_path=~/l.json",
                     env=mal_env(HOME=str(tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"results_dir: {tmp_path}/runs/a" in result.stdout and f"label_dump_path: {tmp_path}/l.json" in result.stdout


def test_spec_depths_match_the_backbones():
    from mal.model.backbone import ARCHS
    from mal.spec.schema import ARCH_DEPTHS

    assert {name: arch.depth for name, arch in ARCHS.items()} == ARCH_DEPTHS


# ------------------------------------------------------------------------------------ one run per results_dir


def _wait_for_event(status: Path, process: subprocess.Popen, wanted: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(event["status"] == wanted for event in _complete_events(status)):
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended (exit {process.returncode}) before {wanted}: "
                                 f"{process.communicate()[1][-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no {wanted} event in {status}")


def _complete_events(status: Path) -> list[dict]:
    if not status.exists():
        return []
    return [json.loads(line) for line in status.read_text().splitlines(keepends=True) if line.endswith("\n")]


def _last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


def test_ctrl_c_exits_130_with_the_resume_command_and_a_second_run_is_refused_meanwhile(tmp_path, synthetic):
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results)
    status = results / "train" / "status.json"
    process = popen_mal("train", "-e", spec, "train.num_epochs=500")  # still running when Ctrl-C comes
    try:
        _wait_for_event(status, process, "RUNNING")
        # A second run on the same results_dir is refused with the owner's pid, and writes nothing there.
        second = run_mal("train", "-e", spec)
        assert_user_error(second, "results_dir", f"pid {process.pid}")
        assert [event["status"] for event in _complete_events(status)].count("STARTED") == 1
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 130, stderr[-2000:]  # was 1, with no message
    assert "Traceback" not in stderr
    last = _last_line(stderr)
    resume = f"mal train -e {spec} train.num_epochs=500 train.resume_training_checkpoint_path=auto"
    assert last.startswith("mal train: interrupted") and last.endswith(resume), last
    assert status_events(status)[-1]["status"] == "FAILURE" and "interrupted" in status_events(status)[-1]["message"]
    assert not (results / "train" / "mal.lock").exists()
    # The printed command continues the run (here cut to one more epoch than it has checkpoints of).
    done = jobfiles.epoch_checkpoints(results / "train")
    assert done, "no checkpoint was written before the interrupt"
    epochs = max(done) + 1  # files are numbered by the epochs they hold, from 1
    resumed = run_mal(*shlex.split(resume)[1:], f"train.num_epochs={epochs}")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and status_events(status)[-1]["status"] == "SUCCESS"
    assert jobfiles.latest_checkpoint(results / "train") == results / "train" / jobfiles.epoch_checkpoint_name(epochs)
    assert max(jobfiles.epoch_checkpoints(results / "train")) == epochs


def test_sigterm_exits_143_with_the_resume_command(tmp_path, synthetic):
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results, epochs=20)
    status = results / "train" / "status.json"
    process = popen_mal("train", "-e", spec)
    try:
        _wait_for_event(status, process, "STARTED")
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    assert process.returncode == 143, stderr[-2000:]  # Lightning alone exited 0 here
    last = _last_line(stderr)
    assert "stopped by SIGTERM" in last and last.endswith(f"-e {spec} train.resume_training_checkpoint_path=auto")
    assert "SIGTERM" in status_events(status)[-1]["message"]


@pytest.mark.parametrize("action", ["evaluate", "inference", "export", "pretrain"])
def test_every_action_refuses_a_results_dir_another_run_holds(action, tmp_path, synthetic, trained):
    from mal.engine.run_lock import hold_run_lock

    results = tmp_path / "results"
    spec = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results)
    with hold_run_lock(results / action, action):
        checkpoint = [f"{action}.checkpoint={trained}"] if action != "pretrain" else []
        result = run_mal(action, "-e", spec, *checkpoint)
        assert_user_error(result, str(results / action), f"pid {os.getpid()}")
    assert not (results / action / "status.json").exists()


def test_a_lock_left_by_a_killed_run_is_taken_over_and_said_so(tmp_path, synthetic):
    results = tmp_path / "results"
    spec = write_spec(tmp_path / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from mal.engine.run_lock import hold_run_lock\n"
         "with hold_run_lock(sys.argv[1], 'train'):\n    print('held', flush=True); time.sleep(600)",
         str(results / "train")],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert holder.stdout.readline().strip() == "held"
    os.killpg(holder.pid, signal.SIGKILL)  # the lock file stays, with a dead pid in it
    holder.communicate()
    assert (results / "train" / "mal.lock").exists()
    # This run fails on purpose right after taking the lock (a missing checkpoint): it still reports the take-over.
    taken = run_mal("train", "-e", spec, "train.resume_training_checkpoint_path=/nonexistent.pth")
    assert_user_error(taken, "/nonexistent.pth")
    assert f"took over {results / 'train' / 'mal.lock'}, left by pid {holder.pid}" in taken.stdout, taken.stdout
    assert not (results / "train" / "mal.lock").exists() and leftovers(results) == []


# ----------------------------------------------------------------------------------------------- full disk


def _fill(disk: Path, leave_bytes: int = 0, name: str = "filler") -> None:
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    with open(disk / name, "wb") as handle:
        handle.write(b"\0" * max(free - leave_bytes, 0))


def _assert_one_storage_line(result_code: int, stderr: str, folder: Path) -> str:
    assert result_code == 1, stderr[-2000:]
    assert "Traceback" not in stderr and "Exception in thread" not in stderr, stderr[-3000:]
    last = _last_line(stderr)
    assert last.startswith("mal train: error: cannot write ") and "No space left" in last, last
    assert str(folder) in last, last  # the file (or at least the folder) it could not write
    return last


def test_a_disk_full_from_the_start_is_one_line_and_leaves_no_empty_status_file(small_disk, synthetic):
    results = small_disk / "results"
    spec = write_spec(small_disk.parent / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results)
    _fill(small_disk)
    result = run_mal("train", "-e", spec)
    _assert_one_storage_line(result.returncode, result.stderr, results / "train")
    status = results / "train" / "status.json"
    # Nothing fits, not even a FAILURE line: then no status.json at all, never an empty or torn one.
    assert not status.exists() or status_events(status)[-1]["status"] == "FAILURE"
    assert not (results / "train" / "mal.lock").exists()


def test_a_disk_that_fills_during_training_still_ends_status_json_with_failure(small_disk, synthetic):
    results = small_disk / "results"
    spec = write_spec(small_disk.parent / "spec.yaml", synthetic / "annotations.json", synthetic / "images", results,
                      epochs=3)
    status = results / "train" / "status.json"
    # No checkpoint before the last epoch: the next writes are status.json's RUNNING lines and TensorBoard's.
    process = popen_mal("train", "-e", spec, "train.checkpoint_interval=3")
    try:
        _wait_for_event(status, process, "STARTED")
        _fill(small_disk)  # another process takes every byte left
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    _assert_one_storage_line(process.returncode, stderr, results / "train")
    lines = status.read_text().splitlines(keepends=True)
    assert all(line.endswith("\n") for line in lines)  # whole lines only
    events = [json.loads(line) for line in lines]
    assert events[0]["status"] == "STARTED" and events[-1]["status"] == "FAILURE", events
    assert "No space left" in events[-1]["message"] or "disk" in events[-1]["message"], events[-1]
