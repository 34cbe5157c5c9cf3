"""The LightningModule: MAL's science (student, EMA teacher, losses, schedule, validation mIoU).

Devices, precision, DDP and checkpoints belong to the Trainer (`mal.engine.trainer`), not here.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR

from mal.box_likeness import BoxLikeness
from mal.box_likeness import measure as measure_box_likeness
from mal.engine.labeling import ground_truth, label_batch
from mal.engine.schedule import lr_factor
from mal.metrics import instance_ious
from mal.model.inference import InferenceNet
from mal.model.losses import LossConfig, mal_losses, mask_target_loss
from mal.model.mal import MeanTeacher, build_masknet
from mal.model.refine import CrfRefiner
from mal.redaction import redact_tree


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; training stops with where it happened."""


def build_student(config: dict[str, Any]) -> torch.nn.Module:
    model = config["model"]
    frozen = max(model["frozen_stages"]) if model["frozen_stages"] else -1
    return build_masknet(
        model["arch"],
        config["dataset"]["crop_size"],
        mask_head_num_convs=model["mask_head_num_convs"],
        mask_head_hidden_channel=model["mask_head_hidden_channel"],
        mask_head_out_channel=model["mask_head_out_channel"],
        mask_scale_ratio=model["mask_scale_ratio"],
        drop_path_rate=model["vit_dpr"],
        frozen_stages=frozen,
        grad_checkpointing=bool(model.get("grad_checkpointing", False)),  # absent from older checkpoints
    )


def loss_config(train: dict[str, Any]) -> LossConfig:
    return LossConfig(
        loss_mil_weight=train["loss_mil_weight"],
        loss_mil_step=train["loss_mil_step"],
        loss_crf_weight=train["loss_crf_weight"],
        loss_crf_step=train["loss_crf_step"],
        crf_kernel_size=train["crf_kernel_size"],
        crf_zeta=train["crf_zeta"],
        crf_num_iter=train["crf_num_iter"],
        crf_value_high_thres=train["crf_value_high_thres"],
        crf_value_low_thres=train["crf_value_low_thres"],
        crf_size_ratio=train["crf_size_ratio"],
    )


def inference_net(mean_teacher: MeanTeacher, options: dict[str, Any]) -> InferenceNet:
    """The network as `evaluate`/`inference` options (TAO's use_teacher_test, ...) ask for it."""
    return InferenceNet(
        mean_teacher.student,
        mean_teacher.teacher,
        use_teacher=options.get("use_teacher_test", True),
        use_mixed=options.get("use_mixed_model_test", False),
        use_flip=options.get("use_flip_test", False),
    )


def test_time_refiner(options: dict[str, Any]) -> CrfRefiner | None:
    """The test-time CRF refinement the `evaluate`/`inference` options ask for; None when crf_refine_iter is 0."""
    if not options.get("crf_refine_iter"):
        return None
    return CrfRefiner(
        num_iter=options["crf_refine_iter"],
        size_ratio=options["crf_refine_size_ratio"],
        kernel_size=options["crf_refine_kernel_size"],
        zeta=options["crf_refine_zeta"],
    )


