"""Reference implementations (the `dehb` package, Optuna's pruners, SMAC3) on benchmarks/hpo.py's protocol.

    nice -n 15 .venv/bin/python benchmarks/hpo_reference.py          # 5 tasks x 100 seeds (about 12 minutes)
    nice -n 15 .venv/bin/python benchmarks/hpo_reference.py --quick  # 2 tasks x 2 seeds, a smoke run

Needs `pip install dehb` (0.1.2; it pins numpy<2 but runs on numpy 2: install it with --no-deps next to its other
dependencies). It is not a project dependency: this script only answers whether reference implementations beat
ours on the LCBench surrogate.

`ref-smac` (SMAC3's MultiFidelityFacade) is left out unless asked for: smac pulls in scipy, scikit-learn and dask,
which the project venv must not gain, so it runs from a side venv that sees the project venv's packages:

    python3.11 -m venv ../smac-venv
    echo "$PWD/.venv/lib/python3.11/site-packages" > ../smac-venv/lib/python3.11/site-packages/mal_project.pth
    echo "$PWD/src" >> ../smac-venv/lib/python3.11/site-packages/mal_project.pth    # (run from the repository root)
    ../smac-venv/bin/pip install smac==2.4.1
    nice -n 15 ../smac-venv/bin/python benchmarks/hpo_reference.py --references ref-smac --seeds 20 --jobs 2

A run that includes ref-smac writes hpo_reference_smac{_quick}.json and .md, so that it never replaces the
committed results of the other references (made in the project venv, where smac is absent).

Every run goes through `hpo.simulate` itself, so the clock, the charging (every trained epoch, a resumed training
pays its extra epochs only, a training cut off by the budget is never observed), the observation (val_accuracy
at the epoch a training ends) and `hpo.summarise` are exactly those of hpo.py. The reference optimisers are
wrapped in adapters with our ask/tell interface and handed to `simulate` in place of `make_algorithm`:

- `ref-dehb`: `dehb.DEHB` (ask/tell, one worker), min_fidelity 52/27, max_fidelity 52, eta 3, its defaults
  otherwise (rand1_bin, F = 0.5, CR = 0.5). Its float fidelities 1.93, 5.78, 17.3, 52 train to round() epochs:
  2, 6, 17, 52, the budgets our Hyperband family uses. A promotion keeps the lower rung's config id and
  continues from that training's checkpoint (as our promotions do); a DE trial is a new config id and trains
  from scratch. Fitness told to DEHB = -val_accuracy (it minimises).
- `ref-optuna-hyperband` / `ref-optuna-asha`: an Optuna study with `RandomSampler` and
  `HyperbandPruner(min_resource=2, max_resource=52, reduction_factor=3)` or
  `SuccessiveHalvingPruner(min_resource=2, reduction_factor=3)`. A trial reports the surrogate's curve epoch
  by epoch (`trial.report` + `should_prune`) and stops where it is pruned; with one worker this is decided
  before the next trial starts, so the adapter hands `simulate` one training to the epoch where it stops.
- `ref-smac`: `smac.MultiFidelityFacade` (ask/tell, one worker) with its Hyperband intensifier, eta 3,
  min_budget 52/27, max_budget 52: budgets 1.93, 5.78, 17.3, 52 round to 2, 6, 17, 52 epochs as for ref-dehb
  (min_budget 2 would give SMAC only three rungs, 5.78 to 52). Its defaults otherwise: a random-forest surrogate
  (10 trees, log-scaled costs, EI), a random initial design of 10 configurations per hyperparameter (70), every
  fifth configuration random. SMAC evaluates every trial from scratch at its budget, so a promoted configuration
  trains again from epoch 0 and pays its whole budget: that is SMAC's own semantics, kept here, not a resume.
  Cost told to SMAC = 100 - val_accuracy (it minimises). n_trials is far above what 30 FFE buys, so the budget
  ends a run, not SMAC.

Our random search (the control for `FFE to random@30`) and, by default, our multi-fidelity algorithms run in the
same script, on the same seeds, so every column is computed against the same random runs and the same best_any.

`FFE to random@30` moves a lot with the seed set: over three disjoint sets of 10 seeds our DEHB gave 10.2, 8.6
and 4.0 and the dehb package 8.0, 15.1 and 19.8, and 30 seeds still put our DEHB at 5.9 where 100 give 8.6. The
default is therefore 100 seeds, the same as hpo.py.

The tables add the median regret at 10 and 30 FFE against TAO's fixed best values (hpo_stats.TAO_BEST), the
figures TAO's own algorithms are quoted with.

Writes benchmarks/results/hpo_reference{_smac}{_quick}.json and .md.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import logging
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

# One BLAS thread per process, as in hpo.py (which sets these too, but only after numpy has been loaded here);
# LOKY_MAX_CPU_COUNT=1 makes SMAC's random forest (scikit-learn, n_jobs=-1) fit its trees on one thread, so that
# --jobs 2 on two cores does not run four threads. Neither changes what any optimiser proposes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("LOKY_MAX_CPU_COUNT", "1")

import numpy as np  # after the thread limits, which the BLAS library reads when numpy loads it

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hpo
from hpo import BUDGET_FFE, summarise
from hpo_stats import TAO_BEST, TAO_REGRET
from yahpo import MAX_EPOCH, LCBench, worst_final_accuracy

from mal.automl.algorithms import Recommendation
from mal.automl.space import SearchSpace

REFERENCES = ("ref-dehb", "ref-optuna-hyperband", "ref-optuna-asha", "ref-smac")
DEFAULT_REFERENCES = ("ref-dehb", "ref-optuna-hyperband", "ref-optuna-asha")  # ref-smac needs the side venv
OURS = ("random", "hyperband", "asha", "bohb", "dehb", "pbt")
ETA = 3
MIN_EPOCHS = 2  # the Optuna pruners' min_resource; DEHB's 52/27 rounds to the same 2 epochs


class _Adapter:
    """Our ask/tell interface (what `hpo.simulate` drives) over a reference optimiser; never finishes."""

    def __init__(self) -> None:
        self._next_rec = 0

    def _rec_id(self) -> int:
        self._next_rec += 1
        return self._next_rec - 1

    def is_finished(self) -> bool:
        return False  # every reference keeps proposing for as long as it is asked


class ReferenceDEHB(_Adapter):
    """The `dehb` package's DEHB through its ask/tell interface."""

    def __init__(self, space: SearchSpace, seed: int, output_dir: Path) -> None:
        super().__init__()
        import ConfigSpace as CS
        from dehb import DEHB

        cs = CS.ConfigurationSpace()
        for param in space.params:
            kind = CS.UniformIntegerHyperparameter if param.kind == "int" else CS.UniformFloatHyperparameter
            cs.add(kind(param.name, lower=param.low, upper=param.high, log=param.log))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # dehb 0.1.2 calls ConfigSpace 0.x names
            self.dehb = DEHB(
                cs=cs,
                min_fidelity=MAX_EPOCH / 27,
                max_fidelity=MAX_EPOCH,
                eta=ETA,
                n_workers=1,
                seed=seed,
                output_path=str(output_dir),
                save_freq="end",  # "incumbent" would write parquet files on every improvement
                log_level="ERROR",
            )
        if self.dehb.max_SH_iter != 4:  # 52/27 must give four rungs (2, 6, 17, 52 epochs) like ours
            raise RuntimeError(f"dehb built {self.dehb.max_SH_iter} rungs: {self.dehb.fidelities}")
        self._jobs: dict[int, dict[str, Any]] = {}
        self._trained: dict[int, tuple[int, int]] = {}  # dehb config id -> (rec id, epochs) of its longest training

    def ask(self) -> Recommendation:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            job = self.dehb.ask()
        epochs = round(float(job["fidelity"]))
        params = {name: (int(v) if isinstance(v, (int, np.integer)) else float(v)) for name, v in job["config"].items()}
        rec_id = self._rec_id()
        earlier = self._trained.get(int(job["config_id"]))
        # a promotion (same config id, higher fidelity) continues from its checkpoint; anything else starts afresh
        resume_from = earlier[0] if earlier is not None and earlier[1] < epochs else None
        if earlier is None or earlier[1] < epochs:
            self._trained[int(job["config_id"])] = (rec_id, epochs)
        self._jobs[rec_id] = job
        info = {"fidelity": float(job["fidelity"]), "config_id": int(job["config_id"]), "bracket": job["bracket_id"]}
        return Recommendation(rec_id, params, epochs, resume_from, info)

    def tell(self, rec_id: int, metric: float) -> None:
        job = self._jobs.pop(rec_id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            self.dehb.tell(job, {"fitness": -metric, "cost": float(round(float(job["fidelity"])))})


class ReferenceOptuna(_Adapter):
    """An Optuna study with RandomSampler and one of Optuna's successive-halving pruners, one trial at a time."""

    def __init__(self, space: SearchSpace, seed: int, bench: LCBench, pruner: str) -> None:
        super().__init__()
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        if pruner == "hyperband":
            chosen: optuna.pruners.BasePruner = optuna.pruners.HyperbandPruner(
                min_resource=MIN_EPOCHS, max_resource=MAX_EPOCH, reduction_factor=ETA
            )
        else:
            chosen = optuna.pruners.SuccessiveHalvingPruner(min_resource=MIN_EPOCHS, reduction_factor=ETA)
        # HyperbandPruner assigns trials to brackets by a hash of the study name: fix it for reproducible runs
        self.study = optuna.create_study(
            study_name=f"{pruner}-{bench.task}-{seed}",
            direction="maximize",
            sampler=optuna.samplers.RandomSampler(seed=seed),
            pruner=chosen,
        )
        self.distributions: dict[str, Any] = {
            p.name: (
                optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log)
                if p.kind == "int"
                else optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)
            )
            for p in space.params
        }
        self.bench = bench
        self._trials: dict[int, Any] = {}

    def ask(self) -> Recommendation:
        trial = self.study.ask(self.distributions)
        params = dict(trial.params)
        curve = self.bench.curve(params)
        stop = MAX_EPOCH
        for epoch in range(1, MAX_EPOCH + 1):
            trial.report(float(curve[epoch - 1]), epoch)
            if epoch < MAX_EPOCH and trial.should_prune():
                stop = epoch
                break
        rec_id = self._rec_id()
        self._trials[rec_id] = (trial, stop)
        return Recommendation(rec_id, params, stop, None, {"trial": trial.number, "pruned_at": stop})

    def tell(self, rec_id: int, metric: float) -> None:
        from optuna.trial import TrialState

        trial, stop = self._trials.pop(rec_id)
        if stop < MAX_EPOCH:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, metric)


