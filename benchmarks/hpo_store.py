"""The shared-store path (`mal automl worker` on an Optuna study) against the single process, on hpo.py's protocol.

    .venv/bin/python benchmarks/hpo_store.py --jobs 2 --seeds 20   # 5 tasks x 20 seeds x 5 algorithms x 2 paths
    .venv/bin/python benchmarks/hpo_store.py --quick               # 2 tasks x 2 seeds, a smoke run

Every algorithm that workers run as peers on a store (`shared_store = True`: random, tpe, bayesian, asha, bohb)
runs twice on the same tasks and seeds through the same `hpo.simulate`: once as the single-process algorithm
(`make_algorithm`, what `mal automl run` drives) and once as ONE store worker (`StoreWorker`), so the charging
(every trained epoch), the observation (val_accuracy at the epoch a training ends) and the budget (30 x 52 epochs)
are those of hpo.py for both.

`StoreWorker` does for each recommendation what `mal.automl.worker.StudyWorker` does for one trial: queue the
trial as the study's creator would (`mal.automl.storage.create_distributed_study`: random and asha draw every
configuration up front from (seed, slot)), claim it, build the trial with the algorithm's `store_sampler`, suggest
the `u:` unit keys, take the queued `params` or `SearchSpace.from_unit` of the sampled point, then report the
surrogate's curve epoch by epoch to the algorithm's `store_pruner` until it prunes or the full budget is reached.
A store trial always trains from scratch and is stopped, never paused: `simulate` is handed one training to the
epoch where the pruner stopped it.

Writes benchmarks/results/hpo_store{_quick}.json and .md: per algorithm the median regret of both paths at 5, 10,
20 and 30 FFE (against the best value any run of THIS script observed on the task), the paired difference
(store - single) of normalised regret AUC over 1..30 FFE with a 90 % bootstrap interval (seeds resampled within
each task, `hpo_stats.two_level_bootstrap`), recommendations and seconds per run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

# One BLAS thread per process, set before numpy loads its BLAS library (as hpo.py does): with --jobs 2 every process
# would otherwise start a thread per core, and the GP's small products run several times slower that way.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hpo  # noqa: E402 - everything below comes after the thread limits
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from hpo import BUDGET_FFE, CHECKPOINTS, RESULTS, SETTINGS, summarise  # noqa: E402
from hpo_stats import CHECKS, normalised_scores, two_level_bootstrap  # noqa: E402
from optuna.exceptions import UpdateFinishedTrialError  # noqa: E402
from optuna.trial import TrialState  # noqa: E402
from yahpo import MAX_EPOCH, LCBench, worst_final_accuracy  # noqa: E402

from mal.automl.algorithms import ALGORITHMS, Recommendation  # noqa: E402
from mal.automl.algorithms.hyperband import full_budget  # noqa: E402
from mal.automl.settings import parse_settings  # noqa: E402
from mal.automl.space import SearchSpace  # noqa: E402
from mal.automl.storage import UNIT_PREFIX, unit_params  # noqa: E402
from mal.automl.trial_record import best_of  # noqa: E402
from mal.fileio import atomic_write_text  # noqa: E402

STORE_ALGORITHMS = tuple(name for name, algorithm in ALGORITHMS.items() if algorithm.shared_store)
STORE_SUFFIX = "@store"
CURVE_KEYS = ("median_curve", "median_normalised_curve", "per_task_curve")  # not in the JSON: megabytes
STORE_SETTINGS: dict[str, Any] = {**SETTINGS, "automl_max_concurrent": 1}

optuna.logging.set_verbosity(optuna.logging.WARNING)


class StoreWorker:
    """One `mal automl worker` with one slot on an in-memory study, behind simulate's ask/tell/is_finished.

    With one worker and one slot a trial's pruning decisions depend only on trials that have finished, so the
    whole training can be run (reported to the pruner) inside `ask`, and simulate is told where it stopped.
    """

    def __init__(self, name: str, space: SearchSpace, settings: Mapping[str, Any], seed: int, bench: LCBench) -> None:
        self.algorithm = ALGORITHMS[name]
        if not self.algorithm.shared_store:
            raise ValueError(f"{name} does not run on a shared store (peers: {list(STORE_ALGORITHMS)})")
        self.settings = parse_settings({**settings, "algorithm": name, "seed": seed})
        self.space, self.bench = space, bench
        self.full = full_budget(self.settings)
        if self.full != MAX_EPOCH:
            raise ValueError(f"the store trains {self.full} epochs, the surrogate has {MAX_EPOCH}")
        self.planned = self.algorithm.store_trials(self.settings)
        # The study name picks each trial's Hyperband bracket (a CRC of name and number): fixed per run, so the same
        # (algorithm, task, seed) gives the same run.
        self.study = optuna.create_study(
            storage=optuna.storages.InMemoryStorage(),
            study_name=f"hpo-store-{name}-{bench.task}-{seed}",
            direction=self.settings.direction,
        )
        self.study.pruner = self.algorithm.store_pruner(self.settings)  # as StudyWorker.__init__
        self.storage = self.study._storage
        self.study_id = self.study._study_id
        self._queued = 0
        self._running: dict[int, tuple[optuna.trial.Trial, bool]] = {}

    def _queue_next(self) -> None:
        """Queue slot `self._queued` as `create_distributed_study` does. It queues every planned slot up front
        (10,000 here); queuing each just before it is claimed gives the same study, because nothing reads a
        WAITING trial (the samplers skip trials without `params`, RandomSampler ignores history, and the pruners
        read only the rung values of trials that reported) and one worker claims them in slot order anyway."""
        number = self._queued
        params = None
        if not self.algorithm.samples_in_store:
            params = self.space.sample(np.random.default_rng([self.settings.seed, number]))
        if params is None:
            self.study.enqueue_trial({}, user_attrs={"slot": number})
        else:
            self.study.enqueue_trial(unit_params(self.space, params), user_attrs={"slot": number, "params": params})
        self._queued += 1

    def _claim(self) -> int:
        """`StudyWorker._claim`: flip the first WAITING trial to RUNNING (a method of a worker that needs a real
        storage URL and platform, so its two storage calls are repeated here)."""
        for frozen in self.storage.get_all_trials(self.study_id, deepcopy=False, states=(TrialState.WAITING,)):
            tid = self.storage.get_trial_id_from_study_id_trial_number(self.study_id, frozen.number)
            if self.storage.set_trial_state_values(tid, TrialState.RUNNING):
                return tid
        raise RuntimeError("no WAITING trial to claim")

    def ask(self) -> Recommendation | None:
        if self._queued >= self.planned:
            return None
        self._queue_next()
        tid = self._claim()
        number = self.storage.get_trial(tid).number
        # From here to the user attrs: `StudyWorker._start`, without the spec file, heartbeat and job submission.
        self.study.sampler = self.algorithm.store_sampler(self.settings, number, self.planned, self.space)
        trial = optuna.trial.Trial(self.study, tid)
        unit = [trial.suggest_float(f"{UNIT_PREFIX}{name}", 0.0, 1.0) for name in self.space.names]
        params = trial.user_attrs.get("params")
        proposal = None
        if params is None:
            params = self.space.from_unit(unit)
            proposal = getattr(self.study.sampler, "last_proposal", None)
            if proposal is not None:
                trial.set_user_attr("proposal", proposal)
        trial.set_user_attr("params", params)
        # `StudyWorker._poll`: every new epoch is reported, then the pruner is asked, the last epoch included.
        curve = self.bench.curve(params)
        stop, pruned = self.full, False
        for epoch in range(1, self.full + 1):
            trial.report(float(curve[epoch - 1]), epoch)
            if trial.should_prune():
                stop, pruned = epoch, True
                break
        self._running[number] = (trial, pruned)
        source = (proposal or {}).get("source", "queued" if proposal is None else None)
        return Recommendation(number, dict(params), stop, None, {"trial": number, "pruned": pruned, "source": source})

    def tell(self, rec_id: int, metric: float) -> None:
        """`StudyWorker.finish`. A pruned trial is told without a value and Optuna records its last reported one,
        as on a real store. A completed trial is recorded with `metric`, the value simulate tells every algorithm
        (the last epoch's), where a real worker records the best epoch (`best_of`): the real single-process runner
        tells the best epoch too, so giving both paths the last one keeps that difference out of the comparison."""
        trial, pruned = self._running.pop(rec_id)
        try:
            reported = self.storage.get_trial(trial._trial_id).intermediate_values
            trial.set_user_attr("metric", best_of(reported, self.settings.direction))
            if pruned:
                self.study.tell(trial, None, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, metric, state=TrialState.COMPLETE)
        except UpdateFinishedTrialError as exc:  # only another worker could finish it; there is none
            raise RuntimeError(f"trial {rec_id} was finished behind this worker's back") from exc

    def is_finished(self) -> bool:
        return self._queued >= self.planned and not self._running


def make_store_search(
    name: str, space: SearchSpace, settings: Mapping[str, Any], seed: int | None = None, *, bench: LCBench
) -> StoreWorker:
    """`simulate`'s `make` for the store path: `name` may carry STORE_SUFFIX (the label its runs are filed under)."""
    assert seed is not None
    return StoreWorker(name.removesuffix(STORE_SUFFIX), space, {**settings, "automl_max_concurrent": 1}, seed, bench)


_BENCHES: dict[str, LCBench] = {}  # one surrogate session per task and process


def run_one(job: tuple[str, str, int, str]) -> dict[str, Any]:
    """One (algorithm, task, seed) run on one path ("single" or "store"); its `algorithm` is the row label."""
    algorithm, task, seed, path = job
    bench = _BENCHES.get(task)
    if bench is None:
        bench = _BENCHES[task] = LCBench(task)
    if path == "single":
        return hpo.simulate(algorithm, task, seed, bench=bench)
    label = f"{algorithm}{STORE_SUFFIX}"
    return hpo.simulate(label, task, seed, make=partial(make_store_search, bench=bench), bench=bench)


def _checkpoint_curves(runs: list[dict[str, Any]]) -> dict[str, dict[tuple[str, int], dict[float, float]]]:
    """hpo_stats' `Runs` (label -> (task, seed) -> {FFE: regret}) from summarised runs, unrounded."""
    out: dict[str, dict[tuple[str, int], dict[float, float]]] = {}
    for run in runs:
        curve = {float(x): float(run["regret"][round(x * MAX_EPOCH) - 1]) for x in CHECKPOINTS}
        out.setdefault(run["algorithm"], {})[(run["task"], int(run["seed"]))] = curve
    return out


def compare(
    runs: list[dict[str, Any]], algorithms: list[str], summary: Mapping[str, Any], worst: Mapping[str, float]
) -> dict[str, Any]:
    """Per algorithm: both paths' medians, and the paired (store - single) difference of normalised regret AUC."""
    scores = normalised_scores(_checkpoint_curves(runs), summary["best_any"], worst)
    curves = {(r["algorithm"], (r["task"], int(r["seed"]))): r["best_so_far"] for r in runs}
    out: dict[str, Any] = {}
    for name in algorithms:
        single, store = scores[name], scores[f"{name}{STORE_SUFFIX}"]
        shared = sorted(set(single["auc"]) & set(store["auc"]))
        diff = {key: store["auc"][key] - single["auc"][key] for key in shared}
        mean, low, high = two_level_bootstrap(diff, np.mean, resample_tasks=False)
        _, task_low, task_high = two_level_bootstrap(diff, np.mean)
        entries = {"single": summary["algorithms"][name], "store": summary["algorithms"][f"{name}{STORE_SUFFIX}"]}
        out[name] = {
            "median_regret": {
                path: {str(x): e["median_regret"][str(x)] for x in CHECKS} for path, e in entries.items()
            },
            "auc_mean": {
                path: float(np.mean([scores_[k] for k in shared]))
                for path, scores_ in (("single", single["auc"]), ("store", store["auc"]))
            },
            "auc_difference": mean,
            "auc_difference_interval90": [low, high],
            "auc_difference_interval90_tasks_resampled": [task_low, task_high],
            "identical_runs": sum(curves[name, key] == curves[f"{name}{STORE_SUFFIX}", key] for key in shared),
            "runs": len(shared),
            "recommendations_per_run": {p: e["recommendations_per_run"] for p, e in entries.items()},
            "seconds_per_run": {p: e["seconds_per_run"] for p, e in entries.items()},
        }
    return out


def verdict(entry: Mapping[str, Any]) -> str:
    low, high = entry["auc_difference_interval90"]
    if low > 0:
        return "store worse"
    if high < 0:
        return "store better"
    return "no difference found"


def markdown(comparison: Mapping[str, Any], args: argparse.Namespace, seconds: float) -> str:
    def regrets(entry: Mapping[str, Any], path: str) -> str:
        return " / ".join(f"{entry['median_regret'][path][str(x)]:.2f}" for x in CHECKS)

    lines = [
        "# HPO benchmark: the shared-store path against the single process (YAHPO LCBench surrogate)",
        "",
        f"Command: `.venv/bin/python benchmarks/hpo_store.py{args.command_args}`; tasks {', '.join(args.tasks)}; "
        f"seeds 0..{args.seeds - 1}; one worker; budget {BUDGET_FFE} x {MAX_EPOCH} epochs; wall time "
        f"{seconds / 60:.1f} min.",
        "",
        "Both paths run through `hpo.simulate` on the same tasks and seeds: `single` is the algorithm as `mal automl "
        "run` drives it, `store` one `mal automl worker` on an Optuna study (the algorithm's store_sampler and "
        "store_pruner, trials reported epoch by epoch). Median regret in accuracy points at 5 / 10 / 20 / 30 FFE, "
        "against the best value any run of this benchmark observed on the task. `AUC store - single`: mean over "
        "(task, seed) of the paired difference of normalised regret AUC over 1..30 FFE (lower is better for the "
        "store), 90 % interval from 2,000 bootstrap rounds resampling seeds within each task; `AUC single` puts it "
        "on a scale. `same runs`: runs whose best-so-far curve is identical on both paths.",
        "",
        "| algorithm | single: regret 5/10/20/30 FFE | store: regret 5/10/20/30 FFE | AUC single | "
        "AUC store - single (90 %) | verdict | same runs | recs/run single / store | s/run single / store |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, entry in comparison.items():
        low, high = entry["auc_difference_interval90"]
        recs, secs = entry["recommendations_per_run"], entry["seconds_per_run"]
        lines.append(
            f"| {name} | {regrets(entry, 'single')} | {regrets(entry, 'store')} | {entry['auc_mean']['single']:.3f} | "
            f"{entry['auc_difference']:+.3f} [{low:+.3f}, {high:+.3f}] | {verdict(entry)} | "
            f"{entry['identical_runs']}/{entry['runs']} | {recs['single']:.0f} / {recs['store']:.0f} | "
            f"{secs['single']:.2f} / {secs['store']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = hpo.benchmark_parser(__doc__, seeds=20)
    parser.add_argument("--algorithms", nargs="+", default=list(STORE_ALGORITHMS), choices=STORE_ALGORITHMS)
    hpo.add_resume_option(parser)
    args = parser.parse_args(argv)
    args.command_args = hpo.command_args(argv)
    if not hpo.resolve_tasks(args):
        return 2
    jobs = [(a, t, s, p) for a in args.algorithms for p in ("single", "store") for t in args.tasks
            for s in range(args.seeds)]  # fmt: skip
    stem = "hpo_store_quick" if args.quick else "hpo_store"
    journal = hpo.journal_path(stem, args.resume)
    started = time.perf_counter()
    runs = hpo.run_jobs(run_one, jobs, args.jobs, journal)
    seconds = time.perf_counter() - started
    labels = [label for a in args.algorithms for label in (a, f"{a}{STORE_SUFFIX}")]
    worst = {task: worst_final_accuracy(task) for task in args.tasks}
    summary = summarise(runs, labels, args.tasks, worst)
    comparison = compare(runs, args.algorithms, summary, worst)
    per_run = [
        {k: r[k] for k in hpo.RUN_COLUMNS}
        | {"regret_at": {str(x): round(r["regret"][round(x * MAX_EPOCH) - 1], 4) for x in CHECKPOINTS}}
        for r in runs
    ]
    report = {
        "protocol": {
            "same_as": "benchmarks/hpo.py (hpo.simulate, hpo.summarise)",
            "tasks": args.tasks,
            "seeds": args.seeds,
            "budget_ffe": BUDGET_FFE,
            "max_epoch": MAX_EPOCH,
            "settings": STORE_SETTINGS,
            "single": "make_algorithm(name), as benchmarks/hpo.py",
            "store": "one StudyWorker's trial loop on an in-memory Optuna study: store_sampler per trial, "
            "store_pruner asked after every epoch; a completed trial is recorded with the last epoch's value "
            "(what simulate tells), a pruned one with its last reported value",
            "reference": "best value any run of this benchmark observed on the task (best_any)",
            "interval": "90 %, 2000 bootstrap rounds, seeds resampled within each task (the task set fixed)",
            "wall_seconds": seconds,
            "versions": {"optuna": optuna.__version__},
        },
        "comparison": comparison,
        "summary": {
            label: {k: v for k, v in e.items() if k not in CURVE_KEYS} for label, e in summary["algorithms"].items()
        },
        "best_any": summary["best_any"],
        "worst": worst,
        "runs": hpo.run_table(per_run),
    }
    table = markdown(comparison, args, seconds)
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{stem}.json", json.dumps(hpo._json_safe(report), separators=(",", ":")) + "\n")
    atomic_write_text(RESULTS / f"{stem}.md", table)
    journal.unlink(missing_ok=True)  # the report holds every run now
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
