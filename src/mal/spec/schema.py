"""The spec models: the single source of truth for every key, default, bound and description.

Key names and defaults follow NVIDIA TAO's MAL experiment spec so that TAO users can bring their files.
JSON schemas, YAML templates and docs/SPEC.md are generated from these classes (see `mal.spec.export`).
This module holds only the models, one class per spec section, and the constants that describe them (bounds,
section docs, actions); it stays one module because the sections are read together as one spec. The field
building blocks are in `mal.spec.fields`, the path checks in `mal.spec.paths`.

Extra metadata for the skill layout lives in `json_schema_extra` of a field:
- `automl_enabled`: the key may be tuned by `mal automl` (set with `mal.spec.fields.automl`).
- `automl_range`: the default search range (minimum, maximum) written to the schema; bounds in
  `Field(gt=..., le=...)` are what a spec must satisfy, the search range is what AutoML explores.
- `math_cond`, `option_weights`, `depends_on`, `log_scale`: the TAO leaf annotations.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mal.spec.fields import OddKernel, automl
from mal.spec.paths import expand_home, output_file_problem

ARCHS = ("vit-tiny/16", "vit-small/16", "vit-mae-base/16", "vit-mae-large/16", "vit-mae-huge/14")
ARCH_DEPTHS = {
    "vit-tiny/16": 12,
    "vit-small/16": 12,
    "vit-mae-base/16": 12,
    "vit-mae-large/16": 24,
    "vit-mae-huge/14": 32,
}
"""Transformer blocks of each backbone (mal.model.backbone.ARCHS, kept here so that loading a spec needs no torch)."""
ARCH_PATCH_SIZES = {arch: int(arch.rsplit("/", 1)[1]) for arch in ARCHS}
"""Patch side of each backbone, from its name (vit-mae-huge/14: 14 px); dataset.crop_size must be a multiple."""
PRETRAINED_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors")
"""Weight files train.pretrained_model_path reads (mal.weights); any other value is a timm model name."""
_TIMM_NAME = re.compile(r"^(?:timm/)?[A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?$")


def is_timm_name(value: str) -> bool:
    """Whether a train.pretrained_model_path value reads as a timm model name rather than a file path (no
    weight-file suffix, no folder): the one rule for the training and AutoML's preflight alike."""
    return Path(value).suffix.lower() not in PRETRAINED_SUFFIXES and bool(_TIMM_NAME.match(value))

MAX_SEED = 2**32 - 1
"""numpy's and Lightning's seeds are unsigned 32-bit numbers."""

MAX_EPOCHS = 100000


