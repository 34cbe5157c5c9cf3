"""Hyperband, ASHA, BOHB and DEHB: the behaviour that defines each (and where TAO deviates from the papers)."""

from __future__ import annotations

import math

import pytest

from mal.automl.algorithms import ASHA, BOHB, DEHB, MOBSTER, Hyperband, hyperband_brackets, make_algorithm
from mal.automl.algorithms.mobster import ladder_step
from mal.automl.space import SearchSpace

SPACE = SearchSpace.from_schema(
    {
        "properties": {
            "lr": {"type": "number", "minimum": 1e-5, "maximum": 1e-1, "log_scale": True},
            "dropout": {"type": "number", "minimum": 0.0, "maximum": 1.0},
            "layers": {"type": "integer", "minimum": 1, "maximum": 5},
        }
    },
    parameters=["lr", "dropout", "layers"],
)


def metric(params: dict, budget: int) -> float:
    """Better near lr = 1e-3, dropout = 0.3; more epochs help."""
    return -abs(math.log10(params["lr"]) + 3) - abs(params["dropout"] - 0.3) + 0.1 * math.log(budget)


def run_to_end(algo, fail=lambda rec: False, limit=2000):
    recs = []
    while not algo.is_finished():
        rec = algo.ask()
        assert rec is not None, "one worker: ask must not wait with nothing running"
        recs.append(rec)
        algo.tell(rec.rec_id, None if fail(rec) else metric(rec.params, rec.budget), failed=fail(rec))
        assert len(recs) < limit
    return recs


def test_hyperband_brackets_follow_the_paper():
    plans = hyperband_brackets(27, 3)
    assert [p.s for p in plans] == [3, 2, 1, 0]
    assert [p.sizes for p in plans] == [(27, 9, 3, 1), (12, 4, 1), (6, 2), (4,)]
    assert [p.resources[0] for p in plans] == [1, 3, 9, 27]
    assert all(p.resources[-1] == 27 for p in plans)


def test_hyperband_runs_every_bracket_and_promotes_the_top_third_with_resume():
    algo = Hyperband(SPACE, {"automl_max_epochs": 27, "automl_reduction_factor": 3}, seed=0)
    recs = run_to_end(algo)
    by_id = {r.rec_id: r for r in recs}
    firsts = [r for r in recs if r.resume_from is None]
    starts = {}
    for rec in firsts:
        starts.setdefault(rec.info["bracket"], []).append(rec.budget)
    assert {b: (len(v), v[0]) for b, v in starts.items()} == {0: (27, 1), 1: (12, 3), 2: (6, 9), 3: (4, 27)}
    assert len(recs) == 27 + 9 + 3 + 1 + 12 + 4 + 1 + 6 + 2 + 4
    # bracket 0, rung 1: exactly the best 9 of the 27 continue from their own checkpoints, to 3 epochs
    rung0 = [r for r in recs if r.info["bracket"] == 0 and r.info["rung"] == 0]
    rung1 = [r for r in recs if r.info["bracket"] == 0 and r.info["rung"] == 1]
    best9 = sorted(rung0, key=lambda r: -metric(r.params, r.budget))[:9]
    assert [r.resume_from for r in rung1] == [r.rec_id for r in best9]
    assert all(r.budget == 3 and r.params == by_id[r.resume_from].params for r in rung1)
    assert max(r.budget for r in recs) == 27


def test_hyperband_never_promotes_failed_trials():
    algo = Hyperband(SPACE, {"automl_max_epochs": 9}, seed=1)
    failing = set(range(0, 9, 2))  # five of the nine bottom-rung trainings fail
    recs = run_to_end(algo, fail=lambda rec: rec.rec_id in failing)
    promoted = [r.resume_from for r in recs if r.resume_from is not None]
    assert promoted and not failing & set(promoted)


def test_hyperband_epoch_multiplier_and_fifty_two_epochs():
    plans = hyperband_brackets(52, 3)
    algo = Hyperband(SPACE, {"automl_max_epochs": 52}, seed=0)
    assert algo.budgets == [2, 6, 17, 52]
    assert [p.sizes[0] for p in plans] == [27, 12, 6, 4]
    doubled = Hyperband(SPACE, {"automl_max_epochs": 27, "epoch_multiplier": 2}, seed=0)
    assert doubled.budgets == [2, 6, 18, 54]


