"""PBT: truncation selection copies a top member's checkpoint; explore perturbs x/÷ 1.2 or resamples."""

from __future__ import annotations

import math

import pytest

from mal.automl.algorithms import PBT
from mal.automl.space import SearchSpace

SPACE = SearchSpace.from_schema(
    {
        "properties": {
            "lr": {"type": "number", "minimum": 1e-8, "maximum": 1.0, "log_scale": True},
            "wd": {"type": "number", "minimum": 1e-8, "maximum": 1.0, "log_scale": True},
        }
    },
    parameters=["lr", "wd"],
)
SETTINGS = {
    "automl_population_size": 10,
    "automl_eval_interval": 5,
    "automl_max_generations": 30,
    "automl_max_concurrent": 10,
}


def run_generation(algo: PBT, score) -> list:
    recs = [algo.ask() for _ in range(len(algo.members))]
    assert all(recs) and algo.ask() is None  # the next generation waits for this one
    for rec in recs:
        algo.tell(rec.rec_id, score(rec))
    return recs


def test_first_generation_trains_from_scratch_then_continues():
    algo = PBT(SPACE, SETTINGS, seed=0)
    first = run_generation(algo, lambda rec: rec.info["member"])
    assert all(r.resume_from is None and r.budget == 5 for r in first)
    second = {r.info["member"]: r for r in run_generation(algo, lambda rec: rec.info["member"])}
    assert all(r.budget == 10 for r in second.values())
    by_member = {r.info["member"]: r for r in first}
    for member in range(2, 10):  # everyone outside the bottom 20% continues from its own checkpoint
        assert second[member].resume_from == by_member[member].rec_id
        assert second[member].params == by_member[member].params
    for member in (0, 1):  # the bottom 20% copy a top-20% member's checkpoint
        donor = second[member].info["exploited_from"]
        assert donor in (8, 9)
        assert second[member].resume_from == by_member[donor].rec_id


def test_explore_perturbs_by_the_factor_or_resamples():
    algo = PBT(SPACE, SETTINGS, seed=1)
    how_counts = {"perturb": 0, "resample": 0}
    previous = {r.info["member"]: r for r in run_generation(algo, lambda rec: rec.info["member"])}
    for _ in range(25):
        current = {r.info["member"]: r for r in run_generation(algo, lambda rec: rec.info["member"])}
        for rec in current.values():
            if rec.info["exploited_from"] is None:
                continue
            donor_params = previous[rec.info["exploited_from"]].params
            for name, how in rec.info["explored"].items():
                how_counts[how] += 1
                if how == "perturb":
                    ratio = rec.params[name] / donor_params[name]
                    assert min(abs(ratio - 1.2), abs(ratio - 1 / 1.2)) < 1e-9, (name, ratio)
        previous = current
    total = sum(how_counts.values())
    assert total == 25 * 2 * 2  # two exploiting members, two keys, every generation
    assert how_counts["resample"] / total == pytest.approx(0.2, abs=0.08)


def test_failed_members_are_replaced_and_the_search_ends():
    algo = PBT(SPACE, {**SETTINGS, "automl_max_generations": 2}, seed=2)
    first = run_generation(algo, lambda rec: math.nan if rec.info["member"] in (3, 4, 5) else rec.info["member"])
    second = {r.info["member"]: r for r in run_generation(algo, lambda rec: 1.0)}
    failed_ids = {r.rec_id for r in first if r.info["member"] in (3, 4, 5)}
    for member in (3, 4, 5):  # three failures: all exploit, though the bottom 20% is only two members
        assert second[member].info["exploited_from"] in (8, 9)
        assert second[member].resume_from not in failed_ids
    assert second[0].info["exploited_from"] is None  # the failures took the bottom places
    assert algo.is_finished() and algo.ask() is None
