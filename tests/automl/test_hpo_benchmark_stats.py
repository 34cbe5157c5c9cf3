"""The statistic issue 10's verdict rests on: budget to reach random search's final regret, and its spread."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

hpo = pytest.importorskip("hpo")


def _runs(algorithm: str, task: str, curves: list[list[float]]) -> list[dict]:
    """Runs whose best-so-far accuracy is given per charged epoch (one row per seed)."""
    return [{"algorithm": algorithm, "task": task, "best_so_far": list(c), "seconds": 0.0, "recommendations": 1}
            for c in curves]


def test_ffe_to_reach_is_the_first_budget_at_or_under_the_target() -> None:
    grid = np.arange(1, 6) / 1.0
    assert hpo.ffe_to_reach(np.array([5.0, 4.0, 2.0, 2.0, 1.0]), 2.0, grid) == 3.0
    assert hpo.ffe_to_reach(np.array([5.0, 4.0, 3.0, 3.0, 3.0]), 2.0, grid) == math.inf


def test_summary_gives_median_task_ffe_and_a_bootstrap_interval() -> None:
    epochs = hpo.MAX_EPOCH
    budget = hpo.BUDGET_FFE * epochs  # 30 FFE
    ramp = np.linspace(50.0, 90.0, budget)  # random search: reaches 90 only at the end
    fast = np.minimum(np.linspace(50.0, 150.0, budget), 95.0)  # reaches 90 at 12 FFE, then 95
    quick = np.minimum(np.linspace(50.0, 450.0, budget), 95.0)  # reaches 90 at 3 FFE
    slow = np.minimum(np.linspace(50.0, 110.0, budget), 95.0)  # reaches 90 at 20 FFE
    runs = []
    for task in ("a", "b", "c"):
        runs += _runs("random", task, [ramp + 0.01 * s for s in range(6)])
        runs += _runs("fast", task, [fast - 0.01 * s for s in range(6)])
        runs += _runs("mixed", task, [quick] * 3 + [slow] * 3)  # half its seeds are lucky
    summary = hpo.summarise(runs, ["random", "fast", "mixed"], ["a", "b", "c"], {"a": 45.0, "b": 45.0, "c": 45.0})
    fast_entry = summary["algorithms"]["fast"]
    # best_any = 95.05; random's median final regret is about 95.05 - 90.03; `fast` gets there near 12 FFE
    assert fast_entry["ffe_to_random_final_median_task"] == pytest.approx(12.0, abs=0.1)
    low, high = fast_entry["ffe_to_random_final_interval90"]
    assert low == pytest.approx(12.0, abs=0.2) and high == pytest.approx(12.0, abs=0.2)  # seeds agree: no spread
    assert fast_entry["probability_within_target"] == 0.0
    mixed = summary["algorithms"]["mixed"]
    low, high = mixed["ffe_to_random_final_interval90"]
    assert low <= 3.1 and high >= 19.9  # which seeds a draw holds decides between 3 and 20 FFE
    assert 0.05 < mixed["probability_within_target"] < 0.95
    assert summary["algorithms"]["random"]["ffe_to_random_final_median_task"] == pytest.approx(30.0, abs=0.1)


def test_normalised_regret_divides_each_task_by_its_own_range() -> None:
    """Task a spans 90 points (worst 5), task b 10 (worst 85): the same 2-point regret is 0.022 on a and 0.2 on b,
    and pooling the tasks takes the median of the normalised values, not of the points."""
    budget = hpo.BUDGET_FFE * hpo.MAX_EPOCH
    runs = []
    for task in ("a", "b"):
        runs += _runs("random", task, [np.full(budget, 93.0), np.full(budget, 95.0)])
    summary = hpo.summarise(runs, ["random"], ["a", "b"], {"a": 5.0, "b": 85.0})
    run_a = next(r for r in runs if r["task"] == "a" and r["best_so_far"][0] == 93.0)
    run_b = next(r for r in runs if r["task"] == "b" and r["best_so_far"][0] == 93.0)
    assert run_a["normalised_regret"][-1] == pytest.approx(2.0 / 90.0)
    assert run_b["normalised_regret"][-1] == pytest.approx(2.0 / 10.0)
    entry = summary["algorithms"]["random"]
    assert entry["median_regret"]["30"] == pytest.approx(1.0)  # points: 0, 0, 2, 2
    assert entry["median_normalised_regret"]["30"] == pytest.approx((0.0 + 2.0 / 90.0) / 2)  # 0, 0, 0.022, 0.2
    assert summary["worst"] == {"a": 5.0, "b": 85.0}
    with pytest.raises(ValueError, match="task b: the worst reference 96.0"):
        hpo.summarise(runs, ["random"], ["a", "b"], {"a": 5.0, "b": 96.0})


def test_the_worst_reference_is_a_fixed_draw_below_every_random_configuration() -> None:
    if not (hpo.DATA_DIR / "model.onnx").is_file():
        pytest.skip("the LCBench surrogate is not in ../shared/data")
    import yahpo

    worst = yahpo.worst_final_accuracy("7593", samples=50)
    assert worst == yahpo.worst_final_accuracy("7593", samples=50)
    bench, space, rng = yahpo.LCBench("7593"), yahpo.lcbench_space(), np.random.default_rng(0)
    finals = [bench.curve(space.sample(rng))[-1] for _ in range(50)]
    assert worst == min(finals) and 0.0 <= worst < 100.0


def test_set_takes_any_automl_setting_and_suggests_the_key_when_it_cannot() -> None:
    assert hpo.parse_overrides(["automl_reduction_factor=2", "epoch_multiplier=2"]) == {
        "automl_reduction_factor": 2,
        "epoch_multiplier": 2,
    }
    with pytest.raises(SystemExit, match="automl_reduction_factr=2.*automl_reduction_factor"):
        hpo.parse_overrides(["automl_reduction_factr=2"])
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        hpo.parse_overrides(["automl_reduction_factor"])
    with pytest.raises(SystemExit, match="automl_reduction_factor=0"):
        hpo.parse_overrides(["automl_reduction_factor=0"])  # the settings model's own bounds apply


def test_a_run_uses_its_overrides() -> None:
    """Within 2 FFE (104 epochs), Hyperband's first bracket differs with eta: 27 configs cut to 9 and 3, or 32 to 16
    and 8 (a promotion pays only its extra epochs; the training the budget cuts off still counts as started)."""
    if not (hpo.DATA_DIR / "model.onnx").is_file():
        pytest.skip("the LCBench surrogate is not in ../shared/data")
    default = hpo.simulate("hyperband", "3945", 0, budget_ffe=2)
    gentler = hpo.simulate("hyperband", "3945", 0, budget_ffe=2, overrides={"automl_reduction_factor": 2})
    assert default["recommendations"] == 27 + 9 + 2  # 27 x 2 epochs + 9 x 4 + 1 x 11 = 101, the next one cut off
    assert gentler["recommendations"] == 32 + 16 + 8  # 32 x 2 + 16 x 1 + 8 x 3 = 104


def test_oracle_ranks_tell_the_52_epoch_value_but_observe_what_was_trained() -> None:
    """The diagnostic changes only what the algorithm is told: each configuration's 52-epoch val_accuracy instead
    of the value at the epoch it trained to; what is charged and observed (the regret curve's input) stays."""
    if not (hpo.DATA_DIR / "model.onnx").is_file():
        pytest.skip("the LCBench surrogate is not in ../shared/data")
    from mal.automl.algorithms import make_algorithm

    bench = hpo.LCBench("3945")

    def run(oracle: bool) -> tuple[dict, list[tuple[float, float, float]]]:
        told: list[tuple[float, float, float]] = []  # (value told, value at the trained epoch, 52-epoch value)

        def make(name, space, settings, seed):
            algo = make_algorithm(name, space, settings, seed=seed)
            budgets, tell = {}, algo.tell
            ask = algo.ask

            def recording_ask():
                rec = ask()
                if rec is not None:
                    budgets[rec.rec_id] = rec
                return rec

            def recording_tell(rec_id, value):
                rec = budgets[rec_id]
                curve = bench.curve(rec.params)
                told.append((value, float(curve[min(rec.budget, hpo.MAX_EPOCH) - 1]), float(curve[-1])))
                return tell(rec_id, value)

            algo.ask, algo.tell = recording_ask, recording_tell
            return algo

        return hpo.simulate("hyperband", "3945", 0, budget_ffe=2, make=make, bench=bench, oracle_ranks=oracle), told

    plain, told_plain = run(False)
    oracle, told_oracle = run(True)
    assert told_plain and all(value == trained for value, trained, _ in told_plain)
    assert all(value == final for value, _, final in told_oracle)
    assert any(trained != final for _, trained, final in told_oracle)  # 2-epoch values differ from 52-epoch ones
    # the first rung (27 random configurations) is the same; what is observed is the trained value either way
    assert [t for _, t, _ in told_oracle[:27]] == [t for _, t, _ in told_plain[:27]]
    first_rung_best = max(t for _, t, _ in told_plain[:27])
    assert plain["best_so_far"][27 * 2 - 1] == oracle["best_so_far"][27 * 2 - 1] == first_rung_best


def test_the_report_stores_one_row_per_run_and_normalised_regret_is_derivable(tmp_path, monkeypatch):
    budget = hpo.BUDGET_FFE * hpo.MAX_EPOCH
    runs = _runs("random", "a", [np.linspace(50.0, 90.0, budget), np.linspace(60.0, 95.0, budget)])
    for seed, run in enumerate(runs):
        run |= {"seed": seed, "restarts": 0, "seconds": 0.123456}
    summary = hpo.summarise(runs, ["random"], ["a"], {"a": 45.0})
    monkeypatch.setattr(hpo, "RESULTS", tmp_path)
    hpo.write_report("r", runs, summary, {"seeds": 2}, "table\n")
    report = json.loads((tmp_path / "r.json").read_text())
    columns, rows = report["runs"]["columns"], report["runs"]["rows"]
    assert len(rows) == 2 and len(columns) == len(rows[0]) == 6 + len(hpo.CHECKPOINTS)
    row = dict(zip(columns, rows[1], strict=True))
    assert (row["algorithm"], row["task"], row["seed"], row["seconds"]) == ("random", "a", 1, 0.123)
    at_6 = round(6 * hpo.MAX_EPOCH) - 1
    assert row["regret at 6 FFE"] == round(runs[1]["regret"][at_6], 4)
    scale = report["best_any"]["a"] - report["worst"]["a"]
    assert row["regret at 6 FFE"] / scale == pytest.approx(runs[1]["normalised_regret"][at_6], abs=1e-4)
    assert (tmp_path / "r.md").read_text() == "table\n"


def test_an_oracle_ranks_report_says_it_is_a_diagnostic() -> None:
    import argparse

    budget = hpo.BUDGET_FFE * hpo.MAX_EPOCH
    runs = _runs("random", "a", [np.linspace(50.0, 90.0, budget)])
    summary = hpo.summarise(runs, ["random"], ["a"], {"a": 45.0})
    args = argparse.Namespace(command_args=" --oracle-ranks", tasks=["a"], seeds=1, oracle_ranks=True)
    assert "**Oracle ranks (a diagnostic, not a result):**" in hpo.markdown(summary, args, 1, 1.0)
    args.oracle_ranks = False
    assert "Oracle" not in hpo.markdown(summary, args, 1, 1.0)


def test_a_variant_label_carries_its_own_settings_and_names_its_runs() -> None:
    assert hpo.split_variant("mobster") == ("mobster", {})
    assert hpo.split_variant("mobster@automl_reduction_factor=3,automl_min_top_configs=2") == (
        "mobster",
        {"automl_reduction_factor": 3, "automl_min_top_configs": 2},
    )
    with pytest.raises(SystemExit, match="automl_reduction_factr"):
        hpo.split_variant("mobster@automl_reduction_factr=3")
    if not (hpo.DATA_DIR / "model.onnx").is_file():
        pytest.skip("the LCBench surrogate is not in ../shared/data")
    variant = hpo._run(("hyperband@automl_reduction_factor=2", "3945", 0, {}, False))
    plain = hpo._run(("hyperband", "3945", 0, {}, False))
    assert variant["algorithm"] == "hyperband@automl_reduction_factor=2" and plain["algorithm"] == "hyperband"
    same = hpo.simulate("hyperband", "3945", 0, overrides={"automl_reduction_factor": 2})
    assert variant["best_so_far"] == same["best_so_far"] != plain["best_so_far"]


def test_a_bad_algorithm_or_variant_stops_before_any_run() -> None:
    if not (hpo.DATA_DIR / "model.onnx").is_file():
        pytest.skip("the LCBench surrogate is not in ../shared/data")
    with pytest.raises(SystemExit, match="no algorithm 'nosuch'; choose from random, bayesian"):
        hpo.main(["--quick", "--algorithms", "nosuch"])
    with pytest.raises(SystemExit, match="--algorithms mobster@automl_reduction_factr=3:.*automl_reduction_factor"):
        hpo.main(["--quick", "--algorithms", "mobster@automl_reduction_factr=3"])
    with pytest.raises(SystemExit, match="--against asha: not one of --algorithms"):
        hpo.main(["--quick", "--algorithms", "mobster", "--against", "asha"])