def test_hyperband_repeats_brackets_until_max_trials():
    algo = Hyperband(SPACE, {"automl_max_epochs": 9, "automl_max_trials": 40}, seed=0)
    recs = run_to_end(algo)
    assert sum(r.resume_from is None for r in recs) == 40
    assert max(r.info["bracket"] for r in recs) > len(hyperband_brackets(9, 3))


def _asha(**settings):
    return ASHA(
        SPACE,
        {
            "automl_max_epochs": 9,
            "automl_reduction_factor": 3,
            "automl_max_trials": 30,
            "automl_max_concurrent": 1,
            **settings,
        },
        seed=0,
    )


def test_asha_promotes_the_top_third_of_each_rung():
    algo = _asha()
    assert algo.budgets == [1, 3, 9]
    values = [0.1, 0.9, 0.5]
    recs = []
    for value in values:
        rec = algo.ask()
        recs.append(rec)
        assert rec.budget == 1 and rec.resume_from is None
        algo.tell(rec.rec_id, value)
    promoted = algo.ask()
    assert promoted.budget == 3 and promoted.resume_from == recs[1].rec_id  # the best of three
    assert promoted.params == recs[1].params


def test_asha_failed_trials_are_not_completions():
    algo = _asha()
    outcomes = [0.5, None, 0.7]  # one failure: only two completions, 2 // 3 = 0 promotions
    for value in outcomes:
        rec = algo.ask()
        algo.tell(rec.rec_id, value, failed=value is None)
    rec = algo.ask()
    assert rec.budget == 1 and rec.resume_from is None  # a new configuration, no promotion yet
    algo.tell(rec.rec_id, 0.1)
    promoted = algo.ask()
    assert promoted.resume_from == 2 and promoted.budget == 3  # third completion: the best (0.7) goes up


def test_asha_keeps_max_concurrent_slots_busy_and_finishes_with_top_configs():
    algo = _asha(automl_max_concurrent=4, automl_max_trials=12, automl_min_top_configs=3)
    running = [algo.ask() for _ in range(4)]
    assert all(running) and algo.ask() is None  # four slots busy
    algo.tell(running[0].rec_id, 0.3)
    fifth = algo.ask()
    assert fifth is not None and algo.ask() is None
    for rec in [*running[1:], fifth]:
        algo.tell(rec.rec_id, 0.2)
    recs = run_to_end(algo)
    top = [r for r in list(algo.trials.values()) if r.rec.budget == 9 and r.status == "done"]
    assert len(top) >= 3 and len([t for t in algo.trials.values() if t.rec.resume_from is None]) == 12
    assert recs


def test_bohb_random_fraction_and_model_on_the_largest_ready_budget():
    algo = BOHB(
        SPACE,
        {"automl_max_epochs": 9, "automl_max_trials": 400, "automl_min_points_in_model": 4, "automl_kde_samples": 32},
        seed=3,
    )
    recs = run_to_end(algo)
    fresh = [r for r in recs if r.resume_from is None]
    assert fresh[0].info == {**fresh[0].info, "source": "random", "model_budget": None}
    after_model = [r for r in fresh if r.info["model_budget"] is not None]
    share_random = sum(r.info["source"] == "random" for r in after_model) / len(after_model)
    assert share_random == pytest.approx(1 / 3, abs=0.08)
    # once budget 9 has 4 results the model moves there and never back to a smaller budget
    budgets = [r.info["model_budget"] for r in after_model]
    assert budgets[-1] == 9 and budgets == sorted(budgets)
    # model proposals beat random ones on this problem
    model_mean = sum(metric(r.params, 9) for r in after_model if r.info["source"] == "model") / max(
        1, sum(r.info["source"] == "model" for r in after_model)
    )
    random_mean = sum(metric(r.params, 9) for r in after_model if r.info["source"] == "random") / max(
        1, sum(r.info["source"] == "random" for r in after_model)
    )
    assert model_mean > random_mean + 0.3


