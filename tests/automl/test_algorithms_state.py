"""Every algorithm: state_dict round trip mid-search, concurrency cap, full-fidelity samplers, settings."""

from __future__ import annotations

import json
import math

import pytest

from mal.automl.algorithms import ALGORITHMS, RandomSearch, make_algorithm
from mal.automl.settings import AutoMLSettings, parse_settings
from mal.automl.space import SearchSpace
from mal.errors import CheckpointError, SpecError

SPACE = SearchSpace.from_schema(
    {
        "properties": {
            "lr": {"type": "number", "minimum": 1e-5, "maximum": 1e-1, "log_scale": True},
            "dropout": {"type": "number", "minimum": 0.0, "maximum": 1.0},
            "batch": {"type": "integer", "minimum": 8, "maximum": 256, "math_cond": "^ 2"},
            "optim": {"type": "string", "enum": ["sgd", "adam"]},
        }
    },
    parameters=["lr", "dropout", "batch", "optim"],
)
SETTINGS = {
    "automl_max_epochs": 9,
    "automl_max_trials": 60,
    "automl_max_recommendations": 14,
    "automl_max_concurrent": 3,
    "automl_population_size": 5,
    "automl_eval_interval": 3,
    "automl_max_generations": 6,
}
OFFLINE = sorted(set(ALGORITHMS) - {"llm", "hybrid", "autoresearch"})


def metric(params: dict, budget: int) -> float:
    value = -abs(math.log10(params["lr"]) + 2.5) - abs(params["dropout"] - 0.2) + 0.05 * math.log(budget)
    return value + (0.1 if params["optim"] == "adam" else 0.0)


def step(algo, pending: list, count: int) -> list:
    """Keep up to three trainings in flight; finish the oldest each step. Returns what was recommended."""
    out = []
    for _ in range(count):
        while (rec := algo.ask()) is not None:
            pending.append(rec)
            out.append(rec.to_dict())
        if not pending:
            break
        done = pending.pop(0)
        if done.rec_id % 7 == 3:
            algo.tell(done.rec_id, None, failed=True)
        else:
            algo.report(done.rec_id, 1, metric(done.params, 1))
            algo.tell(done.rec_id, metric(done.params, done.budget))
    return out


@pytest.mark.parametrize("name", OFFLINE)
def test_state_round_trip_mid_search_gives_the_same_next_recommendations(name):
    original = make_algorithm(name, SPACE, SETTINGS, seed=5)
    pending: list = []
    step(original, pending, 8)
    assert pending, "the test should save while trainings are running"
    state = json.loads(json.dumps(original.state_dict()))
    restored = make_algorithm(name, SPACE, SETTINGS, seed=5)
    restored.load_state_dict(state)
    pending_copy = [type(r).from_dict(r.to_dict()) for r in pending]
    assert step(original, pending, 12) == step(restored, pending_copy, 12)
    assert restored.state_dict() == original.state_dict()


def test_loading_a_state_of_another_algorithm_is_a_clear_error():
    state = make_algorithm("random", SPACE, SETTINGS).state_dict()
    with pytest.raises(CheckpointError, match="belongs to algorithm 'random'"):
        make_algorithm("tpe", SPACE, SETTINGS).load_state_dict(state)


def test_replay_that_diverges_is_detected():
    algo = make_algorithm("hyperband", SPACE, SETTINGS, seed=1)
    step(algo, [], 3)
    state = algo.state_dict()
    with pytest.raises(CheckpointError, match="different recommendation"):
        make_algorithm("hyperband", SPACE, {**SETTINGS, "epoch_multiplier": 2}, seed=1).load_state_dict(state)


@pytest.mark.parametrize("name", ["random", "bayesian", "tpe"])
def test_full_fidelity_samplers_train_to_the_full_budget_and_stop(name):
    algo = make_algorithm(name, SPACE, {**SETTINGS, "automl_max_concurrent": 4}, seed=0)
    first = [algo.ask() for _ in range(4)]
    assert algo.ask() is None  # four slots, all busy
    assert len({json.dumps(r.params, sort_keys=True) for r in first}) == 4  # parallel asks differ
    for rec in first:
        algo.tell(rec.rec_id, metric(rec.params, rec.budget))
    pending: list = []
    step(algo, pending, 40)
    assert algo.is_finished() and len(algo.trials) == 14
    assert all(t.rec.budget == 9 and t.rec.resume_from is None for t in algo.trials.values())
    for trial in algo.trials.values():
        assert SPACE.validate(trial.rec.params) == trial.rec.params


def test_model_based_samplers_beat_random_on_a_smooth_problem():
    settings = {**SETTINGS, "automl_max_recommendations": 25, "automl_max_concurrent": 1}
    best = {}
    for name in ("random", "bayesian", "tpe"):
        values = []
        for seed in range(3):
            algo = make_algorithm(name, SPACE, settings, seed=seed)
            step(algo, [], 30)
            values.append(algo.best().metric)
        best[name] = sum(values) / len(values)
    assert best["bayesian"] > best["random"] and best["tpe"] > best["random"]


def test_minimize_direction_ranks_small_metrics_first():
    algo = RandomSearch(SPACE, {"direction": "minimize", "automl_max_recommendations": 3})
    for value in (0.5, 0.1, 0.9):
        algo.tell(algo.ask().rec_id, value)
    assert algo.best().metric == 0.1


def test_tell_and_report_reject_unknown_or_finished_trials():
    algo = RandomSearch(SPACE, {})
    rec = algo.ask()
    algo.tell(rec.rec_id, 1.0)
    with pytest.raises(ValueError, match="already finished"):
        algo.tell(rec.rec_id, 1.0)
    with pytest.raises(ValueError, match="never issued"):
        algo.report(99, 1, 0.5)


def test_settings_defaults_alias_and_errors():
    settings = parse_settings({"num_recommendations": 7, "llm_api_key": "sk-secret-123"})
    assert settings.automl_max_recommendations == 7
    assert settings.algorithm == "bayesian" and settings.automl_max_epochs == 27
    assert settings.automl_reduction_factor == 3 and settings.automl_population_size == 10
    assert settings.automl_top_n_percent == 15 and settings.automl_kde_samples == 64
    assert "sk-secret-123" not in repr(settings) and "sk-secret-123" not in json.dumps(settings.to_json_dict())
    assert "sk-secret-123" not in settings.model_dump_json()
    with pytest.raises(SpecError, match=r"Did you mean automl_max_epochs\?"):
        parse_settings({"automl_max_epoch": 10})
    with pytest.raises(SpecError, match="both num_recommendations and automl_max_recommendations"):
        parse_settings({"num_recommendations": 3, "automl_max_recommendations": 4})
    with pytest.raises(SpecError, match="automl_reduction_factor"):
        parse_settings({"automl_reduction_factor": 1})
    with pytest.raises(SpecError, match="Did you mean 'hyperband'"):
        make_algorithm("hyperbnd", SPACE, AutoMLSettings())
