"""benchmarks/quality_estimate_fit.py: the review estimate's refit recovers a known model, folds split by image,
and the cues it collects are the ones `mal inference` computed its `quality` from."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import quality_estimate_fit as fit

import quality
from mal.data.coco import load_coco
from mal.engine.labeling import ground_truth
from mal.metrics import instance_ious
from mal.quality_estimate import FEATURES, quality_from_features
from support.specs import write_tiny_spec


def _known_model(count: int, seed: int, weights: np.ndarray, bias: float) -> fit.Cues:
    rng = np.random.default_rng(seed)
    cues = rng.normal(size=(count, len(FEATURES))) * 2.0 + 1.0
    ious = 1.0 / (1.0 + np.exp(-(bias + ((cues - 1.0) / 2.0) @ weights)))
    return fit.Cues(f"set{seed}", cues, ious, np.arange(count) // 4)


def test_the_fit_recovers_a_logistic_model_from_soft_targets():
    weights = np.linspace(-1.0, 1.0, len(FEATURES))
    found = fit.fit_estimate([_known_model(4000, 0, weights, 0.3)], l2=0.0)
    assert np.allclose(found.mean, 1.0, atol=0.15) and np.allclose(found.scale, 2.0, atol=0.15)
    # The standardisation is the sample's, so compare what the model predicts rather than its raw constants.
    probe = _known_model(200, 1, weights, 0.3)
    assert np.abs(found.predict(probe.cues) - probe.ious).max() < 0.02
    shrunk = fit.fit_estimate([_known_model(4000, 0, weights, 0.3)], l2=1.0)
    assert np.abs(shrunk.weights).sum() < np.abs(found.weights).sum()


def test_every_dataset_weighs_the_same_however_many_masks_it_has():
    sizes = [10, 990]
    weight = fit.equal_dataset_weights(sizes)
    assert weight.sum() == pytest.approx(1.0)
    assert weight[:10].sum() == pytest.approx(0.5) and weight[10:].sum() == pytest.approx(0.5)
    # A small dataset that contradicts a large one pulls the fit halfway, not by its share of the masks.
    up = np.linspace(-1.0, 1.0, len(FEATURES))
    small, large = _known_model(400, 2, up, 0.0), _known_model(4000, 3, -up, 0.0)
    balanced = fit.fit_estimate([small, large], l2=0.0)
    assert np.abs(balanced.weights).max() < 0.2 * np.abs(up).max()


def test_folds_keep_each_image_whole_and_use_every_fold():
    image_ids = np.repeat(np.arange(23), 3)
    folds = fit.image_folds(image_ids, 5)
    for image in range(23):
        assert len(set(folds[image_ids == image].tolist())) == 1
    assert set(folds.tolist()) == set(range(5))
    assert np.array_equal(folds, fit.image_folds(image_ids, 5))  # seeded: the report repeats


def test_the_cues_are_the_ones_mal_inference_computed_its_quality_from(synthetic_coco: Callable[..., Path],
                                                                        tmp_path, capsys):  # fmt: skip
    shapes = synthetic_coco(num_images=8, seed=0)
    spec = write_tiny_spec(tmp_path / "spec.yaml", shapes / "annotations.json", shapes / "images",
                           overrides={"train.num_epochs": 1, "dataset.min_obj_size": 0})  # fmt: skip
    work = tmp_path / "work"
    assert quality.main([str(shapes), "--spec", str(spec), "--skip-peers", "--no-results", "--work-dir",
                         str(work)]) == 0  # fmt: skip
    written = json.loads((work / "labels.json").read_text())["annotations"]
    out = tmp_path / "fit.json"
    assert fit.main(["--dataset", str(work), str(shapes / "images"), str(spec), "--folds", "2",
                     "--out", str(out)]) == 0  # fmt: skip
    cache = work / fit.CACHE_NAME
    with np.load(cache) as stored:
        cues, ious = stored["cues"], stored["ious"]
    assert cues.shape == (len(written), len(FEATURES))
    assert np.allclose(quality_from_features(cues), [ann["quality"] for ann in written], atol=1e-5)
    gt = load_coco(work / "gt.json", shapes / "images", load_mask=True)
    gt_rles, _ = ground_truth(gt, [ann["id"] for ann in written])
    assert np.allclose(ious, instance_ious([ann["segmentation"] for ann in written], gt_rles))
    result = json.loads(out.read_text())
    assert result["datasets"]["work"]["shipped"]["spearman"] == pytest.approx(
        quality.spearman(np.array([ann["quality"] for ann in written]), ious), abs=1e-4)
    assert len(result["constants"]["weights"]) == len(FEATURES)
    assert "_WEIGHTS = np.array([" in capsys.readouterr().out
    stamp = cache.stat().st_mtime_ns
    assert fit.main(["--dataset", str(work), str(shapes / "images"), str(spec), "--folds", "2"]) == 0
    assert cache.stat().st_mtime_ns == stamp  # read from the cache, not labeled again
    # A new training in the folder (here: the checkpoint touched) makes the cache stale.
    for checkpoint in (work / "run" / "train").glob("mal_model_epoch_*.pth"):
        os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 1_000_000_000))
    assert fit.main(["--dataset", str(work), str(shapes / "images"), str(spec), "--folds", "2"]) == 0
    assert cache.stat().st_mtime_ns != stamp
    with pytest.raises(SystemExit):
        fit.main(["--dataset", str(tmp_path), str(shapes / "images"), str(spec)])
