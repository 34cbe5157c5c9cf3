"""`bayesian` on a shared store proposes what the single-process GP search proposes from the same history."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import TrialState

from mal.automl.algorithms import make_algorithm
from mal.automl.algorithms.bayesian import gp_proposal
from mal.automl.algorithms.bayesian_store import SharedGPSampler
from mal.automl.space import SearchSpace
from mal.automl.storage import UNIT_PREFIX

SPACE = SearchSpace.from_schema(
    {
        "properties": {
            "lr": {"type": "number", "minimum": 1e-5, "maximum": 1e-1, "log_scale": True},
            "dropout": {"type": "number", "minimum": 0.0, "maximum": 1.0},
            "batch": {"type": "integer", "minimum": 8, "maximum": 256, "math_cond": "^ 2"},
        }
    },
    parameters=["lr", "dropout", "batch"],
)
SETTINGS = {"algorithm": "bayesian", "automl_max_recommendations": 12, "automl_max_concurrent": 2, "seed": 3}
FAILING = 7  # this proposal's training crashes


def accuracy(params: dict) -> float:
    return 90.0 - 4 * abs(math.log10(params["lr"]) + 2.5) - 10 * abs(params["dropout"] - 0.2) + params["batch"] / 100


def _ask(study: optuna.Study, direction: str) -> tuple[optuna.Trial, dict, dict | None]:
    study.sampler = SharedGPSampler(SPACE, SETTINGS["seed"], SETTINGS["automl_max_recommendations"], direction,
                                    UNIT_PREFIX)  # fmt: skip
    trial = study.ask()
    unit = [trial.suggest_float(f"{UNIT_PREFIX}{name}", 0.0, 1.0) for name in SPACE.names]
    params = SPACE.from_unit(unit)
    trial.set_user_attr("params", params)  # what a worker stores before the job starts
    return trial, params, study.sampler.last_proposal


def _tell(study: optuna.Study, trial: optuna.Trial, params: dict, direction: str) -> None:
    if trial.number == FAILING:
        study.tell(trial, state=TrialState.FAIL)
    else:
        study.tell(trial, accuracy(params) if direction == "maximize" else -accuracy(params))


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_store_runs_the_same_gp_search_as_one_process(direction):
    """Two trainings at a time in both: ask, ask, then tell the older one and ask again. The running training
    is a kriging believer in both, and the crash counts as the worst result in both."""
    algo = make_algorithm("bayesian", SPACE, SETTINGS)
    study = optuna.create_study(direction=direction)
    running_algo, running_study = [], []
    sources = []
    for _ in range(SETTINGS["automl_max_recommendations"]):
        rec = algo.ask()
        trial, params, proposal = _ask(study, direction)
        assert rec is not None and trial.number == rec.rec_id
        assert params == pytest.approx(rec.params, rel=1e-9)
        assert proposal == pytest.approx(rec.info)
        sources.append(proposal["source"])
        running_algo.append(rec)
        running_study.append((trial, params))
        if len(running_algo) == 2:
            done = running_algo.pop(0)
            if done.rec_id == FAILING:
                algo.tell(done.rec_id, None, failed=True)
            else:
                algo.tell(done.rec_id, accuracy(done.params))
            _tell(study, *running_study.pop(0), direction)
    assert sources[:5] == ["initial_design"] * 5 and set(sources[6:]) == {"gp_ei"}


def test_a_trial_whose_worker_has_not_stored_its_configuration_is_left_out():
    study = optuna.create_study(direction="maximize")
    for _ in range(6):
        trial, params, _ = _ask(study, "maximize")
        study.tell(trial, accuracy(params))
    half_started = study.ask()  # claimed, its params not written yet: neither history nor believer
    trial, params, proposal = _ask(study, "maximize")
    history = [(t.user_attrs["params"], t.value) for t in study.trials[:6]]
    expected, info = gp_proposal(SPACE, SETTINGS["seed"], 7, 5, history, [])
    assert half_started.number == 6 and trial.number == 7
    assert params == pytest.approx(SPACE.from_unit(expected), rel=1e-9) and proposal == pytest.approx(info)
    assert proposal["source"] == "gp_ei"


def test_a_trial_failed_for_its_dead_worker_counts_through_its_retry_not_as_a_crash():
    study = optuna.create_study(direction="maximize")
    for number in range(6):
        trial, params, _ = _ask(study, "maximize")
        if number == 5:
            study.tell(trial, state=TrialState.FAIL)  # its worker stopped beating
        else:
            study.tell(trial, accuracy(params))
    dead = study.trials[5]
    study.enqueue_trial({}, user_attrs={"retry_of": dead.number, "params": dead.user_attrs["params"]})
    retry = study.ask()  # the retry, running: a believer at the dead trial's configuration
    trial, params, _ = _ask(study, "maximize")
    finished = [(t.user_attrs["params"], t.value) for t in study.trials[:5]]
    expected, _ = gp_proposal(SPACE, SETTINGS["seed"], trial.number, 5, finished, [dead.user_attrs["params"]])
    assert retry.number == 6 and params == pytest.approx(SPACE.from_unit(expected), rel=1e-9)