class MALModule(L.LightningModule):
    """Student + EMA teacher trained with the MIL projection loss and the mean-field CRF loss.

    `config` is the spec as a plain dict (`ExperimentSpec.model_dump(mode="json")`), so checkpoints hold only
    plain values and load with `torch.load(weights_only=True)`; the copy saved as hyperparameters has its
    secrets hidden (`mal.redaction`), training uses the original.
    """

    def __init__(self, config: dict[str, Any], world_size: int = 1) -> None:
        super().__init__()
        # hparams go to hparams.yaml, the TensorBoard/W&B loggers and every checkpoint: a data URL's password must
        # not. Readers of a checkpoint's config use only model.* and dataset.crop_size, which hold no secret.
        self.save_hyperparameters({"config": redact_tree(config), "world_size": world_size})
        self.config = config
        self.world_size = world_size
        self.mean_teacher = MeanTeacher(build_student(config))
        self.loss_cfg = loss_config(config["train"])
        self._last_ema_step = -1
        self._val: dict[str, list[np.ndarray]] = {}

    # ----------------------------------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        train = self.config["train"]
        if train.get("channels_last"):
            self.mean_teacher.to(memory_format=torch.channels_last)
        if train.get("compile"):
            # In place (nn.Module.compile): parameter names, and so checkpoints, stay those of the plain modules.
            self.mean_teacher.student.compile()
            self.mean_teacher.teacher.compile()

    def _layout(self, crops: torch.Tensor) -> torch.Tensor:
        if self.config["train"].get("channels_last"):
            return crops.contiguous(memory_format=torch.channels_last)
        return crops

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        student_logits = self.mean_teacher.student(self._layout(batch["image_aug"]))
        with torch.no_grad():
            teacher_logits = self.mean_teacher.teacher(self._layout(batch["image"]))
        out = mal_losses(student_logits, teacher_logits, batch["image"], batch["box_mask"], self.global_step,
                         self.loss_cfg)
        names = ["loss", "loss_mil", "loss_crf"]
        mask_weight = float(self.config["train"].get("loss_mask_weight", 0.0))
        if mask_weight > 0 and "mask_target" in batch:
            out["loss_mask"] = mask_weight * mask_target_loss(student_logits, batch["mask_target"],
                                                              batch["mask_target_used"])
            out["loss"] = out["loss"] + out["loss_mask"]
            names.append("loss_mask")
        for name in names:
            value = out[name]
            if not torch.isfinite(value):
                raise NonFiniteLossError(
                    f"{name} became {value.item()} at epoch {self.current_epoch}, step {self.global_step}; "
                    "lower train.lr, check the data, or set train.clip_grad_norm."
                )
        batch_size = batch["image"].shape[0]
        self.log("train/loss", out["loss"], prog_bar=True, batch_size=batch_size, sync_dist=False)
        self.log("train/loss_mil", out["loss_mil"], batch_size=batch_size)
        self.log("train/loss_crf", out["loss_crf"], batch_size=batch_size)
        if "loss_mask" in out:
            self.log("train/loss_mask", out["loss_mask"], batch_size=batch_size)
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], batch_size=batch_size)
        return out["loss"]

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # The teacher follows the student after every optimizer step (not every micro-batch).
        if self.global_step != self._last_ema_step:
            self._last_ema_step = self.global_step
            self.mean_teacher.update_teacher(self.config["model"]["teacher_momentum"])

    def configure_optimizers(self) -> Any:
        train = self.config["train"]
        # TAO scales the base lr by devices x batch size.
        lr = train["lr"] * self.world_size * train["batch_size"]
        betas = tuple(train["optim_betas"])
        params = [p for p in self.mean_teacher.student.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, betas=betas, eps=train["optim_eps"], weight_decay=train["wd"])
        total_steps = max(int(self.trainer.estimated_stepping_batches), 1)
        steps_per_epoch = max(math.ceil(total_steps / max(train["num_epochs"], 1)), 1)
        warmup_steps = round(train["warmup_epochs"] * steps_per_epoch)
        min_lr = train["min_lr"] if train["min_lr"] > 0 else train["min_lr_rate"] * lr
        schedule = partial(lr_factor, total_steps=total_steps, warmup_steps=warmup_steps,
                           min_factor=min(min_lr / lr, 1.0), num_wave=train["num_wave"])
        scheduler = LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # --------------------------------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val = {"iou": [], "category": [], "box_like": [0, 0]}

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        coco = self.trainer.datamodule.val_coco  # type: ignore[attr-defined]
        options = self.config["evaluate"]
        net = inference_net(self.mean_teacher, options)
        labels = label_batch(net, batch, self.config["train"]["mask_thres"], self.device, test_time_refiner(options))
        gt_rles, _ = ground_truth(coco, [label.ann_id for label in labels])
        self._val["iou"].append(instance_ious([label.segmentation for label in labels], gt_rles))
        self._val["category"].append(np.asarray([label.category_id for label in labels], dtype=np.int64))
        # How many of these masks are just their filled box (the untrained model's answer), from the same masks.
        rows = [coco.row_of_ann[label.ann_id] for label in labels]
        likeness = measure_box_likeness([label.segmentation for label in labels], coco.boxes_xyxy[rows])
        self._val["box_like"][0] += likeness.box_like
        self._val["box_like"][1] += likeness.measured

    def on_validation_epoch_end(self) -> None:
        coco = self.trainer.datamodule.val_coco  # type: ignore[attr-defined]
        # Category ids may be any integers: index them by their rank among the file's ids, so every process
        # reduces tensors of the same length.
        category_ids = np.asarray(sorted(coco.categories), dtype=np.int64)
        ious = np.concatenate(self._val["iou"]) if self._val.get("iou") else np.zeros(0)
        categories = np.concatenate(self._val["category"]) if self._val.get("category") else np.zeros(0, np.int64)
        index = np.searchsorted(category_ids, categories)
        sums = torch.from_numpy(np.bincount(index, weights=ious, minlength=len(category_ids)).astype(np.float64))
        counts = torch.from_numpy(np.bincount(index, minlength=len(category_ids)).astype(np.float64))
        box_like = torch.tensor(self._val.get("box_like", [0, 0]), dtype=torch.float64)
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums.to(self.device), reduce_op="sum").cpu()
            counts = self.trainer.strategy.reduce(counts.to(self.device), reduce_op="sum").cpu()
            box_like = self.trainer.strategy.reduce(box_like.to(self.device), reduce_op="sum").cpu()
        self.box_likeness = BoxLikeness(box_like=int(box_like[0]), measured=int(box_like[1]))
        present = counts > 0
        if not bool(present.any()):
            return
        miou = float((sums[present] / counts[present]).mean())
        self.log("val/mIoU", miou, prog_bar=True, sync_dist=False)
        self.log("val/instances", float(counts.sum()), sync_dist=False)
        if self.box_likeness.share is not None:
            self.log("val/box_like_share", self.box_likeness.share, sync_dist=False)
