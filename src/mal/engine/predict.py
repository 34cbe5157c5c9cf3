"""Set up labeling for evaluate and inference: checkpoint -> network, COCO file -> loader, loop with progress."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mal.data.coco_boxes import CocoBoxes
from mal.data.datasets import build_label_loader
from mal.engine.checkpoint_io import load_trained_model
from mal.engine.common import pick_device, progress, resolve_checkpoint
from mal.engine.labeling import BoxLabel, MaskPredictor, label_batch
from mal.engine.module import inference_net, test_time_refiner
from mal.engine.precision import Bf16Predictor, quantized_onnx, resolve_test_precision
from mal.engine.run_lock import is_primary_process
from mal.model.refine import CrfRefiner
from mal.spec.schema import ExperimentSpec, TestTimeConfig


@dataclass
class Labeler:
    """A ready network plus the crop settings it was trained with."""

    predict: MaskPredictor
    crop_size: int
    device: torch.device
    checkpoint: Path
    refine: CrfRefiner | None = None
    precision: str = "fp32"


def torch_labeler(checkpoint: Path, options: TestTimeConfig, key: str = "inference.precision") -> Labeler:
    """The checkpoint's network in PyTorch at the precision `options.precision` asks for (`key` names it)."""
    device = pick_device()
    precision, note = resolve_test_precision(options.precision, "torch", device, key)
    model, config = load_trained_model(checkpoint)
    net = inference_net(model, options.model_dump()).to(device).eval()
    if note and is_primary_process():  # one line per run, not one per labeling process
        print(f"mal: {note}")
    predict: MaskPredictor = Bf16Predictor(net, device) if precision == "bf16" else net
    return Labeler(predict=predict, crop_size=int(config["dataset"]["crop_size"]), device=device,
                   checkpoint=checkpoint, refine=test_time_refiner(options.model_dump()), precision=precision)


def onnx_labeler(onnx_path: Path, options: TestTimeConfig, num_threads: int,
                 key: str = "inference.precision") -> Labeler:
    """An exported model run by ONNX Runtime; int8 runs its quantised copy (made beside it on first use)."""
    from mal.engine.onnx_backend import OnnxMaskNet

    precision, note = resolve_test_precision(options.precision, "onnxruntime", torch.device("cpu"), key)
    if not onnx_path.is_file():
        OnnxMaskNet(onnx_path)  # says what to do about a missing export, before anything is quantised
    model_path = quantized_onnx(onnx_path) if precision == "int8" else onnx_path
    net = OnnxMaskNet(model_path, num_threads=num_threads)
    if note and is_primary_process():  # one line per run, not one per labeling process
        print(f"mal: {note}")
    return Labeler(predict=net, crop_size=net.crop_size, device=net.device, checkpoint=onnx_path,
                   refine=test_time_refiner(options.model_dump()), precision=precision)


def build_labeler(spec: ExperimentSpec, options: TestTimeConfig, action: str) -> Labeler:
    """The labeler `action`'s options (spec.evaluate or spec.inference) ask for: backend, checkpoint, precision."""
    key = f"{action}.precision"
    if options.backend == "onnxruntime":
        from mal.engine.export import onnx_file_for

        return onnx_labeler(onnx_file_for(spec), options, spec.train.num_threads, key)
    checkpoint = resolve_checkpoint(spec, options.checkpoint, f"{action}.checkpoint")
    return torch_labeler(checkpoint, options, key)


def label_dataset(labeler: Labeler, coco: CocoBoxes, spec: ExperimentSpec, batch_size: int,
                  description: str) -> list[BoxLabel]:
    """A mask for every box of `coco`, in file order."""
    loader = build_label_loader(coco, labeler.crop_size, batch_size, spec.dataset.num_workers_per_gpu,
                                spec.train.test_margin_rate)
    labels: list[BoxLabel] = []
    batches: Any = progress(loader, total=len(coco), description=description, size=lambda b: len(b["ann_id"]))
    for batch in batches:
        labels.extend(label_batch(labeler.predict, batch, spec.train.mask_thres, labeler.device, labeler.refine))
    order = coco.row_of_ann
    labels.sort(key=lambda label: order[label.ann_id])
    return labels
