"""`mal demo`: the whole job on an embedded default - data, training, labels, scores and the review page.

Without arguments it generates a synthetic dataset of textured shapes (exact ground truth, so the masks can be
scored), trains vit-tiny/16 on the CPU for a few minutes, labels every box, evaluates against the hidden masks
next to the box-fill baseline, and writes the gallery. `--ann/--images` runs the same on your own COCO folder.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from mal.errors import SpecError
from mal.presets import preset_path
from mal.spec import load_spec
from mal.spec.schema import ExperimentSpec

DEMO_IMAGES = 48
DEMO_SEED = 1


def demo_spec(args: argparse.Namespace) -> tuple[ExperimentSpec, bool]:
    """The preset with the data paths filled in; returns (spec, whether the data is synthetic)."""
    results = Path(args.results_dir).resolve()
    if (args.ann is None) != (args.images is None):
        raise SpecError("mal demo: give both --ann ANNOTATIONS.json and --images FOLDER, or neither.")
    synthetic = args.ann is None
    if synthetic:
        from mal.data.synthetic import make_synthetic_coco

        data = results / "data"
        ann = data / "annotations.json"
        if not ann.exists():
            print(f"mal demo: generating {DEMO_IMAGES} synthetic images in {data}", flush=True)
            make_synthetic_coco(data, num_images=DEMO_IMAGES, seed=DEMO_SEED)
        images = data / "images"
    else:
        ann, images = Path(args.ann), Path(args.images)
    overrides = [f"results_dir={results}", f"dataset.train_ann_path={ann}", f"dataset.train_img_dir={images}",
                 f"inference.label_dump_path={results / 'labels.json'}", "inference.gallery=true",
                 *args.overrides]
    if args.epochs is not None:
        overrides.append(f"train.num_epochs={args.epochs}")
    return load_spec(preset_path("demo"), overrides), synthetic


def run_demo(args: argparse.Namespace) -> int:
    from mal.engine import evaluate, inference, train

    spec, synthetic = demo_spec(args)
    started = time.perf_counter()
    print(f"mal demo: training {spec.model.arch} @ {spec.dataset.crop_size}px for {spec.train.num_epochs} epochs "
          f"(results in {spec.results_dir})", flush=True)
    replace_previous_demo(spec)
    train.run(spec)
    spec = spec.model_copy(update={"inference": spec.inference.model_copy(update={"load_mask": True})})
    has_masks = _has_masks(Path(spec.dataset.train_ann_path))
    if has_masks:
        evaluate.run(spec)
    inference.run(spec)
    minutes = (time.perf_counter() - started) / 60
    results = Path(spec.results_dir)
    print(f"\nmal demo: finished in {minutes:.1f} min")
    if has_masks:
        metrics = json.loads((results / "evaluate" / "metrics.json").read_text())
        print(f"  mask mIoU {metrics['mIoU']:.3f}   (box filled as the mask: {metrics['box_fill_mIoU']:.3f})   "
              f"mask AP {metrics['AP']:.3f}")
    print(f"  labels:  {spec.inference.label_dump_path}")
    print(f"  gallery: {inference.gallery_dir(spec) / 'index.html'}")
    if synthetic:
        print("  next: mal demo --ann YOUR.json --images YOUR_IMAGES/  (or mal train -e spec.yaml, see README)")
    return 0


def replace_previous_demo(spec: ExperimentSpec) -> None:
    """Running the demo again trains it again: an earlier demo's training on the same data is removed first, under
    the train folder's run lock (a demo still running there is not touched). A train folder of anything else is left
    alone, and mal train then refuses to start beside it."""
    from mal.engine.run_lock import LOCK_NAME, hold_run_lock
    from mal.engine.train import trained_config
    from mal.jobfiles import epoch_checkpoints

    train_dir = Path(spec.results_dir) / "train"
    found = epoch_checkpoints(train_dir)
    if not found:
        return
    with hold_run_lock(train_dir, "train"):
        earlier = trained_config(found[max(found)])
        if (earlier.get("dataset") or {}).get("train_ann_path") != spec.dataset.train_ann_path:
            return
        print(f"mal demo: replacing the previous demo's training in {train_dir}", flush=True)
        for path in train_dir.iterdir():
            if path.name == LOCK_NAME:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def _has_masks(ann_path: Path) -> bool:
    annotations = json.loads(ann_path.read_text()).get("annotations", [])
    return bool(annotations) and all(ann.get("segmentation") for ann in annotations)
