"""benchmarks/hpo_store.py: one shared-store worker behind hpo.simulate's ask/tell, on the LCBench surrogate."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from optuna.trial import TrialState

hpo_store = pytest.importorskip("hpo_store")  # needs onnxruntime (benchmarks/yahpo.py)
hpo = pytest.importorskip("hpo")
yahpo = pytest.importorskip("yahpo")

pytestmark = pytest.mark.skipif(
    not (yahpo.DATA_DIR / "model.onnx").is_file(), reason=f"no LCBench surrogate at {yahpo.DATA_DIR}"
)

TASK = "3945"
BUDGET_FFE = 2
EPOCHS = yahpo.MAX_EPOCH
RUNGS = {2, 6, 18}  # Optuna's pruners from min_resource 2 with reduction factor 3 (the next, 54, is past 52)


class Recorded:
    """A StoreWorker whose asks and tells are kept, so a test can check what simulate charged and observed."""

    def __init__(self, worker: Any) -> None:
        self.worker = worker
        self.asked: list[Any] = []
        self.told: dict[int, float] = {}

    def ask(self) -> Any:
        rec = self.worker.ask()
        self.asked.append(rec)
        return rec

    def tell(self, rec_id: int, metric: float) -> None:
        self.told[rec_id] = metric
        self.worker.tell(rec_id, metric)

    def is_finished(self) -> bool:
        return self.worker.is_finished()


@pytest.fixture(scope="module")
def bench() -> Any:
    return yahpo.LCBench(TASK)


def store_run(
    algorithm: str, bench: Any, seed: int = 0, budget_ffe: int = BUDGET_FFE
) -> tuple[dict[str, Any], Recorded]:
    made: list[Recorded] = []

    def make(name: str, space: Any, settings: Any, seed: int | None = None) -> Recorded:
        made.append(Recorded(hpo_store.make_store_search(name, space, settings, seed=seed, bench=bench)))
        return made[-1]

    run = hpo.simulate(algorithm, TASK, seed, budget_ffe, make=make, bench=bench)
    assert len(made) == 1  # a store worker never finishes within the budget, so simulate never restarts it
    return run, made[0]


@pytest.mark.parametrize("algorithm", ["random", "tpe", "bayesian", "asha", "bohb"])
def test_simulate_charges_the_epochs_each_store_trial_ran(algorithm: str, bench: Any) -> None:
    run, recorded = store_run(algorithm, bench)
    budget = BUDGET_FFE * EPOCHS
    trials = {t.number: t for t in recorded.worker.study.trials}
    finished = [rec for rec in recorded.asked if rec.rec_id in recorded.told]
    assert all(rec.resume_from is None for rec in recorded.asked)  # a store trial always trains from scratch
    for rec in finished:
        # the epochs charged are the epochs the trial reported to the study, and the value told is the last one
        assert rec.budget == trials[rec.rec_id].last_step
        assert recorded.told[rec.rec_id] == pytest.approx(bench.curve(rec.params)[rec.budget - 1])
    spent = sum(rec.budget for rec in finished)
    assert spent <= budget
    cut_off = [rec for rec in recorded.asked if rec.rec_id not in recorded.told]
    if spent < budget:  # the budget ran out during the last training: charged, never observed
        assert len(cut_off) == 1 and cut_off[0].budget > budget - spent
    assert run["recommendations"] == len(recorded.asked)
    # the best-so-far curve steps exactly where each finished training's epochs have been charged
    curve, ends = np.asarray(run["best_so_far"]), np.cumsum([rec.budget for rec in finished])
    assert len(curve) == budget
    for i, end in enumerate(ends):
        assert curve[end - 1] == pytest.approx(max(recorded.told[rec.rec_id] for rec in finished[: i + 1]))


@pytest.mark.parametrize("algorithm", ["random", "tpe", "bayesian"])
def test_full_fidelity_searches_train_every_store_trial_to_the_full_budget(algorithm: str, bench: Any) -> None:
    _, recorded = store_run(algorithm, bench)
    assert [rec.budget for rec in recorded.asked] == [EPOCHS] * BUDGET_FFE
    states = [t.state for t in recorded.worker.study.trials]
    assert states == [TrialState.COMPLETE] * BUDGET_FFE


@pytest.mark.parametrize("algorithm", ["asha", "bohb"])
def test_the_store_pruner_stops_successive_halving_trials_at_its_rungs(algorithm: str, bench: Any) -> None:
    # Optuna's pruners let the first trials of a rung (of each Hyperband bracket) through, and 2 FFE may hold only those
    _, recorded = store_run(algorithm, bench, budget_ffe=10)
    trials = {t.number: t for t in recorded.worker.study.trials}
    stopped = [rec for rec in recorded.asked if rec.budget < EPOCHS]
    assert len(stopped) >= 3
    for rec in stopped:
        assert rec.budget in RUNGS
        if rec.rec_id in recorded.told:
            # as a worker records it: PRUNED, with the value it reported last (Optuna keeps it as the trial's value)
            assert trials[rec.rec_id].state == TrialState.PRUNED
            assert trials[rec.rec_id].value == pytest.approx(bench.curve(rec.params)[rec.budget - 1])
    assert any(rec.budget == EPOCHS for rec in recorded.asked)  # and lets the best ones train to the end


@pytest.mark.parametrize("algorithm", ["random", "tpe", "bayesian", "asha", "bohb"])
def test_store_params_are_valid_and_are_those_of_the_study_trials(algorithm: str, bench: Any) -> None:
    _, recorded = store_run(algorithm, bench)
    space = yahpo.lcbench_space()
    trials = {t.number: t for t in recorded.worker.study.trials}
    assert len({tuple(sorted(rec.params.items())) for rec in recorded.asked}) == len(recorded.asked)
    for rec in recorded.asked:
        trial = trials[rec.rec_id]
        assert space.validate(rec.params) == rec.params
        assert trial.user_attrs["params"] == rec.params
        unit = [trial.params[f"{hpo_store.UNIT_PREFIX}{name}"] for name in space.names]
        assert space.from_unit(unit) == rec.params
        if algorithm in ("random", "asha"):  # drawn up front from (seed, slot), as create_distributed_study does
            assert rec.params == space.sample(np.random.default_rng([0, rec.rec_id]))


@pytest.mark.parametrize("algorithm", ["tpe", "asha", "bohb"])
def test_the_same_seed_gives_the_same_store_run(algorithm: str, bench: Any) -> None:
    def sequence(seed: int) -> tuple[list[Any], list[float]]:
        run, recorded = store_run(algorithm, bench, seed)
        return [(rec.params, rec.budget) for rec in recorded.asked], run["best_so_far"]

    first = sequence(3)
    assert sequence(3) == first
    assert sequence(4)[0] != first[0]


@pytest.mark.parametrize("algorithm", ["random", "bayesian"])
def test_store_and_single_process_agree_where_they_draw_alike(algorithm: str, bench: Any) -> None:
    """Random search draws from (seed, number) on both paths, and the GP seeds each proposal by (seed, number) from
    the same history: with one worker told the same values, the two paths propose the same configurations."""
    single = hpo.simulate(algorithm, TASK, 5, BUDGET_FFE, bench=bench)
    store, _ = store_run(algorithm, bench, seed=5)
    assert store["best_so_far"] == single["best_so_far"]
    assert store["recommendations"] == single["recommendations"] == BUDGET_FFE
