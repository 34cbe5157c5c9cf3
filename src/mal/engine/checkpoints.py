"""The checkpoint files of `mal train`: epoch files numbered from 1, the `latest` and `best` links, and pruning.

    mal_model_epoch_NNN.pth   after epoch NNN (1-based, as status.json and the progress bar count), every
                              train.checkpoint_interval epochs, after the last, and after a new best validation
    mal_model_latest.pth      a symlink to the newest epoch file
    mal_model_best.pth        a hard link to the best epoch's file (a symlink where hard links are impossible)

Only the newest `train.keep_last_checkpoints` epoch files are kept, plus the best one: a vit-tiny checkpoint is
about 130 MB (student, EMA teacher and the optimizer state, all of which a resume needs), so keeping every epoch
and a copy of the best cost 1.4 GB for 10 epochs.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Checkpoint

from mal import jobfiles


def link_atomically(target: Path, link: Path, *, hard: bool) -> bool:
    """Point `link` at `target` (a file in the same folder), replacing any previous link in one rename.

    A hard link first when `hard`, else a relative symlink first; the other kind where the first is impossible
    (FAT has no links of either kind, some network file systems have no hard links, Windows may forbid
    symlinks). Never a copy: False when neither link can be made, and `link` is then left as it was.
    """
    # The temp name matches the `.mal_model_*.*.tmp` files `mal train` removes at its start, should a kill land
    # between the link and the rename.
    tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    makers = [lambda: os.link(target, tmp), lambda: os.symlink(target.name, tmp)]
    for make in makers if hard else reversed(makers):
        try:
            make()
        except OSError:
            continue
        os.replace(tmp, link)
        return True
    return False


def prune_epoch_files(folder: Path, newest_epoch: int, keep_last: int, protect: list[Path]) -> list[Path]:
    """Delete the epoch files of `folder` older than its newest `keep_last` up to `newest_epoch` (0 keeps all);
    never one that is the same file as a path in `protect` (the best). Returns the deleted files.

    Files numbered above `newest_epoch` are left alone: another run's leftovers in a reused results_dir, which this
    run's pruning must not treat as its newest and delete its own latest for."""
    if keep_last <= 0:
        return []
    mine = sorted((epoch, path) for epoch, path in jobfiles.epoch_checkpoints(folder).items() if epoch <= newest_epoch)
    deleted = []
    for _epoch, path in mine[:-keep_last]:
        if any(_same_file(path, kept) for kept in protect):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            deleted.append(path)
    return deleted


def _same_file(path: Path, other: Path) -> bool:
    try:
        return os.path.samefile(path, other)
    except OSError:  # `other` does not exist (no best yet, or a dangling link)
        return False


class CheckpointFiles(Checkpoint):
    """Writes the epoch checkpoints, moves the `latest` and `best` links, and prunes old epoch files.

    A `Checkpoint`, so Lightning adds no default ModelCheckpoint and `trainer.checkpoint_callbacks` finds it
    (`monitor`, `best_model_score` and `best_model_path` as on Lightning's ModelCheckpoint)."""

    def __init__(self, dirpath: Path, *, every_n_epochs: int, keep_last: int, monitor: str | None) -> None:
        self.dirpath = Path(dirpath)
        self.every_n_epochs = every_n_epochs
        self.keep_last = keep_last
        self.monitor = monitor
        self.best_model_score: float | None = None
        self.best_epoch: int | None = None  # 1-based, as in the file name
        self.best_model_path = ""  # mal_model_best.pth once there is a best (or its epoch file, without links)
        self._new_best = False  # this epoch's validation beat the best: its epoch file must be written
        self._saved_epoch = 0  # the epoch save_epoch last handled; it is called from two hooks

    @property
    def state_key(self) -> str:
        return "CheckpointFiles"

    # -------------------------------------------------------------------------------- the monitored value
    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or self.monitor is None or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if math.isfinite(value) and (self.best_model_score is None or value > self.best_model_score):
            # Decided here, saved at the epoch's end (on_train_epoch_end): a file written mid-epoch would resume
            # by repeating part of the epoch. The value is reduced over every process, so all ranks agree.
            self.best_model_score = value
            self.best_epoch = trainer.current_epoch + 1
            self._new_best = True

    # ------------------------------------------------------------------------------------------ the files
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.save_epoch(trainer)

    def save_epoch(self, trainer: L.Trainer) -> None:
        """Write this epoch's file when it is due, then the links, then prune. Idempotent per epoch: the status
        callback calls it before writing the epoch's event (so the event never names files not yet there), and
        Lightning calls on_train_epoch_end after that. Every process must call it: the save has a barrier."""
        epoch = trainer.current_epoch + 1
        if trainer.sanity_checking or epoch == self._saved_epoch:
            return
        self._saved_epoch = epoch
        last = trainer.max_epochs is not None and epoch >= trainer.max_epochs
        if not (epoch % self.every_n_epochs == 0 or last or self._new_best):
            return
        path = self.dirpath / jobfiles.epoch_checkpoint_name(epoch)
        trainer.save_checkpoint(path)
        new_best, self._new_best = self._new_best, False
        if not trainer.is_global_zero:
            return
        link_atomically(path, self.dirpath / jobfiles.LATEST_CHECKPOINT, hard=False)
        best_link = self.dirpath / jobfiles.BEST_CHECKPOINT
        if new_best:
            linked = link_atomically(path, best_link, hard=True)
            # Without links the epoch file is the best, and the events name it (mal.jobfiles.best_checkpoint).
            self.best_model_path = str(best_link if linked else path)
        protect = [best_link]
        if self.best_epoch is not None:
            protect.append(self.dirpath / jobfiles.epoch_checkpoint_name(self.best_epoch))
        prune_epoch_files(self.dirpath, epoch, self.keep_last, protect)

    # ------------------------------------------------------------------------------------ resume
    def state_dict(self) -> dict[str, Any]:
        return {"best_model_score": self.best_model_score, "best_epoch": self.best_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        score, epoch = state_dict.get("best_model_score"), state_dict.get("best_epoch")
        self.best_model_score = None if score is None else float(score)
        self.best_epoch = None if epoch is None else int(epoch)
        self._resumed_best()

    def _resumed_best(self) -> None:
        # The path is found again, not stored: a results_dir may have been moved between the runs.
        if self.best_model_score is None:
            return
        link = self.dirpath / jobfiles.BEST_CHECKPOINT
        epoch_file = self.dirpath / jobfiles.epoch_checkpoint_name(self.best_epoch) if self.best_epoch else None
        self.best_model_path = str(epoch_file if epoch_file and epoch_file.exists() and not link.exists() else link)

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        # A checkpoint of an earlier mal kept its best score under Lightning's ModelCheckpoint ("BestCheckpoint{...}"):
        # resuming it must not let the next validation replace a better best. load_state_dict runs after this
        # and wins for checkpoints of this version.
        for key, state in (checkpoint.get("callbacks") or {}).items():
            if str(key).startswith("BestCheckpoint") and isinstance(state, dict):
                score = state.get("best_model_score")
                self.best_model_score = None if score is None else float(score)
                self._resumed_best()
