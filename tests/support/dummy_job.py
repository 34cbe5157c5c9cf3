"""A stand-in for `mal train` / `mal evaluate` that obeys the job contract in a fraction of a second.

    python dummy_job.py train -e spec.yaml [section.key=value ...]
    python dummy_job.py evaluate -e spec.yaml evaluate.checkpoint=PATH

The spec is validated with the real loader (`mal.spec.load_spec`), so a bad key exits 2 exactly as `mal train`
does. The validation metric is a deterministic function of train.lr, train.wd and the epoch (best near
lr = 3e-6), so tests know which configuration should win. Checkpoints are small JSON files.

Environment knobs (for failure tests):
    MAL_DUMMY_SLEEP            seconds per epoch (default 0.05)
    MAL_DUMMY_MODE             crash | exit2 | oom | hang | nometric (default: behave)
    MAL_DUMMY_CRASH_LR_ABOVE   raise inside "training" when train.lr is above this value
    MAL_DUMMY_OOM_BATCH_ABOVE  fail with a CUDA out-of-memory error when train.batch_size is above this value
    MAL_DUMMY_STARTED_LOG      append "<results_dir> <start epoch>" here at every start (to count launches)
    MAL_DUMMY_EVALUATE_CRASH   `evaluate` raises (trainings still behave)
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from mal.errors import UserError
from mal.spec import load_spec

METRIC = "val/mIoU"


def quality(lr: float, wd: float, epoch: int) -> float:
    """Higher is better; peaks at lr = 3e-6 and grows with the epochs trained."""
    closeness = math.exp(-((math.log10(lr) - math.log10(3e-6)) ** 2) / 0.5)
    decay_term = 0.02 * math.exp(-((math.log10(wd) + 3.0) ** 2))
    return round((0.2 + 0.6 * closeness + decay_term) * (1.0 - 0.5 ** (epoch + 1)), 6)


def write_event(
    path: Path, status: str, epoch: int, max_epoch: int, kpi: dict | None = None, message: str = "", **extra: object
) -> None:
    event = {
        "status": status,
        "epoch": epoch,
        "max_epoch": max_epoch,
        "kpi": kpi or {},
        "message": message,
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(event) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def write_json_atomic(path: Path, obj: object) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def train(spec) -> int:
    out = Path(spec.results_dir) / "train"
    out.mkdir(parents=True, exist_ok=True)
    status = out / "status.json"
    mode = os.environ.get("MAL_DUMMY_MODE", "")
    ann = spec.dataset.train_ann_path
    if ann and "://" not in ann and not Path(ann).exists():
        print(f"mal train: error: dataset.train_ann_path {ann} does not exist; fix the path.", file=sys.stderr)
        return 2
    if mode == "exit2":
        print("mal train: error: dataset.train_img_dir images/ is not readable; fix the path.", file=sys.stderr)
        return 2
    start = 0
    if spec.train.resume_training_checkpoint_path:
        start = json.loads(Path(spec.train.resume_training_checkpoint_path).read_text())["epoch"]
    if log := os.environ.get("MAL_DUMMY_STARTED_LOG"):
        with open(log, "a", encoding="utf-8") as handle:
            handle.write(f"{spec.results_dir} {start}\n")
    max_epoch = spec.train.num_epochs
    write_event(status, "STARTED", start, max_epoch, message="training started")
    if mode == "hang":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        (out / "grandchild.pid").write_text(str(child.pid))
        time.sleep(600)
    lr, wd = spec.train.lr, spec.train.wd
    crash_above = os.environ.get("MAL_DUMMY_CRASH_LR_ABOVE")
    best = -math.inf
    for epoch in range(start + 1, max_epoch + 1):
        time.sleep(float(os.environ.get("MAL_DUMMY_SLEEP", "0.05")))
        oom_above = os.environ.get("MAL_DUMMY_OOM_BATCH_ABOVE")
        if mode == "oom" or (oom_above is not None and spec.train.batch_size > int(oom_above)):
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        if crash_above is not None and lr > float(crash_above):
            raise ZeroDivisionError("division by zero in the mask head (dummy crash)")
        value = quality(lr, wd, epoch)
        ckpt = out / f"mal_model_epoch_{epoch:03d}.pth"
        write_json_atomic(ckpt, {"epoch": epoch, "lr": lr, "wd": wd})
        latest = out / "mal_model_latest.pth"
        latest.unlink(missing_ok=True)
        latest.symlink_to(ckpt.name)
        if value > best:
            best = value
            write_json_atomic(out / "mal_model_best.pth", {"epoch": epoch, "lr": lr, "wd": wd})
        kpi = {} if mode == "nometric" else {METRIC: value, "train/loss": 1.0 - value}
        write_event(
            status,
            "RUNNING",
            epoch,
            max_epoch,
            kpi,
            f"epoch {epoch}",
            best_checkpoint=str(out / "mal_model_best.pth"),
            best_metric=best,
        )
    write_event(status, "SUCCESS", max_epoch, max_epoch, message="training finished")
    return 0


def evaluate(spec) -> int:
    if os.environ.get("MAL_DUMMY_EVALUATE_CRASH"):
        raise RuntimeError("dummy evaluation crash: CUDA error: an illegal memory access was encountered")
    out = Path(spec.results_dir) / "evaluate"
    out.mkdir(parents=True, exist_ok=True)
    ckpt = json.loads(Path(spec.evaluate.checkpoint).read_text())
    value = quality(ckpt["lr"], ckpt["wd"], ckpt["epoch"])
    write_json_atomic(out / "metrics.json", {"mIoU": value, "mIoU_small": value, "AP": value / 2, "per_class": {}})
    write_event(out / "status.json", "SUCCESS", 0, 0, {"mIoU": value}, "evaluation finished")
    return 0


def main(argv: list[str]) -> int:
    action, flag, spec_path, *overrides = argv
    assert flag == "-e"
    if os.environ.get("MAL_DUMMY_MODE") == "crash":
        raise RuntimeError("dummy crash before training")
    try:
        spec = load_spec(spec_path, overrides)
        return train(spec) if action == "train" else evaluate(spec)
    except UserError as exc:
        print(f"mal {action}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
