"""Every offline search algorithm on the YAHPO LCBench surrogate: regret against budget.

    .venv/bin/python benchmarks/hpo.py --jobs 2   # 5 tasks x 100 seeds (about 25 minutes on two cores)
    .venv/bin/python benchmarks/hpo.py --quick    # 2 tasks x 2 seeds, a smoke run

Each run is written to benchmarks/out/<stem>.runs.jsonl as it ends; after an interruption the same command with
--resume runs only what is missing.

Protocol (the one TAO's brains were measured with, see docs/ALGORITHMS.md): tasks 3945, 7593, 34539, 126025,
189909; the 7 non-fidelity hyperparameters with config_space.json's ranges and log scales; epoch fidelity
1..52; one worker on a simulated clock; a budget of 30 full-fidelity equivalents (30 x 52 epochs) where every
trained epoch is charged and a resumed training pays only its extra epochs. A training is observed when it
ends: the value observed is the val_accuracy at the epoch it trained to, the same metric the algorithm is told
(at whatever fidelity that is; a training cut off by the end of the budget is never observed). Regret = best
value any run of this benchmark observed on the task - best value this run has observed so far (accuracy
points); normalised regret divides it by the task's range, from that best value down to the lowest 52-epoch
val_accuracy of 1,000 fixed random configurations, so that tasks can be pooled. The tables give the median over
the task x seed runs. An algorithm that finishes before the budget is spent (PBT's population reaches 52 epochs)
is started again with a new seed, as a user would.

Writes benchmarks/results/hpo_lcbench{_quick}.json, .md and .png, and the statistics of benchmarks/hpo_stats.py
(normalised regret and its AUC with paired bootstrap intervals; TAO's protocol against TAO's figures) as
hpo_lcbench{_quick}_stats.json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

# One BLAS thread per process: the GP's matrix products are small, and with --jobs N every process would start
# as many BLAS threads as there are cores; measured on 2 cores, MOBSTER ran about 10x slower that way.
# The BLAS library reads these when numpy loads it, so they come before the import.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hpo_stats import analyse
from yahpo import DATA_DIR, MAX_EPOCH, LCBench, lcbench_space, lcbench_tasks, worst_final_accuracy

from mal.automl.algorithms import ALGORITHMS as KNOWN_ALGORITHMS
from mal.automl.algorithms import make_algorithm
from mal.automl.settings import parse_settings
from mal.errors import SpecError
from mal.fileio import atomic_write_bytes, atomic_write_text

TASKS = ("3945", "7593", "34539", "126025", "189909")
ALGORITHMS = ("random", "bayesian", "tpe", "hyperband", "asha", "bohb", "dehb", "mobster", "pbt")
BUDGET_FFE = 30
TARGET_FFE = BUDGET_FFE / 5  # issue 10: reach random search's final regret with at most 1/5 of its budget
CHECKPOINTS = (1, 2, 3, 5, 6, 10, 15, 20, 30)
RESULTS = Path(__file__).resolve().parent / "results"
JOURNALS = Path(__file__).resolve().parent / "out"  # runs finished so far, for --resume (not committed)

SETTINGS: dict[str, Any] = {
    "metric": "val_accuracy",
    "direction": "maximize",
    "automl_max_epochs": MAX_EPOCH,
    # automl_reduction_factor is left to each algorithm's default: TAO's 3, and 2 for MOBSTER
    "automl_max_concurrent": 1,
    "automl_max_recommendations": 10_000,
    "automl_max_trials": 10_000,
    # PBT: 10 members x 13 generations of 4 epochs = 10 FFE per population; restarted when done.
    "automl_population_size": 10,
    "automl_eval_interval": 4,
    "automl_max_generations": 13,
}


def simulate(
    algorithm: str,
    task: str,
    seed: int,
    budget_ffe: int = BUDGET_FFE,
    *,
    make: Callable[..., Any] | None = None,
    bench: LCBench | None = None,
    overrides: dict[str, Any] | None = None,
    oracle_ranks: bool = False,
) -> dict[str, Any]:
    """One search on the simulated clock; returns the best-so-far accuracy after every charged epoch.

    `make(name, space, settings, seed=...)` builds the searcher (default: ours, `make_algorithm`); anything with
    ask/tell/is_finished works, which is how benchmarks/hpo_reference.py runs reference implementations.
    `overrides` replace entries of SETTINGS for this run (`--set` on the command line).
    `oracle_ranks` tells the algorithm each configuration's 52-epoch val_accuracy whatever it trained to, while
    charging and observing stay as they are: a diagnostic of what poor short-training ranks cost a
    multi-fidelity search (`--oracle-ranks`).
    """
    make = make or make_algorithm
    bench = bench or LCBench(task)
    space = lcbench_space()
    budget = budget_ffe * MAX_EPOCH
    best_so_far = np.full(budget, np.nan)
    spent, best, restarts, recs = 0, -math.inf, 0, 0
    started = time.perf_counter()
    settings = {**SETTINGS, **(overrides or {})}
    algo = make(algorithm, space, settings, seed=seed)
    trained: dict[int, int] = {}  # rec id -> epochs in its checkpoint
    while spent < budget:
        rec = algo.ask()
        if rec is None:
            if not algo.is_finished():
                raise RuntimeError(f"{algorithm} waits with nothing running")
            restarts += 1
            algo = make(algorithm, space, settings, seed=seed + 100_003 * restarts)
            trained = {}
            continue
        recs += 1
        start = trained[rec.resume_from] if rec.resume_from is not None else 0
        end = min(rec.budget, MAX_EPOCH)
        curve = bench.curve(rec.params)
        charged = min(end - start, budget - spent)
        best_so_far[spent : spent + charged] = best
        spent += charged
        trained[rec.rec_id] = start + charged
        if start + charged < end:
            break  # the budget ran out mid-training: that training reports nothing
        metric = float(curve[end - 1])  # val_accuracy at the fidelity it trained to, what the algorithm is told
        best = max(best, metric)
        best_so_far[spent - 1] = best
        algo.tell(rec.rec_id, float(curve[-1]) if oracle_ranks else metric)
    return {
        "algorithm": algorithm,
        "task": task,
        "seed": seed,
        "best_so_far": best_so_far.tolist(),
        "recommendations": recs,
        "restarts": restarts,
        "seconds": time.perf_counter() - started,
    }


def _finite(value: float) -> float | None:
    """JSON has no infinity: a regret before anything was observed is written as null."""
    return float(value) if math.isfinite(value) else None


def _json_safe(obj: Any) -> Any:
    """The report with every non-finite float (never reached, nothing observed yet) as null."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float):
        return _finite(obj)
    return obj


