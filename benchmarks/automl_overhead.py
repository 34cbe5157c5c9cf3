"""Benchmark: what the AutoML runner costs around its trials, and how trials/hour scale with slots.

A sleep-bound job (it sleeps `--epoch-seconds` per epoch and obeys the job contract: status.json per epoch,
checkpoints, exit 0) is tuned with random search, `--trials` trainings of `--epochs` epochs, through the real
runner and local platform. The job writes its own start and end times, so:
    runner overhead per trial = (search wall time x slots - sum of the jobs' own run times) / trials
i.e. the slot time spent outside any job (launching, noticing the end, bookkeeping, checkpoint handling). The
local platform notices a finished job within 50 ms whatever the poll interval (which only paces status.json
reads), so the figure should not grow with it. Study fixed costs (preflight, review, report with its plots) are
reported separately. Writes benchmarks/results/automl_overhead.{json,md}. Usage:
    .venv/bin/python benchmarks/automl_overhead.py [--trials 8] [--epochs 2] [--epoch-seconds 0.5]
        [--polls 0.2 1.0]
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from common import write_results
from rich.console import Console

from mal.automl import AutoMLRunner, LocalPlatform
from mal.spec.export import write_skill_dir

SLEEP_JOB = """
import json, os, sys, time
started = time.time()
import yaml
spec = yaml.safe_load(open(sys.argv[sys.argv.index("-e") + 1]))
out = os.path.join(spec["results_dir"], "train")
os.makedirs(out, exist_ok=True)
lr = spec["train"]["lr"]
for epoch in range(1, spec["train"]["num_epochs"] + 1):
    time.sleep(float(os.environ["EPOCH_SECONDS"]))
    for name in (f"mal_model_epoch_{epoch:03d}.pth", "mal_model_best.pth"):
        open(os.path.join(out, name), "w").write("{}")
    event = {"status": "RUNNING", "epoch": epoch, "max_epoch": spec["train"]["num_epochs"],
             "kpi": {"val/mIoU": 1.0 / (1.0 + abs(lr - 3e-6) * 1e5) * epoch}, "message": "", "time": ""}
    with open(os.path.join(out, "status.json"), "a") as handle:
        handle.write(json.dumps(event) + "\\n")
json.dump({"start": started, "end": time.time()}, open(os.path.join(spec["results_dir"], "timing.json"), "w"))
"""


def _iso(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def run_study(root: Path, skill: Path, slots: int, poll: float, args: argparse.Namespace) -> dict[str, Any]:
    job = root / "sleep_job.py"
    job.write_text(SLEEP_JOB)
    platform = LocalPlatform(
        max_concurrent=slots,
        command=[sys.executable, str(job), "{action}", "-e", "{spec}"],
        gpus=[],
        env={"EPOCH_SECONDS": str(args.epoch_seconds)},
    )
    runner = AutoMLRunner(
        skill_dir=skill,
        platform=platform,
        workspace_dir=root / f"ws_{slots}_{poll}",
        poll_interval=poll,
        console=Console(file=io.StringIO()),
    )
    start = time.perf_counter()
    result = runner.run(
        automl_algorithm="random",
        automl_settings={
            "automl_max_recommendations": args.trials,
            "automl_max_epochs": args.epochs,
            "automl_max_concurrent": slots,
        },
        spec_overrides={"dataset.min_obj_size": 0},
    )
    study_seconds = time.perf_counter() - start
    history = result["history"]
    assert all(h["status"] == "done" for h in history), [h["failure_reason"] for h in history]
    run_dir = Path(result["workspace"])
    job_seconds = []
    for entry in history:
        timing = json.loads((run_dir / "trials" / entry["job_id"] / "timing.json").read_text())
        job_seconds.append(timing["end"] - timing["start"])
    search_wall = max(_iso(h["finished"]) for h in history) - min(_iso(h["started"]) for h in history)
    overhead = (search_wall * slots - sum(job_seconds)) / len(history)
    return {
        "slots": slots,
        "poll_interval_s": poll,
        "trials": len(history),
        "job_seconds_mean": sum(job_seconds) / len(job_seconds),
        "search_wall_s": search_wall,
        "study_wall_s": study_seconds,
        "fixed_costs_s": study_seconds - search_wall,
        "overhead_per_trial_s": overhead,
        "trials_per_hour": 3600.0 * len(history) / search_wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-seconds", type=float, default=0.5)
    parser.add_argument("--polls", type=float, nargs="+", default=[0.2, 1.0])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        skill = root / "skill"
        write_skill_dir(skill)
        for poll in args.polls:
            for slots in (1, 2):
                row = run_study(root, skill, slots, poll, args)
                rows.append(row)
                print(json.dumps(row))
    for poll in args.polls:
        one, two = (next(r for r in rows if r["poll_interval_s"] == poll and r["slots"] == s) for s in (1, 2))
        two["speedup_vs_1_slot"] = two["trials_per_hour"] / one["trials_per_hour"]
        one["speedup_vs_1_slot"] = 1.0
    columns = [
        "slots",
        "poll_interval_s",
        "trials",
        "job_seconds_mean",
        "search_wall_s",
        "overhead_per_trial_s",
        "trials_per_hour",
        "speedup_vs_1_slot",
        "fixed_costs_s",
    ]
    write_results(
        "automl_overhead",
        {"settings": vars(args), "rows": rows},
        [("Runner overhead and concurrency scaling (sleep-bound job)", columns, rows)],
        notes=[
            "overhead_per_trial_s = (search wall x slots - sum of the jobs' own run times) / trials: slot time "
            "outside any job (process start of the job wrapper, polling delay, state writes, checkpoint cleanup).",
            "fixed_costs_s: preflight, launch review, final bookkeeping and the report with its plots, once per study.",
            "The job's own run time includes its Python start-up and YAML parsing, not the runner's.",
        ],
    )


if __name__ == "__main__":
    main()
