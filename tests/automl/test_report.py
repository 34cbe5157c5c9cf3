"""Report pieces that need no jobs: parameter importance and the trials table."""

from __future__ import annotations

import io

import numpy as np
from rich.console import Console

from mal.automl.report import parameter_importance, trials_table

SPACE = [
    {"name": "train.lr", "type": "float", "low": 1e-7, "high": 1e-5, "log_scale": True},
    {"name": "train.wd", "type": "float", "low": 1e-5, "high": 1e-2, "log_scale": True},
    {"name": "model.arch", "type": "categorical", "choices": ["vit-tiny/16", "vit-small/16"]},
]


def _history(n: int = 24) -> list[dict]:
    rng = np.random.default_rng(0)
    entries = []
    archs = ["vit-tiny/16", "vit-small/16"]
    for i in range(n):
        lr, wd = 10 ** rng.uniform(-7, -5), 10 ** rng.uniform(-5, -2)
        entries.append(
            {
                "rec_id": i,
                "job_id": f"rec_{i:03d}",
                "metric": float(-abs(np.log10(lr) + 6)),
                "params": {"train.lr": lr, "train.wd": wd, "model.arch": archs[i % 2]},
                "status": "done",
                "epochs": [[1, 0.1], [2, 0.2]],
                "budget": 2,
                "info": {"rung": 0},
                "failure_reason": None,
                "resume_from": None,
            }
        )
    return entries


def test_importance_ranks_the_parameter_that_matters_first():
    importance, method = parameter_importance(_history(), SPACE, "maximize")
    assert "optuna" in method
    assert max(importance, key=importance.get) == "train.lr"
    assert importance["train.lr"] > 0.5


def test_importance_needs_a_few_trials():
    importance, method = parameter_importance(_history(2), SPACE, "maximize")
    assert importance == {} and "too few" in method


def test_trials_table_shows_epoch_metric_and_state():
    history = _history(3)
    history[1].update(metric=None, status="failed", failure_reason="ZeroDivisionError: x")
    console = Console(file=io.StringIO(), width=200)
    console.print(trials_table(history))
    text = console.file.getvalue()
    assert "rec_001" in text and "failed" in text and "ZeroDivisionError" in text and "2/2" in text