def _run(job: tuple[str, str, int, dict[str, Any], bool]) -> dict[str, Any]:
    label, task, seed, overrides, oracle_ranks = job
    algorithm, own = split_variant(label)
    run = simulate(algorithm, task, seed, overrides={**overrides, **own}, oracle_ranks=oracle_ranks)
    return {**run, "algorithm": label}


def split_variant(label: str) -> tuple[str, dict[str, Any]]:
    """`NAME@KEY=VALUE,KEY=VALUE` (a variant with its own settings, e.g. mobster@automl_reduction_factor=3) as
    (NAME, overrides); a plain NAME has none."""
    name, sep, pairs = label.partition("@")
    return name, (parse_overrides(pairs.split(","), given_as=f"--algorithms {label}:") if sep else {})


def parse_overrides(pairs: list[str], given_as: str = "--set") -> dict[str, Any]:
    """`KEY=VALUE` pairs (VALUE read as YAML: 2 is an int, 0.5 a float), each checked by the real settings model;
    an error names the pair as the user gave it (`given_as`: the option or algorithm label it came from)."""
    import yaml

    overrides = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{given_as} {pair!r}: expected KEY=VALUE, e.g. automl_reduction_factor=2")
        overrides[key] = yaml.safe_load(value)
        try:
            parse_settings({**SETTINGS, **overrides})
        except SpecError as exc:
            raise SystemExit(f"{given_as} {pair!r}: {exc}") from None
    return overrides


