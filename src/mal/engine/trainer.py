"""Build the Lightning Trainer from the spec: devices, precision, DDP, checkpoints, logging, status events."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from mal.engine.checkpoint_io import AtomicCheckpointIO
from mal.engine.checkpoints import CheckpointFiles
from mal.engine.precision import cpu_has_native_bf16
from mal.engine.run_lock import is_primary_process
from mal.engine.status import StatusFile
from mal.errors import SpecError
from mal.redaction import redact_text
from mal.spec.schema import ExperimentSpec

MONITOR = "val/mIoU"

# Lightning's advice for cases that are deliberate here, printed in every normal run otherwise (issue #20):
# small datasets have fewer steps per epoch than the logging interval (epoch metrics are logged regardless),
# and `srun` on the PATH of a cluster's login node is no sign of a run that meant to use it (mal follows the
# launcher's layout itself: launcher_layout).
for _pattern in (r".*smaller than the logging interval.*", r".*The `srun` command is available on your system.*"):
    warnings.filterwarnings("ignore", message=_pattern)
# Lightning's INFO lines ("GPU available: ...", "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [0]", "Using bf16
# Automatic Mixed Precision") describe what `mal train` prints in its own first line; warnings still show.
for _logger in ("lightning.pytorch", "lightning.fabric"):
    logging.getLogger(_logger).setLevel(logging.WARNING)


def epoch_description(current_epoch: int, max_epochs: int | None) -> str:
    """The training bar's label for Lightning's zero-based `current_epoch`: "Epoch 1/10" during the first of ten
    epochs, the numbers of the checkpoint file (mal_model_epoch_001.pth) and status.json (epoch 1) it ends with."""
    text = f"Epoch {current_epoch + 1}"
    return f"{text}/{max_epochs}" if max_epochs is not None and max_epochs > 0 else text


class EpochProgressBar(RichProgressBar):
    """Lightning's rich bar, counting epochs from 1 to num_epochs (its own shows "Epoch 0/9")."""

    def _get_train_description(self, current_epoch: int) -> str:
        description = epoch_description(current_epoch, self.trainer.max_epochs)
        # Padded as Lightning pads it, so the bar does not jump between the epoch and the "Validation" label.
        return f"{description:{len(self.validation_description)}}"


class LastEpochAlwaysCounts(Callback):
    """Validate after the final epoch even when validation_interval does not divide num_epochs (CheckpointFiles
    saves the last epoch by itself)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        last = trainer.max_epochs is not None and trainer.current_epoch == trainer.max_epochs - 1
        if last and trainer.check_val_every_n_epoch is not None:
            trainer.check_val_every_n_epoch = 1


class StatusCallback(Callback):
    """Writes the job contract's status.json events: STARTED, one RUNNING per epoch with kpi, SUCCESS/FAILURE."""

    def __init__(self, status: StatusFile, checkpoints: CheckpointFiles) -> None:
        self.status = status
        self.checkpoints = checkpoints
        self.validated = False
        self.stopped_by: int | None = None  # SIGINT / SIGTERM when a signal stopped training

    def _kpi(self, trainer: L.Trainer) -> dict[str, float]:
        """This epoch's metrics; validation values only when validation ran in this epoch (never stale ones)."""
        kpi = {}
        for key, value in trainer.callback_metrics.items():
            if key.endswith("_step") or not key.startswith(("val/", "train/")):
                continue
            if key.startswith("val/") and not self.validated:
                continue
            kpi[key.removesuffix("_epoch")] = float(value)
        return kpi

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated = False

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.validated = not trainer.sanity_checking

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            resumed = trainer.current_epoch > 0
            self.status.write("STARTED", epoch=trainer.current_epoch,
                              message="resumed training" if resumed else "training started")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        # The epoch's files first (on every process: the save has a barrier), so the event that reports the
        # epoch never names a checkpoint still being written. Lightning calls checkpoint callbacks last.
        self.checkpoints.save_epoch(trainer)
        if not trainer.is_global_zero:
            return
        extra: dict[str, Any] = {"global_step": trainer.global_step}
        if self.checkpoints.best_model_path:
            extra["best_checkpoint"] = self.checkpoints.best_model_path
            extra["best_metric"] = self.checkpoints.best_model_score
        self.status.write("RUNNING", epoch=trainer.current_epoch + 1, kpi=self._kpi(trainer),
                          message=f"epoch {trainer.current_epoch + 1} done", **extra)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException):
            self.stopped_by = signal.SIGTERM
        elif isinstance(exception, KeyboardInterrupt):
            self.stopped_by = getattr(exception, "signum", signal.SIGINT)
        if not trainer.is_global_zero:
            return
        if self.stopped_by is not None:
            how = "interrupted (Ctrl-C)" if self.stopped_by == signal.SIGINT else "stopped by SIGTERM"
            message = f"{how}; resume with train.resume_training_checkpoint_path=auto"
        else:
            # An fsspec or HTTP error may quote the data URL it failed on, password included.
            message = redact_text(f"{type(exception).__name__}: {exception}".splitlines()[0])
        # On a full disk this event may not fit either; the exception itself still reaches the CLI, named there.
        with contextlib.suppress(OSError):
            self.status.write("FAILURE", epoch=trainer.current_epoch, kpi=self._kpi(trainer), message=message)


