"""`bohb` on a shared store chooses new configurations with the single-process BOHB model, from every epoch the
trials have reported (not Optuna's TPE)."""

from __future__ import annotations

import io
import math

import optuna
import pytest
from optuna.distributions import FloatDistribution
from rich.console import Console

from mal.automl.algorithms import BOHB
from mal.automl.algorithms.bohb_store import SharedBOHBSampler, observation_at_budgets
from mal.automl.algorithms.hyperband import rung_budgets
from mal.automl.settings import parse_settings
from mal.automl.space import SearchSpace
from mal.automl.storage import UNIT_PREFIX, create_distributed_study, load_distributed_study
from mal.automl.worker import StudyWorker
from support.study import dummy_command, make_skill_dir, spec_overrides

SPACE = SearchSpace.from_schema(
    {
        "properties": {
            "lr": {"type": "number", "minimum": 1e-5, "maximum": 1e-1, "log_scale": True},
            "dropout": {"type": "number", "minimum": 0.0, "maximum": 1.0},
        }
    },
    parameters=["lr", "dropout"],
)
SETTINGS = {"algorithm": "bohb", "automl_max_epochs": 9, "automl_max_trials": 60, "automl_min_points_in_model": 3,
            "automl_kde_samples": 32, "seed": 5}  # fmt: skip


def accuracy(params: dict, epochs: int) -> float:
    peak = 90.0 - 6 * abs(math.log10(params["lr"]) + 2.5) - 20 * abs(params["dropout"] - 0.3)
    return peak * (1 - 0.5 ** (epochs / 3))


def test_an_observation_is_the_first_reported_epoch_in_its_budgets_span():
    budgets = [1, 3, 9]
    assert observation_at_budgets({1: 0.1, 2: 0.2, 3: 0.3, 9: 0.9}, budgets) == {1: 0.1, 3: 0.3, 9: 0.9}
    # validated every 2 epochs: budget 1 is judged at epoch 2, budget 3 at epoch 4
    assert observation_at_budgets({2: 0.2, 4: 0.4, 6: 0.6, 8: 0.8, 10: 1.0}, budgets) == {1: 0.2, 3: 0.4, 9: 1.0}
    # one value never stands for two budgets: epoch 5 is past budget 1's span
    assert observation_at_budgets({5: 0.5}, budgets) == {3: 0.5}
    assert observation_at_budgets({1: math.nan, 2: 0.2}, budgets) == {1: 0.2}
    assert observation_at_budgets({}, budgets) == {}


def test_the_pruners_rungs_and_the_full_budget_are_the_model_budgets():
    assert rung_budgets(parse_settings({"automl_max_epochs": 27})) == [1, 3, 9, 27]
    assert rung_budgets(parse_settings({"automl_max_epochs": 52})) == [2, 6, 18, 52]
    assert rung_budgets(parse_settings({"automl_max_epochs": 9, "epoch_multiplier": 2})) == [2, 6, 18]


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_store_chooses_what_one_process_chooses_from_the_same_observations(direction):
    """Every training of a single-process BOHB becomes a store trial that reported its metric at its budget. Each
    new configuration the sampler proposes from those trials is the one BOHB proposed: random ones and model ones
    (with the same model budget and density sizes), for a metric to maximise or to minimise."""
    sign = 1.0 if direction == "maximize" else -1.0
    algo = BOHB(SPACE, {**SETTINGS, "direction": direction}, seed=SETTINGS["seed"])
    settings = parse_settings({**SETTINGS, "direction": direction})
    study = optuna.create_study(direction=direction)
    sources = []
    while (rec := algo.ask()) is not None:
        if rec.resume_from is None:
            study.sampler = SharedBOHBSampler(
                SPACE, settings.seed, direction, rung_budgets(settings), settings.automl_min_points_in_model,
                settings.automl_top_n_percent, settings.automl_kde_samples, UNIT_PREFIX,
            )  # fmt: skip
            trial = study.ask()
            assert trial.number == rec.rec_id
            proposed = SPACE.from_unit([trial.suggest_float(f"{UNIT_PREFIX}{n}", 0.0, 1.0) for n in SPACE.names])
            assert proposed == pytest.approx(rec.params, rel=1e-9)
            assert rec.info == {**rec.info, **study.sampler.last_proposal}  # BOHB adds its bracket and rung
            sources.append(rec.info["source"])
            value = sign * accuracy(rec.params, rec.budget)
            trial.set_user_attr("params", rec.params)
            trial.report(value, rec.budget)
            study.tell(trial, value)
        else:  # a promotion: the same configuration, observed at a larger budget
            value = sign * accuracy(rec.params, rec.budget)
            unit = dict(zip((f"{UNIT_PREFIX}{n}" for n in SPACE.names), SPACE.to_unit(rec.params)))
            study.add_trial(optuna.trial.create_trial(
                params=unit, distributions={k: FloatDistribution(0.0, 1.0) for k in unit}, value=value,
                intermediate_values={rec.budget: value}, user_attrs={"params": rec.params},
            ))  # fmt: skip
        algo.tell(rec.rec_id, value)
    assert sources.count("model") >= 5 and sources.count("random") >= 5


def test_a_bohb_study_on_the_store_switches_from_random_to_its_model(tmp_path):
    """Real workers and trainings, one at a time. Every trial reports epoch 1, so from trial 6 on budget 1 holds
    enough results for both densities (3 each, in 2 dimensions), and its model pools every earlier trial, whatever
    Hyperband bracket Optuna's pruner put it in. Once 6 trials have trained the full 9 epochs the model moves
    there. Every trial records how it was chosen."""
    url = str(tmp_path / "study.journal")
    create_distributed_study(
        url, "s", make_skill_dir(tmp_path),
        {"algorithm": "bohb", "automl_max_trials": 12, "automl_max_epochs": 9, "automl_min_points_in_model": 3,
         "automl_max_concurrent": 1, "seed": 1},
        spec_overrides(tmp_path), command=dummy_command(),
    )  # fmt: skip
    worker = StudyWorker(url, "s", workspace_dir=tmp_path / "ws", poll_interval=0.05,
                         console=Console(file=io.StringIO()))  # fmt: skip
    summary = worker.run()
    assert sorted(summary.completed + summary.pruned) == list(range(12))
    study, _ = load_distributed_study(url, "s")
    trials = sorted(study.get_trials(), key=lambda t: t.number)
    proposals = [t.user_attrs["proposal"] for t in trials]
    assert all(p == {"source": "random", "model_budget": None} for p in proposals[:6])
    assert all(p["model_budget"] is not None for p in proposals[6:])
    for number, proposal in enumerate(proposals):
        if proposal["source"] == "model" and proposal["model_budget"] == 1:
            assert proposal["n_good"] + proposal["n_bad"] == number  # all earlier trials, from every bracket
    budgets = [p["model_budget"] for p in proposals[6:]]
    assert budgets == sorted(budgets) and budgets[-1] == 9
    full = [t.number for t in trials if max(t.intermediate_values) == 9]
    assert budgets.index(9) + 6 > full[5]  # budget 9 is used only after 6 trials reached it
    assert sum(p["source"] == "model" for p in proposals) >= 3