class ReferenceSMAC(_Adapter):
    """SMAC3's MultiFidelityFacade (Hyperband intensifier) through its ask/tell interface."""

    def __init__(self, space: SearchSpace, seed: int, output_dir: Path) -> None:
        super().__init__()
        import ConfigSpace as CS
        from smac import MultiFidelityFacade, Scenario
        from smac.intensifier.hyperband import Hyperband

        # logging_level=False below keeps SMAC from installing its own logging config (it would reset the root
        # logger); its per-trial INFO lines are silenced here instead
        logging.getLogger("smac").setLevel(logging.ERROR)
        cs = CS.ConfigurationSpace(seed=seed)
        for param in space.params:
            if param.kind == "int":
                cs.add(CS.Integer(param.name, (int(param.low), int(param.high)), log=param.log))
            else:
                cs.add(CS.Float(param.name, (float(param.low), float(param.high)), log=param.log))
        scenario = Scenario(
            cs,
            name=f"seed-{seed}",
            output_directory=output_dir,
            deterministic=True,  # the surrogate returns one value per (config, epoch): no repeated seeds
            n_trials=100_000,  # about 140 trials fit in 30 FFE: the budget, not n_trials, ends a run
            min_budget=MAX_EPOCH / 27,
            max_budget=MAX_EPOCH,
            seed=seed,
        )
        intensifier = Hyperband(scenario, eta=ETA, seed=seed)
        self.smac = MultiFidelityFacade(
            scenario,
            target_function=_never_called,  # ask/tell: SMAC never runs it, but the facade wants one
            intensifier=intensifier,
            logging_level=False,
            overwrite=True,
        )
        self.space = space
        self._trials: dict[int, Any] = {}

    def ask(self) -> Recommendation:
        trial = self.smac.ask()
        epochs = round(float(trial.budget))
        params = self.space.validate(dict(trial.config), "SMAC's configuration")
        rec_id = self._rec_id()
        self._trials[rec_id] = trial
        # no resume_from: SMAC trains each trial from scratch at its budget, so simulate charges all its epochs
        return Recommendation(rec_id, params, epochs, None, {"budget": float(trial.budget)})

    def tell(self, rec_id: int, metric: float) -> None:
        from smac.runhistory.dataclasses import TrialValue

        # save=False: writing the run history to disk after every trial is most of a tell's time otherwise
        self.smac.tell(self._trials.pop(rec_id), TrialValue(cost=100.0 - metric), save=False)