class TensorBoardFiles(TensorBoardLogger):
    """TensorBoard logging whose write errors name the event file: the writer thread's OSError names none, and
    Lightning's log_metrics re-raises it as "you tried to log ... which is currently not supported"."""

    def _named(self, exc: BaseException) -> BaseException:
        cause = exc if isinstance(exc, OSError) else exc.__cause__
        if not isinstance(cause, OSError) or cause.filename:
            return exc
        events = sorted(Path(self.log_dir).glob("events.out.tfevents.*"), key=lambda path: path.stat().st_mtime)
        target = events[-1] if events else Path(self.log_dir)
        return OSError(cause.errno, cause.strerror or str(cause), str(target))

    @property
    def experiment(self) -> Any:
        try:
            return super().experiment
        except OSError as exc:  # the writer's first flush happens when it is made
            raise self._named(exc) from None

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        try:
            super().log_metrics(metrics, step)
        except (OSError, ValueError) as exc:
            named = self._named(exc)
            if named is exc:
                raise
            raise named from None

    def log_hyperparams(self, params: Any, metrics: Any = None, step: int | None = None) -> None:
        try:
            super().log_hyperparams(params, metrics, step)
        except OSError as exc:
            raise self._named(exc) from None

    def save(self) -> None:
        try:
            super().save()
        except OSError as exc:
            raise self._named(exc) from None

    def finalize(self, status: str) -> None:
        try:
            super().finalize(status)
        except OSError as exc:
            if status == "success":
                raise self._named(exc) from None
            # A run that already failed: the first error is the one to report, not the log's flush after it.


_LIGHTNING_PRECISION = {"fp32": "32-true", "bf16-mixed": "bf16-mixed", "fp16-mixed": "16-mixed"}


def training_precision(requested: str, use_amp: bool, *, on_gpu: bool) -> str:
    """Lightning's precision name for train.precision (auto follows train.use_amp on a GPU, fp32 on the CPU)."""
    if requested == "auto":
        if not on_gpu or not use_amp:
            return "32-true"
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    if requested == "fp16-mixed" and not on_gpu:
        raise SpecError("train.precision = fp16-mixed needs a GPU; on the CPU use bf16-mixed or fp32.")
    if requested == "bf16-mixed" and on_gpu and not torch.cuda.is_bf16_supported():
        raise SpecError("train.precision = bf16-mixed: this GPU has no bf16; use fp16-mixed or fp32.")
    return _LIGHTNING_PRECISION[requested]


def resolve_devices(spec: ExperimentSpec) -> dict[str, Any]:
    """accelerator/devices/num_nodes/precision/strategy for the Trainer, from train.* and the machine."""
    train = spec.train
    if torch.cuda.is_available():
        accelerator = "gpu"
        if len(train.gpu_ids) > 1:
            devices: Any = list(train.gpu_ids)
        elif train.num_gpus > 1:
            devices = train.num_gpus
        else:
            devices = list(train.gpu_ids)
            if devices[0] >= torch.cuda.device_count():
                raise SpecError(f"train.gpu_ids = {train.gpu_ids}: this machine has {torch.cuda.device_count()} "
                                "GPU(s); pick ids below that.")
        precision = training_precision(train.precision, train.use_amp, on_gpu=True)
        # TF32 tensor cores for the fp32 matrix products that remain (those autocast leaves in fp32, and all of
        # them in fp32 training): fp32 range with a 10-bit mantissa, on Ampere and later GPUs.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        # No GPU: num_gpus > 1 runs that many CPU processes with DDP over gloo (how the cluster path is tested).
        accelerator, devices = "cpu", train.num_gpus
        precision = training_precision(train.precision, train.use_amp, on_gpu=False)
        if precision == "bf16-mixed" and not cpu_has_native_bf16() and is_primary_process():
            print("mal train: train.precision = bf16-mixed: this CPU has no native bf16 (AVX512-BF16 or AMX), so it "
                  "is emulated and likely slower than fp32")
    num_nodes = train.num_nodes
    launched = launcher_layout()
    if launched is not None:
        # torchrun / srun / a scheduler started the processes: follow its layout, whatever the spec says.
        per_node, num_nodes = launched
        devices = per_node if accelerator == "cpu" or not isinstance(devices, list) else devices[:per_node]
        if isinstance(devices, list) and len(devices) < per_node:
            devices = per_node
    per_node = len(devices) if isinstance(devices, list) else int(devices)
    world_size = per_node * num_nodes
    strategy: Any = "auto"
    if world_size > 1:
        from lightning.pytorch.strategies import DDPStrategy

        strategy = DDPStrategy(process_group_backend="gloo" if accelerator == "cpu" else None)
    return {"accelerator": accelerator, "devices": devices, "num_nodes": num_nodes, "precision": precision,
            "strategy": strategy, "world_size": world_size}