def test_bohb_good_and_bad_densities_never_share_points():
    algo = BOHB(SPACE, {"automl_min_points_in_model": 4, "automl_top_n_percent": 15}, seed=0)
    # hpbandster's sizes: good = max(min_points, 15% of n), bad = the next max(min_points, 85% of n)
    assert algo._split(27) == (4, 22)
    assert algo._split(6) == (4, 2)  # the bad set gets what is left, never the good points again
    assert algo._split(100) == (15, 85)
    # a budget needs more points than dimensions (3) in both sets before its model is used
    for _ in range(7):
        rec = algo.ask()
        algo.tell(rec.rec_id, metric(rec.params, rec.budget))
    assert algo.model_budget() is None  # 7 results at budget 1: 4 good, only 3 bad
    rec = algo.ask()
    algo.tell(rec.rec_id, metric(rec.params, rec.budget))
    assert algo.model_budget() == 1


def test_dehb_keeps_one_subpopulation_per_budget():
    algo = DEHB(SPACE, {"automl_max_epochs": 27, "automl_max_trials": 200}, seed=0)
    assert algo.pop_sizes == {1: 27, 3: 12, 9: 6, 27: 4}
    # every budget starts with its own random, not yet evaluated members
    assert {b: len(m) for b, m in algo.subpops.items()} == algo.pop_sizes
    assert all(m["score"] is None and m["rec_id"] is None for members in algo.subpops.values() for m in members)
    recs = run_to_end(algo)
    for budget, members in algo.subpops.items():
        assert len(members) == algo.pop_sizes[budget]
        evaluated = [m for m in members if m["rec_id"] is not None]
        assert evaluated and all(algo.trials[m["rec_id"]].rec.budget == budget for m in evaluated)
    de = [r for r in recs if r.info.get("source") == "de"]
    assert de and all(r.resume_from is None for r in de)  # DE trials are new vectors trained from scratch
    targeted = [r for r in de if r.info["target_rec_id"] is not None]
    assert all(algo.trials[r.info["target_rec_id"]].rec.budget == r.budget for r in targeted)
    # selection within a budget: a member that replaced an evaluated target is at least as good as it
    replaced = [r for r in targeted if any(m["rec_id"] == r.rec_id for m in algo.subpops[r.budget])]
    assert replaced
    for rec in replaced:
        assert metric(rec.params, rec.budget) >= metric(algo.trials[rec.info["target_rec_id"]].rec.params, rec.budget)


def test_dehb_first_iteration_promotes_like_hyperband_then_evolves():
    algo = DEHB(SPACE, {"automl_max_epochs": 27, "automl_max_trials": 120}, seed=0)
    recs = run_to_end(algo)
    first_iteration = [r for r in recs if r.info["bracket"] < 4]
    later = [r for r in recs if r.info["bracket"] >= 4]
    assert later
    # bracket 0's first rung trains the random initial members; higher rungs of the first iteration resume
    assert all(r.info["source"] == "random" for r in first_iteration if r.info["bracket"] == 0 and r.info["rung"] == 0)
    assert all(r.resume_from is not None for r in first_iteration if r.info["rung"] > 0)
    assert all(r.info["source"] == "de" for r in first_iteration if r.info["bracket"] > 0 and r.info["rung"] == 0)
    # afterwards every training is a DE trial from scratch, aimed at a member of its own budget
    assert all(r.info["source"] == "de" and r.resume_from is None for r in later)
    assert algo.checkpoints_in_use() <= {r.rec_id for r in first_iteration}


def test_dehb_higher_rungs_take_parents_from_the_lower_budget():
    algo = DEHB(SPACE, {"automl_max_epochs": 9, "automl_max_trials": 60}, seed=0)
    # after the first iteration (3 brackets), a rung at budget 3 draws a, b, c from budget 1's best members
    pools = []
    original = algo._parent_pool

    def spy(budget, size):
        pools.append((algo.brackets[-1].index, algo.brackets[-1].level, budget, size))
        return original(budget, size)

    algo._parent_pool = spy
    run_to_end(algo)
    later = [(level, budget, size) for bracket, level, budget, size in pools if bracket >= 3]
    assert (0, 1, 9) in later  # bottom rung: its own budget, the rung's size
    assert (1, 1, 3) in later  # rung at budget 3: parents from budget 1, as many as the rung trains
    assert (2, 3, 1) in later  # rung at budget 9: parents from budget 3