def _never_called(config: Any, seed: int = 0, budget: float = 0.0) -> float:
    raise AssertionError("SMAC runs here through ask/tell only")


_BENCHES: dict[str, LCBench] = {}  # one surrogate per task and process: loading the ONNX model is not free


def _bench(task: str) -> LCBench:
    if task not in _BENCHES:
        _BENCHES[task] = LCBench(task)
    return _BENCHES[task]


def simulate_reference(algorithm: str, task: str, seed: int, bench: LCBench, output_dir: Path) -> dict[str, Any]:
    """`hpo.simulate` with a reference optimiser in place of ours (and a surrogate shared per task)."""

    def make(name: str, space: SearchSpace, settings: Any, seed: int | None = None) -> _Adapter:
        assert seed is not None
        if name == "ref-dehb":
            return ReferenceDEHB(space, seed, output_dir)
        if name == "ref-smac":
            return ReferenceSMAC(space, seed, output_dir / f"smac-{task}")
        return ReferenceOptuna(space, seed, bench, name.removeprefix("ref-optuna-"))

    return hpo.simulate(algorithm, task, seed, make=make, bench=bench)


def _run(job: tuple[str, str, int, str]) -> dict[str, Any]:
    """One (algorithm, task, seed) run; module level so that --jobs can hand it to worker processes."""
    algorithm, task, seed, scratch = job
    if algorithm in REFERENCES:
        return simulate_reference(algorithm, task, seed, _bench(task), Path(scratch))
    return hpo.simulate(algorithm, task, seed, bench=_bench(task))


