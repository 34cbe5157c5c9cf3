"""A long HPO benchmark survives being stopped: finished runs are journalled and `--resume` reuses them."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

hpo = pytest.importorskip("hpo")  # needs onnxruntime (benchmarks/yahpo.py)


def test_a_journalled_curve_comes_back_exactly() -> None:
    curve = [math.nan] * 3 + [71.25] * 4 + [80.0078125] * 2 + [80.5]
    run = {"algorithm": "asha", "task": "7593", "seed": 4, "best_so_far": curve, "seconds": 0.5}
    entry = hpo.encode_run(run)
    assert entry["steps"] == [[3, 71.25], [7, 80.0078125], [9, 80.5]]  # three changes, not ten values
    back = hpo.decode_run(json.loads(json.dumps(entry)))
    assert np.array_equal(np.asarray(back["best_so_far"]), np.asarray(curve), equal_nan=True)
    assert {k: v for k, v in back.items() if k != "best_so_far"} == {k: v for k, v in run.items() if k != "best_so_far"}
    gap = [math.nan, 1.0, 1.0, math.nan, 2.0]  # never produced by simulate, but the format keeps it
    again = hpo.decode_run(json.loads(json.dumps(hpo.encode_run({**run, "best_so_far": gap}))))
    assert np.array_equal(np.asarray(again["best_so_far"]), np.asarray(gap), equal_nan=True)


class Interrupted(Exception):
    pass


def _fake_run(job: tuple[str, int]) -> dict[str, Any]:
    label, seed = job
    curve = [math.nan, 50.0 + seed, 60.0 + seed]
    return {"algorithm": label, "task": "t", "seed": seed, "best_so_far": curve, "seconds": 0.0}


def test_run_jobs_resumes_from_the_journal_and_skips_a_torn_last_line(tmp_path) -> None:
    jobs = [("random", seed) for seed in range(5)]
    journal = tmp_path / "bench.runs.jsonl"
    calls: list[tuple[str, int]] = []

    def stops_at_seed_3(job: tuple[str, int]) -> dict[str, Any]:
        if job[1] == 3:
            raise Interrupted
        calls.append(job)
        return _fake_run(job)

    with pytest.raises(Interrupted):
        hpo.run_jobs(stops_at_seed_3, jobs, 1, journal)
    assert calls == jobs[:3]
    with journal.open("a") as sink:
        sink.write('{"job": "[\\"random\\", 4]", "run": {"algor')  # a crash in the middle of a line
    calls.clear()

    def counting(job: tuple[str, int]) -> dict[str, Any]:
        calls.append(job)
        return _fake_run(job)

    runs = hpo.run_jobs(counting, jobs, 1, journal)
    assert calls == jobs[3:]  # only what the first invocation did not finish
    expected = [_fake_run(job) for job in jobs]
    assert [r["seed"] for r in runs] == list(range(5))  # job order, whatever order they finished in
    for got, want in zip(runs, expected, strict=True):
        assert np.array_equal(np.asarray(got["best_so_far"]), np.asarray(want["best_so_far"]), equal_nan=True)


def test_a_journal_of_other_jobs_is_not_reused(tmp_path) -> None:
    journal = tmp_path / "bench.runs.jsonl"
    hpo.run_jobs(_fake_run, [("random", 0)], 1, journal)
    calls: list[tuple[str, int]] = []

    def counting(job: tuple[str, int]) -> dict[str, Any]:
        calls.append(job)
        return _fake_run(job)

    hpo.run_jobs(counting, [("tpe", 0), ("random", 0)], 1, journal)
    assert calls == [("tpe", 0)]


def test_hpo_resume_finishes_an_interrupted_benchmark_with_the_same_report(tmp_path, monkeypatch) -> None:
    if not (hpo.DATA_DIR / "model.onnx").is_file():
        pytest.skip("the LCBench surrogate is not in ../shared/data")
    monkeypatch.setattr(hpo, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(hpo, "JOURNALS", tmp_path / "out")
    args = ["--quick", "--algorithms", "random", "hyperband", "--stem", "bench"]
    assert hpo.main([*args, "--jobs", "2"]) == 0  # worker processes, finishing in any order
    uninterrupted = json.loads((tmp_path / "results" / "bench.json").read_text())["runs"]
    assert not (tmp_path / "out" / "bench.runs.jsonl").exists()  # removed once the report is written

    real_run, calls = hpo._run, []

    def dies_on_the_fifth(job: Any) -> dict[str, Any]:
        calls.append(job)
        if len(calls) == 5:
            raise Interrupted
        return real_run(job)

    monkeypatch.setattr(hpo, "_run", dies_on_the_fifth)
    with pytest.raises(Interrupted):
        hpo.main(args)
    assert len((tmp_path / "out" / "bench.runs.jsonl").read_text().splitlines()) == 4
    calls.clear()
    monkeypatch.setattr(hpo, "_run", lambda job: (calls.append(job), real_run(job))[1])
    assert hpo.main([*args, "--resume"]) == 0
    assert len(calls) == 4  # 2 algorithms x 2 tasks x 2 seeds, 4 of them already journalled
    resumed = json.loads((tmp_path / "results" / "bench.json").read_text())["runs"]
    seconds = resumed["columns"].index("seconds")
    strip = lambda rows: [row[:seconds] + row[seconds + 1 :] for row in rows]  # noqa: E731
    assert strip(resumed["rows"]) == strip(uninterrupted["rows"])

    calls.clear()
    assert hpo.main(args) == 0  # without --resume a new invocation starts afresh
    assert len(calls) == 8
