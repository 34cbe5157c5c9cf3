"""`mal pretrain`: self-supervised pretraining of the ViT on the dataset's own images, no outside weights: a masked
autoencoder (`pretrain.method: mae`) or self-distillation between augmented views (`dino`).

The crops are the views `mal train` will see (each training box with train.margin_rate) plus random crops of
box-like sizes anywhere in the images, so the backbone also learns the background. The result is a checkpoint
`{"model": encoder state dict with timm/MAE key names, ...}` that `train.pretrained_model_path` reads; status.json
events follow the job contract (STARTED, one RUNNING per epoch with kpi pretrain/loss, SUCCESS or FAILURE).
"""

from __future__ import annotations

import io
import math
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset

from mal.data.coco_boxes import CocoBoxes
from mal.data.crops import crop_and_resize, expand_boxes
from mal.data.images import read_image
from mal.engine.common import pick_device
from mal.engine.datamodule import load_train_coco
from mal.engine.run_lock import hold_run_lock
from mal.engine.schedule import lr_factor
from mal.engine.status import StatusFile
from mal.errors import DataError, SpecError
from mal.fileio import atomic_write_bytes
from mal.model.backbone import ARCHS, build_backbone
from mal.model.dino import SelfDistillation, teacher_momentum
from mal.model.mae import MaskedAutoencoder
from mal.spec.schema import ExperimentSpec

CHECKPOINT_NAME = "mae_backbone.pth"