def summarise(
    runs: list[dict[str, Any]], algorithms: list[str], tasks: list[str], worst: dict[str, float]
) -> dict[str, Any]:
    """Regret and normalised regret of every run, their medians per algorithm, and `FFE to random@30`.

    `worst[task]` is the bottom of the task's range for normalised regret (`worst_final_accuracy`); the top is
    the best value any run observed. Normalising is affine per task, so it leaves `FFE to random@30` as it is."""
    best_any = {task: max(np.nanmax(r["best_so_far"]) for r in runs if r["task"] == task) for task in tasks}
    scale = {task: best_any[task] - worst[task] for task in tasks}
    for task, width in scale.items():
        if not width > 0:
            raise ValueError(f"task {task}: the worst reference {worst[task]} is not below the best value observed")
    for run in runs:
        regret = best_any[run["task"]] - np.asarray(run["best_so_far"])
        run["regret"] = regret  # arrays, not lists: 35 tasks x 100 seeds x 9 algorithms of 1,560 epochs each
        run["normalised_regret"] = regret / scale[run["task"]]

    def at(run: dict[str, Any], key: str, ffe: float) -> float:
        return float(run[key][round(ffe * MAX_EPOCH) - 1])

    summary: dict[str, Any] = {"best_any": best_any, "worst": worst, "algorithms": {}}
    grid = np.arange(1, BUDGET_FFE * MAX_EPOCH + 1) / MAX_EPOCH
    for algorithm in algorithms:
        mine = [r for r in runs if r["algorithm"] == algorithm]
        medians = {str(x): float(np.median([at(r, "regret", x) for r in mine])) for x in CHECKPOINTS}
        normalised = {str(x): float(np.median([at(r, "normalised_regret", x) for r in mine])) for x in CHECKPOINTS}
        curve = np.median(np.array([r["regret"] for r in mine]), axis=0)
        normalised_curve = np.median(np.array([r["normalised_regret"] for r in mine]), axis=0)
        per_task = {}
        for task in tasks:
            task_runs = [r for r in mine if r["task"] == task]
            per_task[task] = np.median(np.array([r["regret"] for r in task_runs]), axis=0)
        summary["algorithms"][algorithm] = {
            "median_regret": medians,
            "median_normalised_regret": normalised,
            "median_curve": curve.tolist(),
            "median_normalised_curve": normalised_curve.tolist(),
            "per_task_curve": {t: c.tolist() for t, c in per_task.items()},
            "seconds_per_run": float(np.mean([r["seconds"] for r in mine])),
            "recommendations_per_run": float(np.mean([r["recommendations"] for r in mine])),
        }
    # FFE each algorithm needs to reach random search's final regret, per task (median over seeds)
    if "random" in algorithms:
        regrets = {
            (a, t): np.array([r["regret"] for r in runs if r["algorithm"] == a and r["task"] == t])
            for a in algorithms
            for t in tasks
        }
        for algorithm in algorithms:
            needed = [
                ffe_to_reach(np.median(regrets[algorithm, t], axis=0), np.median(regrets["random", t][:, -1]), grid)
                for t in tasks
            ]
            entry = summary["algorithms"][algorithm]
            entry["ffe_to_random_final_per_task"] = dict(zip(tasks, needed))
            entry["ffe_to_random_final_median_task"] = float(np.median(needed))
            low, high, within = bootstrap_ffe(regrets, algorithm, tasks, grid)
            entry["ffe_to_random_final_interval90"] = [low, high]
            entry["probability_within_target"] = within
    return summary


def ffe_to_reach(curve: np.ndarray, target: float, grid: np.ndarray) -> float:
    """The first budget at which a (median) regret curve is at or below `target`; inf if it never is."""
    hit = np.nonzero(curve <= target + 1e-9)[0]
    return float(grid[hit[0]]) if hit.size else math.inf


