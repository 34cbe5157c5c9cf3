"""mIoU of each precision on real data, for the accuracy columns of inference_speed.py and train_speed.py.

The protocol is quality.py's (the masks hidden from training, which sees only the boxes); the scores come from
`mal evaluate` on the same images with their masks, so they are the numbers a user would get. A trained run is
kept in benchmarks/out/precision_<data>_<train precision> and reused by a later call (delete it to retrain).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from common import REPO_ROOT

from mal.spec.load import resolve_spec_file
from quality import prepare_files, run_mal


def parse_accuracy(text: str) -> tuple[str, str]:
    data, _, preset = text.partition("=")
    if not preset:
        raise argparse.ArgumentTypeError(f"{text!r} must look like DATA_DIR=PRESET, e.g. "
                                         "../shared/data/dsb2018_dev=cpu-nuclei")
    return data, preset


class PresetRun:
    """A preset trained on a dataset's boxes (masks hidden), ready to be evaluated against the masks."""

    def __init__(self, data_dir: str, preset: str, train_precision: str = "fp32",
                 eval_max_images: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.preset = preset
        self.train_precision = train_precision
        self.work_dir = REPO_ROOT / "benchmarks" / "out" / f"precision_{self.data_dir.name}_{train_precision}"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.gt_path, self.boxes_path, self.image_dir = prepare_files(self.data_dir, self.work_dir, None)
        if eval_max_images:
            # Scored on images spread over the ids (quality.py's --max-images rule); trained on all of them.
            (self.work_dir / "eval").mkdir(exist_ok=True)
            self.gt_path = prepare_files(self.data_dir, self.work_dir / "eval", eval_max_images)[0]
        self.spec_path = resolve_spec_file(preset)[0].resolve()
        self.run_dir = self.work_dir / "run"
        self.common = [
            f"results_dir={self.run_dir}",
            f"dataset.train_ann_path={self.boxes_path}",
            f"dataset.train_img_dir={self.image_dir}",
            "dataset.load_mask=false",
        ]
        self.train_s: float | None = None

    def train(self) -> None:
        if any((self.run_dir / "train").glob("mal_model_epoch_*.pth")):
            print(f"reusing the trained run in {self.run_dir}", flush=True)
            return
        precision = f"train.precision={self.train_precision}"
        self.train_s = run_mal("train", self.spec_path, [*self.common, precision], self.work_dir / "train.log")

    def evaluate(self, precision: str, backend: str) -> dict[str, Any]:
        """`mal evaluate` at this precision and backend; its metrics plus the wall time."""
        tag = f"{backend}_{precision}"
        if backend == "onnxruntime" and not (self.run_dir / "export" / "mal_model.onnx").is_file():
            run_mal("export", self.spec_path, self.common, self.work_dir / "export.log")
        overrides = [
            *self.common,
            f"dataset.val_ann_path={self.gt_path}",
            f"dataset.val_img_dir={self.image_dir}",
            f"evaluate.precision={precision}",
            f"evaluate.backend={backend}",
        ]
        seconds = run_mal("evaluate", self.spec_path, overrides, self.work_dir / f"evaluate_{tag}.log")
        metrics = json.loads((self.run_dir / "evaluate" / "metrics.json").read_text())
        return {**metrics, "evaluate_s": seconds}


def _images(gt_path: Path) -> int:
    return len(json.loads(gt_path.read_text())["images"])


TEST_PATHS = (("torch", "fp32"), ("torch", "bf16"), ("onnxruntime", "fp32"), ("onnxruntime", "int8"))


def label_precision_accuracy(data_dir: str, preset: str, eval_max_images: int | None = None) -> list[dict[str, Any]]:
    """One row per labeling path on the fp32-trained preset: mIoU, AP, its change against PyTorch fp32."""
    run = PresetRun(data_dir, preset, eval_max_images=eval_max_images)
    run.train()
    rows = []
    for backend, precision in TEST_PATHS:
        metrics = run.evaluate(precision, backend)
        rows.append({"data": run.data_dir.name, "images scored": _images(run.gt_path), "preset": preset,
                     "backend": backend, "precision": precision,
                     "mIoU": metrics["mIoU"], "AP": metrics.get("AP"), "evaluate s": metrics["evaluate_s"]})
        print(f"  {run.data_dir.name} {backend} {precision}: mIoU {metrics['mIoU']:.4f}", flush=True)
    reference = rows[0]["mIoU"]
    for row in rows:
        row["mIoU change"] = row["mIoU"] - reference
    return rows


def train_precision_accuracy(data_dir: str, preset: str, precisions: list[str],
                             eval_max_images: int | None = None) -> list[dict[str, Any]]:
    """One row per training precision: the preset trained that way, scored with fp32 labeling."""
    rows = []
    for precision in precisions:
        run = PresetRun(data_dir, preset, precision, eval_max_images)
        run.train()
        metrics = run.evaluate("fp32", "torch")
        rows.append({"data": run.data_dir.name, "images scored": _images(run.gt_path), "preset": preset,
                     "train precision": precision,
                     "train s": run.train_s,  # None: a run kept from an earlier call was reused
                     "mIoU": metrics["mIoU"], "AP": metrics.get("AP")})
        print(f"  {run.data_dir.name} trained {precision}: mIoU {metrics['mIoU']:.4f}", flush=True)
    reference = rows[0]["mIoU"]
    for row in rows:
        row["mIoU change"] = row["mIoU"] - reference
    return rows