def regret_vs_tao(runs: list[dict[str, Any]], algorithms: list[str]) -> dict[str, dict[str, float]]:
    """Median regret at 10 and 30 FFE against TAO's fixed best values, over task x seed: TAO's own measure."""
    out: dict[str, dict[str, float]] = {}
    for algorithm in algorithms:
        mine = [r for r in runs if r["algorithm"] == algorithm]
        out[algorithm] = {
            str(ffe): float(np.median([TAO_BEST[r["task"]] - r["best_so_far"][ffe * MAX_EPOCH - 1] for r in mine]))
            for ffe in (10, 30)
        }
    return out


def _versions() -> dict[str, str]:
    names = ("dehb", "optuna", "smac", "ConfigSpace", "scikit-learn", "numpy", "onnxruntime")
    found = {}
    for name in names:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def markdown(
    summary: dict[str, Any],
    args: argparse.Namespace,
    n_runs: int,
    seconds: float,
    tao: dict[str, dict[str, float]] | None = None,
) -> str:
    """hpo.py's table (the same columns, rendered by hpo.markdown) under this script's header."""
    table = hpo.markdown(summary, args, n_runs, seconds).splitlines()
    table = table[table.index(next(line for line in table if line.startswith("| algorithm"))) :]
    versions = ", ".join(f"{k} {v}" for k, v in _versions().items())
    per_task = [
        "| algorithm | " + " | ".join(args.tasks) + " |",
        "|---|" + "---|" * len(args.tasks),
    ]
    for name, entry in summary["algorithms"].items():
        cells = [f"{entry['ffe_to_random_final_per_task'][t]:.1f}" for t in args.tasks]
        per_task.append(f"| {name} | " + " | ".join(cells) + " |")
    tao_lines = []
    if tao is not None:
        tao_lines = [
            "",
            "Median regret against TAO's fixed best values (" + ", ".join(f"{t} {v}" for t, v in TAO_BEST.items())
            + "), over task x seed, with TAO's own figure for the algorithm of that name where it has one:",
            "",
            "| algorithm | 10 FFE | 30 FFE | TAO 10 FFE | TAO 30 FFE |",
            "|---|---|---|---|---|",
        ]  # fmt: skip
        for name, entry in tao.items():
            quoted = TAO_REGRET.get(name)
            theirs = f"{quoted[10]:.2f} | {quoted[30]:.2f}" if quoted else "- | -"
            tao_lines.append(f"| {name} | {entry['10']:.2f} | {entry['30']:.2f} | {theirs} |")
    smac_text = (
        " `ref-smac` is SMAC3's MultiFidelityFacade (Hyperband intensifier, eta 3, budgets 52/27 to 52 rounded to "
        "2, 6, 17, 52 epochs, random-forest surrogate): it trains every trial from scratch, so a promotion pays "
        "its whole budget again."
        if "ref-smac" in args.references
        else ""
    )
    lines = [
        "# HPO benchmark: reference implementations on the YAHPO LCBench surrogate",
        "",
        f"Command: `nice -n 15 {_interpreter()} benchmarks/hpo_reference.py{args.command_args}`; "
        f"tasks {', '.join(args.tasks)}; {args.seeds} seeds each; {n_runs} runs per algorithm; one worker; budget "
        f"{BUDGET_FFE} x {MAX_EPOCH} epochs; wall time {seconds / 60:.1f} min. Packages: {versions}.",
        "",
        "Same protocol and code path as benchmarks/hpo.py (`hpo.simulate`, `hpo.summarise`). `ref-*` rows are the "
        "reference implementations: `ref-dehb` the DEHB authors' `dehb` package, `ref-optuna-hyperband` / "
        "`ref-optuna-asha` Optuna's RandomSampler with HyperbandPruner / SuccessiveHalvingPruner (min_resource 2, "
        "max_resource 52, reduction_factor 3), pruned epoch by epoch. The other rows are ours, run here on the same "
        "seeds; regrets are against the best value any run of THIS benchmark observed, so they differ slightly "
        "from hpo_lcbench.md, while `FFE to random@30` does not depend on that reference." + smac_text,
        "",
        *table,
        "",
        "`FFE to random@30` per task (median over seeds; inf = never reached within 30 FFE):",
        "",
        *per_task,
        *tao_lines,
    ]
    return "\n".join(lines) + "\n"