class Section(BaseModel):
    """Base of every spec section: unknown keys are errors, assignments are validated, and no number is NaN or
    infinite (none has a meaning here, and each would crash or poison training long after the spec was read)."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, use_attribute_docstrings=True, allow_inf_nan=False
    )


class DatasetConfig(Section):
    type: Literal["coco"] = "coco"
    """Annotation format. Only COCO JSON is read."""
    train_ann_path: str | None = None
    """COCO JSON with the training boxes: a file, an archive member folder, or a URL (s3://, gs://, https://)."""
    train_img_dir: str | None = None
    """Folder, archive (.tar, .tar.gz, .tgz, .zip) or URL holding the training images."""
    val_ann_path: str | None = None
    """COCO JSON for validation; ground-truth masks in it give val/mIoU. Defaults to the training file."""
    val_img_dir: str | None = None
    """Images for validation. Defaults to train_img_dir."""
    crop_size: int = Field(512, ge=32, le=2048)
    """Side of the square crop each box is resized to; a multiple of the backbone's patch size."""
    min_obj_size: float = Field(2048.0, ge=0)
    """Boxes with a smaller area (px^2) are not used for training; labeling uses every box."""
    max_obj_size: float = Field(1e10, gt=0)
    """Boxes with a larger area (px^2) are not used for training."""
    load_mask: bool = True
    """Read ground-truth masks (polygons or RLE) when present, for evaluation only; training never uses them."""
    num_workers_per_gpu: int = Field(2, ge=0, le=64)
    """DataLoader worker processes per device."""
    cache_dir: str | None = None
    """Where archives and remote data are staged (default: $MAL_CACHE_DIR or ~/.cache/mal)."""

    _home_cache = field_validator("cache_dir")(expand_home)

    @model_validator(mode="after")
    def _max_above_min(self) -> DatasetConfig:
        if self.max_obj_size <= self.min_obj_size:
            raise ValueError(
                f"dataset.max_obj_size ({self.max_obj_size}) must be larger than dataset.min_obj_size "
                f"({self.min_obj_size})"
            )
        return self


class ModelConfig(Section):
    arch: Literal[ARCHS] = "vit-mae-base/16"  # type: ignore[valid-type]
    """Backbone: a ViT from timm. vit-tiny/16 and vit-small/16 run on a laptop CPU."""
    frozen_stages: list[Annotated[int, Field(ge=-1, le=max(ARCH_DEPTHS.values()))]] = Field(
        default_factory=lambda: [-1]
    )
    """Backbone stages kept frozen: -1 none, 0 the patch embedding, k the embedding and the first k blocks (k at
    most the depth of model.arch: 12 blocks, 24 for vit-mae-large/16, 32 for vit-mae-huge/14)."""
    mask_head_num_convs: int = Field(4, ge=1, le=8)
    """3x3 convolutions in the mask head."""
    mask_head_hidden_channel: int = Field(256, ge=8, le=1024)
    """Channels of the mask head's hidden convolutions."""
    mask_head_out_channel: int = Field(256, ge=8, le=1024)
    """Channels of the pixel features matched against the instance vector."""
    mask_scale_ratio: float = Field(2.0, ge=1.0, le=4.0)
    """Up-sampling factor before the mask head's last convolution."""
    teacher_momentum: float = Field(0.996, ge=0.0, le=1.0, json_schema_extra=automl(0.99, 0.9999))
    """EMA momentum m of the teacher: theta_t <- m theta_t + (1 - m) theta_s after every optimizer step."""
    not_adjust_scale: bool = False
    """TAO compatibility: kept for spec files that set it; the crop is always resized to crop_size."""
    vit_dpr: float = Field(0.2, ge=0.0, lt=1.0, json_schema_extra=automl(0.0, 0.5))
    """Stochastic depth (drop-path) rate of the ViT."""
    grad_checkpointing: bool = False
    """Recompute the ViT blocks' activations in the backward pass instead of keeping them (activation
    checkpointing): much less training memory at large crops for about a third more compute. Training only;
    labeling and export are unchanged."""

    @model_validator(mode="after")
    def _frozen_within_depth(self) -> ModelConfig:
        depth = ARCH_DEPTHS[self.arch]
        if self.frozen_stages and max(self.frozen_stages) > depth:
            raise ValueError(
                f"model.frozen_stages = {self.frozen_stages} goes beyond the {depth} blocks of model.arch = "
                f"{self.arch}; use -1 (none) to {depth} (every block)"
            )
        return self


class TrainConfig(Section):
    seed: int = Field(1234, ge=0, le=MAX_SEED)
    """Random seed for data order, augmentation and initialisation."""
    num_epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    """Training epochs."""
    boxes_per_epoch: int = Field(0, ge=0, le=10_000_000)
    """Training boxes per epoch (0: every training box once). Fewer than the file has takes a fresh random part of
    them each epoch; more repeats them in fresh shuffles. It makes an epoch, and with it the warm-up, the loss ramps
    and the teacher's averaging, the same number of steps for a file of any size (cpu-natural stops after 416 boxes,
    docs/QUALITY.md)."""
    checkpoint_interval: int = Field(1, ge=1)
    """Save a checkpoint (results_dir/train/mal_model_epoch_NNN.pth, NNN counted from 1) every this many epochs, after
    the last, and after an epoch whose validation is a new best."""
    keep_last_checkpoints: int = Field(1, ge=0, le=MAX_EPOCHS)
    """Epoch checkpoints kept on disk: the newest this many, plus the best one (mal_model_best.pth is a hard link to
    its epoch file, never a second copy); older ones are deleted. 0 keeps every one. One vit-tiny/16 checkpoint is
    about 130 MB (student, EMA teacher and AdamW state, all needed to resume)."""
    validation_interval: int = Field(1, ge=1)
    """Validate every this many epochs (and always after the last)."""
    resume_training_checkpoint_path: str | None = None
    """Checkpoint to resume from, or `auto` for the latest in results_dir/train. It must have been trained with the
    same model.arch, model.frozen_stages, mask head keys and dataset.crop_size."""
    pretrained_model_path: str | None = None
    """Optional backbone weights: a file (an MAE checkpoint, a timm state dict, a .safetensors file, the output of
    mal pretrain) or a timm model name found in the local Hugging Face cache (vit_small_patch16_224.augreg_in21k);
    the file must fit model.arch (docs/WEIGHTS.md). Without it the backbone starts from random weights."""
    num_gpus: int = Field(1, ge=1, le=1024)
    """GPUs per node. On a machine without GPUs, more than 1 trains that many CPU processes with DDP over gloo
    (how the multi-process path is tested; on one machine it is rarely faster than 1)."""
    gpu_ids: list[Annotated[int, Field(ge=0, le=1023)]] = Field(default_factory=lambda: [0], min_length=1)
    """Which GPUs to use on this node; its length wins over num_gpus when longer than one."""
    num_nodes: int = Field(1, ge=1, le=1024)
    """Nodes for multi-node DDP (WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT from the environment)."""
    batch_size: int = Field(3, ge=1, le=4096, json_schema_extra=automl(1, 16, math_cond="> 0"))
    """Boxes (crops) per device per step."""
    accum_grad_batches: int = Field(1, ge=1, le=1024)
    """Accumulate gradients over this many steps before an optimizer step."""
    use_amp: bool = True
    """Mixed precision on GPU (bf16 where supported, else fp16) when train.precision is auto."""
    precision: Literal["auto", "fp32", "bf16-mixed", "fp16-mixed"] = "auto"
    """Training arithmetic; the weights, the optimizer and the losses stay fp32 in every mode. auto: on a GPU
    mixed precision as train.use_amp says, fp32 on the CPU. bf16-mixed: bfloat16 autocast for the networks, on a
    GPU or on the CPU (fast where the CPU has AVX512-BF16 or AMX, emulated and slow elsewhere). fp16-mixed: GPU
    only. An explicit value wins over use_amp."""
    channels_last: bool = False
    """Feed crops and keep convolution weights in channels-last memory layout (the patch embedding and the mask
    head are convolutions); measured effect in docs/BENCHMARKS.md."""
    compile: bool = False
    """Compile the student and the teacher with torch.compile (slow first steps while it compiles; on the CPU it
    needs a C++ compiler)."""
    clip_grad_norm: float = Field(0.0, ge=0.0)
    """Clip the gradient norm to this value; 0 disables clipping."""
    optim_type: Literal["adamw"] = "adamw"
    """Optimizer. AdamW as in the paper."""
    optim_momentum: float = Field(0.9, gt=0.0, lt=1.0)
    """TAO compatibility: AdamW's beta1 when optim_betas is not given."""
    optim_betas: list[Annotated[float, Field(ge=0.0, lt=1.0)]] = Field(
        default_factory=lambda: [0.9, 0.9], min_length=2, max_length=2
    )
    """AdamW betas (beta1, beta2), each in [0, 1)."""
    optim_eps: float = Field(1e-8, gt=0.0)
    """AdamW epsilon."""
    lr: float = Field(1e-6, gt=0.0, le=1.0, json_schema_extra=automl(1e-7, 1e-5, log=True))
    """Base learning rate, multiplied by (devices x batch size)."""
    wd: float = Field(5e-4, ge=0.0, le=1.0, json_schema_extra=automl(1e-5, 1e-2, log=True))
    """AdamW weight decay."""
    min_lr: float = Field(0.0, ge=0.0)
    """Floor of the cosine schedule; when 0 the floor is min_lr_rate x the scaled lr."""
    min_lr_rate: float = Field(0.2, ge=0.0, le=1.0, json_schema_extra=automl(0.0, 0.5))
    """Cosine schedule floor as a fraction of the scaled lr (0.2 as in TAO's dataclass)."""
    num_wave: float = Field(1.0, gt=0.0, le=16.0)
    """Number of cosine waves over training after the warm-up."""
    warmup_epochs: float = Field(1.0, ge=0.0, le=MAX_EPOCHS, json_schema_extra=automl(0.0, 3.0))
    """Linear warm-up length in epochs (per iteration schedule). It may exceed num_epochs (AutoML's short trials
    do), in which case the lr never reaches its peak; its bound is the largest num_epochs."""
    margin_rate: list[float] = Field(default_factory=lambda: [0.0, 1.2], min_length=2, max_length=2)
    """Training box expansion: a margin ~ U(low, high) of the half-extent per axis (crop = 1.0-1.6x the box)."""
    test_margin_rate: list[float] = Field(default_factory=lambda: [0.6, 0.6], min_length=2, max_length=2)
    """Box expansion for validation and labeling (0.6: the crop is 1.3x the box)."""
    mask_thres: list[float] = Field(default_factory=lambda: [0.1], min_length=1, max_length=3)
    """Binarisation threshold of the pasted mask: one value, or three for small/medium/large boxes."""
    loss_mil_weight: float = Field(4.0, ge=0.0, json_schema_extra=automl(1.0, 8.0))
    """Weight of the multiple-instance-learning box-projection loss."""
    loss_mil_step: int = Field(1000, ge=0)
    """Steps over which the MIL weight ramps up linearly from 0."""
    loss_crf_weight: float = Field(0.5, ge=0.0, json_schema_extra=automl(0.0, 2.0))
    """Weight of the CRF (mean-field) self-training loss."""
    loss_crf_step: int = Field(4000, ge=0)
    """Steps over which the CRF weight ramps up linearly from 0."""
    crf_kernel_size: OddKernel = Field(3, ge=3, le=11)
    """Window of the pairwise colour-affinity kernel (odd)."""
    crf_num_iter: int = Field(100, ge=1, le=1000)
    """Mean-field iterations."""
    crf_zeta: float = Field(0.1, gt=0.0, le=10.0, json_schema_extra=automl(0.02, 0.5, log=True))
    """Colour bandwidth of the affinity kernel (on the 0-1 image)."""
    crf_value_high_thres: float = Field(0.9, gt=0.0, le=1.0)
    """Upper clamp of the mean-field probabilities."""
    crf_value_low_thres: float = Field(0.1, ge=0.0, lt=1.0)
    """Lower clamp of the mean-field probabilities."""
    crf_size_ratio: int = Field(1, ge=1, le=8)
    """The mean-field of the CRF loss runs at the network's output resolution times this (2: twice as many rows and
    columns, about four times the cost)."""
    loss_mask_weight: float = Field(0.0, ge=0.0, le=100.0)
    """Weight of a mask loss on the training file's own segmentations, where an annotation has one (0: off). Meant
    for a second round: train on the labels `mal inference` wrote in a first round, whose masks then teach the
    pixels they are sure of (away from their outline); the MIL and CRF losses still apply to every box."""
    loss_mask_min_quality: float = Field(0.0, ge=0.0, le=1.0)
    """Segmentations whose annotation's `quality` (or, without one, `score`) is below this are left out of the mask
    loss; those boxes keep the MIL and CRF losses only."""
    num_threads: int = Field(0, ge=0, le=1024)
    """CPU threads for torch (0: torch's default)."""

    _home_weights = field_validator("resume_training_checkpoint_path", "pretrained_model_path")(expand_home)

    @field_validator("pretrained_model_path")
    @classmethod
    def _weights_file_or_timm_name(cls, value: str | None) -> str | None:
        # Only what needs no file access: whether the file exists and fits model.arch is mal.weights' check, run by
        # `mal train` (--print-spec too) and `mal dataset check`.
        if value is None:
            return value
        if not value.strip():
            raise ValueError("is empty; give a weights file or a timm model name, or remove the key to train from "
                             "random weights")
        if "://" in value:
            raise ValueError("is a URL, which is not downloaded; download the file and give its local path")
        suffix = Path(value).suffix.lower()
        if "/" in value.removeprefix("timm/") and suffix not in PRETRAINED_SUFFIXES:
            raise ValueError(f"has the extension {suffix or '(none)'}, which is not read; give a "
                             f"{'/'.join(PRETRAINED_SUFFIXES)} file or a timm model name")
        return value

    @field_validator("margin_rate", "test_margin_rate")
    @classmethod
    def _ordered_margin(cls, value: list[float]) -> list[float]:
        if value[0] < 0 or value[1] < value[0]:
            raise ValueError(f"must be [low, high] with 0 <= low <= high, got {value}")
        return value

    @field_validator("mask_thres")
    @classmethod
    def _thresholds_in_unit(cls, value: list[float]) -> list[float]:
        if len(value) == 2 or any(not 0.0 <= v <= 1.0 for v in value):
            raise ValueError(f"must be one value or three (small, medium, large) in [0, 1], got {value}")
        return value

    @model_validator(mode="after")
    def _low_below_high(self) -> TrainConfig:
        if self.crf_value_low_thres >= self.crf_value_high_thres:
            raise ValueError(
                f"train.crf_value_low_thres ({self.crf_value_low_thres}) must be below "
                f"train.crf_value_high_thres ({self.crf_value_high_thres})"
            )
        return self


class TestTimeConfig(Section):
    checkpoint: str | None = None
    """Checkpoint to use (a .pth written by mal train); default: the best one in results_dir/train."""
    batch_size: int = Field(16, ge=1, le=4096)
    """Crops per forward pass."""
    precision: Literal["fp32", "bf16", "int8", "auto"] = "fp32"
    """Arithmetic of the network while labeling. fp32: full precision (what validation uses). bf16: bfloat16
    autocast, fast on GPUs and on CPUs with AVX512-BF16 or AMX, emulated and slow on other CPUs (PyTorch backend
    only). int8: the exported model's matrix products quantised to int8 with activation scales computed per call
    (backend onnxruntime only, on the CPU; the quantised copy is written once beside export.onnx_file, as
    NAME.int8.onnx). auto: bf16 with PyTorch where the GPU or CPU (AVX512-BF16, AMX) has it natively, int8 with
    ONNX Runtime where the CPU has VNNI, else fp32 (docs/BENCHMARKS.md has the measured speed and mIoU of each)."""
    backend: Literal["torch", "onnxruntime"] = "torch"
    """Run the network with PyTorch, or with ONNX Runtime on the model mal export wrote (export.onnx_file)."""
    use_teacher_test: bool = True
    """Predict with the EMA teacher (False: the student)."""
    use_mixed_model_test: bool = False
    """Average the student's and the teacher's probabilities."""
    use_flip_test: bool = False
    """Average the prediction with that of the horizontally flipped crop."""
    crf_refine_iter: int = Field(0, ge=0, le=200)
    """Mean-field iterations that refine each predicted mask on its crop's colours (the training loss's CRF, run
    from the network's probabilities at test time); 0: off. The CPU presets use 10: boundaries follow colour edges
    that the coarse network output blurs."""
    crf_refine_size_ratio: float = Field(2.0, gt=0.0, le=4.0)
    """Resolution of the test-time refinement: this times the network's output size (crop/4), at most the crop."""
    crf_refine_kernel_size: OddKernel = Field(5, ge=3, le=11)
    """Window of the test-time refinement's colour affinity (odd)."""
    crf_refine_zeta: float = Field(0.1, gt=0.0, le=10.0)
    """Colour bandwidth of the test-time refinement on ImageNet-normalised pixels (like train.crf_zeta)."""
    num_gpus: int = Field(1, ge=1, le=1024)
    """Labeling processes per node, one per GPU: the boxes are split across them and rank 0 merges one output
    (docs/SCALING.md). More than 1 starts that many processes on a machine with that many GPUs; ignored, with a
    note, on a machine without GPUs. Under torchrun or srun the launcher's processes are used; leave it at 1 there
    or set it to match."""
    num_nodes: int = Field(1, ge=1, le=1024)
    """Nodes labeling together (each runs the same command with NODE_RANK set, MASTER_ADDR naming the first
    node); results_dir must be on storage every node shares."""

    _home_checkpoint = field_validator("checkpoint")(expand_home)


class EvaluateConfig(TestTimeConfig):
    """Scores masks against the ground truth of dataset.val_ann_path."""

    label_file: str | None = None
    """A COCO label file (masks as RLE or polygons, from mal inference or any tool) to score instead of a
    checkpoint: no model is loaded, and checkpoint and the test-time keys are not used. Its annotations pair with
    the ground truth's by annotation id when every id is there on the same image, else by image id + box (box IoU
    >= 0.9, same category); its images must have the ground truth's ids, sizes and file names."""

    _home_label_file = field_validator("label_file")(expand_home)


class InferenceConfig(TestTimeConfig):
    ann_path: str | None = None
    """COCO JSON whose boxes get masks (default: dataset.val_ann_path)."""
    img_dir: str | None = None
    """Images of ann_path (default: dataset.val_img_dir)."""
    label_dump_path: str | None = None
    """Output COCO JSON, written exactly at this path (default: results_dir/inference/labels.json); never an input
    annotation file of the spec, nor a folder."""
    load_mask: bool = False
    """Also read ground-truth masks of ann_path, to report per-instance IoU in the gallery."""
    gallery: bool = False
    """Write a review page, results_dir/inference/gallery/index.html (wherever label_dump_path puts the labels)."""

    _home_labels = field_validator("label_dump_path")(expand_home)


class ExportConfig(Section):
    checkpoint: str | None = None
    """Checkpoint to export (default: the best one in results_dir/train)."""
    onnx_file: str | None = None
    """Output ONNX file (default: results_dir/export/mal_model.onnx)."""
    opset_version: int = Field(17, ge=13, le=23)
    """ONNX opset."""
    batch_size: int = Field(-1, ge=-1, le=4096)
    """-1: dynamic batch dimension; otherwise a fixed batch size (at least 1)."""

    _home_export = field_validator("checkpoint", "onnx_file")(expand_home)

    @field_validator("batch_size")
    @classmethod
    def _dynamic_or_positive(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (dynamic) or a batch size of at least 1, got 0")
        return value


class WandbConfig(Section):
    enable: bool = False
    """Log to Weights & Biases (offline when there is no network)."""
    project: str = "mal"
    """W&B project."""
    entity: str | None = None
    """W&B entity (team or user)."""
    name: str | None = None
    """Run name."""
    tags: list[str] = Field(default_factory=list)
    """Run tags."""
    mode: Literal["online", "offline", "disabled"] = "offline"
    """W&B mode; online needs WANDB_API_KEY in the environment."""


class PretrainConfig(Section):
    """`mal pretrain`: self-supervised pretraining of the backbone on the dataset's own images (MAE or DINO)."""

    method: Literal["mae", "dino"] = "mae"
    """mae: a masked autoencoder (reconstruct hidden patches); dino: self-distillation between two augmented views
    of each crop (a student learns to predict its EMA teacher's output on the other view)."""

    num_epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    """Passes over the pretraining crops (every training box plus random_crops_per_image random crops per image)."""
    max_steps: int = Field(0, ge=0)
    """Stop after this many optimizer steps (0: run all num_epochs); keeps a time budget whatever the data size."""
    batch_size: int = Field(64, ge=1, le=4096)
    """Crops per step."""
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    """Peak AdamW learning rate (not scaled by the batch size)."""
    wd: float = Field(0.05, ge=0.0, le=1.0)
    """AdamW weight decay."""
    warmup_epochs: float = Field(0.5, ge=0.0, le=MAX_EPOCHS)
    """Linear warm-up length in epochs; then a cosine decay to zero."""
    crop_size: int | None = Field(None, ge=32, le=2048)
    """Side of the square crops; default dataset.crop_size (the grid train will use)."""
    random_crops_per_image: int = Field(4, ge=0, le=10000)
    """Random crops per image and epoch, besides the crops around boxes; their sides follow the boxes' sizes."""
    use_boxes: bool = True
    """Also crop around every training box (with train.margin_rate), the views train will see."""
    mask_ratio: float = Field(0.75, ge=0.0, lt=1.0)
    """Fraction of patches hidden from the encoder."""
    decoder_embed_dim: int = Field(128, ge=16, le=2048)
    """Width of the light decoder (a multiple of 4 and of decoder_num_heads)."""
    decoder_depth: int = Field(2, ge=1, le=16)
    """Transformer blocks in the decoder."""
    decoder_num_heads: int = Field(4, ge=1, le=64)
    """Attention heads of the decoder."""
    norm_pix_loss: bool = True
    """Reconstruct each patch normalised by its own mean and variance (MAE's better target)."""
    dino_prototypes: int = Field(1024, ge=16, le=65536)
    """dino: outputs of the projection head (the prototypes the two views are matched over)."""
    dino_teacher_temperature: float = Field(0.04, gt=0.0, lt=0.1)
    """dino: temperature of the teacher's softmax (the student's is 0.1); lower sharpens more."""
    checkpoint_path: str | None = None
    """Where the backbone weights go (default: results_dir/pretrain/mae_backbone.pth); give it to
    train.pretrained_model_path."""

    _home_pretrain = field_validator("checkpoint_path")(expand_home)

    @model_validator(mode="after")
    def _decoder_shape(self) -> PretrainConfig:
        if self.decoder_embed_dim % 4 or self.decoder_embed_dim % self.decoder_num_heads:
            raise ValueError(
                f"pretrain.decoder_embed_dim ({self.decoder_embed_dim}) must be a multiple of 4 and of "
                f"pretrain.decoder_num_heads ({self.decoder_num_heads})"
            )
        return self


class ExperimentSpec(Section):
    """A whole `mal` spec: one file serves every action, as in TAO."""

    results_dir: str = "results"
    """Every action writes under results_dir/<action>/; a folder (made when missing), never an existing file."""
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    inference: InferenceConfig = Field(default_factory=InferenceConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    wandb: WandbConfig = Field(default_factory=WandbConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)

    @field_validator("results_dir")
    @classmethod
    def _results_dir_is_a_folder(cls, value: str) -> str:
        value = os.path.expanduser(value)
        if not value.strip():
            raise ValueError("must name a folder, got an empty path")
        # The nearest part that exists must be a folder, or every action fails at its first write.
        path = Path(value)
        for existing in (path, *path.parents):
            if existing.exists() or existing.is_symlink():
                if not existing.is_dir():
                    what = "is" if existing == path else f"is inside {existing}, which is"
                    raise ValueError(f"{what} an existing file, not a folder; give a folder path")
                break
        return value

    @model_validator(mode="after")
    def _labels_replace_no_input(self) -> ExperimentSpec:
        if self.inference.label_dump_path:
            problem = output_file_problem(Path(self.inference.label_dump_path), self.annotation_inputs())
            if problem:
                raise ValueError(f"inference.label_dump_path = {self.inference.label_dump_path} {problem}")
        return self

    @model_validator(mode="after")
    def _crop_fits_the_patch_grid(self) -> ExperimentSpec:
        # The ViT cuts each crop into patch x patch tokens and its position embeddings are sized for that grid:
        # another size fails when the network is built (once the data is read); said here, --print-spec finds it.
        # The lower bound (32: a grid of at least 2x2 patches, a 8x8 mask) is the field's own.
        crop, patch = self.dataset.crop_size, ARCH_PATCH_SIZES[self.model.arch]
        if crop % patch:
            below = crop // patch * patch
            choices = [size for size in (below, below + patch) if 32 <= size <= 2048]
            raise ValueError(
                f"dataset.crop_size = {crop} is not a multiple of {patch}, the patch size of model.arch = "
                f"{self.model.arch}; use {' or '.join(map(str, choices))}"
            )
        return self

    def annotation_inputs(self) -> dict[str, str | None]:
        """The annotation files the spec reads (key -> path): no output may be written over them."""
        return {
            "inference.ann_path": self.inference.ann_path,
            "dataset.train_ann_path": self.dataset.train_ann_path,
            "dataset.val_ann_path": self.dataset.val_ann_path,
        }


SECTION_DOCS = {
    "dataset": "Where the boxes and images are, and how boxes become crops.",
    "model": "The network: ViT backbone, mask head, EMA teacher.",
    "train": "Optimisation, losses, schedule, devices, checkpoints.",
    "evaluate": "Scoring masks against ground truth (mIoU, mask AP).",
    "inference": "Writing the auto-labels: a COCO file with an RLE mask on every box.",
    "export": "ONNX export of the inference network.",
    "wandb": "Optional Weights & Biases logging.",
    "pretrain": "Masked-autoencoder pretraining of the backbone on your own images (mal pretrain).",
}

# Which actions the skill layout describes; every action reads the whole spec.
ACTIONS = ("train", "evaluate", "inference", "export")
AUTOML_DEFAULT_PARAMETERS = ["train.lr", "train.wd"]