class CropPlan:
    """The crops of one epoch: image ids and crop boxes (xyxy), grouped by image, cut into batches."""

    def __init__(self, image_ids: np.ndarray, crop_boxes: np.ndarray, batch_size: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        groups = [np.flatnonzero(image_ids == i) for i in np.unique(image_ids)]
        # Crops of one image stay together so a batch decodes few images; images and crops are shuffled.
        order = np.concatenate([rng.permutation(groups[g]) for g in rng.permutation(len(groups))])
        self.image_ids = image_ids[order]
        self.crop_boxes = crop_boxes[order]
        self.batches = [np.arange(s, min(s + batch_size, len(order))) for s in range(0, len(order), batch_size)]


def epoch_plan(coco: CocoBoxes, spec: ExperimentSpec, epoch: int) -> CropPlan:
    """Box crops (train.margin_rate around every trainable box) plus random crops of box-like sizes."""
    pretrain = spec.pretrain
    seed = int(np.random.SeedSequence([spec.train.seed, epoch]).generate_state(1)[0])
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    trainable = np.flatnonzero(coco.size_filter(spec.dataset.min_obj_size, spec.dataset.max_obj_size) & ~coco.iscrowd)
    image_ids: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    if pretrain.use_boxes and len(trainable):
        expanded = expand_boxes(
            torch.from_numpy(coco.boxes_xyxy[trainable]).float(), spec.train.margin_rate, generator=generator
        )
        image_ids.append(coco.image_ids[trainable])
        boxes.append(expanded.numpy())
    if pretrain.random_crops_per_image:
        image_ids.append(np.repeat(np.asarray(sorted(coco.images), dtype=np.int64), pretrain.random_crops_per_image))
        boxes.append(_random_crops(coco, image_ids[-1], trainable, rng, spec.train.margin_rate))
    if not image_ids:
        raise DataError(
            f"{coco.ann_path}: no box has an area in (dataset.min_obj_size, dataset.max_obj_size] and "
            "pretrain.random_crops_per_image is 0, so there is nothing to pretrain on; raise "
            "pretrain.random_crops_per_image or lower dataset.min_obj_size."
        )
    return CropPlan(np.concatenate(image_ids), np.concatenate(boxes).astype(np.float32), pretrain.batch_size, seed)


def _random_crops(
    coco: CocoBoxes, image_ids: np.ndarray, trainable: np.ndarray, rng: np.random.Generator, margin_rate: list[float]
) -> np.ndarray:
    """One crop per entry of image_ids: the size of a random training box (grown as in training), placed anywhere."""
    sizes_from = trainable if len(trainable) else np.arange(len(coco))
    hw = np.asarray([(coco.images[i].height, coco.images[i].width) for i in image_ids.tolist()], dtype=np.float64)
    if len(sizes_from):
        boxes = coco.boxes_xyxy[rng.choice(sizes_from, size=len(image_ids))]
        sizes = (boxes[:, 2:] - boxes[:, :2]) * (1 + rng.uniform(*margin_rate, size=(len(image_ids), 1)) / 2)
    else:
        sizes = hw[:, ::-1] / 2
    sizes = np.clip(sizes, 1.0, hw[:, ::-1])
    corners = rng.uniform(0.0, 1.0, size=sizes.shape) * (hw[:, ::-1] - sizes)
    return np.concatenate([corners, corners + sizes], axis=1)


class PretrainCrops(Dataset):
    """Item b = batch b of a CropPlan as a B x 3 x S x S tensor in [0, 1], each crop flipped with p = 0.5."""

    def __init__(self, coco: CocoBoxes, plan: CropPlan, crop_size: int, seed: int) -> None:
        self.coco, self.plan, self.crop_size, self.seed = coco, plan, crop_size, seed

    def __len__(self) -> int:
        return len(self.plan.batches)

    def __getitem__(self, index: int) -> torch.Tensor:
        rows = self.plan.batches[index]
        image_ids = self.plan.image_ids[rows]
        crops = torch.empty((len(rows), 3, self.crop_size, self.crop_size))
        for image_id in dict.fromkeys(image_ids.tolist()):
            where = np.flatnonzero(image_ids == image_id)
            image = read_image(self.coco.images[image_id].path)
            crops[torch.from_numpy(where)] = crop_and_resize(
                image, torch.from_numpy(self.plan.crop_boxes[rows[where]]), self.crop_size
            )
        flip = torch.rand(len(rows), generator=torch.Generator().manual_seed(self.seed + index)) < 0.5
        return torch.where(flip[:, None, None, None], crops.flip(-1), crops)


def _checkpoint_path(spec: ExperimentSpec) -> Path:
    if spec.pretrain.checkpoint_path:
        return Path(spec.pretrain.checkpoint_path)
    return Path(spec.results_dir) / "pretrain" / CHECKPOINT_NAME


def _crop_size(spec: ExperimentSpec) -> int:
    crop = spec.pretrain.crop_size or spec.dataset.crop_size
    patch = ARCHS[spec.model.arch].patch_size
    if crop % patch:
        key = "pretrain.crop_size" if spec.pretrain.crop_size else "dataset.crop_size"
        raise SpecError(
            f"{key} = {crop} is not a multiple of {patch}, the patch size of model.arch = "
            f"{spec.model.arch}; use e.g. {max(patch, crop // patch * patch)}."
        )
    return crop


def build_pretrainer(spec: ExperimentSpec, crop_size: int) -> MaskedAutoencoder | SelfDistillation:
    """The module `pretrain.method` names, around a fresh backbone for `crop_size` crops."""
    pretrain = spec.pretrain
    if pretrain.method == "dino":
        return SelfDistillation(
            build_backbone(spec.model.arch, crop_size),
            prototypes=pretrain.dino_prototypes,
            teacher_temperature=pretrain.dino_teacher_temperature,
        )
    return build_mae(spec, crop_size)


def build_mae(spec: ExperimentSpec, crop_size: int) -> MaskedAutoencoder:
    pretrain = spec.pretrain
    return MaskedAutoencoder(
        build_backbone(spec.model.arch, crop_size),
        mask_ratio=pretrain.mask_ratio,
        decoder_dim=pretrain.decoder_embed_dim,
        decoder_depth=pretrain.decoder_depth,
        decoder_heads=pretrain.decoder_num_heads,
        norm_pix_loss=pretrain.norm_pix_loss,
    )


def _optimizer(model: MaskedAutoencoder | SelfDistillation, lr: float, wd: float) -> torch.optim.AdamW:
    # As in MAE and DINO: no weight decay on biases, norms, position embeddings and tokens (tensors below 2-D);
    # the DINO teacher is not trained (it follows the student), so it has no requires_grad parameter here.
    mask_token = getattr(model, "mask_token", None)
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2 and p is not mask_token]
    decay_ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in decay_ids]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": wd}, {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.95)
    )


