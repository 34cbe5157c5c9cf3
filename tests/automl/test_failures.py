"""Failure classes from exit code + log tail (the job contract's only outputs)."""

from __future__ import annotations

import signal

import pytest

from mal.automl.failures import classify, last_line, params_hash

TRACEBACK = """Traceback (most recent call last):
  File "train.py", line 3, in <module>
ZeroDivisionError: division by zero"""


@pytest.mark.parametrize(
    ("exit_code", "log", "category"),
    [
        (2, "mal train: error: train has unknown key 'lrr'. Did you mean lr?", "spec"),
        (2, "mal train: error: train.lr = -1 is invalid: must be greater than 0.", "spec"),
        (2, "mal train: error: dataset.train_ann_path /x.json does not exist; fix the path.", "data"),
        (2, "mal train: error: DataError: images/ holds no image listed in the COCO file.", "data"),
        (1, TRACEBACK, "model_code"),
        (1, "mal train: internal error: RuntimeError: shape mismatch (rerun with --debug)", "model_code"),
        (1, "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB", "out_of_memory"),
        (1, "torch.OutOfMemoryError: CUDA error", "out_of_memory"),
        (-signal.SIGKILL, "epoch 3", "infrastructure"),
        (137, "", "infrastructure"),
        (1, "RuntimeError: NCCL error: unhandled system error", "infrastructure"),
        (1, "FileNotFoundError: [Errno 2] No such file or directory: 'images/a.jpg'", "data"),
        (None, "", "infrastructure"),
    ],
)
def test_classify(exit_code, log, category):
    failure = classify(exit_code, log)
    assert failure.category == category
    assert failure.exit_code == exit_code


def test_reason_is_the_last_line_and_signals_are_named():
    assert classify(1, TRACEBACK).reason == "ZeroDivisionError: division by zero"
    killed = classify(-signal.SIGKILL, "epoch 3\n")
    assert "SIGKILL" in killed.reason and "out-of-memory killer" in killed.reason
    assert last_line("a\n\nb\n  \n") == "b"


def test_only_value_dependent_failures_are_cached():
    assert classify(2, "unknown key").config_dependent
    assert classify(1, "CUDA out of memory").config_dependent
    assert not classify(1, TRACEBACK).config_dependent
    assert not classify(-9, "").config_dependent


def test_params_hash_ignores_key_order_and_sees_values():
    assert params_hash({"a": 1, "b": 2.5}) == params_hash({"b": 2.5, "a": 1})
    assert params_hash({"a": 1}) != params_hash({"a": 2})
