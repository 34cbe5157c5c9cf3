"""Soak runs: long labeling, a long study and many SIGKILLed trainings, watching memory, file handles and speed.

    .venv/bin/python benchmarks/soak.py                       # 20,000 boxes, 200 trials, 10 killed trainings
    .venv/bin/python benchmarks/soak.py --boxes 2000 --trials 30 --kills 2   # a quick look

Writes benchmarks/results/soak.{json,md}. The CI suite (tests/reliability/test_load_soak.py) runs the same functions
scaled down and asserts no handle leak and bounded memory growth.

- labeling: the real pipeline (checkpoint -> label loader -> network -> paste + RLE), batch by batch in this
  process, sampling RSS (/proc/self/status VmRSS) and open handles (/proc/self/fd) after every batch.
- study: `mal automl run` with the dummy job (tests/support/dummy_job.py), sampling the runner process from outside.
- kills: `mal train` SIGKILLed at random moments, then `train.resume_training_checkpoint_path=auto`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
# The test helpers (tests/support), shared on purpose: a standalone script has no pytest pythonpath.
sys.path[:0] = [str(REPO / "tests")]

from support.reliability import mal_env, run_mal, write_spec  # noqa: E402
from support.study import automl_run_command, launches, write_dummy_study  # noqa: E402


def rss_mib(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def open_handles(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def make_box_dataset(root: Path, boxes: int, boxes_per_image: int = 20) -> Path:
    """A synthetic COCO set with exactly `boxes` boxes, about `boxes_per_image` per 160 x 160 image.

    The generator places a handful of objects per image; the rest are copies of them shifted by a few pixels
    (new ids), which costs the labeler the same as new objects.
    """
    from mal.data.synthetic import make_synthetic_coco

    make_synthetic_coco(root, num_images=max(1, boxes // boxes_per_image), seed=0)
    ann = root / "annotations.json"
    data = json.loads(ann.read_text())
    originals = data["annotations"]
    rng = np.random.default_rng(0)
    grown = []
    for index in range(boxes):
        copy = dict(originals[index % len(originals)])
        x, y, w, h = copy["bbox"]
        dx, dy = rng.uniform(-3, 3, size=2) if index >= len(originals) else (0.0, 0.0)
        copy.update(id=index + 1, bbox=[max(0.0, x + dx), max(0.0, y + dy), w, h])
        grown.append(copy)
    data["annotations"] = grown
    ann.write_text(json.dumps(data))
    return ann


def train_checkpoint(root: Path, ann: Path, images: Path) -> Path:
    results = root / "trained"
    spec = write_spec(root / "spec.yaml", ann, images, results)
    result = run_mal("train", "-e", spec, timeout=900)
    if result.returncode:
        raise RuntimeError(result.stderr[-2000:])
    return (results / "train" / "mal_model_latest.pth").resolve()


def _quarters(values: list[float]) -> tuple[float, float]:
    quarter = max(1, len(values) // 4)
    return float(np.mean(values[:quarter])), float(np.mean(values[-quarter:]))


def label_soak(ann: Path, images: Path, checkpoint: Path, batch_size: int = 64) -> dict[str, Any]:
    """Label every box batch by batch in this process; memory, handles and time per box along the way."""
    from mal.data.coco import load_coco
    from mal.data.datasets import build_label_loader
    from mal.engine.inference import labeled_coco
    from mal.engine.labeling import label_batch
    from mal.engine.predict import torch_labeler
    from mal.fileio import atomic_write_json
    from mal.spec import load_spec

    spec = load_spec(None, [f"dataset.train_ann_path={ann}", f"dataset.train_img_dir={images}"])
    coco = load_coco(ann, images)
    labeler = torch_labeler(checkpoint, spec.inference)
    loader = build_label_loader(coco, labeler.crop_size, batch_size, 0, spec.train.test_margin_rate)
    labels: list[Any] = []
    samples: list[dict[str, float]] = []
    handles_before = open_handles()
    for index, batch in enumerate(loader):
        started = time.perf_counter()
        labels.extend(label_batch(labeler.predict, batch, spec.train.mask_thres, labeler.device))
        seconds = time.perf_counter() - started
        count = len(batch["ann_id"])
        samples.append(
            {
                "batch": index,
                "boxes": len(labels),
                "ms_per_box": 1000 * seconds / max(count, 1),
                "rss_mib": rss_mib(),
                "handles": open_handles(),
            }
        )
    order = coco.row_of_ann
    labels.sort(key=lambda label: order[label.ann_id])
    out = Path(tempfile.mkdtemp()) / "labels.json"
    atomic_write_json(out, labeled_coco(coco, labels), indent=None)
    written = len(json.loads(out.read_text())["annotations"])
    out.unlink()
    rss = [sample["rss_mib"] for sample in samples]
    # Full batches only: a short last batch has the same fixed cost spread over fewer boxes.
    per_box = [sample["ms_per_box"] for sample in samples][1:-1] or [sample["ms_per_box"] for sample in samples]
    warm = max(1, len(rss) // 10)  # the first batches load the model and warm the allocator
    first_ms, last_ms = _quarters(per_box)
    return {
        "boxes": len(coco),
        "labeled": written,
        "batches": len(samples),
        "rss_mib_after_warmup": rss[warm - 1],
        "rss_mib_peak": max(rss),
        "rss_mib_end": rss[-1],
        "rss_growth_mib_after_warmup": max(rss) - rss[warm - 1],
        "handles_before": handles_before,
        "handles_max": max(s["handles"] for s in samples),
        "handles_end": open_handles(),
        "ms_per_box_first_quarter": first_ms,
        "ms_per_box_last_quarter": last_ms,
        "slowdown_last_vs_first": last_ms / max(first_ms, 1e-9),
    }


def study_soak(root: Path, trials: int, concurrent: int = 4, sample_s: float = 0.1) -> dict[str, Any]:
    """A random-search study of `trials` dummy jobs through `mal automl run`, sampled from outside."""
    log = root / "launches.log"
    study_file = write_dummy_study(
        root,
        root / "ws",
        automl_max_recommendations=trials,
        automl_max_epochs=1,
        automl_max_concurrent=concurrent,
    )
    env = mal_env(MAL_DUMMY_STARTED_LOG=str(log), MAL_DUMMY_SLEEP="0.01")
    started = time.perf_counter()
    runner = subprocess.Popen(
        automl_run_command(study_file),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    samples: list[dict[str, float]] = []
    while runner.poll() is None:
        with contextlib.suppress(OSError, ValueError):  # the runner may exit between poll() and the read
            samples.append(
                {
                    "t": time.perf_counter() - started,
                    "launched": len(launches(log)),
                    "rss_mib": rss_mib(runner.pid),
                    "handles": open_handles(runner.pid),
                }
            )
        time.sleep(sample_s)
    stderr = runner.stderr.read() if runner.stderr else ""
    if runner.returncode:
        raise RuntimeError(f"the study failed: {stderr[-2000:]}")
    seconds = time.perf_counter() - started
    run_dir = sorted((root / "ws").glob("run_*"))[-1]
    history = json.loads((run_dir / "result.json").read_text())["history"]
    # Time per trial in the first and last quarter of launches (from the sampled launch counts).
    times_at = {}
    for sample in samples:
        times_at.setdefault(int(sample["launched"]), sample["t"])
    marks = sorted(times_at.items())
    per_trial = [(t2 - t1) / (n2 - n1) for (n1, t1), (n2, t2) in itertools.pairwise(marks) if n2 > n1]
    first_s, last_s = _quarters(per_trial) if per_trial else (0.0, 0.0)
    # Memory during the search: from a quarter of the trials launched to the last launch (the report comes after).
    warm = [s for s in samples if max(1, trials // 4) <= s["launched"] < trials] or samples
    return {
        "trials": trials,
        "finished": len(history),
        "done": sum(h["status"] == "done" for h in history),
        "unique_rec_ids": len({h["rec_id"] for h in history}),
        "seconds": seconds,
        "runner_rss_mib_after_warmup": warm[0]["rss_mib"],
        "runner_rss_mib_peak": max(s["rss_mib"] for s in samples),
        "runner_rss_growth_mib_after_warmup": max(s["rss_mib"] for s in warm) - warm[0]["rss_mib"],
        "runner_handles_first": samples[0]["handles"],
        "runner_handles_max": max(s["handles"] for s in samples),
        "runner_handles_after_warmup": warm[0]["handles"],
        "runner_handles_last": samples[-1]["handles"],
        "s_per_trial_first_quarter": first_s,
        "s_per_trial_last_quarter": last_s,
        "slowdown_last_vs_first": last_s / max(first_s, 1e-9),
    }


def _start_training(spec: Path, results: Path) -> subprocess.Popen[bytes]:
    """`mal train` in its own process group, returned once it has begun training (its status.json exists)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mal", "train", "-e", str(spec)],
        env=mal_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    status = results / "train" / "status.json"
    while process.poll() is None and not status.exists():
        time.sleep(0.05)
    return process


