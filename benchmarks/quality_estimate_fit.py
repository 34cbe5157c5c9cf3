"""Refit the review estimate (`mal.quality_estimate`) on labels whose true masks are known.

    .venv/bin/python benchmarks/quality_estimate_fit.py \\
        --dataset benchmarks/out/quality_coco128_dev ../shared/data/coco128_dev/images cpu-natural \\
        --dataset benchmarks/out/quality_dsb2018_dev ../shared/data/dsb2018_dev/images cpu-nuclei

Each `--dataset` is a `benchmarks/quality.py` work folder (gt.json, boxes.json and the trained run/), its image
folder and the spec it was trained with. The folder's boxes are labeled again in this process with its checkpoint,
exactly as `mal inference` labels them, keeping every mask's cues (`BoxLabel.quality_cues`); the cues and the
masks' true IoU are cached in the folder as `quality_cues.npz` (`--relabel` makes them again).

The model is the one `mal.quality_estimate` ships: a logistic curve of the standardised cues, fitted to the true
IoU (a number in [0, 1], so the loss is cross-entropy with that soft target) by Newton's method, with an L2
penalty on the weights. Each dataset weighs the same however many masks it has, so 21,405 nuclei do not drown 423
natural-image masks. The report gives each dataset's Spearman correlation with the true IoU for the shipped
constants and the refitted ones, in-sample and cross-validated by image (fitted on the other folds of every
dataset), and prints the refitted constants ready to paste into `src/mal/quality_estimate.py`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import quality
from mal import jobfiles
from mal.data.coco import load_coco
from mal.engine.labeling import ground_truth
from mal.fileio import atomic_write_json
from mal.metrics import instance_ious
from mal.quality_estimate import FEATURES, quality_from_features

CACHE_NAME = "quality_cues.npz"
DEFAULT_L2 = 0.01
DEFAULT_FOLDS = 5


@dataclass
class Cues:
    """One dataset's masks: their cues (N x len(FEATURES)), true IoU and image id."""

    name: str
    cues: np.ndarray
    ious: np.ndarray
    image_ids: np.ndarray


# ------------------------------------------------------------------------------------------------ collect
def relabel_cues(work_dir: Path, image_dir: Path, spec_name: str) -> Cues:
    """Label the work folder's boxes with its checkpoint (mal inference's path) and keep each mask's cues."""
    _, labels = quality.label_in_process(work_dir, image_dir, spec_name, description=f"cues of {work_dir.name}")
    gt = load_coco(work_dir / "gt.json", image_dir, load_mask=True)
    gt_rles, _ = ground_truth(gt, [label.ann_id for label in labels])
    ious = np.asarray(instance_ious([label.segmentation for label in labels], gt_rles), dtype=np.float64)
    cues = np.stack([np.asarray(label.quality_cues, dtype=np.float64) for label in labels])
    image_ids = np.asarray([label.image_id for label in labels], dtype=np.int64)
    return Cues(work_dir.name, cues, ious.reshape(-1), image_ids)


def folder_fingerprint(work_dir: Path) -> str:
    """What the cached cues depend on: the checkpoint labeling takes (path, size, time) and the boxes file."""
    train_dir = work_dir / "run" / "train"
    checkpoint = jobfiles.best_checkpoint(train_dir) or jobfiles.latest_checkpoint(train_dir)
    stamp = "none"
    if checkpoint is not None:
        info = checkpoint.resolve().stat()
        stamp = f"{checkpoint.resolve()}:{info.st_size}:{info.st_mtime_ns}"
    boxes = hashlib.sha256((work_dir / "boxes.json").read_bytes()).hexdigest()
    return f"{stamp}|{boxes}|{','.join(FEATURES)}"


def load_cues(work_dir: Path, image_dir: Path, spec_name: str, relabel: bool) -> Cues:
    """The folder's cues, from the cache when it was made from the same checkpoint and boxes."""
    cache = work_dir / CACHE_NAME
    fingerprint = folder_fingerprint(work_dir)
    if cache.is_file() and not relabel:
        with np.load(cache) as stored:
            if "fingerprint" in stored.files and str(stored["fingerprint"]) == fingerprint:
                return Cues(work_dir.name, stored["cues"], stored["ious"], stored["image_ids"])
    found = relabel_cues(work_dir, image_dir, spec_name)
    temp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(temp, cues=found.cues, ious=found.ious, image_ids=found.image_ids, fingerprint=np.asarray(fingerprint))
    os.replace(temp, cache)
    return found


# ------------------------------------------------------------------------------------------------ fit
@dataclass
class Estimate:
    """The constants of `mal.quality_estimate`'s logistic model."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def predict(self, cues: np.ndarray) -> np.ndarray:
        logits = self.bias + ((cues - self.mean) / self.scale) @ self.weights
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))


def equal_dataset_weights(sizes: list[int]) -> np.ndarray:
    """Per-mask weights summing to 1 with every dataset's masks summing to the same share."""
    return np.concatenate([np.full(size, 1.0 / (size * len(sizes))) for size in sizes])


