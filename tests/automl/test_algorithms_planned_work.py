"""Each algorithm owns its plan: `planned_work()` (what the launch review estimates) is what a search in which
every training succeeds really launches, recommendation for recommendation and epoch for epoch."""

from __future__ import annotations

import numpy as np
import pytest

from mal.automl.algorithms import ALGORITHMS, make_algorithm
from support.spaces import LR_WD

SPACE = LR_WD
SETTINGS = {
    "automl_max_epochs": 9,
    "automl_max_recommendations": 7,
    "automl_max_concurrent": 1,
    "automl_population_size": 4,
    "automl_max_generations": 3,
    "automl_eval_interval": 2,
}


def run_search(name: str) -> tuple[int, int]:
    """(recommendations, epochs trained) of a whole search whose every training succeeds, one at a time."""
    algo = make_algorithm(name, SPACE, SETTINGS, seed=0)
    rng = np.random.default_rng(0)
    budgets: dict[int, int] = {}
    recs = epochs = 0
    while not algo.is_finished():
        rec = algo.ask()
        assert rec is not None, f"{name} asked for nothing while no training runs"
        start = budgets[rec.resume_from] if rec.resume_from is not None else 0
        budgets[rec.rec_id] = rec.budget
        recs += 1
        epochs += rec.budget - start
        algo.tell(rec.rec_id, float(rng.random()))
    return recs, epochs


ASYNCHRONOUS_HALVING = ("asha", "mobster")


@pytest.mark.parametrize(
    "name", sorted(n for n, cls in ALGORITHMS.items() if not cls.needs_llm and n not in ASYNCHRONOUS_HALVING)
)
def test_the_plan_is_what_the_search_launches(name):
    algo = make_algorithm(name, SPACE, SETTINGS, seed=0)
    assert algo.planned_work() == run_search(name)


@pytest.mark.parametrize("name", ASYNCHRONOUS_HALVING)
def test_the_asha_plan_is_a_close_lower_estimate(name):
    """ASHA (and MOBSTER, which schedules like it, halving by default) promotes whoever is in the top 1/eta of a
    rung when a result arrives, so early results promote a few configurations the synchronous count does not:
    the plan may only undercount, and by little (more with eta = 2, where every second result promotes)."""
    planned = make_algorithm(name, SPACE, SETTINGS, seed=0).planned_work()
    launched = run_search(name)
    assert all(plan <= real <= 1.25 * plan for plan, real in zip(planned, launched)), (planned, launched)


def test_only_the_llm_family_needs_an_llm():
    assert {name for name, cls in ALGORITHMS.items() if cls.needs_llm} == {"llm", "hybrid", "autoresearch"}


def test_the_shared_store_runs_what_the_algorithms_say_they_support():
    from mal.automl.storage import DISTRIBUTED_ALGORITHMS

    # Workers run these as peers; every other algorithm runs on a store through one scheduler.
    assert set(DISTRIBUTED_ALGORITHMS) == {"random", "tpe", "bayesian", "asha", "bohb"}
    model_based = {name for name, cls in ALGORITHMS.items() if cls.samples_in_store}
    assert model_based == {"tpe", "bayesian", "bohb"} and model_based <= set(DISTRIBUTED_ALGORITHMS)