def launcher_layout(env: dict[str, str] | None = None) -> tuple[int, int] | None:
    """(processes per node, nodes) when an external launcher started this process, else None.

    torchrun sets WORLD_SIZE and LOCAL_WORLD_SIZE; Slurm's srun sets SLURM_NTASKS and SLURM_NTASKS_PER_NODE (or
    SLURM_TASKS_PER_NODE). A hand-made launch must set LOCAL_WORLD_SIZE next to WORLD_SIZE, NODE_RANK,
    LOCAL_RANK, MASTER_ADDR and MASTER_PORT; without it the spec's num_gpus and num_nodes decide.
    """
    env = dict(os.environ) if env is None else env
    world = env.get("WORLD_SIZE")
    if world and env.get("LOCAL_WORLD_SIZE"):
        per_node = int(env["LOCAL_WORLD_SIZE"])
        return per_node, max(int(world) // per_node, 1)
    # One Slurm task (a plain sbatch script) leaves the process layout to the spec: Lightning starts the devices.
    if int(env.get("SLURM_NTASKS", "1") or 1) > 1 and env.get("SLURM_JOB_ID") and env.get("SLURM_STEP_ID"):
        per_node_text = env.get("SLURM_NTASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE", "1")
        per_node = int(per_node_text.split("(")[0].split(",")[0])
        return per_node, max(int(env["SLURM_NTASKS"]) // per_node, 1)
    return None


def build_trainer(spec: ExperimentSpec, out_dir: Path, status: StatusFile, *, has_validation: bool,
                  extra_callbacks: list[Callback] | None = None) -> tuple[L.Trainer, int]:
    placement = resolve_devices(spec)
    world_size = placement.pop("world_size")
    checkpoints = CheckpointFiles(out_dir, every_n_epochs=spec.train.checkpoint_interval,
                                  keep_last=spec.train.keep_last_checkpoints,
                                  monitor=MONITOR if has_validation else None)
    callbacks: list[Callback] = [checkpoints, LastEpochAlwaysCounts(), StatusCallback(status, checkpoints)]
    interactive = sys.stderr.isatty() and not os.environ.get("MAL_NO_PROGRESS")
    if interactive:
        callbacks.append(EpochProgressBar())
    callbacks.extend(extra_callbacks or [])
    loggers: list[Any] = [TensorBoardFiles(str(out_dir), name="tensorboard", version="")]
    if spec.wandb.enable:
        loggers.append(_wandb_logger(spec, out_dir))
    trainer = L.Trainer(
        **placement,
        max_epochs=spec.train.num_epochs,
        accumulate_grad_batches=spec.train.accum_grad_batches,
        gradient_clip_val=spec.train.clip_grad_norm or None,
        check_val_every_n_epoch=spec.train.validation_interval,
        limit_val_batches=1.0 if has_validation else 0,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(out_dir),
        enable_progress_bar=interactive,
        # Lightning's parameter table (with "Total FLOPs: 0" on CPU) is for debugging; MAL_MODEL_SUMMARY=1 asks.
        enable_model_summary=bool(os.environ.get("MAL_MODEL_SUMMARY")),
        log_every_n_steps=5,
        deterministic=False,
        use_distributed_sampler=False,  # the box samplers shard themselves (rank, world size)
    )
    return trainer, world_size


def _wandb_logger(spec: ExperimentSpec, out_dir: Path) -> Any:
    try:
        from lightning.pytorch.loggers import WandbLogger
    except ImportError:  # pragma: no cover - lightning always ships it
        raise SpecError("wandb.enable = true needs the wandb package: pip install wandb.") from None
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise SpecError("wandb.enable = true needs the wandb package: pip install wandb (or set "
                        "wandb.enable=false).") from None
    if spec.wandb.mode == "offline":
        os.environ.setdefault("WANDB_MODE", "offline")
    return WandbLogger(project=spec.wandb.project, entity=spec.wandb.entity, name=spec.wandb.name,
                       tags=spec.wandb.tags, save_dir=str(out_dir), offline=spec.wandb.mode == "offline",
                       mode=spec.wandb.mode)