def _interpreter() -> str:
    """The Python this run used, as the report's command line shows it (the side venv for ref-smac)."""
    python = Path(sys.executable)
    try:
        return str(python.relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(python)


class _Serial:
    """ProcessPoolExecutor's `map` in this process (--jobs 1), so that one loop serves both."""

    def __enter__(self) -> _Serial:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Any, items: list[Any]) -> Any:
        return map(fn, items)


def main(argv: list[str] | None = None) -> int:
    parser = hpo.benchmark_parser(__doc__, seeds=100)
    parser.add_argument("--references", nargs="+", default=list(DEFAULT_REFERENCES), choices=REFERENCES)
    parser.add_argument("--ours", nargs="+", default=list(OURS), help="our algorithms to run alongside")
    args = parser.parse_args(argv)
    args.command_args = hpo.command_args(argv)
    if not hpo.resolve_tasks(args):
        return 2
    if "ref-dehb" in args.references and importlib.util.find_spec("dehb") is None:
        print(
            "ref-dehb needs the DEHB authors' package: .venv/bin/pip install --no-deps dehb==0.1.2 loguru "
            "ConfigSpace dask distributed pandas (or leave it out with --references ref-optuna-hyperband "
            "ref-optuna-asha).",
            file=sys.stderr,
        )
        return 2
    if "ref-smac" in args.references and importlib.util.find_spec("smac") is None:
        print("ref-smac needs SMAC3, which must stay out of the project venv: create a side venv (python3.11 -m "
              "venv ../smac-venv), put a .pth file in its site-packages naming .venv's site-packages and src, run "
              "../smac-venv/bin/pip install smac==2.4.1 and start this script with ../smac-venv/bin/python "
              "(commands in its docstring).", file=sys.stderr)  # fmt: skip
        return 2
    if "random" not in args.ours:
        args.ours = ["random", *args.ours]  # the control every FFE-to-random figure is measured against
    logging.getLogger("distributed").setLevel(logging.ERROR)
    algorithms = [*args.ours, *args.references]
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    # dehb and SMAC insist on an output folder; nothing in it is read back
    with tempfile.TemporaryDirectory(prefix="hpo_reference_") as scratch:
        jobs = [(a, t, s, scratch) for a in algorithms for t in args.tasks for s in range(args.seeds)]
        with ProcessPoolExecutor(args.jobs) if args.jobs > 1 else _Serial() as pool:
            for i, run in enumerate(pool.map(_run, jobs), 1):
                runs.append(run)
                print(
                    f"[{i}/{len(jobs)}] {run['algorithm']} task {run['task']} seed {run['seed']}: "
                    f"{run['seconds']:.1f}s",
                    file=sys.stderr,
                    flush=True,
                )
    seconds = time.perf_counter() - started
    summary = summarise(runs, algorithms, args.tasks, {task: worst_final_accuracy(task) for task in args.tasks})
    tao = regret_vs_tao(runs, algorithms) if all(task in TAO_BEST for task in args.tasks) else None
    if tao is not None:
        for name, entry in tao.items():
            summary["algorithms"][name]["median_regret_vs_tao_best"] = entry
    # a run with SMAC (from the side venv) gets its own files: the committed hpo_reference.* stay as they are
    stem = "hpo_reference" + ("_smac" if "ref-smac" in args.references else "") + ("_quick" if args.quick else "")
    protocol = {
        "same_as": "benchmarks/hpo.py (hpo.simulate, hpo.summarise)",
        "tasks": args.tasks,
        "seeds": args.seeds,
        "budget_ffe": BUDGET_FFE,
        "max_epoch": MAX_EPOCH,
        "references": {
            "ref-dehb": "dehb.DEHB(min_fidelity=52/27, max_fidelity=52, eta=3, n_workers=1), ask/tell; "
            "fidelity rounded to epochs (2, 6, 17, 52); promotions resume, DE trials train from scratch",
            "ref-optuna-hyperband": "optuna RandomSampler + HyperbandPruner(min_resource=2, max_resource=52, "
            "reduction_factor=3), reported epoch by epoch",
            "ref-optuna-asha": "optuna RandomSampler + SuccessiveHalvingPruner(min_resource=2, "
            "reduction_factor=3), reported epoch by epoch",
            "ref-smac": "smac.MultiFidelityFacade + Hyperband(eta=3), Scenario(min_budget=52/27, max_budget=52, "
            "deterministic=True, n_trials=100000), ask/tell, cost = 100 - val_accuracy; budgets rounded to epochs "
            "(2, 6, 17, 52); every trial trains from scratch (SMAC's semantics), so promotions pay their whole "
            "budget",
        },
        "regret_vs_tao_best": "median over task x seed of TAO_BEST[task] - best value observed by 10 / 30 FFE",
        "jobs": args.jobs,
        "versions": _versions(),
        "wall_seconds": seconds,
    }
    table = markdown(summary, args, len(args.tasks) * args.seeds, seconds, tao)
    hpo.write_report(stem, runs, summary, protocol, table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
