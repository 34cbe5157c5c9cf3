"""Benchmark: load + validate dsb2018_dev, build its crop index, and crop a few hundred boxes.

Writes benchmarks/results/data_index.json and data_index.md. Usage:
    .venv/bin/python benchmarks/data_index.py [--data /work/shared/data/dsb2018_dev] [--boxes 384]
        [--crop-sizes 128 512] [--batch-size 32] [--num-workers 0] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mal.data.coco import load_coco
from mal.data.datasets import ImageGroupedBatchSampler, LabelBoxDataset, PackedBatchSampler, TrainBoxDataset
from mal.fileio import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def best_of(repeat: int, action) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = action()
        times.append(time.perf_counter() - start)
    return min(times), result


def first_boxes(groups: list[np.ndarray], count: int) -> list[np.ndarray]:
    chosen, total = [], 0
    for group in groups:
        if total >= count:
            break
        chosen.append(group)
        total += len(group)
    return chosen


def crop_epoch(dataset, batches) -> tuple[float, int]:
    start = time.perf_counter()
    boxes = 0
    for batch in batches:
        boxes += len(dataset.__getitems__(batch)["ann_id"])
    return time.perf_counter() - start, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/dsb2018_dev"))
    parser.add_argument("--boxes", type=int, default=384)
    parser.add_argument("--crop-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    command = " ".join(shlex.quote(part) for part in [sys.executable, *sys.argv])
    ann_path, image_dir = args.data / "annotations.json", args.data / "images"
    if not ann_path.is_file():
        raise SystemExit(f"{ann_path} is absent; pass --data to a COCO dataset folder")

    rows: list[dict[str, Any]] = []
    load_s, coco = best_of(args.repeat, lambda: load_coco(ann_path, image_dir))
    rows.append({"step": "load + validate (images checked)", "seconds": load_s, "items": len(coco)})
    masks_s, _ = best_of(args.repeat, lambda: load_coco(ann_path, image_dir, load_mask=True))
    rows.append({"step": "load + validate + mask checks", "seconds": masks_s, "items": len(coco)})
    bare_s, _ = best_of(args.repeat, lambda: load_coco(ann_path, image_dir, check_images=False))
    rows.append({"step": "load + validate (no image files)", "seconds": bare_s, "items": len(coco)})

    def train_index():
        dataset = TrainBoxDataset(coco, crop_size=128, min_obj_size=0)
        sampler = ImageGroupedBatchSampler(dataset.image_groups(), args.batch_size, seed=0)
        return dataset, list(sampler)

    index_s, (train_set, _) = best_of(args.repeat, train_index)
    rows.append({"step": "train crop index + one epoch of batch indices", "seconds": index_s, "items": len(train_set)})

    def label_index():
        dataset = LabelBoxDataset(coco, crop_size=128, chunk_size=args.batch_size)
        return dataset, list(PackedBatchSampler([len(r) for _, r in dataset.chunks], args.batch_size))

    label_s, (_label_set, _) = best_of(args.repeat, label_index)
    rows.append({"step": "label crop index (every box)", "seconds": label_s, "items": len(coco)})

    groups = first_boxes(train_set.image_groups(), args.boxes)
    for crop_size in args.crop_sizes:
        for augment in (False, True):
            dataset = TrainBoxDataset(coco, crop_size=crop_size, min_obj_size=0, augment=augment)
            batches = list(ImageGroupedBatchSampler(groups, args.batch_size, seed=0))
            seconds, boxes = min((crop_epoch(dataset, batches) for _ in range(args.repeat)), key=lambda r: r[0])
            what = "train crops + augmentation" if augment else "train crops, no augmentation"
            rows.append({"step": f"{what} @ {crop_size}px", "seconds": seconds, "items": boxes})
        labels = LabelBoxDataset(coco, crop_size=crop_size, chunk_size=args.batch_size)
        label_batches = PackedBatchSampler([len(r) for _, r in labels.chunks], args.batch_size).batches
        chosen, total = [], 0
        for batch in label_batches:
            if total >= args.boxes:
                break
            chosen.append(batch)
            total += sum(len(labels.chunks[i][1]) for i in batch)
        seconds, boxes = min((crop_epoch(labels, chosen) for _ in range(args.repeat)), key=lambda r: r[0])
        rows.append({"step": f"label crops (test margin) @ {crop_size}px", "seconds": seconds, "items": boxes})

    for row in rows:
        row["items_per_s"] = row["items"] / row["seconds"] if row["seconds"] > 0 else None
    environment = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        RESULTS / "data_index.json",
        {
            "command": command,
            "dataset": str(args.data),
            "batch_size": args.batch_size,
            "environment": environment,
            "results": rows,
        },
    )
    lines = [
        f"# data_index: {args.data.name} ({len(coco):,} boxes, {len(coco.images)} images)",
        "",
        f"Command: `{command}`  ",
        f"Environment: {environment}; batch size {args.batch_size}; best of {args.repeat}.",
        "",
        "| step | seconds | items | items/s |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['step']} | {r['seconds']:.3f} | {r['items']:,} | {r['items_per_s']:,.0f} |" for r in rows]
    atomic_write_text(RESULTS / "data_index.md", "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"\nwrote {RESULTS / 'data_index.json'} and {RESULTS / 'data_index.md'}")


if __name__ == "__main__":
    main()
