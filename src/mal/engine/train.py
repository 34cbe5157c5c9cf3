"""`mal train`: check every input first, then fit the MAL module with the Trainer built from the spec."""

from __future__ import annotations

import signal
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import lightning as L
import torch

from mal import jobfiles
from mal.box_likeness import BoxLikeness, warn_if_box_like
from mal.data.coco_boxes import CocoBoxes
from mal.dotted import get_dotted
from mal.engine.datamodule import MALDataModule, load_train_coco, load_val_coco
from mal.engine.module import MALModule
from mal.engine.run_lock import hold_run_lock
from mal.engine.sigterm import sigterm_raises
from mal.engine.status import StatusFile
from mal.engine.trainer import StatusCallback, build_trainer, resolve_devices
from mal.errors import CheckpointError, DataError, SpecError
from mal.fileio import STORAGE_ERRNOS, remove_stale_temp_files
from mal.jobfiles import epoch_checkpoints, latest_checkpoint
from mal.model.backbone import ARCHS
from mal.spec.schema import ExperimentSpec

# Spec keys that shape the network's tensors or its optimizer groups: a checkpoint resumes only with the same ones.
RESUME_KEYS = ("model.arch", "dataset.crop_size", "model.frozen_stages", "model.mask_head_num_convs",
               "model.mask_head_hidden_channel", "model.mask_head_out_channel", "model.mask_scale_ratio")


class TrainingStopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped `mal train`; the CLI exits 128 + the signal number with one line on how to resume.

    A KeyboardInterrupt, so nothing that catches Exception on the way up swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.exit_code = 128 + signum


def _sigterm_stops_training() -> AbstractContextManager[None]:
    """SIGTERM (kill, timeout, a scheduler) stops training the way Ctrl-C does: at once, with the same message.

    Lightning's own SIGTERM handler only sets a flag, then raises a SystemExit with no code (exit 0) at the next
    batch; inside Trainer.fit it calls this handler too.
    """
    return sigterm_raises(TrainingStopped)


def check_model_spec(spec: ExperimentSpec) -> None:
    patch = ARCHS[spec.model.arch].patch_size
    if spec.dataset.crop_size % patch:
        raise SpecError(
            f"dataset.crop_size = {spec.dataset.crop_size} is not a multiple of {patch}, the patch size of "
            f"model.arch = {spec.model.arch}; use e.g. {max(patch, spec.dataset.crop_size // patch * patch)}."
        )


def resolve_resume(spec: ExperimentSpec, out_dir: Path) -> Path | None:
    wanted = spec.train.resume_training_checkpoint_path
    if not wanted:
        return None
    if wanted == "auto":
        return latest_checkpoint(out_dir)
    path = Path(wanted)
    if not path.is_file():
        raise CheckpointError(
            f"train.resume_training_checkpoint_path = {wanted} does not exist; give a .pth from mal train or 'auto'."
        )
    return path


def refuse_earlier_run(out_dir: Path) -> None:
    """A new run must not share a train folder with an earlier run's checkpoints: its own epoch files would sit
    beside higher-numbered old ones, and evaluate / inference, which take the newest, would label with the old
    model."""
    earlier = sorted(epoch_checkpoints(out_dir))
    if earlier:
        epochs = ", ".join(str(epoch) for epoch in earlier[:5]) + (", ..." if len(earlier) > 5 else "")
        raise SpecError(
            f"{out_dir} already holds the checkpoints of an earlier run (epochs {epochs}); set "
            "train.resume_training_checkpoint_path=auto to continue that run, or give another results_dir (or delete "
            "those files) to start a new one."
        )