def kill_soak(root: Path, ann: Path, images: Path, runs: int, epochs: int = 4, seed: int = 0) -> dict[str, Any]:
    """`mal train` SIGKILLed at a random moment, resumed with `auto`: the final epoch and finiteness per run.

    The moment is drawn uniformly over one uninterrupted training of the same spec, timed first on this machine,
    so the kills land anywhere from the first step to the last checkpoint however fast the machine is."""
    import torch

    reference_dir = root / "kill_reference"
    reference = _start_training(write_spec(root / "spec.yaml", ann, images, reference_dir, epochs), reference_dir)
    began = time.perf_counter()
    reference.wait()
    training_s = time.perf_counter() - began  # from its status.json to its exit, like the delays below
    rng = random.Random(seed)
    outcomes = []
    for run in range(runs):
        results = root / f"kill_{run}"
        spec = write_spec(root / "spec.yaml", ann, images, results, epochs=epochs)
        process = _start_training(spec, results)
        delay = rng.uniform(0.0, training_s)
        time.sleep(delay)
        killed = process.poll() is None
        if killed:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        at_kill = len(list((results / "train").glob("mal_model_epoch_*.pth")))
        resumed = run_mal("train", "-e", spec, "train.resume_training_checkpoint_path=auto", timeout=900)
        latest = torch.load(results / "train" / "mal_model_latest.pth", weights_only=True)
        finite = all(torch.isfinite(t).all() for t in latest["state_dict"].values() if t.is_floating_point())
        outcomes.append(
            {
                "run": run,
                "delay_s": round(delay, 2),
                "killed": killed,
                "checkpoints_at_kill": at_kill,
                "resume_exit": resumed.returncode,
                "final_epoch": int(latest["epoch"]) + 1,
                "finite": bool(finite),
            }
        )
    return {
        "training_s": round(training_s, 2),
        "runs": outcomes,
        "all_complete": all(o["resume_exit"] == 0 and o["final_epoch"] == epochs and o["finite"] for o in outcomes),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boxes", type=int, default=20_000)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--kills", type=int, default=10)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    from common import write_results

    with tempfile.TemporaryDirectory() as temp:
        root = Path(temp)
        small = root / "small"
        small_ann = make_box_dataset(small, 24, boxes_per_image=3)
        checkpoint = train_checkpoint(root, small_ann, small / "images")
        big = root / "big"
        labeling = label_soak(make_box_dataset(big, args.boxes), big / "images", checkpoint)
        print("labeling", json.dumps(labeling), flush=True)
        (root / "study").mkdir()
        study = study_soak(root / "study", args.trials)
        print("study", json.dumps(study), flush=True)
        (root / "kills").mkdir()
        kills = kill_soak(root / "kills", small_ann, small / "images", args.kills)
        print("kills", json.dumps(kills), flush=True)

    def row(name: str, data: dict[str, Any], keys: list[str]) -> dict[str, Any]:
        return {
            "run": name,
            **{key: round(data[key], 2) if isinstance(data[key], float) else data[key] for key in keys},
        }

    labeling_keys = [
        "boxes",
        "labeled",
        "rss_mib_after_warmup",
        "rss_mib_peak",
        "handles_before",
        "handles_max",
        "handles_end",
        "ms_per_box_first_quarter",
        "ms_per_box_last_quarter",
    ]
    study_keys = [
        "finished",
        "unique_rec_ids",
        "seconds",
        "runner_rss_mib_after_warmup",
        "runner_rss_mib_peak",
        "runner_handles_after_warmup",
        "runner_handles_max",
        "s_per_trial_first_quarter",
        "s_per_trial_last_quarter",
    ]
    tables = [
        (
            "Labeling (in-process, per batch)",
            ["run", *labeling_keys],
            [row(f"{args.boxes:,} boxes", labeling, labeling_keys)],
        ),
        ("Study (runner process, sampled)", ["run", *study_keys], [row(f"{args.trials} trials", study, study_keys)]),
        (
            "SIGKILLed trainings, resumed with auto",
            ["run", "delay_s", "killed", "checkpoints_at_kill", "resume_exit", "final_epoch", "finite"],
            kills["runs"],
        ),
    ]
    write_results(
        "soak",
        {"labeling": labeling, "study": study, "kills": kills},
        tables,
        notes=[
            "RSS in MiB from /proc VmRSS; handles = entries of /proc/<pid>/fd.",
            "Trainings: 4 epochs, checkpoint every epoch; the final epoch must be 4 after resume.",
            f"Kill moments: uniform over one uninterrupted training of the same spec, {kills['training_s']:.1f} s "
            "from its status.json to its exit on this run.",
        ],
    )


if __name__ == "__main__":
    main()