def fit_estimate(parts: list[Cues], l2: float = DEFAULT_L2, iterations: int = 50) -> Estimate:
    """Weighted logistic regression of the true IoU on the standardised cues, by Newton's method."""
    cues = np.concatenate([part.cues for part in parts])
    target = np.clip(np.concatenate([part.ious for part in parts]), 0.0, 1.0)
    weight = equal_dataset_weights([len(part.ious) for part in parts])
    mean = weight @ cues
    scale = np.sqrt(weight @ (cues - mean) ** 2)
    scale = np.where(scale > 1e-12, scale, 1.0)  # a constant cue gets weight 0 rather than a division by 0
    design = np.hstack([np.ones((len(cues), 1)), (cues - mean) / scale])
    penalty = np.full(design.shape[1], l2)
    penalty[0] = 0.0  # the bias is not shrunk
    coef = np.zeros(design.shape[1])
    for _ in range(iterations):
        prob = 1.0 / (1.0 + np.exp(-np.clip(design @ coef, -30.0, 30.0)))
        gradient = design.T @ (weight * (prob - target)) + penalty * coef
        hessian = (design * (weight * prob * (1 - prob))[:, None]).T @ design + np.diag(penalty)
        step = np.linalg.solve(hessian + 1e-12 * np.eye(len(coef)), gradient)
        coef -= step
        if np.abs(step).max() < 1e-10:
            break
    return Estimate(mean=mean, scale=scale, weights=coef[1:], bias=float(coef[0]))


def image_folds(image_ids: np.ndarray, folds: int, seed: int = 0) -> np.ndarray:
    """A fold number per mask: the dataset's images dealt to `folds` folds in a seeded random order."""
    images = np.unique(image_ids)
    order = np.random.default_rng(seed).permutation(len(images))
    fold_of_image = dict(zip(images[order].tolist(), (np.arange(len(images)) % folds).tolist()))
    return np.asarray([fold_of_image[int(image)] for image in image_ids], dtype=np.int64)


def cross_validated(parts: list[Cues], folds: int, l2: float) -> list[np.ndarray]:
    """Each mask's estimate from a fit on the other folds' images of every dataset."""
    assignments = [image_folds(part.image_ids, folds) for part in parts]
    held_out = [np.zeros(len(part.ious)) for part in parts]
    for fold in range(folds):
        train = [Cues(part.name, part.cues[assigned != fold], part.ious[assigned != fold],
                      part.image_ids[assigned != fold]) for part, assigned in zip(parts, assignments)]  # fmt: skip
        estimate = fit_estimate(train, l2)
        for part, assigned, out in zip(parts, assignments, held_out):
            chosen = assigned == fold
            out[chosen] = estimate.predict(part.cues[chosen])
    return held_out


# ------------------------------------------------------------------------------------------------ report
def ranking(values: np.ndarray, ious: np.ndarray) -> dict[str, float | None]:
    return {"spearman": quality.spearman(values, ious), "bad_share_lowest": quality.bad_share_lowest(values, ious)}


def report(parts: list[Cues], l2: float, folds: int) -> dict[str, Any]:
    refit = fit_estimate(parts, l2)
    held_out = cross_validated(parts, folds, l2)
    datasets = {}
    for part, out in zip(parts, held_out):
        datasets[part.name] = {
            "masks": len(part.ious),
            "bad_share": float((part.ious < quality.BAD_IOU).mean()),
            "shipped": ranking(quality_from_features(part.cues), part.ious),
            "refit": ranking(refit.predict(part.cues), part.ious),
            "refit_cross_validated": ranking(out, part.ious),
        }
    return {
        "l2": l2,
        "folds": folds,
        "features": list(FEATURES),
        "datasets": datasets,
        "constants": {
            "mean": refit.mean.tolist(),
            "scale": refit.scale.tolist(),
            "weights": refit.weights.tolist(),
            "bias": refit.bias,
        },
    }


def constants_source(constants: dict[str, Any]) -> str:
    def row(values: list[float]) -> str:
        return "np.array([" + ", ".join(f"{value:.4g}" for value in values) + "])"

    return (f"_MEAN = {row(constants['mean'])}\n_SCALE = {row(constants['scale'])}\n"
            f"_WEIGHTS = {row(constants['weights'])}\n_BIAS = {constants['bias']:.4f}")  # fmt: skip


def print_report(result: dict[str, Any]) -> None:
    print("| dataset (masks) | Spearman, shipped | refit | refit, cross-validated | bad in lowest 10 %: shipped "
          "/ refit / cross-validated | bad overall |")
    print("|---|---|---|---|---|---|")
    for name, row in result["datasets"].items():
        views = [row["shipped"], row["refit"], row["refit_cross_validated"]]
        spearmans = [f"{view['spearman']:.3f}" if view["spearman"] is not None else "–" for view in views]
        shares = " / ".join(f"{view['bad_share_lowest']:.1%}" for view in views)
        print(f"| {name} ({row['masks']}) | {' | '.join(spearmans)} | {shares} | {row['bad_share']:.1%} |")
    print("\nRefitted constants for src/mal/quality_estimate.py:\n" + constants_source(result["constants"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", nargs=3, action="append", required=True,
                        metavar=("WORK_DIR", "IMAGE_DIR", "SPEC"), help="a quality.py work folder, its images and "
                        "the spec it was trained with; give one per dataset")  # fmt: skip
    parser.add_argument("--l2", type=float, default=DEFAULT_L2, help="L2 penalty on the standardised weights")
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="image folds of the cross-validation")
    parser.add_argument("--relabel", action="store_true", help=f"label again instead of reading {CACHE_NAME}")
    parser.add_argument("--out", type=Path, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    if args.folds < 2:
        parser.error(f"--folds {args.folds}: cross-validation needs at least 2 folds")
    parts = []
    for work, images, spec in args.dataset:
        work_dir, image_dir = Path(work).resolve(), Path(images).resolve()
        for name in ("gt.json", "boxes.json", "run"):
            if not (work_dir / name).exists():
                parser.error(f"{work_dir / name} is missing: run benchmarks/quality.py with --work-dir first")
        parts.append(load_cues(work_dir, image_dir, spec, args.relabel))
    result = report(parts, args.l2, args.folds)
    print_report(result)
    if args.out:
        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
