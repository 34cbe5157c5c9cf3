"""The job contract from both sides: what `mal train` wrote is what `mal.jobfiles` (read by AutoML) finds, and
the engine's resume and AutoML's promotion pick the same checkpoint by the same rule."""

from __future__ import annotations

import os
from pathlib import Path

from mal import jobfiles
from mal.automl.platforms import contract
from mal.engine import train as engine_train


def test_what_the_training_wrote_is_what_the_contract_reads(trained):
    train_dir = trained / jobfiles.TRAIN_DIR
    epochs = jobfiles.epoch_checkpoints(train_dir)
    # Saved after epochs 5, 10 and 15 (counted from 1); train.keep_last_checkpoints=1 kept the newest and the best.
    assert 15 in epochs and set(epochs) <= {5, 10, 15} and all(
        path.name == jobfiles.epoch_checkpoint_name(e) for e, path in epochs.items())
    best = train_dir / jobfiles.BEST_CHECKPOINT
    assert any(best.samefile(path) for path in epochs.values())  # a link to an epoch file, not a copy
    assert len(epochs) == 1 or not best.samefile(epochs[15])
    assert jobfiles.latest_checkpoint(train_dir) == epochs[15]
    assert (train_dir / jobfiles.LATEST_CHECKPOINT).resolve() == epochs[15].resolve()
    events = jobfiles.read_status_events(trained)
    assert events[0]["status"] == "STARTED" and jobfiles.final_event(events)["status"] == "SUCCESS"
    assert {event["status"] for event in events} <= set(jobfiles.STATUSES)
    assert jobfiles.best_checkpoint(train_dir, events) == train_dir / jobfiles.BEST_CHECKPOINT
    # AutoML's view of the same folder, through the contract's results_dir-based helpers.
    assert contract.latest_checkpoint(trained) == epochs[15]
    assert contract.best_checkpoint(trained) == train_dir / jobfiles.BEST_CHECKPOINT
    assert Path(jobfiles.final_event(events)["latest_checkpoint"]) == epochs[15]


def _train_dir(tmp_path: Path, epochs: list[int], link_to: int | None) -> Path:
    train_dir = tmp_path / "results" / jobfiles.TRAIN_DIR
    train_dir.mkdir(parents=True)
    for epoch in epochs:
        (train_dir / jobfiles.epoch_checkpoint_name(epoch)).write_bytes(b"weights")
    if link_to is not None:
        os.symlink(jobfiles.epoch_checkpoint_name(link_to), train_dir / jobfiles.LATEST_CHECKPOINT)
    return train_dir


def test_a_stale_latest_link_loses_to_the_newest_epoch_file_on_both_sides(tmp_path):
    """A run killed after saving epoch 2 but before moving the link: resume and promotion both take epoch 2
    (they used opposite precedence, so `auto` resumed from epoch 0 while AutoML promoted from epoch 2)."""
    train_dir = _train_dir(tmp_path, [0, 2], link_to=0)
    newest = train_dir / jobfiles.epoch_checkpoint_name(2)
    assert engine_train.latest_checkpoint(train_dir) == newest
    assert contract.latest_checkpoint(train_dir.parent) == newest


def test_only_a_link_or_nothing(tmp_path):
    train_dir = _train_dir(tmp_path, [], link_to=None)
    assert jobfiles.latest_checkpoint(train_dir) is None and jobfiles.best_checkpoint(train_dir) is None
    target = tmp_path / "elsewhere.pth"
    target.write_bytes(b"weights")
    os.symlink(target, train_dir / jobfiles.LATEST_CHECKPOINT)
    assert jobfiles.latest_checkpoint(train_dir) == target
    assert jobfiles.epoch_of("mal_model_epoch_007.pth") == 7 and jobfiles.epoch_of("mal_model_best.pth") is None


def test_a_torn_last_line_is_skipped():
    text = '{"status": "STARTED", "epoch": 0}\n{"status": "RUNNING", "epoch": 1}\n{"status": "RUNN'
    assert [event["status"] for event in jobfiles.parse_status_lines(text)] == ["STARTED", "RUNNING"]