def save_checkpoint(
    path: Path, model: MaskedAutoencoder | SelfDistillation, spec: ExperimentSpec, crop_size: int, **info: Any
) -> None:
    payload = {"model": model.encoder_state_dict(), "arch": spec.model.arch, "crop_size": crop_size,
               "method": spec.pretrain.method, **info}  # fmt: skip
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def run(spec: ExperimentSpec) -> int:
    # Two pretrainings into one results_dir would interleave their status.json events and race on the weights.
    with hold_run_lock(Path(spec.results_dir) / "pretrain", "pretrain"):
        return _pretrain(spec)


def _pretrain(spec: ExperimentSpec) -> int:
    crop_size = _crop_size(spec)
    coco = load_train_coco(spec)
    if spec.train.num_threads:
        torch.set_num_threads(spec.train.num_threads)
    torch.manual_seed(spec.train.seed)
    pretrain = spec.pretrain
    out_path = _checkpoint_path(spec)
    status = StatusFile(Path(spec.results_dir) / "pretrain" / "status.json", max_epoch=pretrain.num_epochs)
    device = pick_device()
    model = build_pretrainer(spec, crop_size).to(device).train()
    steps_per_epoch = len(epoch_plan(coco, spec, 0).batches)
    total_steps = pretrain.num_epochs * steps_per_epoch
    if pretrain.max_steps:
        total_steps = min(total_steps, pretrain.max_steps)
    optimizer = _optimizer(model, pretrain.lr, pretrain.wd)
    warmup = round(pretrain.warmup_epochs * steps_per_epoch)
    scheduler = LambdaLR(
        optimizer,
        partial(
            lr_factor, total_steps=total_steps, warmup_steps=min(warmup, total_steps), min_factor=0.0, num_wave=1.0
        ),
    )
    amp = device.type == "cuda" and spec.train.use_amp
    what = f"mask ratio {pretrain.mask_ratio}" if pretrain.method == "mae" else (
        f"two views per crop, {pretrain.dino_prototypes} prototypes")  # fmt: skip
    print(
        f"mal pretrain: {pretrain.method.upper()} on {len(coco.images)} images ({steps_per_epoch} batches of "
        f"{pretrain.batch_size} crops per epoch, {total_steps} steps), {spec.model.arch} @ {crop_size}px, {what}",
        flush=True,
    )
    status.write("STARTED", message="pretraining started", total_steps=total_steps)
    step, epoch, started = 0, 0, time.perf_counter()
    try:
        while step < total_steps:
            plan = epoch_plan(coco, spec, epoch)
            loader = DataLoader(
                PretrainCrops(coco, plan, crop_size, seed=spec.train.seed * 100003 + epoch),
                batch_size=None,
                shuffle=False,
                num_workers=spec.dataset.num_workers_per_gpu,
            )
            losses = []
            for crops in loader:
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=amp):
                    loss = model(crops.to(device, non_blocking=True))[0]
                if not torch.isfinite(loss):
                    raise FloatingPointError(
                        f"the {pretrain.method.upper()} loss became {loss.item()} at epoch {epoch}, step {step}; "
                        "lower pretrain.lr."
                    )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if isinstance(model, SelfDistillation):
                    model.update_teacher(teacher_momentum(step, total_steps))
                losses.append(float(loss.detach()))
                step += 1
                if step >= total_steps:
                    break
            epoch += 1
            mean_loss = float(np.mean(losses)) if losses else math.nan
            save_checkpoint(out_path, model, spec, crop_size, epoch=epoch, step=step, loss=mean_loss)
            status.write(
                "RUNNING",
                epoch=epoch,
                kpi={"pretrain/loss": mean_loss},
                message=f"epoch {epoch} done",
                global_step=step,
                checkpoint=str(out_path),
            )
            print(
                f"mal pretrain: epoch {epoch}, step {step}/{total_steps}, loss {mean_loss:.4f}, "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    except BaseException as exc:
        status.write("FAILURE", epoch=epoch, message=f"{type(exc).__name__}: {exc}".splitlines()[0])
        raise
    status.write(
        "SUCCESS",
        epoch=epoch,
        kpi={"pretrain/loss": mean_loss},
        message="pretraining finished",
        checkpoint=str(out_path),
        global_step=step,
    )
    print(f"mal pretrain: done; backbone weights in {out_path} (set train.pretrained_model_path to it)", flush=True)
    return 0