def test_make_algorithm_by_name():
    assert isinstance(make_algorithm("asha", SPACE, {}), ASHA)
    assert isinstance(make_algorithm("mobster", SPACE, {}), MOBSTER)
    assert isinstance(make_algorithm(None, SPACE, {"algorithm": "bohb"}), BOHB)


def distance_to_optimum(params: dict) -> float:
    return abs(math.log10(params["lr"]) + 3) + abs(params["dropout"] - 0.3)


def _mobster(seed=0, **settings):
    return MOBSTER(
        SPACE,
        {
            "automl_max_epochs": 9,
            "automl_reduction_factor": 3,
            "automl_max_trials": 40,
            "automl_max_concurrent": 1,
            **settings,
        },
        seed=seed,
    )


def test_mobster_schedules_like_asha_and_models_every_configuration_after_the_start():
    algo = _mobster()
    assert algo.budgets == [1, 3, 9]
    recs = run_to_end(algo)
    new = [r for r in recs if r.resume_from is None]
    assert len(new) == 40 and all(r.budget == 1 for r in new)
    sources = [r.info["source"] for r in new]
    modelled = sources.index("gp_ei")  # random until n_startup trainings (promotions included) have finished
    assert 0 < modelled <= algo.n_startup() and set(sources[:modelled]) == {"random"}
    assert all(r.info["source"] == "gp_ei" and r.info["expected_improvement"] >= 0 for r in new[modelled:])
    for rec in recs:
        assert SPACE.validate(rec.params) == rec.params
    promoted = [r for r in recs if r.resume_from is not None]
    assert promoted and all(algo.trials[r.resume_from].rec.params == r.params for r in promoted)
    assert {r.budget for r in promoted} == {3, 9}


def test_mobster_proposes_near_the_optimum_where_asha_samples_at_random():
    """The GP pools every budget's results: its proposals land much closer to the best region than ASHA's."""
    gp_distances, random_distances = [], []
    for seed in range(3):
        mobster, asha = _mobster(seed), _asha(automl_max_trials=40)
        asha.seed = seed
        mobster_recs, asha_recs = run_to_end(mobster), run_to_end(asha)
        gp_distances += [distance_to_optimum(r.params) for r in mobster_recs if r.info.get("source") == "gp_ei"]
        random_distances += [distance_to_optimum(r.params) for r in asha_recs if r.resume_from is None]
    mean_gp = sum(gp_distances) / len(gp_distances)
    mean_random = sum(random_distances) / len(random_distances)
    assert mean_gp < 0.5 * mean_random, (mean_gp, mean_random)


def test_mobster_treats_failures_as_the_worst_result_and_running_trials_as_believers():
    algo = _mobster(automl_max_concurrent=3)
    recs = run_to_end(algo, fail=lambda rec: rec.params["layers"] == 5)
    assert any(algo.trials[r.rec_id].status == "failed" for r in recs)
    concurrent = _mobster(automl_max_concurrent=3)
    for _ in range(10):
        rec = concurrent.ask()
        concurrent.tell(rec.rec_id, metric(rec.params, rec.budget))
    first, second = concurrent.ask(), concurrent.ask()  # two GP proposals while the first is still running
    assert first.info["source"] == second.info["source"] == "gp_ei"
    assert first.params != second.params


def test_mobster_halves_by_default_and_keeps_a_reduction_factor_that_is_set():
    assert MOBSTER(SPACE, {"automl_max_epochs": 9}).budgets == [1, 2, 4, 9]
    assert MOBSTER(SPACE, {"automl_max_epochs": 9, "automl_reduction_factor": 3}).budgets == [1, 3, 9]
    assert ASHA(SPACE, {"automl_max_epochs": 9}).budgets == [1, 3, 9]  # the others keep TAO's 3


def test_mobster_refits_its_hyperparameters_on_a_geometric_ladder():
    assert [ladder_step(n, 6) for n in (5, 6, 8, 9, 13, 14, 20, 21, 100)] == [5, 6, 6, 9, 9, 14, 14, 21, 72]