def trained_config(path: Path) -> dict[str, Any]:
    """The spec a checkpoint was trained with (memory-mapped: the tensors are not read)."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:
        from mal.engine.checkpoint_io import load_checkpoint_file

        data = load_checkpoint_file(path)  # says what is wrong with the file, as a CheckpointError
    config = (data.get("hyper_parameters") or {}).get("config") if isinstance(data, dict) else None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {path} carries no training spec; resume only from a .pth of mal train.")
    return config


def check_resume_matches(spec: ExperimentSpec, checkpoint: Path) -> None:
    """Refuse to resume into another network: Lightning would fail deep inside load_state_dict instead."""
    trained = trained_config(checkpoint)
    wanted = spec.model_dump(mode="json")
    for key in RESUME_KEYS:
        before, now = get_dotted(trained, key), get_dotted(wanted, key)
        if before is not None and before != now:
            raise CheckpointError(
                f"train.resume_training_checkpoint_path: {checkpoint} was trained with {key} = {before}, but the "
                f"spec has {key} = {now}; set {key}={before} to resume it, or use another results_dir to start "
                "a new run."
            )


def _validation_set(spec: ExperimentSpec) -> CocoBoxes | None:
    if not spec.dataset.load_mask:
        return None
    coco = load_val_coco(spec)
    return coco if coco.has_masks else None


def _trainable_boxes(spec: ExperimentSpec, coco: CocoBoxes) -> int:
    count = int((coco.size_filter(spec.dataset.min_obj_size, spec.dataset.max_obj_size) & (coco.iscrowd == 0)).sum())
    if count == 0:
        raise DataError(
            f"{spec.dataset.train_ann_path}: no box has an area in (dataset.min_obj_size = "
            f"{spec.dataset.min_obj_size}, dataset.max_obj_size = {spec.dataset.max_obj_size}]; lower "
            "dataset.min_obj_size."
        )
    return count


def run(spec: ExperimentSpec) -> int:
    check_model_spec(spec)
    out_dir = Path(spec.results_dir) / "train"
    # Owned before anything is read from or written to out_dir: a second run there is refused, not interleaved.
    with _sigterm_stops_training(), hold_run_lock(out_dir, "train"):
        try:
            return _train(spec, out_dir)
        except OSError as exc:
            if exc.filename or exc.errno not in STORAGE_ERRNOS:
                raise
            # A full disk met by a library that names no file (a logger, a writer thread): name the folder.
            raise OSError(exc.errno, exc.strerror or str(exc), str(out_dir)) from exc


def _train(spec: ExperimentSpec, out_dir: Path) -> int:
    train_coco = load_train_coco(spec)
    trainable = _trainable_boxes(spec, train_coco)
    val_coco = _validation_set(spec)
    resume = resolve_resume(spec, out_dir)
    if resume is not None:
        check_resume_matches(spec, resume)
    else:
        refuse_earlier_run(out_dir)
    if spec.train.num_threads:
        torch.set_num_threads(spec.train.num_threads)
    L.seed_everything(spec.train.seed, workers=True, verbose=False)

    # Checkpoints half-written by a killed run hold disk space (one model each) and are never read: drop them.
    remove_stale_temp_files(out_dir, "mal_model_*")
    status = StatusFile(out_dir / "status.json", max_epoch=spec.train.num_epochs)
    trainer, world_size = build_trainer(spec, out_dir, status, has_validation=val_coco is not None)
    config = spec.model_dump(mode="json")
    module = MALModule(config, world_size=world_size)
    if spec.train.pretrained_model_path and resume is None:
        _load_pretrained(module, spec.train.pretrained_model_path)
    datamodule = MALDataModule(spec, train_coco, val_coco)
    if trainer.is_global_zero:
        per_epoch = f" ({spec.train.boxes_per_epoch} per epoch)" if spec.train.boxes_per_epoch else ""
        print(f"mal train: {trainable} training boxes{per_epoch} from {len(train_coco.images)} images, "
              f"{'validation on ' + str(len(val_coco)) + ' boxes' if val_coco else 'no validation (no GT masks)'}, "
              f"{spec.model.arch} @ {spec.dataset.crop_size}px, {world_size} process(es)"
              + (f", resuming from {resume}" if resume else ""), flush=True)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None)
    except SystemExit:
        # Lightning reports Ctrl-C by sys.exit(1) (and SIGTERM by a SystemExit with no code) after its on_exception
        # hooks ran: say which signal it was, so the CLI can exit 130/143 with the way to resume.
        stopped = _stop_signal(trainer)
        if stopped is None:
            raise
        raise TrainingStopped(stopped) from None
    if trainer.is_global_zero:
        # Measured by the last validation, on its own masks; without validation data nothing is said.
        _finish(trainer, status, out_dir, getattr(module, "box_likeness", None) if val_coco is not None else None)
    return 0


def _stop_signal(trainer: L.Trainer) -> int | None:
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, StatusCallback) and callback.stopped_by is not None:
            return callback.stopped_by
    return None


def _load_pretrained(module: MALModule, path: str) -> None:
    from mal.weights import load_pretrained_backbone

    report = load_pretrained_backbone(module.mean_teacher.student.backbone, path)
    # The teacher starts as an exact copy of the (now pretrained) student.
    module.mean_teacher.teacher.load_state_dict(module.mean_teacher.student.state_dict())
    print(f"mal train: pretrained weights from {path}: {report.summary()}", flush=True)


def _finish(trainer: L.Trainer, status: StatusFile, out_dir: Path, likeness: BoxLikeness | None = None) -> None:
    kpi = {key: float(value) for key, value in trainer.callback_metrics.items()
           if key.startswith(("val/", "train/")) and not key.endswith("_step")}
    extra: dict[str, Any] = {"latest_checkpoint": str(latest_checkpoint(out_dir) or "")}
    best = out_dir / jobfiles.BEST_CHECKPOINT
    if best.exists():
        extra["best_checkpoint"] = str(best)
        extra["best_metric"] = _best_score(trainer)
    status.write("SUCCESS", epoch=trainer.current_epoch, kpi=kpi, message="training finished", **extra)
    print(f"mal train: done; checkpoints in {out_dir}", flush=True)
    if likeness is not None:
        warn_if_box_like(likeness, "train")


def _best_score(trainer: L.Trainer) -> float | None:
    for callback in trainer.checkpoint_callbacks:
        if getattr(callback, "monitor", None) and callback.best_model_score is not None:
            return float(callback.best_model_score)
    return None


__all__ = ["latest_checkpoint", "resolve_devices", "run"]
