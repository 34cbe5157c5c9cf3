"""Checkpoints a laptop can afford and epoch numbers that agree (issue #20, items 5 and 6).

`train.keep_last_checkpoints` keeps the newest N epoch files plus the best one, which `mal_model_best.pth` links
to (never a second copy); the file name, status.json and the progress bar all count epochs from 1; and a normal
`mal train` prints none of Lightning's noise."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from mal import jobfiles
from mal.engine.checkpoints import link_atomically, prune_epoch_files
from mal.engine.trainer import EpochProgressBar, epoch_description
from support.engine import run_mal, status_events
from support.terminal import run_on_terminal

# What a normal run must not print (issue #20): runpy's warning, Lightning's hints, its model summary and its
# device lines.
NOISE = ("found in sys.modules", "log_every_n_steps", "Total FLOPs", "GPU available", "TPU available",
         "HPU available", "Trainable params", "srun", "LOCAL_RANK", "Epoch 0/")


def _touch_epochs(folder: Path, epochs: range) -> None:
    for epoch in epochs:
        (folder / jobfiles.epoch_checkpoint_name(epoch)).write_bytes(b"weights %d" % epoch)


def test_pruning_keeps_the_newest_and_the_best(tmp_path):
    _touch_epochs(tmp_path, range(1, 7))
    best = tmp_path / jobfiles.BEST_CHECKPOINT
    os.link(tmp_path / jobfiles.epoch_checkpoint_name(2), best)
    deleted = prune_epoch_files(tmp_path, newest_epoch=6, keep_last=2, protect=[best])
    assert sorted(path.name for path in deleted) == [jobfiles.epoch_checkpoint_name(e) for e in (1, 3, 4)]
    assert sorted(jobfiles.epoch_checkpoints(tmp_path)) == [2, 5, 6]


def test_pruning_leaves_files_of_another_run_and_keeps_everything_with_zero(tmp_path):
    _touch_epochs(tmp_path, range(1, 4))
    _touch_epochs(tmp_path, range(20, 21))  # a longer earlier run in the same results_dir
    prune_epoch_files(tmp_path, newest_epoch=3, keep_last=1, protect=[])
    assert sorted(jobfiles.epoch_checkpoints(tmp_path)) == [3, 20]  # never this run's newest
    _touch_epochs(tmp_path, range(1, 4))
    assert prune_epoch_files(tmp_path, newest_epoch=3, keep_last=0, protect=[]) == []


def test_best_is_a_hard_link_and_falls_back_to_a_symlink(tmp_path, monkeypatch):
    target = tmp_path / jobfiles.epoch_checkpoint_name(3)
    target.write_bytes(b"weights")
    link = tmp_path / jobfiles.BEST_CHECKPOINT
    assert link_atomically(target, link, hard=True)
    assert not link.is_symlink() and link.stat().st_ino == target.stat().st_ino

    def no_hard_links(*args: object, **kwargs: object) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_hard_links)
    newer = tmp_path / jobfiles.epoch_checkpoint_name(4)
    newer.write_bytes(b"better weights")
    assert link_atomically(newer, link, hard=True)
    assert link.is_symlink() and os.readlink(link) == newer.name and link.read_bytes() == b"better weights"
    assert not list(tmp_path.glob(".*.tmp"))


def test_the_bar_counts_epochs_from_one():
    assert epoch_description(0, 10) == "Epoch 1/10"
    assert epoch_description(9, 10) == "Epoch 10/10"
    bar = EpochProgressBar()
    bar._trainer = SimpleNamespace(max_epochs=3)  # what Lightning attaches before the first epoch
    assert bar._get_train_description(0).strip() == "Epoch 1/3"


@pytest.mark.slow
def test_three_epochs_keep_one_file_plus_the_best_and_resume(tiny_spec, tmp_path):
    results = tmp_path / "keep"
    args = ["train", "-e", str(tiny_spec), f"results_dir={results}", "train.num_epochs=3",
            "train.checkpoint_interval=1", "train.validation_interval=1", "train.keep_last_checkpoints=1"]
    code, terminal = run_on_terminal("-m", "mal", *args)
    assert code == 0, terminal[-3000:]
    # The numbers agree: the bar shows "Epoch 1/3" .. "Epoch 3/3", status.json says 1..3, the files end at 003.
    assert all(f"Epoch {epoch}/3" in terminal for epoch in (1, 2, 3)), terminal[-3000:]
    assert not [noise for noise in NOISE if noise in terminal], terminal[-3000:]
    events = status_events(results)
    running = [event for event in events if event["status"] == "RUNNING"]
    assert [event["epoch"] for event in running] == [1, 2, 3] and events[-1]["epoch"] == 3
    scores = [event["kpi"]["val/mIoU"] for event in running]
    best_epoch = scores.index(max(scores)) + 1  # the first epoch that reached the best value

    train = results / "train"
    assert sorted(jobfiles.epoch_checkpoints(train)) == sorted({3, best_epoch})
    latest, best = train / jobfiles.LATEST_CHECKPOINT, train / jobfiles.BEST_CHECKPOINT
    assert latest.is_symlink() and os.readlink(latest) == jobfiles.epoch_checkpoint_name(3)
    best_file = train / jobfiles.epoch_checkpoint_name(best_epoch)
    assert best.is_symlink() or best.stat().st_ino == best_file.stat().st_ino  # a link, never a second copy
    assert best.samefile(best_file)
    size = best_file.stat().st_size
    on_disk = {path.stat().st_ino: path.stat().st_size for path in train.glob("*.pth")}
    assert sum(on_disk.values()) == size * len({3, best_epoch})

    resumed = run_mal(*args[:-1], "train.num_epochs=4", "train.keep_last_checkpoints=1",
                      "train.resume_training_checkpoint_path=auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stdout and jobfiles.epoch_checkpoint_name(3) in resumed.stdout
    assert not [noise for noise in NOISE if noise in resumed.stderr], resumed.stderr[-3000:]
    events = status_events(results)
    restart = max(i for i, event in enumerate(events) if event["status"] == "STARTED")
    assert [event["epoch"] for event in events[restart:]] == [3, 4, 4]  # STARTED after 3, RUNNING 4, SUCCESS
    # The best score travelled in the checkpoint: epoch 4 replaces the best only by beating epochs 1-3.
    scores = [event["kpi"]["val/mIoU"] for event in events if event["status"] == "RUNNING"]
    best_epoch = scores.index(max(scores)) + 1
    assert sorted(jobfiles.epoch_checkpoints(train)) == sorted({4, best_epoch})
    assert jobfiles.latest_checkpoint(train) == train / jobfiles.epoch_checkpoint_name(4)
    assert best.samefile(train / jobfiles.epoch_checkpoint_name(best_epoch))