def bootstrap_ffe(
    regrets: dict[tuple[str, str], np.ndarray], algorithm: str, tasks: list[str], grid: np.ndarray, rounds: int = 300
) -> tuple[float, float, float]:
    """How much `FFE to random@30` (median task) moves with the seeds: resample each task's seeds (the algorithm's
    and random search's, independently), recompute it; return the 5th and 95th percentiles and the share of
    resamples at or under TARGET_FFE. With 10 seeds one draw of the figure easily moves by 2x, so a single value
    cannot say whether an algorithm meets the target."""
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(rounds):
        needed = []
        for task in tasks:
            mine, control = regrets[algorithm, task], regrets["random", task]
            mine = mine[rng.integers(0, len(mine), len(mine))]
            control = control[rng.integers(0, len(control), len(control))]
            needed.append(ffe_to_reach(np.median(mine, axis=0), float(np.median(control[:, -1])), grid))
        draws.append(float(np.median(needed)))
    values = np.asarray(draws)
    # Order statistics, not interpolation: a draw may never reach the target (inf), and inf - inf is nan.
    low, high = np.percentile(values, 5, method="lower"), np.percentile(values, 95, method="higher")
    return float(low), float(high), float(np.mean(values <= TARGET_FFE))


RUN_COLUMNS = ("algorithm", "task", "seed", "recommendations", "restarts", "seconds")


def run_table(per_run: list[dict[str, Any]]) -> dict[str, Any]:
    """Every run as one row under shared column names: keys repeated per run made these files megabytes. A row's
    normalised regret is its regret / (best_any - worst) of its task, both stored beside the table."""
    columns = [*RUN_COLUMNS, *(f"regret at {x} FFE" for x in CHECKPOINTS)]
    rows = [
        [*(r[k] for k in RUN_COLUMNS[:-1]), round(r["seconds"], 3), *(r["regret_at"][str(x)] for x in CHECKPOINTS)]
        for r in per_run
    ]
    return {"columns": columns, "rows": rows}


