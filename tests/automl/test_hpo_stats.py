"""benchmarks/hpo_stats.py: the normalised-regret AUC, the two-level bootstrap, paired differences and TAO's protocol
table, on result files written here with known numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

hpo_stats = pytest.importorskip("hpo_stats")

FFE = (1, 2, 3, 5, 6, 10, 15, 20, 30)


def _result(path, curves: dict[tuple[str, str, int], list[float]], best_any: dict[str, float], worst: dict[str, float]):
    """A hpo.py result file holding `curves` (algorithm, task, seed) -> regret at the FFE checkpoints."""
    columns = ["algorithm", "task", "seed", "recommendations", "restarts", "seconds",
               *(f"regret at {x} FFE" for x in FFE)]  # fmt: skip
    rows = [[a, t, s, 1, 0, 0.0, *curve] for (a, t, s), curve in curves.items()]
    path.write_text(json.dumps({"runs": {"columns": columns, "rows": rows}, "best_any": best_any, "worst": worst}))
    return path


def test_the_area_is_the_mean_of_the_curve_over_the_budget():
    assert hpo_stats.area_under({1.0: 1.0, 30.0: 1.0}) == pytest.approx(1.0)
    # A straight line from 1 to 0 over 1..30 FFE averages 0.5; points outside the range are ignored.
    assert hpo_stats.area_under({0.5: 9.0, 1.0: 1.0, 15.5: 0.5, 30.0: 0.0}) == pytest.approx(0.5)


def test_constant_values_give_an_interval_of_no_width_and_the_tasks_move_the_mean():
    constant = {(t, s): 2.0 for t in "ab" for s in range(5)}
    assert hpo_stats.two_level_bootstrap(constant, np.mean, rounds=200) == (2.0, 2.0, 2.0)
    spread = {("a", s): 0.0 for s in range(5)} | {("b", s): 1.0 for s in range(5)}
    mean, low, high = hpo_stats.two_level_bootstrap(spread, np.mean, rounds=400)
    assert mean == 0.5 and low == 0.0 and high == 1.0  # whole tasks are drawn: all-a and all-b resamples occur
    fixed = hpo_stats.two_level_bootstrap(spread, np.mean, rounds=400, resample_tasks=False)
    assert fixed == (0.5, 0.5, 0.5)  # seeds alone do not move it: each task's values are equal


def test_a_paired_difference_is_below_zero_only_when_the_gain_holds_across_tasks():
    rng = np.random.default_rng(1)
    base = {(t, s): float(rng.uniform(0.2, 0.8)) for t in "abcdef" for s in range(20)}
    better = {key: value - 0.05 for key, value in base.items()}
    difference, low, high = hpo_stats.paired_difference(better, base, rounds=300)
    assert difference == pytest.approx(-0.05) and high < 0
    # The same gain on one task and a loss on another is no gain.
    mixed = {key: value + (-0.1 if key[0] == "a" else 0.1 if key[0] == "b" else 0.0) for key, value in base.items()}
    _, low, high = hpo_stats.paired_difference(mixed, base, rounds=300)
    assert low < 0 < high
    with pytest.raises(ValueError, match="share no"):
        hpo_stats.paired_difference({("x", 0): 1.0}, {("y", 0): 1.0})


def test_tao_protocol_rescores_against_taos_fixed_best_and_compares_with_taos_figure(tmp_path):
    # On task 3945 this benchmark's best is 99.909, 0.3 above TAO's 99.609: regret against TAO's value is 0.3 lower.
    curves = {("bohb", "3945", s): [9.0, 8.0, 7.0, 6.0, 5.5, 4.3, 3.0, 2.0, 1.3] for s in range(4)}
    curves |= {("random", "7", s): [5.0] * 9 for s in range(4)}  # a task outside TAO's protocol
    path = _result(tmp_path / "r.json", curves, {"3945": 99.909, "7": 80.0}, {"3945": 89.909, "7": 70.0})
    stats, text = hpo_stats.analyse(path, rounds=100)
    bohb = stats["tao_protocol"]["bohb"]
    assert bohb["10"]["median"] == pytest.approx(4.0) and bohb["30"]["median"] == pytest.approx(1.0)
    assert bohb["10"]["tao"] == 6.54 and bohb["10"]["difference"] == pytest.approx(4.0 - 6.54)
    assert bohb["10"]["better_than_tao"] and bohb["30"]["better_than_tao"]
    assert "random" not in stats["tao_protocol"]  # it ran no TAO task here
    # Normalised: regret / (best_any - worst) = regret / 10 on both tasks.
    assert stats["normalised"]["bohb"]["30"]["mean"] == pytest.approx(0.13)
    assert stats["normalised"]["random"]["auc"]["mean"] == pytest.approx(0.5)
    assert "| bohb | 4.00 [4.000, 4.000] | 6.54 | -2.54 [-2.540, -2.540] ✓ |" in text


def test_the_command_writes_the_stats_beside_the_result(tmp_path, capsys):
    curves = {(a, t, s): [0.5] * 9 for a in ("random", "pbt") for t in ("1", "2") for s in range(3)}
    path = _result(tmp_path / "hpo_x.json", curves, {"1": 1.0, "2": 1.0}, {"1": 0.0, "2": 0.0})
    assert hpo_stats.main([str(path), "--rounds", "50"]) == 0
    assert json.loads((tmp_path / "hpo_x_stats.json").read_text())["normalised"]["pbt"]["auc_vs"]["random"][
        "difference"
    ] == pytest.approx(0.0)
    assert (tmp_path / "hpo_x_stats.md").read_text().startswith("# HPO statistics of `hpo_x.json`")
    assert "## Normalised regret" in capsys.readouterr().out


def test_against_adds_a_variant_of_the_file_to_the_baselines(tmp_path, capsys):
    """A variant is judged against its default: `--against mobster` adds an 'AUC - mobster' column."""
    curves = {("mobster", t, s): [0.5] * 9 for t in ("1", "2") for s in range(3)}
    curves |= {("mobster@automl_reduction_factor=3", t, s): [0.7] * 9 for t in ("1", "2") for s in range(3)}
    path = _result(tmp_path / "hpo_v.json", curves, {"1": 1.0, "2": 1.0}, {"1": 0.0, "2": 0.0})
    stats, text = hpo_stats.analyse(path, rounds=50, against=["mobster"])
    versus = stats["normalised"]["mobster@automl_reduction_factor=3"]["auc_vs"]["mobster"]
    assert versus["difference"] == pytest.approx(0.2) and not versus["better"]
    assert "| AUC - mobster |" in text
    assert hpo_stats.main([str(path), "--rounds", "20", "--against", "asha"]) == 2
    assert "no such algorithm" in capsys.readouterr().err


def test_the_gain_over_random_search_is_compared_with_taos_own_gain(tmp_path):
    """Our random search 2 points behind TAO's and the GP 1.5 points behind TAO's GP at 10 FFE: the GP loses on
    raw regret, yet gains 1.5 points over its own random search where TAO's gains 1.0, so the gain column wins.
    At 30 FFE our GP gains 2.0 where TAO's gains 3.74: that loses."""
    best = {"3945": 99.609}  # TAO's value: the stored regret is already on TAO's scale
    curves = {}
    for s in range(6):
        jitter = 0.01 * s
        random_10, gp_10 = 5.98 + 2.0 + jitter, 4.98 + 1.5 + jitter
        curves[("random", "3945", s)] = [9.0] * 5 + [random_10, 6.0, 5.5, 5.0 + jitter]
        curves[("bayesian", "3945", s)] = [9.0] * 5 + [gp_10, 4.0, 3.5, 3.0 + jitter]
    path = _result(tmp_path / "r.json", curves, best, {"3945": 80.0})
    stats, text = hpo_stats.analyse(path, rounds=200)
    gp = stats["tao_protocol"]["bayesian"]
    assert not gp["10"]["better_than_tao"]  # raw: 6.48 against TAO's 4.98
    assert gp["10"]["gain_over_random"] == pytest.approx(-1.5)
    assert gp["10"]["tao_gain_over_random"] == pytest.approx(4.98 - 5.98)
    assert gp["10"]["gain_difference"] == pytest.approx(-0.5)
    low, high = gp["10"]["gain_difference_interval90"]
    assert low < -0.5 < high < 0 and gp["10"]["gains_more_than_tao"]
    assert gp["30"]["gain_difference"] == pytest.approx(-2.0 - (0.70 - 4.44))
    assert not gp["30"]["gains_more_than_tao"]
    assert "gain_over_random" not in stats["tao_protocol"]["random"]["10"]  # random is the control
    assert "| bayesian | -1.50 | -1.00 | -0.50 [" in text


def test_a_ten_seed_measurement_moves_more_than_the_hundred_seed_median():
    rng = np.random.default_rng(3)
    values = {(t, s): float(rng.normal(5.0, 2.0)) for t in "abcde" for s in range(100)}
    low, high = hpo_stats.ten_seed_range(values, rounds=500)
    _, full_low, full_high = hpo_stats.two_level_bootstrap(values, np.median, rounds=500, resample_tasks=False)
    assert low < full_low < full_high < high and low < 5.0 < high
    assert hpo_stats.ten_seed_range({(t, s): 1.0 for t in "ab" for s in range(12)}, rounds=50) == [1.0, 1.0]
    assert all(np.isnan(hpo_stats.ten_seed_range({("a", s): 1.0 for s in range(6)}, rounds=50)))  # too few seeds