def write_report(stem: str, runs: list[dict[str, Any]], summary: dict[str, Any], protocol: dict[str, Any],
                 table: str) -> None:
    """benchmarks/results/<stem>.json (protocol, summary, regret of every run at the checkpoints) and .md."""
    per_run = [
        {k: r[k] for k in RUN_COLUMNS}
        | {"regret_at": {str(x): round(r["regret"][round(x * MAX_EPOCH) - 1], 4) for x in CHECKPOINTS}}
        for r in runs
    ]
    report = {
        "protocol": protocol,
        "summary": {
            a: {k: v for k, v in e.items() if k not in ("median_curve", "median_normalised_curve", "per_task_curve")}
            for a, e in summary["algorithms"].items()
        },
        "best_any": summary["best_any"],
        "worst": summary["worst"],
        "runs": run_table(per_run),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    # Compact, one line: thousands of per-run rows; the tables are in the .md.
    atomic_write_text(RESULTS / f"{stem}.json", json.dumps(_json_safe(report), separators=(",", ":")) + "\n")
    atomic_write_text(RESULTS / f"{stem}.md", table)


def command_args(argv: list[str] | None) -> str:
    """The arguments a run was given, as they would be typed after the script's name (for the report's header)."""
    return "".join(f" {shlex.quote(arg)}" for arg in (sys.argv[1:] if argv is None else argv))


def markdown(summary: dict[str, Any], args: argparse.Namespace, n_runs: int, seconds: float) -> str:
    lines = [
        "# HPO benchmark: YAHPO LCBench surrogate",
        "",
        f"Command: `.venv/bin/python benchmarks/hpo.py{args.command_args}`; tasks "
        f"{', '.join(args.tasks)}; {args.seeds} seeds each; {n_runs} runs per algorithm; one worker; budget "
        f"{BUDGET_FFE} x {MAX_EPOCH} epochs; wall time {seconds / 60:.1f} min.",
        "",
        *(
            [
                "**Oracle ranks (a diagnostic, not a result):** every algorithm was told each configuration's "
                "52-epoch val_accuracy, whatever it trained to; the epochs charged and the values observed are "
                "those of the real trainings.",
                "",
            ]
            if getattr(args, "oracle_ranks", False)
            else []
        ),
        "Median regret (accuracy points) after N full-fidelity equivalents (FFE); `FFE to random@30` is the "
        "budget at which the algorithm's median regret reaches random search's final one (median over tasks); "
        "`90% interval` and `P(<= 6 FFE)` come from resampling the seeds of each task (300 bootstrap rounds).",
        "",
        "| algorithm | "
        + " | ".join(f"{x} FFE" for x in CHECKPOINTS)
        + f" | FFE to random@30 | 90% interval | P(<= {TARGET_FFE:g} FFE) | recs/run | s/run |",
        "|---|" + "---|" * (len(CHECKPOINTS) + 5),
    ]
    for name, entry in summary["algorithms"].items():
        cells = [f"{entry['median_regret'][str(x)]:.2f}" for x in CHECKPOINTS]
        ffe = entry.get("ffe_to_random_final_median_task", math.nan)
        low, high = entry.get("ffe_to_random_final_interval90", (math.nan, math.nan))
        within = entry.get("probability_within_target", math.nan)
        lines.append(
            f"| {name} | " + " | ".join(cells) + f" | {ffe:.1f} | {low:.1f}-{high:.1f} | {within:.2f} | "
            f"{entry['recommendations_per_run']:.0f} | {entry['seconds_per_run']:.1f} |"
        )
    lines += [
        "",
        "Median normalised regret: regret / (best value any run observed - lowest 52-epoch val_accuracy of 1,000 "
        "fixed random configurations), per task, so 0 is the best value found and 1 the worst random "
        "configuration.",
        "",
        "| algorithm | " + " | ".join(f"{x} FFE" for x in CHECKPOINTS) + " |",
        "|---|" + "---|" * len(CHECKPOINTS),
    ]
    for name, entry in summary["algorithms"].items():
        cells = [f"{entry['median_normalised_regret'][str(x)]:.4f}" for x in CHECKPOINTS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict[str, Any], path: Path, title: str = "YAHPO LCBench surrogate, 1 worker") -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = np.arange(1, BUDGET_FFE * MAX_EPOCH + 1) / MAX_EPOCH
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, entry in summary["algorithms"].items():
        curve = np.maximum(np.asarray(entry["median_normalised_curve"]), 1e-4)
        ax.plot(
            grid,
            curve,
            label=name,
            lw=2 if name in ("random", "dehb", "bohb") else 1.2,
            ls="--" if name == "random" else "-",
        )
    if "random" in summary["algorithms"]:
        final = summary["algorithms"]["random"]["median_normalised_curve"][-1]
        ax.axhline(final, color="grey", lw=0.8, ls=":")
        ax.axvline(TARGET_FFE, color="grey", lw=0.8, ls=":")
        ax.annotate(f"random search at {BUDGET_FFE} FFE; 1/5 of its budget", (TARGET_FFE, final),
                    xytext=(4, 4), textcoords="offset points", fontsize=7, color="grey")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("budget (full-fidelity equivalents, 52 epochs each)")
    ax.set_ylabel("median normalised regret")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(ncol=2, fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def benchmark_parser(description: str | None, seeds: int) -> argparse.ArgumentParser:
    """The options every LCBench benchmark script shares (hpo.py, hpo_reference.py, hpo_store.py)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 tasks x 2 seeds (smoke run)")
    parser.add_argument("--seeds", type=int, default=seeds)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS),
                        help="OpenML task ids, `all` (35 tasks) or `others` (the 30 outside TAO's five)")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    return parser


def add_resume_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the runs that an interrupted invocation with the same --stem finished (each run is kept in "
        "benchmarks/out/<stem>.runs.jsonl as it ends, until the report is written)",
    )


def resolve_tasks(args: argparse.Namespace) -> bool:
    """Expands --tasks all / others and --quick in place; False (after saying why) when the surrogate is missing."""
    if not (DATA_DIR / "model.onnx").is_file():
        print(f"The LCBench surrogate is not at {DATA_DIR}; set MAL_YAHPO_LCBENCH.", file=sys.stderr)
        return False
    if args.tasks == ["all"]:
        args.tasks = lcbench_tasks()
    elif args.tasks == ["others"]:
        args.tasks = [task for task in lcbench_tasks() if task not in TASKS]
    if args.quick:
        args.tasks, args.seeds = args.tasks[:2], 2
    return True


def run_jobs(
    run: Callable[[Any], dict[str, Any]], jobs: list[Any], processes: int, journal: Path | None = None
) -> list[dict[str, Any]]:
    """Every job's run, in job order, from `processes` worker processes, with one progress line per run on stderr.

    With a `journal`, each run is appended to it as one line the moment it ends, and runs the journal already holds
    (an interrupted invocation with the same jobs) are read back instead of being run again, so a multi-hour
    benchmark survives being stopped. A job is known by its JSON text: the same label, task, seed and settings."""
    keys = [json.dumps(job, sort_keys=True) for job in jobs]
    runs: dict[int, dict[str, Any]] = {}
    if journal is not None:
        index = {key: i for i, key in enumerate(keys)}
        for key, done in read_journal(journal):
            if key in index:
                runs[index[key]] = done
        if runs:
            print(f"{journal}: {len(runs)} of {len(jobs)} runs already done, resuming", file=sys.stderr, flush=True)
    todo = [i for i in range(len(jobs)) if i not in runs]
    sink = journal.open("a", encoding="utf-8") if journal is not None else None

    def finished(i: int, result: dict[str, Any]) -> None:
        runs[i] = result
        if sink is not None:
            sink.write(json.dumps({"job": keys[i], "run": encode_run(result)}) + "\n")
            sink.flush()
        print(f"[{len(runs)}/{len(jobs)}] {result['algorithm']} task {result['task']} seed {result['seed']}: "
              f"{result['seconds']:.1f}s", file=sys.stderr, flush=True)  # fmt: skip

    try:
        if processes > 1 and len(todo) > 1:
            with ProcessPoolExecutor(processes) as pool:
                futures = {pool.submit(run, jobs[i]): i for i in todo}
                for future in as_completed(futures):
                    finished(futures[future], future.result())
        else:
            for i in todo:
                finished(i, run(jobs[i]))
    finally:
        if sink is not None:
            sink.close()
    return [runs[i] for i in range(len(jobs))]


def encode_run(run: dict[str, Any]) -> dict[str, Any]:
    """A run for the journal: its best-so-far curve (one value per charged epoch, a step function) as the epochs
    where it changes and the new values, which is 1,560 floats down to a few dozen."""
    curve = np.asarray(run["best_so_far"], dtype=float)
    known = ~np.isnan(curve)
    before_known = np.r_[False, known[:-1]]
    changed = np.flatnonzero((known != before_known) | (known & (curve != np.r_[np.nan, curve[:-1]])))
    steps = [[int(i), float(curve[i]) if known[i] else None] for i in changed]  # None: back to nothing observed
    return {**{k: v for k, v in run.items() if k != "best_so_far"}, "length": len(curve), "steps": steps}


def decode_run(entry: dict[str, Any]) -> dict[str, Any]:
    """The run `encode_run` wrote, with its best-so-far curve rebuilt (NaN before the first observation)."""
    curve = np.full(entry["length"], np.nan)
    for i, value in entry["steps"]:
        curve[i:] = np.nan if value is None else value
    run = {k: v for k, v in entry.items() if k not in ("length", "steps")}
    return {**run, "best_so_far": curve.tolist()}


def read_journal(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(job key, run) of every complete line of a journal; a line cut short by a crash is skipped."""
    if not path.is_file():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
            entries.append((record["job"], decode_run(record["run"])))
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return entries


def journal_path(stem: str, resume: bool) -> Path:
    """benchmarks/out/<stem>.runs.jsonl, emptied unless `resume` (then its runs are reused)."""
    path = JOURNALS / f"{stem}.runs.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not resume:
        path.unlink(missing_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, seeds=100)
    parser.add_argument("--algorithms", nargs="+", default=list(ALGORITHMS),
                        help="names, or NAME@KEY=VALUE,... for a variant with its own settings")
    parser.add_argument("--against", nargs="+", default=[],
                        help="algorithms of this run to compare every AUC with, besides random, tpe and bayesian")
    parser.add_argument("--stem", default=None, help="result file name (default: hpo_lcbench or hpo_lcbench_quick)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change one of the algorithms' settings, e.g. automl_reduction_factor=2")  # fmt: skip
    parser.add_argument("--oracle-ranks", action="store_true",
                        help="diagnostic: tell the algorithms every configuration's 52-epoch val_accuracy, whatever "
                             "it trained to (charging and what is observed do not change)")  # fmt: skip
    add_resume_option(parser)
    args = parser.parse_args(argv)
    args.command_args = command_args(argv)
    if not resolve_tasks(args):
        return 2
    for label in args.algorithms:  # a bad name or KEY=VALUE stops here, before any run
        if (name := split_variant(label)[0]) not in KNOWN_ALGORITHMS:
            raise SystemExit(f"--algorithms {label}: no algorithm {name!r}; choose from {', '.join(KNOWN_ALGORITHMS)}")
    if unknown := [name for name in args.against if name not in args.algorithms]:
        raise SystemExit(f"--against {unknown[0]}: not one of --algorithms ({' '.join(args.algorithms)})")
    overrides = parse_overrides(args.overrides)
    jobs = [
        (a, t, s, overrides, args.oracle_ranks) for a in args.algorithms for t in args.tasks for s in range(args.seeds)
    ]
    stem = args.stem or ("hpo_lcbench_quick" if args.quick else "hpo_lcbench")
    journal = journal_path(stem, args.resume)
    started = time.perf_counter()
    runs = run_jobs(_run, jobs, args.jobs, journal)
    seconds = time.perf_counter() - started
    worst = {task: worst_final_accuracy(task) for task in args.tasks}
    summary = summarise(runs, args.algorithms, args.tasks, worst)
    protocol = {
        "tasks": args.tasks,
        "seeds": args.seeds,
        "budget_ffe": BUDGET_FFE,
        "max_epoch": MAX_EPOCH,
        "settings": {**SETTINGS, **overrides},
        "observed": "val_accuracy at the epoch each training ends (the metric told to the algorithm)",
        "told": "the 52-epoch val_accuracy (oracle ranks)" if args.oracle_ranks else "the value observed",
        "reference": "best value any run of this benchmark observed on the task (best_any)",
        "normalised_by": "best_any - lowest 52-epoch val_accuracy of 1,000 random configurations, seed 0 (worst)",
        "wall_seconds": seconds,
    }
    table = markdown(summary, args, len(args.tasks) * args.seeds, seconds)
    write_report(stem, runs, summary, protocol, table)
    # the statistics the verdicts rest on (hpo_stats.py)
    stats, stats_table = analyse(RESULTS / f"{stem}.json", against=args.against)
    atomic_write_text(RESULTS / f"{stem}_stats.json", json.dumps(stats, indent=1) + "\n")
    atomic_write_text(RESULTS / f"{stem}_stats.md", stats_table + "\n")
    title = "YAHPO LCBench surrogate, 1 worker" + (": oracle ranks (a diagnostic)" if args.oracle_ranks else "")
    plot(summary, RESULTS / f"{stem}.png", title)
    journal.unlink(missing_ok=True)  # the report holds every run now
    print(table)
    print(stats_table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
